import { createHmac } from 'node:crypto'
import t from 'tap'
import { coapMac, verifyCoapMac } from '../../src/coap-ingress/auth.js'
import { codeFor } from '../../src/coap-ingress/coap-ingress.js'

t.test('the MAC covers label, id, stream and payload', async t => {
  const key = Buffer.alloc(32, 1)
  const p = Buffer.from('{"seq":1}')
  const mac = coapMac(key, 'd', 'telemetry', p)
  t.same(mac, createHmac('sha256', key).update(Buffer.concat([Buffer.from('iot-gateway coap v1\0d\0telemetry\0'), p])).digest(), 'the documented construction')
  t.ok(verifyCoapMac(key, 'd', 'telemetry', p, mac))
  t.notOk(verifyCoapMac(key, 'e', 'telemetry', p, mac), 'other id')
  t.notOk(verifyCoapMac(key, 'd', 'events', p, mac), 'other stream')
  t.notOk(verifyCoapMac(key, 'd', 'telemetry', Buffer.from('{"seq":2}'), mac), 'other payload')
  t.notOk(verifyCoapMac(key, 'd', 'telemetry', p, mac.subarray(0, 16)), 'truncated')
  t.notOk(verifyCoapMac(key, 'd', 'telemetry', p, undefined), 'missing')
})

t.test('refusals map to CoAP codes', async t => {
  const c = (reason: string): string => codeFor({ accepted: false, reason: reason as never, detail: '' }).code
  t.equal(codeFor({ accepted: true }).code, '2.04')
  t.equal(c('bad_json'), '4.00')
  t.equal(c('bad_signature'), '4.01')
  t.equal(c('replay'), '4.01')
  t.equal(c('oversize'), '4.13')
  t.same(codeFor({ accepted: false, reason: 'rate_limited', detail: '' }), { code: '4.29', maxAge: 1 })
  t.same(codeFor({ accepted: false, reason: 'outbox_full', detail: '' }), { code: '5.03', maxAge: 5 })
})
