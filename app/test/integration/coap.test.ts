import { createSocket } from 'node:dgram'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import t from 'tap'
import { startStack } from '../helpers/env.js'
import { coapClient, coapSend, deviceMac, enrollDevice } from '../helpers/identity.js'
import { freeUdpPort, waitFor } from '../helpers/ports.js'

t.test('CoAP: delivery, refusals with the right codes, a flood of garbage, a full outbox', async t => {
  const port = await freeUdpPort()
  // Floor 0: the refusals below would otherwise quarantine the device; quarantine has its own test.
  const s = await startStack(t, { coap: { enabled: true, bind: '127.0.0.1', port }, limits: { maxPayloadBytes: 512 }, outbox: { maxMessages: 10 }, trust: { floor: 0 } })
  const dev = await enrollDevice(s.configFile, join(s.dir, 'c'), 'coap-1')
  const dev2 = await enrollDevice(s.configFile, join(s.dir, 'c2'), 'coap-2')
  t.equal((await s.gateway.health()).body.coap, 'listening')

  const payloads = [1, 2, 3, 4, 5].map(i => JSON.stringify({ seq: i, temp: 20 + i, note: `ü${i}` }))
  for (const p of payloads) t.equal((await coapSend(port, dev, 'telemetry', p)).code, '2.04', 'accepted: 2.04 Changed')
  await waitFor(() => s.cloud.accepted.length >= 5, 'CoAP messages at the cloud')
  t.same(s.cloud.accepted.map(m => JSON.stringify(m.payload)), payloads, 'exact payloads, in order')
  t.ok(s.cloud.accepted.every(m => m.transport === 'coap' && m.device === 'coap-1'))

  const path = '/d/coap-1/telemetry'
  const p6 = JSON.stringify({ seq: 6 })
  const wrongKey = await coapClient(port, path, p6, { mac: deviceMac(randomBytes(32), 'coap-1', 'telemetry', p6) })
  t.equal(wrongKey.code, '4.01', 'wrong key: 4.01')
  t.equal((await coapClient(port, path, p6)).code, '4.01', 'no MAC: 4.01')
  t.equal((await coapClient(port, path, p6, { mac: deviceMac(dev2.coapKey, 'coap-1', 'telemetry', p6) })).code, '4.01', 'another device\'s key: 4.01')
  t.equal((await coapClient(port, path, p6, { mac: deviceMac(dev.coapKey, 'coap-1', 'events', p6) })).code, '4.01', 'a MAC for another stream: 4.01')
  t.equal((await coapSend(port, dev, 'telemetry', payloads[2]!)).code, '4.01', 'replayed sequence number (captured request sent again): 4.01')
  t.equal((await coapSend(port, dev, 'telemetry', '{not json')).code, '4.00', 'garbage: 4.00')
  t.equal((await coapSend(port, dev, 'telemetry', JSON.stringify({ v: 'no seq' }))).code, '4.00', 'no seq: 4.00')
  t.equal((await coapSend(port, dev, 'telemetry', JSON.stringify({ seq: 7, pad: 'x'.repeat(600) }))).code, '4.13', 'too large: 4.13')
  t.equal((await coapSend(port, dev, 'nosuch', JSON.stringify({ seq: 8 }))).code, '4.04', 'unknown stream: 4.04')
  t.equal((await coapClient(port, '/d/coap-1/telemetry', '', { method: 'get' })).code, '4.05', 'GET: 4.05')
  t.equal((await coapClient(port, '/other', p6)).code, '4.04', 'unknown resource: 4.04')
  const ghost = JSON.stringify({ seq: 1 })
  t.equal((await coapClient(port, '/d/ghost/telemetry', ghost, { mac: deviceMac(randomBytes(32), 'ghost', 'telemetry', ghost) })).code, '4.01', 'unknown device: 4.01')
  t.equal((await coapSend(port, dev, 'telemetry', JSON.stringify({ seq: 9, v: 'after refusals' }))).code, '2.04', 'good traffic goes on')
  t.equal((await coapSend(port, dev2, 'events', JSON.stringify({ seq: 1, v: 'dev2 event' }))).code, '2.04')
  await waitFor(() => s.cloud.accepted.some(m => m.payload.v === 'after refusals') && s.cloud.accepted.some(m => m.payload.v === 'dev2 event'), 'later good traffic')
  t.equal(s.cloud.accepted.length, 7, 'nothing refused reached the cloud')
  t.equal(await s.gateway.metric('gateway_messages_rejected_total', '{reason="bad_signature",transport="coap"}'), 4)
  t.equal(await s.gateway.metric('gateway_unauthenticated_requests_total', '{reason="bad_signature"}'), 4, 'bad MACs counted as unauthenticated')
  t.equal(await s.gateway.metric('gateway_unauthenticated_requests_total', '{reason="unknown_device"}'), 1)

  // 10,000 random datagrams (a tenth of them starting like CoAP requests), as fast as the socket takes them.
  const sock = createSocket('udp4')
  await new Promise<void>(resolve => sock.bind(0, '127.0.0.1', resolve))
  for (let i = 0; i < 10000; i++) {
    const d = randomBytes(1 + Math.floor(Math.random() * 200))
    if (i % 10 === 0) { d[0] = 0x40 | (d[0]! & 0x0f); if (d.length > 1) d[1] = 0x02 }
    await new Promise<void>(resolve => sock.send(d, port, '127.0.0.1', () => resolve()))
    if (i % 500 === 0) await new Promise(resolve => setImmediate(resolve))
  }
  sock.close()
  const health = await s.gateway.health()
  t.equal(health.status, 200, 'healthy after the flood')
  t.equal(health.body.coap, 'listening')
  t.ok(await s.gateway.metric('gateway_coap_dropped_total', '{reason="malformed"}') > 1000, 'malformed datagrams counted and dropped')
  t.equal((await coapSend(port, dev, 'telemetry', JSON.stringify({ seq: 10, v: 'after flood' }))).code, '2.04', 'good traffic after the flood')
  await waitFor(() => s.cloud.accepted.some(m => m.payload.v === 'after flood'), 'message after the flood')

  // Cloud down: the outbox (10 messages) fills; CoAP answers 5.03 with Max-Age, then recovers.
  s.cloud.respond = () => ({ status: 503 })
  let seq = 100
  const codes: string[] = []
  for (let i = 0; i < 12; i++) codes.push((await coapSend(port, dev2, 'telemetry', JSON.stringify({ seq: ++seq, v: `full-${i}` }))).code ?? 'none')
  t.same(codes.slice(0, 10), Array(10).fill('2.04'), 'accepted while there is room')
  t.same(codes.slice(10), ['5.03', '5.03'], 'outbox full: 5.03')
  s.cloud.respond = () => undefined
  await waitFor(async () => (await coapSend(port, dev2, 'telemetry', JSON.stringify({ seq: ++seq, v: 'room again' }))).code === '2.04', 'room again', 20000, 300)
  await waitFor(() => s.cloud.accepted.some(m => m.payload.v === 'room again'), 'delivered after the outage')
  t.same(s.cloud.accepted.filter(m => String(m.payload.v).startsWith('full-')).map(m => m.payload.v), Array.from({ length: 10 }, (_, i) => `full-${i}`), 'what was accepted was delivered')
})

t.test('CoAP stays off the wildcard: it binds the configured address only', async t => {
  const port = await freeUdpPort()
  const s = await startStack(t, { coap: { enabled: true, bind: '127.0.0.1', port } })
  const dev = await enrollDevice(s.configFile, join(s.dir, 'w'), 'coap-w')
  // 127.0.0.2 is loopback too, but not the bound address: no answer.
  const r = await new Promise<boolean>(resolve => {
    const sock = createSocket('udp4')
    sock.on('message', () => { sock.close(); resolve(true) })
    sock.on('error', () => { sock.close(); resolve(false) })
    sock.bind(0, '127.0.0.1', () => {
      sock.send(Buffer.from([0x40, 0x02, 0x12, 0x34, 0xb1, 0x64]), port, '127.0.0.2')
      setTimeout(() => { try { sock.close() } catch {} resolve(false) }, 1500)
    })
  })
  t.equal(r, false, 'nothing answers on another address')
  t.equal((await coapSend(port, dev, 'telemetry', JSON.stringify({ seq: 1 }))).code, '2.04')
})
