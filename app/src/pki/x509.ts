import { createHash, createPublicKey, generateKeyPairSync, randomBytes, sign, verify, X509Certificate, type KeyObject } from 'node:crypto'
import forge from 'node-forge'
import { PkiError } from '../lib/errors.js'

/**
 * X.509 with ECDSA P-256. node-forge builds and parses the ASN.1 structures (names, extensions,
 * certificates, CRLs, CSRs); forge's own signer only knows RSA, so the signatures and the keys come
 * from Node's crypto. P-256 because a TLS handshake with it costs a Cortex-A53 a fraction of RSA-2048.
 */
const { asn1, pki, util } = forge
// Two forge functions that its type definitions leave out.
const pkiExtra = pki as unknown as {
  certificateExtensionsToAsn1: (exts: unknown[]) => forge.asn1.Asn1
  RDNAttributesAsArray: (rdn: forge.asn1.Asn1) => Array<{ shortName?: string, value: unknown }>
}
const T = asn1.Type
const U = asn1.Class.UNIVERSAL
const OID_ECDSA_SHA256 = '1.2.840.10045.4.3.2'
const OID_SKI = '2.5.29.14'
const OID_AKI = '2.5.29.35'
const OID_CRL_NUMBER = '2.5.29.20'
const OID_CRL_REASON = '2.5.29.21'

/**
 * How far back notBefore (certificates) and thisUpdate (CRLs) are dated. A Pi 3 has no RTC: after a
 * reboot its clock starts at the last saved time (or at systemd's build time) and is behind until NTP
 * syncs, which on a site that blocks UDP 123 never happens. OpenSSL refuses a certificate or CRL that
 * is "not yet valid", and Mosquitto requires the CRL, so a CRL dated "now" cut off every device after
 * a two-hour skew. 60 days covers a box that was off (or shelved) for two months and a clock that ran
 * ahead by as much when something was issued. See docs/time.md.
 */
export const BACKDATE_DAYS = 60
/**
 * A CRL's validity. OpenSSL refuses an expired CRL and Mosquitto then refuses everyone, so a clock
 * that runs a year ahead must not expire it: ten years, the device certificates' default lifetime.
 * The CRL is re-issued when its revocations change (and, as before, 30 days before it expires), not
 * daily: a CRL issued while the clock is wrong would carry the wrong dates.
 */
export const CRL_DAYS = 3650
const DAY_MS = 86400_000

export interface Name { CN: string, O?: string }
export interface Issuer { cert: string, key: KeyObject }

export interface CertOptions {
  subject: Name
  publicKey: KeyObject
  /** Absent: self-signed with `selfKey`. */
  issuer?: Issuer
  selfKey?: KeyObject
  days: number
  /** The issuing time (default: the clock); notBefore is BACKDATE_DAYS before it. */
  now?: number
  ca?: boolean
  serverNames?: { dns?: string[], ip?: string[] }
  clientAuth?: boolean
}

export const newKeyPair = (): { privateKey: KeyObject, publicKey: KeyObject } =>
  generateKeyPairSync('ec', { namedCurve: 'P-256' })

export const keyToPem = (k: KeyObject): string => k.export({ type: 'pkcs8', format: 'pem' }).toString()

/** Positive 16-byte serial, as hex. */
export const newSerial = (): string => { const b = randomBytes(16); b[0] = b[0]! & 0x7f | 0x10; return b.toString('hex') }

const der = (node: forge.asn1.Asn1): Buffer => Buffer.from(asn1.toDer(node).getBytes(), 'binary')
const fromDer = (b: Buffer): forge.asn1.Asn1 => asn1.fromDer(util.createBuffer(b.toString('binary')))
const seq = (v: forge.asn1.Asn1[]): forge.asn1.Asn1 => asn1.create(U, T.SEQUENCE, true, v)
const oid = (o: string): forge.asn1.Asn1 => asn1.create(U, T.OID, false, asn1.oidToDer(o).getBytes())
const integerHex = (hex: string): forge.asn1.Asn1 => asn1.create(U, T.INTEGER, false, util.hexToBytes(hex))
/** A DER INTEGER's content for a non-negative hex number: even length, high bit clear. */
export function positiveHex (hex: string): string {
  let h = hex.toLowerCase().replace(/^0+(?=.)/, '')
  if (h.length % 2 === 1) h = '0' + h
  return /^[89a-f]/.test(h) ? '00' + h : h
}
const integerNum = (n: number): forge.asn1.Asn1 => asn1.create(U, T.INTEGER, false, asn1.integerToDer(n).getBytes())
const time = (d: Date): forge.asn1.Asn1 => d.getUTCFullYear() < 2050
  ? asn1.create(U, T.UTCTIME, false, asn1.dateToUtcTime(d))
  : asn1.create(U, T.GENERALIZEDTIME, false, asn1.dateToGeneralizedTime(d))
