import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { createPrivateKey, randomBytes } from 'node:crypto'
import { dirname, join } from 'node:path'
import { writeFileAtomic } from '../lib/atomic-file.js'
import { assertMayIssue, crlAt, recordLatestKnown, type ClockOptions } from '../clock/clock.js'
import { createCertificate, createCrl, keyToPem, newKeyPair, type Issuer, type Revoked } from './x509.js'

export interface PkiPaths { dir: string, caCert: string, caKey: string, brokerCert: string, brokerKey: string, gatewayCert: string, gatewayKey: string, crl: string, coapMaster: string }

export const pkiPaths = (dir: string): PkiPaths => ({
  dir,
  caCert: join(dir, 'ca.crt'),
  caKey: join(dir, 'ca.key'),
  brokerCert: join(dir, 'broker.crt'),
  brokerKey: join(dir, 'broker.key'),
  gatewayCert: join(dir, 'gateway.crt'),
  gatewayKey: join(dir, 'gateway.key'),
  crl: join(dir, 'crl.pem'),
  /** Secret from which each device's CoAP key is derived (see device-certs.ts). */
  coapMaster: join(dir, 'coap-master.key')
})

/** Writes a file atomically (temp, fsync, rename, fsync of the directory; lib/atomic-file.ts): a power cut leaves the old or the new file, never half of one. */
export const writeAtomic = (file: string, data: string, mode: number): void => writeFileAtomic(file, data, mode)

export interface PkiInitOptions {
  gatewayId: string
  /** Names and addresses devices use to reach the broker (its certificate's SANs). */
  brokerNames: { dns: string[], ip: string[] }
  caDays?: number
  certDays?: number
  /** Tests inject the time-sync flag and the clock. */
  clock?: ClockOptions
}

export interface PkiInitResult { created: string[] }

/** The data directory of a PKI directory (`<dataDir>/pki`): where the latest known time lives. */
const dataDirOf = (pkiDir: string): string => dirname(pkiDir)

/**
 * First boot: the gateway's local device CA, the broker's server certificate, the gateway's own MQTT
 * client certificate, an empty CRL and the CoAP master secret. Idempotent: what exists is kept, so a second run changes
 * nothing. Private keys are 0600, certificates and the CRL 0644 (the broker reads them).
 */
export function initPki (dir: string, o: PkiInitOptions): PkiInitResult {
  const p = pkiPaths(dir)
  mkdirSync(dir, { recursive: true, mode: 0o750 })
  const created: string[] = []
  const missing = [p.caCert, p.caKey, p.brokerCert, p.brokerKey, p.gatewayCert, p.gatewayKey, p.crl].filter(f => !existsSync(f))
  // Only when something is to be dated: an existing identity is kept whatever the clock says.
  const now = missing.length > 0 ? assertMayIssue(dataDirOf(dir), 'the gateway\'s certificates', o.clock) : Date.now()
  if (!existsSync(p.caCert) || !existsSync(p.caKey)) {
    const k = newKeyPair()
    writeAtomic(p.caKey, keyToPem(k.privateKey), 0o600)
    writeAtomic(p.caCert, createCertificate({ subject: { CN: `${o.gatewayId} device CA`, O: 'iot-gateway' }, publicKey: k.publicKey, selfKey: k.privateKey, days: o.caDays ?? 7300, ca: true, now }), 0o644)
    created.push(p.caCert)
  }
  const ca = loadIssuer(p)
  const leaf = (cert: string, key: string, make: (pub: ReturnType<typeof newKeyPair>['publicKey']) => string, keyMode = 0o600): void => {
    if (existsSync(cert) && existsSync(key)) return
    const k = newKeyPair()
    writeAtomic(key, keyToPem(k.privateKey), keyMode)
    writeAtomic(cert, make(k.publicKey), 0o644)
    created.push(cert)
  }
  // 0640: Mosquitto reads the broker key through the group of the (setgid) pki directory.
  leaf(p.brokerCert, p.brokerKey, publicKey => createCertificate({ subject: { CN: 'iot-gateway broker' }, publicKey, issuer: ca, days: o.certDays ?? 3650, serverNames: o.brokerNames, now }), 0o640)
  leaf(p.gatewayCert, p.gatewayKey, publicKey => createCertificate({ subject: { CN: o.gatewayId }, publicKey, issuer: ca, days: o.certDays ?? 3650, clientAuth: true, now }))
  if (!existsSync(p.crl)) {
    writeAtomic(p.crl, createCrl(ca, [], 1, undefined, now), 0o644)
    created.push(p.crl)
  }
  if (missing.length > 0) recordLatestKnown(dataDirOf(dir), { ...o.clock, now: () => now })
  if (!existsSync(p.coapMaster)) {
    writeAtomic(p.coapMaster, randomBytes(32).toString('hex') + '\n', 0o600)
    created.push(p.coapMaster)
  }
  return { created }
}

export function loadIssuer (p: PkiPaths): Issuer {
  return { cert: readFileSync(p.caCert, 'utf8'), key: createPrivateKey(readFileSync(p.caKey)) }
}

/** Dated by crlAt: never refused for the clock's sake, never dated before the latest known time. */
export function writeCrl (p: PkiPaths, revoked: readonly Revoked[], crlNumber: number, clock?: ClockOptions): void {
  crlAt(dataDirOf(p.dir), now => writeAtomic(p.crl, createCrl(loadIssuer(p), revoked, crlNumber, undefined, now), 0o644), clock)
}
