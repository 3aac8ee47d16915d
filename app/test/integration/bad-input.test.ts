// Finding 5 of the security review, against real processes: payloads that are not valid UTF-8 or
// repeat a member name are refused with a reason (never forwarded altered or read two ways), an
// http:// uplink and an empty stream list are configuration errors, and enrolling the gateway's own
// id is bad usage (exit 2).
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { mqttDevice } from '../helpers/devices.js'
import { startStack, tempDir, testConfig } from '../helpers/env.js'
import { cli, coapSend, enrollDevice } from '../helpers/identity.js'
import { freeUdpPort, waitFor } from '../helpers/ports.js'

t.test('invalid UTF-8 and duplicate member names are refused with a reason; the rest is forwarded byte for byte', async t => {
  const port = await freeUdpPort()
  const s = await startStack(t, { coap: { enabled: true, bind: '127.0.0.1', port }, trust: { floor: 0 } })
  const dev = await enrollDevice(s.configFile, join(s.dir, 'u'), 'sensor-u')
  const client = await mqttDevice(s.broker.lanPort, dev)
  t.teardown(() => client.endAsync())
  const topic = 'devices/sensor-u/telemetry'
  await client.publishAsync(topic, Buffer.concat([Buffer.from('{"seq":1,"name":"caf'), Buffer.from([0xe9]), Buffer.from('"}')]), { qos: 1 })
  await client.publishAsync(topic, '{"seq":2,"seq":1000000}', { qos: 1 })
  await client.publishAsync(topic, '{"seq":3,"a":{"x":1,"\\u0078":2}}', { qos: 1 })
  const good = '{"seq":4,"name":"café","nested":{"seq":1},"list":[{"k":1},{"k":2}]}'
  await client.publishAsync(topic, good, { qos: 1 })
  await waitFor(() => s.cloud.accepted.some(m => m.device === 'sensor-u'), 'the valid message at the cloud')
  t.equal(await s.gateway.metric('gateway_messages_rejected_total', '{reason="invalid_utf8",transport="mqtt"}'), 1, 'invalid UTF-8: refused as invalid_utf8')
  t.equal(await s.gateway.metric('gateway_messages_rejected_total', '{reason="duplicate_key",transport="mqtt"}'), 2, 'repeated names (also when escaped, also nested): refused as duplicate_key')
  const got = s.cloud.accepted.filter(m => m.device === 'sensor-u')
  t.same(got.map(m => m.seq), [4], 'only the valid message reached the cloud; the duplicate did not move seq to 1000000')
  t.same(got[0]!.payload, JSON.parse(good), 'the valid message unchanged (same names, same values, same UTF-8 text)')
  // CoAP: the same reasons, answered 4.00.
  const bad = await coapSend(port, { id: 'sensor-u', coapKey: dev.coapKey }, 'telemetry', '{"seq":5,"seq":6}')
  t.equal(bad.code, '4.00', 'CoAP: duplicate names are a bad request')
  t.match(bad.output, /duplicate_key/, 'with the reason in the diagnostic payload')
})

t.test('configuration: http:// uplinks need allowInsecureHttp, streams cannot be empty (exit 2)', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'gateway.json')
  const check = async (cfg: object): Promise<{ code: number, err: string }> => {
    writeFileSync(file, JSON.stringify({ gateway: { dataDir: join(dir, 'data') }, ...cfg }))
    const r = await cli(file, ['config', 'check'])
    return { code: r.code, err: r.err }
  }
  const http = await check({ uplink: { url: 'http://cloud.example/ingest' } })
  t.equal(http.code, 2, 'http:// refused')
  t.match(http.err, /uplink\.url: http:\/\/ sends the bearer token and the data in clear/)
  t.equal((await check({ uplink: { url: 'http://127.0.0.1:9/ingest', allowInsecureHttp: true } })).code, 0, 'allowed when asked for explicitly')
  t.equal((await check({ uplink: { url: 'https://cloud.example/ingest' } })).code, 0, 'https:// accepted')
  const streams = await check({ uplink: { url: 'https://cloud.example/ingest' }, mqtt: { streams: [] } })
  t.equal(streams.code, 2, 'mqtt.streams [] refused')
  t.match(streams.err, /mqtt\.streams: must list at least one stream/)
})

t.test('device enroll <the gateway\'s id> exits 2', async t => {
  const dir = tempDir(t)
  const { config, file } = await testConfig(dir)
  t.equal((await cli(file, ['pki', 'init'])).code, 0)
  const r = await cli(file, ['device', 'enroll', config.gateway.id, '--out', join(dir, 'out')])
  t.equal(r.code, 2, 'bad usage: exit 2 as the README says')
  t.match(r.err, /is the gateway's own id/)
  t.equal((await cli(file, ['device', 'enroll', 'a/b', '--out', join(dir, 'out')])).code, 2, 'an id that cannot be one: exit 2 too')
})
