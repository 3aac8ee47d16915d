import t from 'tap'
import { deviceCreds, mosquittoPub, mqttDevice } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { waitFor } from '../helpers/ports.js'

t.test('telemetry over MQTT/TLS reaches the HTTPS cloud with the exact payloads', async t => {
  const s = await startStack(t, { uplink: { tokenFile: '' } })
  const dev = deviceCreds(s.config, 'sensor-1')
  const payloads = Array.from({ length: 20 }, (_, i) => JSON.stringify({ seq: i + 1, temp: 20 + i / 10, note: `ü-${i}` }))
  const r = await mosquittoPub(s.broker.lanPort, dev, 'devices/sensor-1/telemetry', payloads)
  t.equal(r.code, 0, `mosquitto_pub succeeded: ${r.output}`)
  await waitFor(() => s.cloud.accepted.length >= 20, 'messages at the cloud')
  const got = s.cloud.accepted.filter(m => m.device === 'sensor-1')
  t.same(got.map(m => JSON.stringify(m.payload)), payloads, 'payloads arrive byte for byte, in order')
  t.ok(got.every(m => m.stream === 'telemetry' && m.transport === 'mqtt'), 'stream and transport recorded')
  t.ok(s.cloud.batches.every(b => b.digestOk), 'every batch has a correct Content-Digest')
  t.ok(s.cloud.batches.every(b => b.idempotencyKey === b.batchId && b.batchId.startsWith('gw-test-')), 'Idempotency-Key is the batch id')
  const health = await s.gateway.health()
  t.equal(health.body.broker, 'connected')
  await waitFor(async () => (await s.gateway.health()).body.outbox.depth === 0, 'outbox drained')
  t.equal(await s.gateway.metric('gateway_uplink_messages_delivered_total'), 20)
})

t.test('bad JSON, oversize, replayed and duplicate messages are refused and counted; good traffic goes on', async t => {
  const s = await startStack(t, { limits: { maxPayloadBytes: 256 } })
  const dev = await mqttDevice(s.broker.lanPort, deviceCreds(s.config, 'sensor-2'))
  t.teardown(() => dev.endAsync())
  const topic = 'devices/sensor-2/telemetry'
  const send = (p: string): Promise<unknown> => dev.publishAsync(topic, p, { qos: 1 })
  await send(JSON.stringify({ seq: 1, v: 'a' }))
  await send('{not json')
  await send(JSON.stringify({ seq: 2, v: 'x'.repeat(400) }))
  await send(JSON.stringify({ v: 'no seq' }))
  await send(JSON.stringify({ seq: 1, v: 'replayed' }))
  await send(JSON.stringify({ seq: 3, v: 'b' }))
  await send(JSON.stringify({ seq: 3, v: 'duplicate' }))
  await send(JSON.stringify({ seq: 2, v: 'old' }))
  await send(JSON.stringify({ epoch: 1, seq: 0, v: 'after reboot' }))
  await waitFor(() => s.cloud.accepted.length >= 3, 'good messages at the cloud')
  t.same(s.cloud.accepted.map(m => m.payload.v), ['a', 'b', 'after reboot'], 'only the good messages arrive, in order')
  // The cloud may have them before their commit (sent from memory); refusals that wait for that commit are counted after it.
  await waitFor(async () => await s.gateway.metric('gateway_messages_accepted_total', '{transport="mqtt"}') >= 3, 'the good messages committed')
  const m = (reason: string): Promise<number> => s.gateway.metric('gateway_messages_rejected_total', `{reason="${reason}",transport="mqtt"}`)
  t.equal(await m('bad_json'), 1)
  t.equal(await m('oversize'), 1)
  t.equal(await m('bad_schema'), 1)
  t.equal(await m('replay'), 1, 'seq 2 after seq 3')
  t.equal(await m('duplicate'), 2, 'seq 1 again, seq 3 again')
  t.equal((await s.gateway.health()).status, 200, 'still healthy')
})
