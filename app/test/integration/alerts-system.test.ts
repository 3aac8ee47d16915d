import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createServer } from 'node:http'
import { deviceCreds, mosquittoPub } from '../helpers/devices.js'
import { startStack, tempDir } from '../helpers/env.js'
import { waitFor } from '../helpers/ports.js'
import { count, evaluations, FAST, fakeRoot, firing } from '../helpers/alerts.js'
import { cli } from '../helpers/identity.js'

t.test('temperature, throttling and CPU alerts from a fake /sys and /proc: once, resolved once, across restarts', async t => {
  const dir = tempDir(t)
  const k = fakeRoot(dir)
  const s = await startStack(t, { monitor: { ...FAST, root: k.root }, alerts: { temperatureForSeconds: 0, throttledForSeconds: 0, cpuForSeconds: 0 } })
  t.equal(await firing(s, 'temperature_high'), 0, 'the firing gauge exists at 0 from the start')
  k.set({ 'sys/class/thermal/thermal_zone0/temp': '81500\n' })
  await waitFor(() => count(s, 'temperature_high', 'firing') === 1, 'the temperature alert at the cloud')
  const a = s.cloud.alerts.find(x => x.rule === 'temperature_high')
  t.equal(a.value, 81.5)
  t.equal(a.threshold, 70)
  t.equal(a.severity, 'critical')
  t.match(a.summary, /81\.5 °C/)
  t.equal(await firing(s, 'temperature_high'), 1)
  t.match((await s.gateway.get('/status')).text, /"temperatureMax": 81.5/, '/status carries the sample')

  // Restart while firing: the state is read back, nothing is reported again.
  t.equal(await s.gateway.stop(), 0)
  await s.gateway.start()
  await evaluations(s, 3)
  t.equal(await firing(s, 'temperature_high'), 1, 'still firing after the restart')
  t.equal(count(s, 'temperature_high', 'firing'), 1, 'not reported twice')

  k.set({ 'sys/class/thermal/thermal_zone0/temp': '66000\n' }) // below 70 but within the 10 % hysteresis (63)
  await evaluations(s, 3)
  t.equal(count(s, 'temperature_high', 'resolved'), 0, 'hysteresis: 66 °C does not resolve a 70 °C alert')
  k.set({ 'sys/class/thermal/thermal_zone0/temp': '50000\n' })
  await waitFor(() => count(s, 'temperature_high', 'resolved') === 1, 'the resolution at the cloud')
  t.equal(await s.gateway.stop(), 0)
  await s.gateway.start()
  await evaluations(s, 3)
  t.equal(count(s, 'temperature_high', 'firing'), 1, 'after a second restart: still one firing')
  t.equal(count(s, 'temperature_high', 'resolved'), 1, 'and one resolution')
  t.equal(await firing(s, 'temperature_high'), 0)

  k.set({ 'sys/devices/platform/soc/soc:firmware/get_throttled': '0x50005\n' })
  await waitFor(() => count(s, 'throttled', 'firing') === 1, 'under-voltage reported')
  t.match(s.cloud.alerts.find(x => x.rule === 'throttled').summary, /under_voltage, throttled/)
  t.match((await s.gateway.get('/metrics')).text, /gateway_system_throttled\{flag="under_voltage",when="now"\} 1/)
  k.set({ 'sys/devices/platform/soc/soc:firmware/get_throttled': '0x50000\n' })
  await waitFor(() => count(s, 'throttled', 'resolved') === 1, 'throttling over')

  // CPU: 95 busy ticks of 100 between two samples.
  k.set({ 'proc/stat': 'cpu  195 0 0 905 0 0 0 0\ncpu0 195 0 0 905 0 0 0 0\n' })
  await waitFor(() => count(s, 'cpu_high', 'firing') === 1, 'CPU alert')
  k.set({ 'proc/stat': 'cpu  200 0 0 1000 0 0 0 0\ncpu0 200 0 0 1000 0 0 0 0\n' })
  await waitFor(() => count(s, 'cpu_high', 'resolved') === 1, 'CPU resolved')
  await evaluations(s, 2)
  for (const rule of ['temperature_high', 'throttled', 'cpu_high']) {
    t.equal(count(s, rule, 'firing'), 1, `${rule}: fired once`)
    t.equal(count(s, rule, 'resolved'), 1, `${rule}: resolved once`)
  }
  t.equal((await s.gateway.health()).status, 200, 'none of these makes the gateway unhealthy')
})

