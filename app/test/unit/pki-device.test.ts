import { execFileSync } from 'node:child_process'
import { createSecureContext } from 'node:tls'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { createPkcs12 } from '../../src/pki/pkcs12.js'
import { coapDeviceKey } from '../../src/pki/device-certs.js'
import { createCertificate, createCrl, keyToPem, newKeyPair, parseCrl, parseCsr, serialOf } from '../../src/pki/x509.js'
import { tempDir } from '../helpers/temp.js'

const dir = tempDir(t, 'iotgw-pki-')
const ca = newKeyPair()
const caCert = createCertificate({ subject: { CN: 'test CA' }, publicKey: ca.publicKey, selfKey: ca.privateKey, days: 30, ca: true })
const dev = newKeyPair()
const devCert = createCertificate({ subject: { CN: 'sensor-1' }, publicKey: dev.publicKey, issuer: { cert: caCert, key: ca.privateKey }, days: 30, clientAuth: true })

t.test('PKCS#12 with an EC key: OpenSSL verifies its MAC and reads key and chain; Node TLS loads it', async t => {
  const p12 = createPkcs12({ key: dev.privateKey, cert: devCert, chain: [caCert], password: 'pässwort-1', friendlyName: 'sensor-1' })
  const file = join(dir, 'd.p12')
  writeFileSync(file, p12)
  const out = execFileSync('openssl', ['pkcs12', '-in', file, '-passin', 'pass:pässwort-1', '-nodes', '-info'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  t.match(out, /subject=CN = sensor-1/)
  t.match(out, /subject=CN = test CA/)
  t.match(out, /friendlyName: sensor-1/)
  t.match(out, /BEGIN PRIVATE KEY/)
  const keyOut = out.slice(out.indexOf('-----BEGIN PRIVATE KEY-----'), out.indexOf('-----END PRIVATE KEY-----') + 25)
  t.equal(keyOut.trim(), keyToPem(dev.privateKey).trim(), 'the same key comes back')
  t.throws(() => execFileSync('openssl', ['pkcs12', '-in', file, '-passin', 'pass:wrong', '-noout'], { stdio: 'ignore' }), 'a wrong password fails the MAC')
  t.doesNotThrow(() => createSecureContext({ pfx: p12, passphrase: 'pässwort-1' }), 'Node TLS loads it')
  t.throws(() => createPkcs12({ key: dev.privateKey, cert: devCert, password: '', friendlyName: 'x' }), /must not be empty/)
})

t.test('CSRs made by OpenSSL parse and verify; a tampered one does not', async t => {
  const base = join(dir, 'r')
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', `${base}.key`, '-subj', '/CN=dev-7/O=acme', '-out', `${base}.csr`], { stdio: 'ignore' })
  const text = (await import('node:fs')).readFileSync(`${base}.csr`, 'utf8')
  const csr = parseCsr(text)
  t.same(csr.subject, { CN: 'dev-7', O: 'acme' })
  t.equal(csr.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1')
  const der = Buffer.from(text.replace(/-----[^-]+-----|\s/g, ''), 'base64')
  const at = der.indexOf(Buffer.from('dev-7'))
  der[at + 4] = '8'.charCodeAt(0)
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE REQUEST-----\n`
  t.throws(() => parseCsr(tampered), /does not verify/)
})

t.test('CRL: parseCrl reads what createCrl writes, and OpenSSL agrees', async t => {
  const serials = [serialOf(devCert), '00ab12', 'ff01']
  const crl = createCrl({ cert: caCert, key: ca.privateKey }, serials.map((serial, i) => ({ serial, revokedAt: Date.now() - i * 1000 })), 7)
  const p = parseCrl(crl)
  t.equal(p.crlNumber, 7)
  t.same(p.serials, [serialOf(devCert).replace(/^0+/, ''), 'ab12', 'ff01'])
  t.ok(p.nextUpdate! > Date.now() + 300 * 86400_000)
  writeFileSync(join(dir, 'crl.pem'), crl)
  writeFileSync(join(dir, 'ca.crt'), caCert)
  writeFileSync(join(dir, 'dev.crt'), devCert)
  const text = execFileSync('openssl', ['crl', '-in', join(dir, 'crl.pem'), '-noout', '-text'], { encoding: 'utf8' })
  t.match(text, /CRL Number: \n\s+7/)
  t.throws(() => execFileSync('openssl', ['verify', '-crl_check', '-CAfile', join(dir, 'ca.crt'), '-CRLfile', join(dir, 'crl.pem'), join(dir, 'dev.crt')], { stdio: 'pipe' }), 'OpenSSL sees the certificate revoked')
})

t.test('CoAP keys are per device and per certificate', async t => {
  const master = Buffer.alloc(32, 7)
  const k = coapDeviceKey(master, 'a', 'ab')
  t.equal(k.length, 32)
  t.not(k.toString('hex'), coapDeviceKey(master, 'b', 'ab').toString('hex'), 'another device, another key')
  t.not(k.toString('hex'), coapDeviceKey(master, 'a', 'ac').toString('hex'), 're-enrolment (new serial), new key')
  t.equal(k.toString('hex'), coapDeviceKey(master, 'a', 'AB').toString('hex'), 'serial case does not matter')
})
