import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { createServer } from 'node:http'
import { deviceCreds, mosquittoPub, mqttDevice } from '../helpers/devices.js'
import { startStack, tempDir, type Stack } from '../helpers/env.js'
import { waitFor } from '../helpers/ports.js'
import { appDir } from '../helpers/gateway-process.js'
import { openDatabase } from '../../src/store/db.js'
import { Store, type InboundMessage } from '../../src/store/store.js'

/** A fake kernel tree the gateway's monitor reads (monitor.root). */
function fakeRoot (dir: string): { root: string, set: (files: Record<string, string>) => void } {
  const root = join(dir, 'root')
  const set = (files: Record<string, string>): void => {
    for (const [p, text] of Object.entries(files)) { mkdirSync(dirname(join(root, p)), { recursive: true }); writeFileSync(join(root, p), text) }
  }
  set({
    'proc/stat': 'cpu  100 0 0 900 0 0 0 0\ncpu0 100 0 0 900 0 0 0 0\n',
    'proc/loadavg': '0.10 0.10 0.10 1/100 1\n',
    'proc/meminfo': 'MemTotal: 1000000 kB\nMemAvailable: 800000 kB\n',
    'proc/self/status': 'Name:\tnode\nVmRSS:\t1000 kB\n',
    'sys/class/thermal/thermal_zone0/temp': '45000\n',
    'sys/devices/platform/soc/soc:firmware/get_throttled': '0x0\n'
  })
  return { root, set }
}

const FAST = { intervalSeconds: 1 }
const count = (s: Stack, rule: string, state: string): number => s.cloud.alerts.filter(a => a.rule === rule && a.state === state).length
const firing = async (s: Stack, rule: string): Promise<number> => {
  const line = (await s.gateway.get('/metrics')).text.split('\n').find(l => l.startsWith(`gateway_alerts_firing{rule="${rule}",`))
  return line ? Number(line.split(' ').pop()) : NaN
}
/** Waits until the gateway has taken `n` more samples (each followed by an evaluation): the barrier for "nothing else happened". */
async function evaluations (s: Stack, n: number): Promise<void> {
  const from = await s.gateway.metric('gateway_monitor_samples_total')
  await waitFor(async () => await s.gateway.metric('gateway_monitor_samples_total') >= from + n, `${n} more monitor samples`)
}

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
  await s.broker.start()
  await waitFor(() => count(s, 'broker_unreachable', 'resolved') === 1, 'broker alert resolved')
  await waitFor(async () => (await s.gateway.health()).status === 200, 'healthy again')
  t.equal(count(s, 'broker_unreachable', 'firing'), 1, 'fired once')
})

t.test('a device that goes silent, and a device whose values jump', async t => {
  const s = await startStack(t, { monitor: FAST, alerts: { deviceSilentMinSeconds: 1, deviceSilentFactor: 3, deviceSilentWarmup: 3, anomalyWarmup: 10 } })
  const quiet = await mqttDevice(s.broker.lanPort, deviceCreds(s.config, 'quiet-1'))
  const jumpy = await mqttDevice(s.broker.lanPort, deviceCreds(s.config, 'jumpy-1'))
  t.teardown(async () => { await quiet.endAsync(); await jumpy.endAsync() })
  // The quiet device's rhythm: a message every 1.2 s (its cadence is the test's input, not a wait for a result).
  for (let i = 1; i <= 5; i++) {
    await quiet.publishAsync('devices/quiet-1/telemetry', JSON.stringify({ seq: i, v: 1 }), { qos: 1 })
    if (i < 5) await new Promise(resolve => setTimeout(resolve, 1200))
  }
  await waitFor(() => count(s, 'device_silent', 'firing') === 1, 'silence alert (3 x its 1.2 s interval)')
  const silent = s.cloud.alerts.find(a => a.rule === 'device_silent')
  t.same(silent.labels, { device: 'quiet-1' })
  await quiet.publishAsync('devices/quiet-1/telemetry', JSON.stringify({ seq: 6, v: 1 }), { qos: 1 })
  await waitFor(() => count(s, 'device_silent', 'resolved') === 1, 'silence resolved by the next message')
  t.equal(count(s, 'device_silent', 'firing'), 1, 'the silent device fired once')

  for (let i = 1; i <= 20; i++) await jumpy.publishAsync('devices/jumpy-1/telemetry', JSON.stringify({ seq: i, temp: 20 + (i % 3) * 0.1 }), { qos: 1 })
  await evaluations(s, 2)
  t.equal(count(s, 'device_anomaly', 'firing'), 0, 'steady values raise nothing')
  await jumpy.publishAsync('devices/jumpy-1/telemetry', JSON.stringify({ seq: 21, temp: 500 }), { qos: 1 })
  await waitFor(() => count(s, 'device_anomaly', 'firing') === 1, 'anomaly alert')
  t.same(s.cloud.alerts.find(a => a.rule === 'device_anomaly').labels, { device: 'jumpy-1', field: 'temp' })
  await jumpy.publishAsync('devices/jumpy-1/telemetry', JSON.stringify({ seq: 22, temp: 20.1 }), { qos: 1 })
  await waitFor(() => count(s, 'device_anomaly', 'resolved') === 1, 'anomaly resolved')
  await evaluations(s, 2)
  t.equal(count(s, 'device_anomaly', 'firing'), 1, 'fired once')
})

