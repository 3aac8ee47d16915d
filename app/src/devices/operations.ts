import { createPublicKey, randomBytes, X509Certificate } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { AuditLog } from '../audit/audit.js'
import { writeAcl } from '../broker/broker-files.js'
import { paths } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { DEVICE_ID_PATTERN, deviceIdProblem } from './device-id.js'
import { PkiError, UsageError } from '../lib/errors.js'
import { coapDeviceKey, issueDeviceCert, readCoapMaster } from '../pki/device-certs.js'
import { createPkcs12 } from '../pki/pkcs12.js'
import { pkiPaths, writeAtomic, writeCrl } from '../pki/pki.js'
import { keyToPem, newKeyPair, normalSerial, parseCrl, parseCsr } from '../pki/x509.js'
import type { DeviceRegistry } from './registry.js'

export interface DeviceContext { config: Config, registry: DeviceRegistry, audit: AuditLog }

/** Why an id cannot be a device id, or undefined if it can. */
function checkNew (ctx: DeviceContext, id: string): void {
  const problem = deviceIdProblem(id, ctx.config.gateway.id)
  if (problem) throw new UsageError(problem)
  const d = ctx.registry.get(id)
  if (d && d.certSerial !== null && d.status !== 'revoked') {
    throw new UsageError(`device "${id}" is already enrolled (certificate ${d.certSerial}, status ${d.status}); revoke it first to enrol it again`)
  }
}

const pkiDir = (c: Config): string => paths(c).pkiDir

/** The device's current CoAP key (hex), derived from the master secret and its certificate serial. */
export function coapKeyHex (config: Config, id: string, serial: string): string {
  const master = readCoapMaster(pkiDir(config))
  if (!master) throw new PkiError('GW_ERR_PKI_COAP_MASTER', `no CoAP master secret in ${pkiDir(config)}: run \`iot-gateway pki init\``)
  return coapDeviceKey(master, id, serial).toString('hex')
}

export interface EnrolResult { id: string, serial: string, notAfter: string, files: Record<string, string> }

function writeNew (file: string, data: string | Buffer, mode: number): void {
  if (existsSync(file)) throw new UsageError(`${file} exists; not overwriting it`)
  writeFileSync(file, data, { mode, flag: 'wx' })
}

/**
 * `device enroll`: for a device that cannot make its own key. The gateway makes a P-256 key and a
 * certificate and writes the bundle (PEM key 0600, certificate, CA, PKCS#12 0600 with a random
 * password in its own 0600 file, CoAP key 0600) into outDir. The private key is not kept.
 */
export function enrolDevice (ctx: DeviceContext, id: string, outDir: string, opts: { p12Password?: string } = {}): EnrolResult {
  checkNew(ctx, id)
  mkdirSync(outDir, { recursive: true, mode: 0o700 })
  const files = {
    key: join(outDir, `${id}.key`),
    cert: join(outDir, `${id}.crt`),
    ca: join(outDir, 'ca.crt'),
    p12: join(outDir, `${id}.p12`),
    p12Password: join(outDir, `${id}.p12.pass`),
    coapKey: join(outDir, `${id}.coap-key`)
  }
  for (const f of [files.key, files.cert, files.p12, files.p12Password, files.coapKey]) if (existsSync(f)) throw new UsageError(`${f} exists; not overwriting it`)
  const k = newKeyPair()
  const issued = issueDeviceCert(pkiDir(ctx.config), id, k.publicKey, ctx.config.devices.certDays)
  const caPem = readFileSync(pkiPaths(pkiDir(ctx.config)).caCert, 'utf8')
  const password = opts.p12Password ?? randomBytes(18).toString('base64url')
  writeNew(files.key, keyToPem(k.privateKey), 0o600)
  writeNew(files.cert, issued.cert, 0o644)
  writeFileSync(files.ca, caPem, { mode: 0o644 })
  writeNew(files.p12, createPkcs12({ key: k.privateKey, cert: issued.cert, chain: [caPem], password, friendlyName: id }), 0o600)
  writeNew(files.p12Password, password + '\n', 0o600)
  writeNew(files.coapKey, coapKeyHex(ctx.config, id, issued.serial) + '\n', 0o600)
  ctx.registry.enrol(id, issued, 'generated')
  ctx.audit.record({ type: 'device_enrolled', device: id, source: 'cli', detail: { method: 'generated', serial: issued.serial, notAfter: new Date(issued.notAfter).toISOString() } })
  return { id, serial: issued.serial, notAfter: new Date(issued.notAfter).toISOString(), files }
}

/** Key types a CSR may carry: P-256 (the design's choice), P-384, RSA of 2048 bits or more. */
function keyProblem (csrKey: ReturnType<typeof createPublicKey>): string | undefined {
  const d = csrKey.asymmetricKeyDetails ?? {}
  if (csrKey.asymmetricKeyType === 'ec') return d.namedCurve === 'prime256v1' || d.namedCurve === 'secp384r1' ? undefined : `EC curve ${d.namedCurve ?? '?'} is not accepted (use P-256)`
  if (csrKey.asymmetricKeyType === 'rsa') return (d.modulusLength ?? 0) >= 2048 ? undefined : `RSA key of ${d.modulusLength ?? 0} bits is too short (use P-256)`
  return `key type ${csrKey.asymmetricKeyType ?? '?'} is not accepted (use P-256)`
}