t.test('a stopped Mosquitto: alert, /health 503 with the reason, back to healthy', async t => {
  const s = await startStack(t, { monitor: FAST, alerts: { brokerUnreachableSeconds: 2 } })
  await s.broker.stop()
  await waitFor(() => count(s, 'broker_unreachable', 'firing') === 1, 'broker alert at the cloud')
  const h = await s.gateway.health()
  t.equal(h.status, 503)
  t.match(h.body.reasons.join('\n'), /broker down/)
  t.equal(h.body.status, 'degraded')
  const st = await cli(s.configFile, ['status'])
  t.match(st.out, /health\s+NOT OK: broker down/, '`iot-gateway status` gives the same reason')
  t.match(st.out, /alert\s+broker_unreachable: no connection to the broker/)
  await s.broker.start()
  await waitFor(() => count(s, 'broker_unreachable', 'resolved') === 1, 'broker alert resolved')
  await waitFor(async () => (await s.gateway.health()).status === 200, 'healthy again')
  t.equal(count(s, 'broker_unreachable', 'firing'), 1, 'fired once')
})

// A real small file system needs mount(8): root, as the netns tests.
t.test('disk-free on a small file system: alert and /health, then resolved', { skip: process.getuid?.() === 0 ? false : 'needs root (mount a tmpfs)' }, async t => {
  const dir = tempDir(t)
  const data = join(dir, 'small')
  mkdirSync(data)
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', data])
  t.teardown(() => { try { execFileSync('umount', ['-l', data]) } catch {} })
  const s = await startStack(t, { gateway: { dataDir: data }, monitor: FAST, outbox: { minFreeBytes: 20 * 1048576 }, alerts: { diskFreeMinBytes: 28 * 1048576 } })
  t.equal((await s.gateway.health()).status, 200)
  writeFileSync(join(data, 'filler'), Buffer.alloc(24 * 1048576))
  await waitFor(() => count(s, 'disk_low', 'firing') === 1, async () => `disk alert (below the 28 MiB floor; ${await s.gateway.metric('gateway_data_filesystem_avail_bytes', `{path="${data}"}`)} bytes available)`)
  t.equal((await s.gateway.health()).status, 200, 'low is a warning, not yet unhealthy')
  writeFileSync(join(data, 'filler2'), Buffer.alloc(8 * 1048576))
  await waitFor(async () => (await s.gateway.health()).status === 503, '/health: disk full below 20 MiB')
  const h = await s.gateway.health()
  t.equal(h.status, 503)
  t.match(h.body.reasons.join('\n'), /disk full/)
  rmSync(join(data, 'filler'))
  rmSync(join(data, 'filler2'))
  await waitFor(() => count(s, 'disk_low', 'resolved') === 1, 'disk alert resolved')
  await waitFor(async () => (await s.gateway.health()).status === 200, 'healthy again')
  t.match((await s.gateway.get('/metrics')).text, /gateway_data_filesystem_size_bytes\{path="[^"]+"\} 50331648/)
  t.equal(count(s, 'disk_low', 'firing'), 1, 'fired once')
})

t.test('an outbox over its high-water mark makes /health 503 until it drains', async t => {
  const s = await startStack(t, { monitor: FAST, outbox: { maxMessages: 100 }, alerts: { outboxHighWaterRatio: 0.5 } })
  await s.cloud.stop()
  const dev = deviceCreds(s.config, 'many-1')
  const r = await mosquittoPub(s.broker.lanPort, dev, 'devices/many-1/telemetry', Array.from({ length: 60 }, (_, i) => JSON.stringify({ seq: i + 1 })))
  t.equal(r.code, 0, r.output)
  await waitFor(async () => (await s.gateway.health()).status === 503, '/health 503 at 50 of 100')
  t.match((await s.gateway.health()).body.reasons.join('\n'), /outbox over its high-water mark: 6\d messages/)
  await s.cloud.start()
  await waitFor(async () => (await s.gateway.health()).status === 200, 'healthy once drained')
  t.equal(s.cloud.unique().size, 60)
})

t.test('a webhook receives the same envelope', async t => {
  const got: any[] = []
  const hook = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => { got.push({ auth: req.headers.authorization, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }); res.writeHead(204).end() })
  })
  await new Promise<void>(resolve => hook.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { hook.closeAllConnections(); hook.close() })
  const s = await startStack(t, { monitor: FAST, alerts: { brokerUnreachableSeconds: 1, webhookUrl: `http://127.0.0.1:${(hook.address() as { port: number }).port}/hook` } })
  await s.broker.stop()
  await waitFor(() => got.length > 0 && count(s, 'broker_unreachable', 'firing') === 1, 'the alert at the webhook and the cloud')
  t.equal(got[0].body.gateway, 'gw-test')
  t.equal(got[0].body.kind, 'alerts')
  t.equal(got[0].body.alerts[0].rule, 'broker_unreachable')
  t.same(got[0].body.alerts[0], s.cloud.alerts.find(a => a.rule === 'broker_unreachable'), 'the same record for both receivers')
  t.equal(got[0].auth, undefined, 'the cloud\'s token is not sent to the webhook')
})
