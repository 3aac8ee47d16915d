import { execFile } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt from 'mqtt'
import t from 'tap'
import { createCertificate, keyToPem, newKeyPair } from '../../src/pki/x509.js'
import { loadIssuer, pkiPaths } from '../../src/pki/pki.js'
import { mosquittoPub, mqttDevice, type DeviceCreds } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { cli, enrollDevice } from '../helpers/identity.js'
import { waitFor } from '../helpers/ports.js'

const sh = (cmd: string, args: string[]): Promise<{ code: number, out: string }> => new Promise(resolve => {
  execFile(cmd, args, { timeout: 30000 }, (err, out, errOut) => resolve({ code: err ? 1 : 0, out: out + errOut }))
})

t.test('enrolled devices deliver end to end; the ACL keeps each to its own topics', async t => {
  const s = await startStack(t)
  const a = await enrollDevice(s.configFile, join(s.dir, 'a'), 'sensor-a')
  const b = await enrollDevice(s.configFile, join(s.dir, 'b'), 'sensor-b')
  t.equal(readFileSync(a.keyFile).length > 0 && (await import('node:fs')).statSync(a.keyFile).mode & 0o777, 0o600, 'key written 0600')
  t.equal((await import('node:fs')).statSync(a.p12File).mode & 0o777, 0o600, 'PKCS#12 written 0600')

  const r = await mosquittoPub(s.broker.lanPort, a, 'devices/sensor-a/telemetry', [JSON.stringify({ seq: 1, v: 'a1' }), JSON.stringify({ seq: 2, v: 'a2' })])
  t.equal(r.code, 0, `mosquitto_pub with the enrolled certificate: ${r.output}`)
  // A publishes on B's topic: the broker drops it (the PUBACK is sent anyway in MQTT 3.1.1).
  const cross = await mosquittoPub(s.broker.lanPort, a, 'devices/sensor-b/telemetry', [JSON.stringify({ seq: 100, v: 'forged-by-a' })])
  t.equal(cross.code, 0)
  await mosquittoPub(s.broker.lanPort, b, 'devices/sensor-b/telemetry', [JSON.stringify({ seq: 1, v: 'b1' })])
  await mosquittoPub(s.broker.lanPort, a, 'devices/sensor-a/telemetry', [JSON.stringify({ seq: 3, v: 'a3' })])
  await waitFor(() => s.cloud.accepted.some(m => m.payload.v === 'a3') && s.cloud.accepted.some(m => m.payload.v === 'b1'), 'good messages at the cloud')
  t.same(s.cloud.accepted.filter(m => m.device === 'sensor-a').map(m => m.payload.v), ['a1', 'a2', 'a3'], 'A delivered in order')
  t.same(s.cloud.accepted.filter(m => m.device === 'sensor-b').map(m => m.payload.v), ['b1'], 'nothing A wrote on B\'s topic arrived')

  // Commands: B reads its own command topic; A subscribing to B's gets nothing.
  const devB = await mqttDevice(s.broker.lanPort, b)
  const devA = await mqttDevice(s.broker.lanPort, a)
  t.teardown(async () => { await devA.endAsync(); await devB.endAsync() })
  const gotB: string[] = []
  const gotA: string[] = []
  devB.on('message', (_t, p) => gotB.push(p.toString()))
  devA.on('message', (_t, p) => gotA.push(p.toString()))
  await devB.subscribeAsync('devices/sensor-b/commands', { qos: 1 })
  const sub = await devA.subscribeAsync('devices/sensor-b/commands', { qos: 1 })
  t.comment(`A's subscription to B's commands granted QoS ${sub[0]?.qos}`)
  const sent = await cli(s.configFile, ['device', 'command', 'sensor-b', '{"action":"set_interval","seconds":60}'])
  t.equal(sent.code, 0, `device command: ${sent.err}`)
  await waitFor(() => gotB.length === 1, 'command at B')
  t.same(JSON.parse(gotB[0]!), { action: 'set_interval', seconds: 60 })
  // A second command through the management API directly.
  const token = readFileSync(join(s.config.gateway.dataDir, 'api-token'), 'utf8').trim()
  const api = await fetch(`http://127.0.0.1:${s.config.api.port}/commands`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ device: 'sensor-b', command: { action: 'read_now' } }) })
  t.equal(api.status, 202)
  await waitFor(() => gotB.length === 2, 'second command at B')
  // The barrier before "nothing arrived": a command for A itself, sent after B's, on A's own topic.
  // The broker delivers to A in order, so once it is there, B's would have come before it.
  await devA.subscribeAsync('devices/sensor-a/commands', { qos: 1 })
  const mine = await cli(s.configFile, ['device', 'command', 'sensor-a', '{"action":"read_now"}'])
  t.equal(mine.code, 0, `device command: ${mine.err}`)
  await waitFor(() => gotA.length >= 1, 'A\'s own command at A')
  t.same(gotA.map(p => JSON.parse(p) as unknown), [{ action: 'read_now' }], 'A never sees B\'s commands, only its own')
  const bad = await cli(s.configFile, ['device', 'command', 'nobody', '{"action":"read_now"}'])
  t.not(bad.code, 0, 'a command for an unknown device is refused')
  t.match(bad.err, /no device "nobody"/)
  const list = await cli(s.configFile, ['device', 'list', '--json'])
  t.same((JSON.parse(list.out) as Array<{ id: string }>).map(d => d.id).sort(), ['sensor-a', 'sensor-b'])
})

