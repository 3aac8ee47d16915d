import { join } from 'node:path'
import t from 'tap'
import { mqttDevice } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { cli, enrollDevice } from '../helpers/identity.js'
import { waitFor } from '../helpers/ports.js'

t.test('trust: security events quarantine a device (data held back, alert); release lets it through', async t => {
  const s = await startStack(t, { trust: { floor: 40, penaltyReplay: 10, recoverPerMessage: 0.5 } })
  const dev = await enrollDevice(s.configFile, join(s.dir, 'q'), 'sensor-q')
  const client = await mqttDevice(s.broker.lanPort, dev)
  t.teardown(() => client.endAsync())
  const send = (o: object): Promise<unknown> => client.publishAsync('devices/sensor-q/telemetry', JSON.stringify(o), { qos: 1 })
  await send({ seq: 1, v: 'first' })
  await waitFor(() => s.cloud.accepted.length === 1, 'first message')
  for (let i = 0; i < 7; i++) await send({ seq: 1, v: 'replayed' }) // 7 x 10 points: 100 -> 30, below 40 at the 7th
  await waitFor(async () => JSON.parse((await cli(s.configFile, ['device', 'show', 'sensor-q', '--json'])).out).status === 'quarantined', 'quarantine')
  await send({ seq: 2, v: 'held-1' })
  await send({ seq: 3, v: 'held-2' })
  await waitFor(async () => JSON.parse((await cli(s.configFile, ['device', 'show', 'sensor-q', '--json'])).out).held === 2, 'messages held')
  const show = JSON.parse((await cli(s.configFile, ['device', 'show', 'sensor-q', '--json'])).out) as { status: string, trustScore: number, trustEvents: Record<string, number>, statusReason: string }
  t.equal(show.trustScore, 30, 'score shown')
  t.same(show.trustEvents, { replay: 7 }, 'reasons shown')
  t.match(show.statusReason, /below 40/)
  t.same(s.cloud.accepted.map(m => m.payload.v), ['first'], 'held data did not reach the cloud')
  t.equal(await s.gateway.metric('gateway_device_trust_score', '{device="sensor-q"}'), 30, 'score in /metrics')
  t.equal(await s.gateway.metric('gateway_devices', '{status="quarantined"}'), 1)
  t.equal(await s.gateway.metric('gateway_device_quarantines_total'), 1, 'alert counted')
  const log = (await import('node:fs')).readFileSync(s.gateway.logFile, 'utf8')
  t.match(log, /ALERT device quarantined/, 'alert in the log')
  const audit = JSON.parse((await cli(s.configFile, ['audit', 'list', '--device', 'sensor-q', '--json'])).out) as Array<{ type: string }>
  t.ok(audit.some(e => e.type === 'device_quarantined'), 'quarantine audited')
  t.ok(audit.some(e => e.type === 'replay'), 'replays audited')
  const human = await cli(s.configFile, ['device', 'show', 'sensor-q'])
  t.match(human.out, /trust\s+30\.0 \(events: replay=7\)/)

  const rel = await cli(s.configFile, ['device', 'release', 'sensor-q'])
  t.equal(rel.code, 0, rel.err)
  await waitFor(() => s.cloud.accepted.length === 3, 'held messages delivered after release')
  t.same(s.cloud.accepted.map(m => m.payload.v), ['first', 'held-1', 'held-2'])
  await send({ seq: 4, v: 'after release' })
  await waitFor(() => s.cloud.accepted.length === 4, 'new traffic flows')
  const after = JSON.parse((await cli(s.configFile, ['device', 'show', 'sensor-q', '--json'])).out) as { status: string, trustScore: number, held: number }
  t.equal(after.status, 'active')
  t.equal(after.trustScore, 100, 'score back to the initial value')
  t.equal(after.held, 0)
  t.not((await cli(s.configFile, ['device', 'release', 'sensor-q'])).code, 0, 'releasing an active device is refused')
})