const ecdsaAlg = (): forge.asn1.Asn1 => seq([oid(OID_ECDSA_SHA256)]) // parameters absent (RFC 5758)

function dn (name: Name): forge.asn1.Asn1 {
  const c = pki.createCertificate()
  c.setSubject([{ shortName: 'CN', value: name.CN }, ...(name.O !== undefined ? [{ shortName: 'O', value: name.O }] : [])])
  return pki.distinguishedNameToAsn1(c.subject)
}

/** RFC 5280 §4.2.1.2 method 1: SHA-1 of the subjectPublicKey bits. */
export function keyIdentifier (publicKey: KeyObject): Buffer {
  const spki = fromDer(publicKey.export({ type: 'spki', format: 'der' }))
  const bits = (spki.value as forge.asn1.Asn1[])[1]!.value as string
  return createHash('sha1').update(Buffer.from(bits.slice(1), 'binary')).digest()
}

function signed (tbs: forge.asn1.Asn1, key: KeyObject): Buffer {
  const tbsDer = der(tbs)
  const sig = sign('sha256', tbsDer, key)
  return der(seq([tbs, ecdsaAlg(), asn1.create(U, T.BITSTRING, false, '\x00' + sig.toString('binary'))]))
}

const pem = (type: string, body: Buffer): string => forge.pem.encode({ type, body: body.toString('binary') }, { maxline: 64 }).replace(/\r\n/g, '\n')
const unpem = (text: string, type: string): Buffer => {
  const msg = forge.pem.decode(text).find(m => m.type === type)
  if (!msg) throw new PkiError('GW_ERR_PKI_PEM', `no ${type} block found`)
  return Buffer.from(msg.body, 'binary')
}

export function createCertificate (o: CertOptions): string {
  const now = o.now ?? Date.now()
  const notBefore = new Date(now - BACKDATE_DAYS * DAY_MS)
  const notAfter = new Date(now + o.days * DAY_MS)
  const issuerCert = o.issuer ? new X509Certificate(o.issuer.cert) : undefined
  const signingKey = o.issuer?.key ?? o.selfKey
  if (!signingKey) throw new PkiError('GW_ERR_PKI_ISSUER', 'a certificate needs an issuer or a key to sign itself')
  const issuerPublic = issuerCert ? issuerCert.publicKey : createPublicKey(signingKey)
  const issuerName = issuerCert ? fromDer(issuerSubjectDer(issuerCert)) : dn(o.subject)

  const tmp = pki.createCertificate()
  const exts: Array<Record<string, unknown>> = [
    { name: 'basicConstraints', cA: o.ca === true, critical: true },
    o.ca === true
      ? { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true }
      : { name: 'keyUsage', digitalSignature: true, critical: true },
    { id: OID_SKI, value: asn1.create(U, T.OCTETSTRING, false, keyIdentifier(o.publicKey).toString('binary')) },
    { id: OID_AKI, value: seq([asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, false, keyIdentifier(issuerPublic).toString('binary'))]) }
  ]
  if (o.ca !== true) exts.push({ name: 'extKeyUsage', ...(o.serverNames ? { serverAuth: true } : {}), ...(o.clientAuth === true ? { clientAuth: true } : {}) })
  if (o.serverNames) {
    exts.push({
      name: 'subjectAltName',
      altNames: [...(o.serverNames.dns ?? []).map(value => ({ type: 2, value })), ...(o.serverNames.ip ?? []).map(ip => ({ type: 7, ip }))]
    })
  }
  tmp.setExtensions(exts)
  const tbs = seq([
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [integerNum(2)]),
    integerHex(newSerial()),
    ecdsaAlg(),
    issuerName,
    seq([time(notBefore), time(notAfter)]),
    dn(o.subject),
    fromDer(o.publicKey.export({ type: 'spki', format: 'der' })),
    pkiExtra.certificateExtensionsToAsn1(tmp.extensions)
  ])
  return pem('CERTIFICATE', signed(tbs, signingKey))
}

