import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { deviceCreds, mqttDevice } from '../helpers/devices.js'
import { startStack, tempDir } from '../helpers/env.js'
import { waitFor } from '../helpers/ports.js'
import { count, evaluations, FAST, fakeRoot, firing } from '../helpers/alerts.js'
import { appDir } from '../helpers/gateway-process.js'
import { cli, enrollDevice } from '../helpers/identity.js'
import { openDatabase } from '../../src/store/db.js'
import { Store, type InboundMessage } from '../../src/store/store.js'

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

t.test('a quarantined device raises its alert; `device release` resolves it', async t => {
  const s = await startStack(t, { monitor: FAST, trust: { penaltyMalformed: 35 } })
  const d = await enrollDevice(s.configFile, join(s.dir, 'q'), 'bad-1')
  const dev = await mqttDevice(s.broker.lanPort, d)
  t.teardown(() => dev.endAsync())
  await dev.publishAsync('devices/bad-1/telemetry', JSON.stringify({ seq: 1, v: 1 }), { qos: 1 })
  for (let i = 0; i < 2; i++) await dev.publishAsync('devices/bad-1/telemetry', '{"v":"no seq"}', { qos: 1 })
  await waitFor(() => count(s, 'device_quarantined', 'firing') === 1, 'the quarantine alert at the cloud')
  t.same(s.cloud.alerts.find(a => a.rule === 'device_quarantined').labels, { device: 'bad-1' })
  const r = await cli(s.configFile, ['device', 'release', 'bad-1'])
  t.equal(r.code, 0, r.err)
  await waitFor(() => count(s, 'device_quarantined', 'resolved') === 1, 'resolved after the release')
  t.equal(count(s, 'device_quarantined', 'firing'), 1, 'fired once')
})

t.test('uplink failing and a stale outbox: raised during the outage, delivered and resolved after it', async t => {
  const s = await startStack(t, { monitor: FAST, alerts: { uplinkFailingSeconds: 1, outboxOldestSeconds: 2 } })
  await s.cloud.stop()
  const dev = await mqttDevice(s.broker.lanPort, deviceCreds(s.config, 'out-1'))
  t.teardown(() => dev.endAsync())
  await dev.publishAsync('devices/out-1/telemetry', JSON.stringify({ seq: 1 }), { qos: 1 })
  await waitFor(async () => await firing(s, 'uplink_failing') === 1 && await firing(s, 'outbox_stale') === 1, 'both alerts firing during the outage')
  t.equal((await s.gateway.health()).status, 200, 'an unreachable cloud is not a health failure: buffering is the job')
  await s.cloud.start()
  await waitFor(() => count(s, 'uplink_failing', 'resolved') === 1 && count(s, 'outbox_stale', 'resolved') === 1, 'both resolved at the cloud')
  t.equal(count(s, 'uplink_failing', 'firing'), 1)
  t.equal(count(s, 'outbox_stale', 'firing'), 1)
  t.equal(s.cloud.order[0], 'alerts', 'the alerts went before the waiting message')
  t.equal(s.cloud.unique().size, 1)
})
