import { spawn, execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'node:https'
import { gzipSync } from 'node:zlib'
import t from 'tap'
import { createCertificate, keyToPem, newKeyPair } from '../../src/pki/x509.js'
import { tempDir, testConfig } from '../helpers/env.js'
import { GatewayProcess } from '../helpers/gateway-process.js'
import { enrollDevice } from '../helpers/identity.js'
import { Mosquitto } from '../helpers/mosquitto.js'
import { waitFor } from '../helpers/ports.js'

/**
 * The README's examples, run: app/examples/cloud-receiver.mjs is the cloud of a real gateway (its
 * token, TLS and Content-Digest checks in the path), and app/examples/sensor-mqtt.mjs is the
 * device, through a real Mosquitto. Then the receiver's own promises: a batch sent again with the
 * same Idempotency-Key is stored once, a body that does not match its Content-Digest is refused.
 */
const examples = join(import.meta.dirname, '..', '..', 'examples')

t.test('sensor-mqtt.mjs -> Mosquitto -> gateway -> cloud-receiver.mjs', async t => {
  const dir = tempDir(t)
  const ca = newKeyPair()
  const caCert = createCertificate({ subject: { CN: 'receiver CA' }, publicKey: ca.publicKey, selfKey: ca.privateKey, days: 30, ca: true })
  const k = newKeyPair()
  const cert = createCertificate({ subject: { CN: 'localhost' }, publicKey: k.publicKey, issuer: { cert: caCert, key: ca.privateKey }, days: 30, serverNames: { dns: ['localhost'], ip: ['127.0.0.1'] } })
  const f = (name: string, text: string): string => { writeFileSync(join(dir, name), text); return join(dir, name) }
  const files = { ca: f('receiver-ca.crt', caCert), cert: f('receiver.crt', cert), key: f('receiver.key', keyToPem(k.privateKey)), token: f('token', 's3cret-token\n') }

  const receiver = spawn(process.execPath, [join(examples, 'cloud-receiver.mjs'), '--cert', files.cert, '--key', files.key, '--port', '0', '--host', '127.0.0.1', '--token-file', files.token], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { receiver.kill() })
  let out = ''
  let err = ''
  receiver.stdout.on('data', d => { out += String(d) })
  receiver.stderr.on('data', d => { err += String(d) })
  const port = Number((await waitFor(() => /listening on https:\/\/127\.0\.0\.1:(\d+)/.exec(err), 'the receiver to listen'))[1])
  const stored = (): Array<{ device: string, seq: number, epoch: number, payload: { temp: number } }> => out.split('\n').filter(Boolean).map(l => JSON.parse(l))

  const { config, file } = await testConfig(dir, { uplink: { url: `https://localhost:${port}/ingest`, caFile: files.ca, tokenFile: files.token } })
  const broker = new Mosquitto(config)
  await broker.start()
  const gateway = new GatewayProcess(file, config.api.port, join(dir, 'gateway.log'))
  t.teardown(async () => { await gateway.stop(); await broker.stop() })
  await gateway.start()
  const dev = await enrollDevice(file, join(dir, 'dev'), 'greenhouse-3')

  const sensor = await new Promise<{ code: number | null, stdout: string, stderr: string }>(resolve => {
    execFile(process.execPath, [join(examples, 'sensor-mqtt.mjs'), '--url', `mqtts://localhost:${broker.lanPort}`, '--id', dev.id, '--dir', dev.dir, '--count', '5', '--interval', '10'],
      { timeout: 60000 }, (e, stdout, stderr) => { resolve({ code: e ? (e as { code?: number }).code ?? 1 : 0, stdout, stderr }) })
  })
  t.equal(sensor.code, 0, sensor.stderr)
  t.equal(sensor.stdout.match(/^acknowledged /gm)?.length, 5, 'five PUBACKs')
  await waitFor(() => stored().length >= 5, () => `5 messages at the receiver (it has: ${out}; its log: ${err})`)
  t.same(stored().map(m => [m.device, m.seq]), [1, 2, 3, 4, 5].map(s => [dev.id, s]), 'in order, once each')
  t.ok(stored().every(m => m.epoch > 0 && typeof m.payload.temp === 'number'), 'the payload byte for byte, with the sensor\'s epoch')
  t.equal(await gateway.metric('gateway_uplink_dead_letters_total', '', { absentIs: 0 }), 0, 'the receiver accepted every batch (token, digest)')

  // By hand, as the gateway sends after a crash between a send and its delete: the same batch twice.
  const post = (body: Buffer, headers: Record<string, string>): Promise<{ status: number, text: string }> => new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/ingest', method: 'POST', servername: 'localhost', ca: caCert, headers: { 'content-type': 'application/json', 'content-encoding': 'gzip', authorization: 'Bearer s3cret-token', ...headers } }, res => {
      let text = ''
      res.on('data', c => { text += String(c) }).on('end', () => { resolve({ status: res.statusCode ?? 0, text }) })
    })
    req.on('error', reject)
    req.end(body)
  })
  const body = gzipSync(JSON.stringify({ gateway: 'gw-x', batchId: 'b-1', messages: [{ id: 'gw-x:1', device: 'd', stream: 'telemetry', epoch: 0, seq: 9, payload: { seq: 9 } }] }))
  const digest = `sha-256=:${createHash('sha256').update(body).digest('base64')}:`
  t.equal((await post(body, { 'content-digest': digest, 'idempotency-key': 'b-1' })).status, 200)
  const again = await post(body, { 'content-digest': digest, 'idempotency-key': 'b-1' })
  t.equal(again.status, 200, 'a batch sent again is acknowledged (so the gateway deletes it)')
  t.match(again.text, /duplicate/)
  t.equal(stored().filter(m => m.device === 'd').length, 1, 'and stored once')
  const bad = await post(body, { 'content-digest': 'sha-256=:AAAA:', 'idempotency-key': 'b-2' })
  t.equal(bad.status, 400, 'a body that does not match its Content-Digest is refused')
  t.equal((await post(body, { 'content-digest': digest, 'idempotency-key': 'b-3', authorization: 'Bearer wrong' })).status, 401, 'a wrong token is refused')
  t.equal(stored().length, 6, 'nothing else stored')
})