function issuerSubjectDer (c: X509Certificate): Buffer {
  // TBSCertificate: [0] version, serial, sigAlg, issuer, validity, subject, ...
  const tbs = (fromDer(c.raw).value as forge.asn1.Asn1[])[0]!
  return der((tbs.value as forge.asn1.Asn1[])[5]!)
}

export interface Revoked { serial: string, revokedAt: number }

/** A v2 CRL signed by the CA, with a CRL number; thisUpdate BACKDATE_DAYS before `now`, nextUpdate CRL_DAYS after it. */
export function createCrl (ca: Issuer, revoked: readonly Revoked[], crlNumber: number, days = CRL_DAYS, now = Date.now()): string {
  const caCert = new X509Certificate(ca.cert)
  const entries = revoked.map(r => seq([
    integerHex(positiveHex(r.serial)),
    time(new Date(r.revokedAt)),
    seq([seq([oid(OID_CRL_REASON), asn1.create(U, T.OCTETSTRING, false, asn1.toDer(asn1.create(U, T.ENUMERATED, false, '\x00')).getBytes())])])
  ]))
  const tbs = seq([
    integerNum(1),
    ecdsaAlg(),
    fromDer(issuerSubjectDer(caCert)),
    time(new Date(now - BACKDATE_DAYS * DAY_MS)),
    time(new Date(now + days * DAY_MS)),
    ...(entries.length > 0 ? [seq(entries)] : []),
    asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [seq([
      seq([oid(OID_AKI), asn1.create(U, T.OCTETSTRING, false, asn1.toDer(seq([asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, false, keyIdentifier(caCert.publicKey).toString('binary'))])).getBytes())]),
      seq([oid(OID_CRL_NUMBER), asn1.create(U, T.OCTETSTRING, false, asn1.toDer(integerNum(crlNumber)).getBytes())])
    ])])
  ])
  return pem('X509 CRL', signed(tbs, ca.key))
}

/** The bytes of the first element inside a DER SEQUENCE. */
function firstElement (seqDer: Buffer): Buffer {
  const header = (b: Buffer, at: number): { start: number, end: number } => {
    const first = b[at + 1]
    if (first === undefined) throw new PkiError('GW_ERR_PKI_CSR', 'truncated request')
    if (first < 0x80) return { start: at + 2, end: at + 2 + first }
    const n = first & 0x7f
    if (n === 0 || n > 4) throw new PkiError('GW_ERR_PKI_CSR', 'unsupported length in request')
    let len = 0
    for (let i = 0; i < n; i++) len = len * 256 + (b[at + 2 + i] ?? 0)
    return { start: at + 2 + n, end: at + 2 + n + len }
  }
  const outer = header(seqDer, 0)
  const inner = header(seqDer, outer.start)
  if (inner.end > outer.end) throw new PkiError('GW_ERR_PKI_CSR', 'malformed request')
  return seqDer.subarray(outer.start, inner.end)
}

export interface ParsedCsr { subject: Name, publicKey: KeyObject }

