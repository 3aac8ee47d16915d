// A device that sets retain is not charged a replay at every re-subscription of the gateway: the
// broker hands its stored retained message to the gateway again each time it subscribes, with the
// retain flag set, and the gateway takes that as a redelivery (refused as `redelivered`, not a
// security event). The message itself reaches the cloud once.
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import t from 'tap'
import { mosquittoPub } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { cli, enrollDevice } from '../helpers/identity.js'
import { waitFor } from '../helpers/ports.js'

t.test('a retained publish costs the device nothing at gateway restarts, and is delivered once', async t => {
  const s = await startStack(t, { trust: { floor: 40, penaltyReplay: 10 } })
  const dev = await enrollDevice(s.configFile, join(s.dir, 'r'), 'sensor-r')
  const retained = await new Promise<{ code: number, output: string }>(resolve => {
    execFile('mosquitto_pub', ['-h', 'localhost', '-p', String(s.broker.lanPort), '--cafile', dev.caFile, '--cert', dev.certFile, '--key', dev.keyFile,
      '-V', 'mqttv311', '-q', '1', '-r', '-t', 'devices/sensor-r/telemetry', '-m', '{"seq":1,"v":"retained"}'], { timeout: 30000 }, (err, out, errOut) =>
      resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, output: out + errOut }))
  })
  t.equal(retained.code, 0, `the retained publish was acknowledged (${retained.output.trim()})`)
  await waitFor(() => s.cloud.accepted.some(m => m.device === 'sensor-r' && m.seq === 1), 'the retained message at the cloud')
  let seq = 1
  for (let restart = 1; restart <= 5; restart++) {
    t.equal(await s.gateway.stop('SIGTERM'), 0)
    await s.gateway.start()
    // A barrier: a later message of the same device; the retained one comes before it, at the subscription.
    seq++
    t.equal((await mosquittoPub(s.broker.lanPort, dev, 'devices/sensor-r/telemetry', [JSON.stringify({ seq, v: `after restart ${restart}` })])).code, 0)
    await waitFor(() => s.cloud.accepted.some(m => m.device === 'sensor-r' && m.seq === seq), `message ${seq} at the cloud`)
  }
  const show = JSON.parse((await cli(s.configFile, ['device', 'show', 'sensor-r', '--json'])).out) as { status: string, trustScore: number | null, trustEvents: Record<string, number> }
  t.equal(show.status, 'active', 'not quarantined (six restarts used to do it)')
  t.equal(show.trustScore ?? 100, 100, 'no replay charged')
  t.same(show.trustEvents ?? {}, {}, 'no security events')
  t.same([...s.cloud.unique().values()].filter(m => m.device === 'sensor-r').map(m => m.seq), [1, 2, 3, 4, 5, 6], 'each message at the cloud once')
  t.ok(await s.gateway.metric('gateway_messages_rejected_total', '{reason="redelivered",transport="mqtt"}') >= 1, 'the retained copies were dropped as redelivered')
})