t.test('alerts reach the cloud ahead of a 50,000-message backlog', async t => {
  const dir = tempDir(t)
  const k = fakeRoot(dir)
  const s = await startStack(t, { monitor: { ...FAST, root: k.root }, alerts: { temperatureForSeconds: 0 } }, { startGateway: false })
  // The backlog: 50,000 messages already in the outbox (as after a long outage).
  const db = openDatabase(join(s.config.gateway.dataDir, 'gateway.db'))
  const store = new Store(db)
  const now = Date.now()
  for (let b = 0; b < 50; b++) {
    const msgs: InboundMessage[] = Array.from({ length: 1000 }, (_, i) => ({ device: 'bulk-1', transport: 'mqtt', stream: 'telemetry', epoch: 0, seq: b * 1000 + i, receivedAt: now, payload: `{"seq":${b * 1000 + i}}` }))
    store.commitGroup(msgs, [])
  }
  db.close()
  await s.cloud.stop()
  await s.gateway.start()
  t.equal((await s.gateway.health()).body.outbox.depth, 50000)
  k.set({ 'sys/class/thermal/thermal_zone0/temp': '90000\n' })
  await waitFor(async () => await s.gateway.metric('gateway_alert_queue_messages', '{target="cloud"}') === 1, 'the alert queued while the cloud is away')
  await s.cloud.start()
  await waitFor(() => s.cloud.order.includes('batch') && s.cloud.alerts.length > 0, 'alerts and telemetry at the cloud')
  t.equal(s.cloud.order[0], 'alerts', 'the first request accepted after the outage carries the alert')
  t.equal(s.cloud.alerts[0].rule, 'temperature_high')
  await waitFor(() => s.cloud.unique().size === 50000, 'the backlog delivered after it', 120_000, 200)
})

t.test('a cloud answering 401: /health says so, the alert is raised, a new token file is picked up without a restart', async t => {
  const dir = tempDir(t)
  const k = fakeRoot(dir)
  const tokenFile = join(dir, 'token')
  writeFileSync(tokenFile, 'old-token\n')
  const s = await startStack(t, { monitor: { ...FAST, root: k.root }, alerts: { temperatureForSeconds: 0 }, uplink: { tokenFile } }, { startGateway: false })
  s.cloud.respondAlerts = (_b, req) => req.headers.authorization === 'Bearer new-token' ? undefined : { status: 401, body: 'bad token' }
  await s.gateway.start()
  k.set({ 'sys/class/thermal/thermal_zone0/temp': '90000\n' })
  await waitFor(async () => (await s.gateway.health()).status === 503, '/health to report the refusal')
  t.match((await s.gateway.health()).body.reasons.join('\n'), /cloud refusing authentication/)
  await waitFor(async () => await firing(s, 'cloud_auth_refused') === 1, 'the auth alert firing (journal and metrics: the cloud refuses it)')
  t.equal(s.cloud.alerts.length, 0, 'nothing accepted with the old token')
  writeFileSync(tokenFile, 'new-token\n')
  await waitFor(() => count(s, 'cloud_auth_refused', 'resolved') === 1, 'the auth alert resolved and delivered with the new token')
  t.equal(count(s, 'temperature_high', 'firing'), 1, 'the alert queued during the refusal arrives, once')
  t.equal(count(s, 'cloud_auth_refused', 'firing'), 1, 'the auth alert arrives (queued while refused)')
  await waitFor(async () => (await s.gateway.health()).status === 200, 'healthy again')
  t.match(await s.gateway.get('/metrics').then(r => r.text), /gateway_alert_deliveries_total\{target="cloud",result="auth_refused"\} [1-9]/)
})

t.test('disk-free on a small file system: alert and /health, then resolved', async t => {
  const dir = tempDir(t)
  const data = join(dir, 'small')
  mkdirSync(data)
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', data])
  t.teardown(() => { try { execFileSync('umount', ['-l', data]) } catch {} })
  const s = await startStack(t, { gateway: { dataDir: data }, monitor: FAST, alerts: { diskFreeMinBytes: 28 * 1048576, diskFullBytes: 20 * 1048576 } })
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

t.test('refusals are visible to the device\'s owner: /status, one log line per reason per minute, device show', async t => {
  const s = await startStack(t, { monitor: FAST })
  const dev = await mqttDevice(s.broker.lanPort, deviceCreds(s.config, 'noseq-1'))
  t.teardown(() => dev.endAsync())
  for (let i = 0; i < 5; i++) await dev.publishAsync('devices/noseq-1/telemetry', JSON.stringify({ temp: 21.5 }), { qos: 1 })
  await dev.publishAsync('devices/noseq-1/telemetry', '{oops', { qos: 1 })
  const st = await waitFor(async () => {
    const r = JSON.parse((await s.gateway.get('/status')).text).refusals['noseq-1']
    return r?.byReason.bad_schema === 5 && r?.byReason.bad_json === 1 ? r : undefined
  }, 'refusals in /status')
  t.equal(st.last.reason, 'bad_json')
  const log = (): string[] => readFileSync(join(s.dir, 'gateway.log'), 'utf8').split('\n').filter(l => l.includes('"message refused"') && l.includes('noseq-1'))
  t.equal(log().filter(l => l.includes('"bad_schema"')).length, 1, 'one log line for five bad_schema refusals within a minute')
  t.match(log().find(l => l.includes('"bad_schema"')), /"seq\\" must be an integer/, 'the line says what is wrong')
  t.equal(log().filter(l => l.includes('"bad_json"')).length, 1)
  t.equal(await s.gateway.stop(), 0, 'the counts are written at stop (and once a minute)')
  const out = execFileSync(process.execPath, [join(appDir, 'dist', 'gateway.cjs'), 'device', 'show', 'noseq-1', '-c', s.configFile, '--json'], { encoding: 'utf8' })
  const shown = JSON.parse(out).refusals as Array<{ reason: string, count: number }>
  t.same(shown.map(r => [r.reason, r.count]).sort(), [['bad_json', 1], ['bad_schema', 5]], '`device show` lists the refusals by reason')
})