/** Parses a PKCS#10 request (any key type Node knows) and checks its self-signature. */
export function parseCsr (text: string): ParsedCsr {
  let node: forge.asn1.Asn1
  let raw: Buffer
  try {
    raw = unpem(text, 'CERTIFICATE REQUEST')
    // decodeBitStrings off: forge otherwise parses the signature's BIT STRING (a DER ECDSA-Sig-Value)
    // into ASN.1 children, and its bytes are lost.
    node = (asn1.fromDer as unknown as (b: forge.util.ByteStringBuffer, o: { decodeBitStrings: boolean }) => forge.asn1.Asn1)(util.createBuffer(raw.toString('binary')), { decodeBitStrings: false })
  } catch (err) {
    throw new PkiError('GW_ERR_PKI_CSR', `not a PEM certificate request: ${(err as Error).message}`)
  }
  const [info, alg, sigBits] = node.value as forge.asn1.Asn1[]
  if (!info || !alg || !sigBits) throw new PkiError('GW_ERR_PKI_CSR', 'malformed certificate request')
  const parts = info.value as forge.asn1.Asn1[]
  const subjectNode = parts[1]
  const spkiNode = parts[2]
  if (!subjectNode || !spkiNode) throw new PkiError('GW_ERR_PKI_CSR', 'malformed certificate request info')
  const publicKey = createPublicKey({ key: der(spkiNode), format: 'der', type: 'spki' })
  const algOid = asn1.derToOid(((alg.value as forge.asn1.Asn1[])[0]!.value as string))
  const hash = { '1.2.840.10045.4.3.2': 'sha256', '1.2.840.10045.4.3.3': 'sha384', '1.2.840.113549.1.1.11': 'sha256', '1.3.101.112': null } as Record<string, string | null>
  if (!(algOid in hash)) throw new PkiError('GW_ERR_PKI_CSR', `unsupported signature algorithm ${algOid}`)
  const sig = Buffer.from((sigBits.value as string).slice(1), 'binary')
  // The signature covers the request info exactly as received: re-encoding forge's parse of it does
  // not always give the same bytes (OpenSSL's requests did not verify that way).
  if (!verify(hash[algOid] ?? null, firstElement(raw), publicKey, sig)) throw new PkiError('GW_ERR_PKI_CSR', 'the request\'s signature does not verify')
  const attrs = pkiExtra.RDNAttributesAsArray(subjectNode)
  const cn = attrs.find(a => a.shortName === 'CN')?.value
  const o = attrs.find(a => a.shortName === 'O')?.value
  if (typeof cn !== 'string') throw new PkiError('GW_ERR_PKI_CSR', 'the request has no CN')
  return { subject: { CN: cn, ...(typeof o === 'string' ? { O: o } : {}) }, publicKey }
}

/** Serial number of a certificate, lower-case hex without leading zeros as OpenSSL prints it. */
export const serialOf = (certPem: string): string => new X509Certificate(certPem).serialNumber.toLowerCase()
export const commonNameOf = (certPem: string): string | undefined => /(?:^|\n)CN=([^\n]*)/.exec(new X509Certificate(certPem).subject)?.[1]

export interface ParsedCrl { crlNumber: number | null, thisUpdate: number, nextUpdate: number | null, serials: string[] }

const asn1Time = (n: forge.asn1.Asn1): number => (n.type === T.UTCTIME ? asn1.utcTimeToDate(n.value as string) : asn1.generalizedTimeToDate(n.value as string)).getTime()
const isTime = (n: forge.asn1.Asn1 | undefined): boolean => n !== undefined && n.tagClass === U && (n.type === T.UTCTIME || n.type === T.GENERALIZEDTIME)

/** Reads a PEM CRL (no signature check: it is our own file): its number, validity and revoked serials (lower-case hex, no leading zeros). */
export function parseCrl (text: string): ParsedCrl {
  const tbs = (fromDer(unpem(text, 'X509 CRL')).value as forge.asn1.Asn1[])[0]!.value as forge.asn1.Asn1[]
  let i = tbs[0]!.type === T.INTEGER && tbs[0]!.tagClass === U ? 1 : 0 // version
  i += 2 // signature algorithm, issuer
  const thisUpdate = asn1Time(tbs[i++]!)
  const nextUpdate = isTime(tbs[i]) ? asn1Time(tbs[i++]!) : null
  const serials: string[] = []
  const next = tbs[i]
  if (next && next.tagClass === U && next.type === T.SEQUENCE) {
    for (const entry of next.value as forge.asn1.Asn1[]) {
      const serial = util.bytesToHex((entry.value as forge.asn1.Asn1[])[0]!.value as string).replace(/^0+(?=.)/, '')
      serials.push(serial)
    }
    i++
  }
  let crlNumber: number | null = null
  const exts = tbs[i]
  if (exts && exts.tagClass === asn1.Class.CONTEXT_SPECIFIC) {
    for (const ext of ((exts.value as forge.asn1.Asn1[])[0]!.value as forge.asn1.Asn1[])) {
      const [id, ...rest] = ext.value as forge.asn1.Asn1[]
      if (asn1.derToOid(id!.value as string) === OID_CRL_NUMBER) {
        const inner = fromDer(Buffer.from(rest[rest.length - 1]!.value as string, 'binary'))
        crlNumber = parseInt(util.bytesToHex(inner.value as string), 16)
      }
    }
  }
  return { crlNumber, thisUpdate, nextUpdate, serials }
}

/** Serials as compared with a CRL: lower-case hex without leading zeros. */
export const normalSerial = (s: string): string => s.toLowerCase().replace(/^0+(?=.)/, '')