export interface SignResult { id: string, serial: string, notAfter: string, cert: string, coapKey: string }

/** `device sign-csr`: for a device that made its own key. The CSR's CN must be a valid device id. */
export function signCsr (ctx: DeviceContext, csrText: string): SignResult {
  const csr = parseCsr(csrText)
  const id = csr.subject.CN
  const problem = deviceIdProblem(id, ctx.config.gateway.id)
  if (problem) throw new UsageError(`the request's CN is refused: ${problem}`)
  const kp = keyProblem(csr.publicKey)
  if (kp) throw new UsageError(`the request's key is refused: ${kp}`)
  checkNew(ctx, id)
  const issued = issueDeviceCert(pkiDir(ctx.config), id, csr.publicKey, ctx.config.devices.certDays)
  ctx.registry.enrol(id, issued, 'csr')
  ctx.audit.record({ type: 'device_enrolled', device: id, source: 'cli', detail: { method: 'csr', serial: issued.serial, notAfter: new Date(issued.notAfter).toISOString() } })
  return { id, serial: issued.serial, notAfter: new Date(issued.notAfter).toISOString(), cert: issued.cert, coapKey: coapKeyHex(ctx.config, id, issued.serial) }
}

/**
 * Brings the broker's files in line with the registry: the CRL lists every revoked serial (re-issued
 * with a new number when that set changed, or when it expires within 30 days) and the ACL denies
 * revoked devices. Files are only rewritten when their content changes, so the path unit that
 * reloads Mosquitto fires only then. Returns what it wrote.
 */
export function syncBrokerFiles (ctx: DeviceContext, force = false): { crl: boolean, acl: boolean, crlNumber: number | null } {
  const c = ctx.config
  const p = pkiPaths(pkiDir(c))
  const revoked = ctx.registry.revokedSerials().map(r => ({ serial: normalSerial(r.serial), revokedAt: r.revokedAt }))
  let crl = false
  let crlNumber: number | null = null
  let current: ReturnType<typeof parseCrl> | undefined
  try { current = parseCrl(readFileSync(p.crl, 'utf8')) } catch { current = undefined }
  const want = new Set(revoked.map(r => r.serial))
  const same = current !== undefined && current.serials.length === want.size && current.serials.every(s => want.has(normalSerial(s)))
  const fresh = current?.nextUpdate != null && current.nextUpdate > Date.now() + 30 * 86400_000
  if (force || !same || !fresh) {
    crlNumber = ctx.registry.nextCrlNumber()
    if (current?.crlNumber != null && crlNumber <= current.crlNumber) crlNumber = current.crlNumber + 1
    writeCrl(p, revoked, crlNumber)
    crl = true
  }
  const acl = writeAcl(c.gateway.dataDir, { gatewayId: c.gateway.id, streams: c.mqtt.streams, revoked: ctx.registry.revokedDevices() })
  return { crl, acl, crlNumber }
}

export interface RevokeResult { id: string, serials: string[], crlNumber: number | null, aclChanged: boolean }

/** `device revoke`: registry first (the daemon's gate drops the device's messages at once), then the CRL and the ACL (the broker reloads them). */
export function revokeDevice (ctx: DeviceContext, id: string, reason: string): RevokeResult {
  if (!DEVICE_ID_PATTERN.test(id)) throw new UsageError(deviceIdProblem(id, ctx.config.gateway.id) ?? 'bad device id')
  if (id === ctx.config.gateway.id) throw new UsageError('the gateway\'s own certificate is not revoked with `device revoke`')
  const d = ctx.registry.get(id)
  if (!d) throw new UsageError(`no device "${id}"`)
  if (d.status === 'revoked') throw new UsageError(`device "${id}" is already revoked`)
  const serials = ctx.registry.revoke(id, reason)
  const files = syncBrokerFiles(ctx, true)
  ctx.audit.record({ type: 'device_revoked', device: id, source: 'cli', detail: { reason, serials, crlNumber: files.crlNumber } })
  return { id, serials, crlNumber: files.crlNumber, aclChanged: files.acl }
}

/** `device release`: a quarantined device is active again (its held messages go through the checks again, or are discarded). */
export function releaseDevice (ctx: DeviceContext, id: string, discard: boolean): { id: string, held: number, discarded: number } {
  const d = ctx.registry.get(id)
  if (!d) throw new UsageError(`no device "${id}"`)
  if (d.status !== 'quarantined') throw new UsageError(`device "${id}" is ${d.status}, not quarantined`)
  const discarded = discard ? ctx.registry.dropHeld(id) : 0
  ctx.registry.release(id)
  ctx.audit.record({ type: 'device_released', device: id, source: 'cli', detail: { held: d.held, discarded, scoreBefore: d.trustScore } })
  return { id, held: d.held - discarded, discarded }
}

/** Checks a PEM certificate was issued to `id` (for tests and `device show`). */
export const certMatches = (pem: string, id: string): boolean => new X509Certificate(pem).subject.split('\n').includes(`CN=${id}`)

export { writeAtomic }
