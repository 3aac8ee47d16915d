import { createHash, createHmac, X509Certificate, type KeyObject } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { issueAt, type ClockOptions } from '../clock/clock.js'
import { PkiError } from '../lib/errors.js'
import { loadIssuer, pkiPaths } from './pki.js'
import { createCertificate, normalSerial, serialOf } from './x509.js'

/** Where the CoAP master secret lives: beside the CA key, 0600 (made by `pki init`). */
export const coapMasterPath = (pkiDir: string): string => pkiPaths(pkiDir).coapMaster

export function readCoapMaster (pkiDir: string): Buffer | undefined {
  const file = coapMasterPath(pkiDir)
  if (!existsSync(file)) return undefined
  const hex = readFileSync(file, 'utf8').trim()
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new PkiError('GW_ERR_PKI_COAP_MASTER', `${file} is not 32 bytes of hex`)
  return Buffer.from(hex, 'hex')
}

/**
 * A device's CoAP key: HMAC-SHA256(master, label || id || serial of its current certificate). Derived,
 * not stored: the database holds no secret, and a new enrolment (new serial) gives a new key, so a
 * revoked device's old key never works again even under the same id.
 */
export function coapDeviceKey (master: Buffer, id: string, serial: string): Buffer {
  return createHmac('sha256', master).update(`iot-gateway coap key v1\0${id}\0${serial.toLowerCase()}`).digest()
}

export interface IssuedCert { cert: string, serial: string, notAfter: number, fingerprint: string }

/**
 * A device (client) certificate from the gateway's CA: CN = device id, clientAuth, ECDSA-SHA256.
 * Refused (GW_ERR_PKI_CLOCK_BEHIND) while the clock is unsynchronised and earlier than the latest
 * known time: see clock/clock.ts.
 */
export function issueDeviceCert (pkiDir: string, id: string, publicKey: KeyObject, days: number, clock?: ClockOptions): IssuedCert {
  const p = pkiPaths(pkiDir)
  if (!existsSync(p.caKey)) throw new PkiError('GW_ERR_PKI_NO_CA', `no CA in ${pkiDir}: run \`iot-gateway pki init\` first`)
  const cert = issueAt(dirname(pkiDir), `a certificate for "${id}"`, now => createCertificate({ subject: { CN: id }, publicKey, issuer: loadIssuer(p), days, clientAuth: true, now }), clock)
  const x = new X509Certificate(cert)
  return { cert, serial: normalSerial(serialOf(cert)), notAfter: Date.parse(x.validTo), fingerprint: createHash('sha256').update(x.raw).digest('hex') }
}