t.test('certificates from another CA, expired ones and none at all are refused', async t => {
  const s = await startStack(t)
  const good = await enrollDevice(s.configFile, join(s.dir, 'good'), 'sensor-ok')
  const p = pkiPaths(join(s.config.gateway.dataDir, 'pki'))
  const write = (name: string, cert: string, key: string): DeviceCreds => {
    writeFileSync(join(s.dir, `${name}.crt`), cert)
    writeFileSync(join(s.dir, `${name}.key`), key, { mode: 0o600 })
    return { id: 'sensor-ok', certFile: join(s.dir, `${name}.crt`), keyFile: join(s.dir, `${name}.key`), caFile: p.caCert }
  }
  // Another CA issuing a certificate with the same CN.
  const otherCa = newKeyPair()
  const otherCaCert = createCertificate({ subject: { CN: 'other CA' }, publicKey: otherCa.publicKey, selfKey: otherCa.privateKey, days: 30, ca: true })
  const k1 = newKeyPair()
  const foreign = write('foreign', createCertificate({ subject: { CN: 'sensor-ok' }, publicKey: k1.publicKey, issuer: { cert: otherCaCert, key: otherCa.privateKey }, days: 30, clientAuth: true }), keyToPem(k1.privateKey))
  // Our CA, but expired (valid from two days ago until yesterday... createCertificate backdates a day).
  const k2 = newKeyPair()
  const expired = write('expired', createCertificate({ subject: { CN: 'sensor-ok' }, publicKey: k2.publicKey, issuer: loadIssuer(p), days: -0.5, clientAuth: true }), keyToPem(k2.privateKey))

  const msg = (v: string): string => JSON.stringify({ seq: Date.now(), v })
  const rForeign = await mosquittoPub(s.broker.lanPort, foreign, 'devices/sensor-ok/telemetry', [msg('foreign')])
  t.not(rForeign.code, 0, `other CA refused: ${rForeign.output.trim()}`)
  const rExpired = await mosquittoPub(s.broker.lanPort, expired, 'devices/sensor-ok/telemetry', [msg('expired')])
  t.not(rExpired.code, 0, `expired refused: ${rExpired.output.trim()}`)
  const none = await sh('mosquitto_pub', ['-h', 'localhost', '-p', String(s.broker.lanPort), '--cafile', p.caCert, '-q', '1', '-t', 'devices/sensor-ok/telemetry', '-m', msg('none')])
  t.not(none.code, 0, `no certificate refused: ${none.out.trim()}`)
  await t.rejects(mqtt.connectAsync(`mqtts://localhost:${s.broker.lanPort}`, { ca: readFileSync(p.caCert), reconnectPeriod: 0, connectTimeout: 5000 }), 'mqtt.js without a certificate refused')
  // The gateway's own loopback listener is no way around it either.
  const viaGatewayPort = await mosquittoPub(s.config.broker.gatewayPort, foreign, 'devices/sensor-ok/telemetry', [msg('foreign-8884')])
  t.not(viaGatewayPort.code, 0, 'other CA refused on the gateway listener too')

  const ok = await mosquittoPub(s.broker.lanPort, good, 'devices/sensor-ok/telemetry', [JSON.stringify({ seq: 1, v: 'good' })])
  t.equal(ok.code, 0)
  await waitFor(() => s.cloud.accepted.some(m => m.payload.v === 'good'), 'good message')
  t.same(s.cloud.accepted.map(m => m.payload.v), ['good'], 'only the properly enrolled device got through')
})

t.test('sign-csr: a device with its own key; bad CNs are refused with the reason', async t => {
  const s = await startStack(t)
  const csr = async (cn: string, keyArgs = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']): Promise<string> => {
    const base = join(s.dir, cn.replace(/[^A-Za-z0-9]/g, '_'))
    const r = await sh('openssl', ['req', '-new', ...keyArgs, '-nodes', '-keyout', `${base}.key`, '-subj', `/CN=${cn}`, '-out', `${base}.csr`])
    if (r.code !== 0) throw new Error(r.out)
    return base
  }
  const base = await csr('own-key-1')
  const signed = await cli(s.configFile, ['device', 'sign-csr', `${base}.csr`, '--out', `${base}.crt`, '--coap-key-out', `${base}.coap`])
  t.equal(signed.code, 0, signed.err)
  const creds = { id: 'own-key-1', certFile: `${base}.crt`, keyFile: `${base}.key`, caFile: pkiPaths(join(s.config.gateway.dataDir, 'pki')).caCert }
  const r = await mosquittoPub(s.broker.lanPort, creds, 'devices/own-key-1/telemetry', [JSON.stringify({ seq: 1, v: 'csr' })])
  t.equal(r.code, 0, r.output)
  await waitFor(() => s.cloud.accepted.some(m => m.payload.v === 'csr'), 'message of the CSR device')

  for (const [cn, why] of [['dev#1', /not a valid device id/], ['gw-test', /gateway's own id/], ['own-key-1', /already enrolled/]] as const) {
    const b = await csr(cn)
    const res = await cli(s.configFile, ['device', 'sign-csr', `${b}.csr`])
    t.not(res.code, 0, `CN ${cn} refused`)
    t.match(res.err, why, `reason given for ${cn}: ${res.err.trim()}`)
  }
  const rsa = await csr('rsa-small', ['-newkey', 'rsa:1024'])
  const res = await cli(s.configFile, ['device', 'sign-csr', `${rsa}.csr`])
  t.not(res.code, 0)
  t.match(res.err, /too short/)
  writeFileSync(join(s.dir, 'junk.csr'), 'not a request')
  const junk = await cli(s.configFile, ['device', 'sign-csr', join(s.dir, 'junk.csr')])
  t.not(junk.code, 0)
  t.match(junk.err, /certificate request/i)
})
