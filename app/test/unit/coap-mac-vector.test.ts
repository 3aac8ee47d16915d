import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { coapMac } from '../../src/coap-ingress/auth.js'
import { tempDir } from '../helpers/temp.js'

// The CoAP MAC as app/docs/sensors.md spells it for firmware writers: the vector there, the bytes
// shown there and the shell recipe there all agree with the gateway's own verification code.
const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'sensors.md'), 'utf8')
const key = Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex')
const payload = '{"seq":1,"temp":21.5}'
const expected = 'b539c4e10fff3b5a9d1ac57d8b7c8c3436f7275f0bed299ee3fe607eb3fb7bcf'

t.test('the documented vector is what auth.ts computes', async t => {
  t.equal(coapMac(key, 'greenhouse-1', 'telemetry', payload).toString('hex'), expected)
  t.ok(doc.includes(`key: \`${key.toString('hex')}\``), 'the doc names the key')
  t.ok(doc.includes(`mac: \`${expected}\``), 'the doc names the MAC')
})

t.test('the byte dump in the doc is the HMAC input', async t => {
  const input = Buffer.concat([Buffer.from('iot-gateway coap v1\0greenhouse-1\0telemetry\0'), Buffer.from(payload)])
  t.equal(input.length, 64)
  for (let i = 0; i < input.length; i += 16) {
    const row = input.subarray(i, i + 16)
    const hex = [...row].map(b => b.toString(16).padStart(2, '0')).join(' ')
    const text = [...row].map(b => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '.')).join('')
    t.ok(doc.includes(`${hex}   ${text}`), `row ${i / 16}: ${hex}`)
  }
})

t.test('the shell recipe in the doc makes the same MAC', async t => {
  const block = /<!-- coap-mac-shell -->\n```sh\n([\s\S]*?)```/.exec(doc)?.[1]
  t.ok(block, 'the recipe is in the doc')
  const dir = tempDir(t, 'iotgw-macdoc-')
  writeFileSync(join(dir, 'greenhouse-1.coap-key'), key.toString('hex') + '\n')
  // coap-client-notls stands for itself only here: the request's arguments are printed, not sent.
  const out = execFileSync('bash', ['-c', `set -e\ncoap-client-notls () { printf '%s\\n' "$@"; }\n${block!}`], { cwd: dir, encoding: 'utf8' })
  t.ok(out.split('\n').includes(`65001,0x${expected}`), `the option carries the MAC: ${out}`)
  t.ok(out.split('\n').includes('coap://192.168.100.1/d/greenhouse-1/telemetry'))
})
