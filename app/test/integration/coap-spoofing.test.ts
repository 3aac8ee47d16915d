// Unauthenticated CoAP traffic moves no device's trust: a LAN attacker without keys sends datagrams
// that claim an MQTT-only device's id (wrong MAC) and ids that do not exist; they are counted per
// source address and audited, and the device's next MQTT message goes through. A captured valid
// CoAP request replayed again and again is refused every time and charged at most once per window.
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { mqttDevice } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { cli, coapClient, coapSend, deviceMac, enrollDevice } from '../helpers/identity.js'
import { freeUdpPort, waitFor } from '../helpers/ports.js'

t.test('spoofed CoAP datagrams do not quarantine a device; replays cost a bounded amount', async t => {
  const port = await freeUdpPort()
  // The defaults of the issue: a bad MAC cost 20 points, floor 40: four datagrams used to quarantine.
  const s = await startStack(t, { coap: { enabled: true, bind: '127.0.0.1', port }, trust: { floor: 40, penaltyBadSignature: 20, penaltyReplay: 10 } })
  const mq = await enrollDevice(s.configFile, join(s.dir, 'm'), 'mqtt-only')
  const co = await enrollDevice(s.configFile, join(s.dir, 'c'), 'coap-dev')
  const show = async (id: string): Promise<{ status: string, trustScore: number | null, trustEvents: Record<string, number> }> =>
    JSON.parse((await cli(s.configFile, ['device', 'show', id, '--json'])).out)

  // The attacker: no key, the MQTT-only device's id, four (and then four more) datagrams.
  for (let i = 0; i < 8; i++) {
    const p = JSON.stringify({ seq: 1000 + i })
    const r = await coapClient(port, '/d/mqtt-only/telemetry', p, { mac: deviceMac(randomBytes(32), 'mqtt-only', 'telemetry', p) })
    t.equal(r.code, '4.01', `spoofed datagram ${i + 1}: 4.01`)
  }
  for (let i = 0; i < 3; i++) {
    const p = JSON.stringify({ seq: i })
    t.equal((await coapClient(port, `/d/ghost-${i}/telemetry`, p, { mac: deviceMac(randomBytes(32), `ghost-${i}`, 'telemetry', p) })).code, '4.01', 'unknown id: 4.01')
  }
  const client = await mqttDevice(s.broker.lanPort, mq)
  t.teardown(() => client.endAsync())
  await client.publishAsync('devices/mqtt-only/telemetry', JSON.stringify({ seq: 1, v: 'after the spoofing' }), { qos: 1 })
  await waitFor(() => s.cloud.accepted.some(m => m.device === 'mqtt-only'), 'the MQTT-only device\'s message at the cloud')
  const m = await show('mqtt-only')
  t.equal(m.status, 'active', 'not quarantined')
  t.equal(m.trustScore ?? 100, 100, 'trust untouched')
  t.equal(await s.gateway.metric('gateway_unauthenticated_requests_total', '{reason="bad_signature"}'), 8, 'wrong MACs counted')
  t.equal(await s.gateway.metric('gateway_unauthenticated_requests_total', '{reason="unknown_device"}'), 3, 'unknown ids counted')
  t.equal(await s.gateway.metric('gateway_unauthenticated_by_source', '{source="127.0.0.1"}'), 11, 'per source address')
  const audit = JSON.parse((await cli(s.configFile, ['audit', 'list', '--json'])).out) as Array<{ type: string, device: string | null, detail: Record<string, unknown> }>
  const rows = audit.filter(r => r.type === 'unauthenticated_request')
  // coalesced: one row per source address and 10 s window, with the count of those it stands for
  t.ok(rows.length >= 1 && rows.length < 11, `audited, coalesced per source (${rows.length} rows for 11 requests)`)
  t.ok(rows.some(r => r.device === null && r.detail.source === '127.0.0.1' && r.detail.reason === 'bad_signature' && r.detail.claimed === 'mqtt-only'), 'the row names the source and the id it claimed, and no device')

  // A valid request captured and replayed: refused each time, charged once per window.
  const first = JSON.stringify({ seq: 1, v: 'captured' })
  t.equal((await coapSend(port, co, 'telemetry', first)).code, '2.04')
  for (let i = 0; i < 6; i++) t.equal((await coapSend(port, co, 'telemetry', first)).code, '4.01', `replay ${i + 1}: 4.01`)
  t.equal(await s.gateway.metric('gateway_messages_rejected_total', '{reason="duplicate",transport="coap"}'), 6, 'every replay refused and counted')
  const c = await show('coap-dev')
  t.equal(c.status, 'active')
  t.equal(c.trustScore, 90, 'one replay penalty (10) in the window, not six')
  t.equal(await s.gateway.metric('gateway_security_events_total', '{type="replay"}'), 6, 'each replay is a security event')
  t.equal(s.cloud.accepted.filter(x => x.device === 'coap-dev').length, 1, 'the replays reached nobody')
})
