import { createHash, createHmac, randomBytes, type KeyObject, X509Certificate } from 'node:crypto'
import forge from 'node-forge'
import { PkiError } from '../lib/errors.js'

/**
 * PKCS#12 (RFC 7292) for EC keys. node-forge writes PKCS#12 only for RSA keys (its key bag encoder
 * and certificate parser know RSA alone), so the container is assembled here from parts that are
 * each standard and made by OpenSSL through Node's crypto:
 *  - the key: a pkcs8ShroudedKeyBag holding Node's encrypted PKCS#8 export (PBES2, PBKDF2 with
 *    HMAC-SHA256, AES-256-CBC; OpenSSL 3's own default for `openssl pkcs12 -export`);
 *  - the certificates (device, then CA): certBags in an unencrypted SafeContents (they are public);
 *  - integrity: an HMAC-SHA256 MAC with the PKCS#12 key derivation (RFC 7292 appendix B).
 * `openssl pkcs12 -info` and Node's TLS (`pfx`) read the result; a unit test checks both.
 */
const { asn1, util } = forge
const T = asn1.Type
const U = asn1.Class.UNIVERSAL
const CTX = asn1.Class.CONTEXT_SPECIFIC

const OID = {
  data: '1.2.840.113549.1.7.1',
  keyBag: '1.2.840.113549.1.12.10.1.2',
  certBag: '1.2.840.113549.1.12.10.1.3',
  x509Certificate: '1.2.840.113549.1.9.22.1',
  friendlyName: '1.2.840.113549.1.9.20',
  localKeyId: '1.2.840.113549.1.9.21',
  sha256: '2.16.840.1.101.3.4.2.1'
}

const bin = (b: Buffer): string => b.toString('binary')
const der = (node: forge.asn1.Asn1): Buffer => Buffer.from(asn1.toDer(node).getBytes(), 'binary')
const fromDer = (b: Buffer): forge.asn1.Asn1 => asn1.fromDer(util.createBuffer(bin(b)))
const seq = (v: forge.asn1.Asn1[]): forge.asn1.Asn1 => asn1.create(U, T.SEQUENCE, true, v)
const set = (v: forge.asn1.Asn1[]): forge.asn1.Asn1 => asn1.create(U, T.SET, true, v)
const oid = (o: string): forge.asn1.Asn1 => asn1.create(U, T.OID, false, asn1.oidToDer(o).getBytes())
const octets = (b: Buffer): forge.asn1.Asn1 => asn1.create(U, T.OCTETSTRING, false, bin(b))
const explicit0 = (v: forge.asn1.Asn1): forge.asn1.Asn1 => asn1.create(CTX, 0, true, [v])
const integer = (n: number): forge.asn1.Asn1 => asn1.create(U, T.INTEGER, false, asn1.integerToDer(n).getBytes())

/** The password as a BMPString (UTF-16BE) with a two-byte terminator, as the PKCS#12 KDF wants it. */
function bmpPassword (password: string): Buffer {
  const b = Buffer.alloc(password.length * 2 + 2)
  for (let i = 0; i < password.length; i++) b.writeUInt16BE(password.charCodeAt(i), i * 2)
  return b
}

/** RFC 7292 appendix B.2 with SHA-256 (u = 32, v = 64). id 3 = MAC key. */
export function pkcs12Kdf (password: string, salt: Buffer, id: number, iterations: number, length: number): Buffer {
  const u = 32
  const v = 64
  const fill = (src: Buffer): Buffer => {
    if (src.length === 0) return Buffer.alloc(0)
    const out = Buffer.alloc(v * Math.ceil(src.length / v))
    for (let i = 0; i < out.length; i++) out[i] = src[i % src.length]!
    return out
  }
  const I = Buffer.concat([fill(salt), fill(bmpPassword(password))])
  const D = Buffer.alloc(v, id)
  const out: Buffer[] = []
  for (let produced = 0; produced < length; produced += u) {
    let A = createHash('sha256').update(D).update(I).digest()
    for (let r = 1; r < iterations; r++) A = createHash('sha256').update(A).digest()
    out.push(A)
    const B = Buffer.alloc(v)
    for (let i = 0; i < v; i++) B[i] = A[i % u]!
    for (let j = 0; j < I.length; j += v) {
      let carry = 1
      for (let k = v - 1; k >= 0; k--) {
        const sum = I[j + k]! + B[k]! + carry
        I[j + k] = sum & 0xff
        carry = sum >> 8
      }
    }
  }
  return Buffer.concat(out).subarray(0, length)
}

/** forge encodes a BMPSTRING's JS string as UTF-16BE itself. */
const bmpString = (s: string): forge.asn1.Asn1 => asn1.create(U, T.BMPSTRING, false, s)

const attributes = (friendlyName: string, localKeyId: Buffer): forge.asn1.Asn1 => set([
  seq([oid(OID.friendlyName), set([bmpString(friendlyName)])]),
  seq([oid(OID.localKeyId), set([octets(localKeyId)])])
])

const dataContentInfo = (content: Buffer): forge.asn1.Asn1 => seq([oid(OID.data), explicit0(octets(content))])

export interface Pkcs12Input {
  key: KeyObject
  cert: string
  /** Further certificates (the CA), without a key. */
  chain?: string[]
  password: string
  friendlyName: string
  /** PBKDF2 and MAC iterations. */
  iterations?: number
}

export function createPkcs12 (o: Pkcs12Input): Buffer {
  if (o.password === '') throw new PkiError('GW_ERR_PKI_PKCS12', 'a PKCS#12 password must not be empty')
  const iterations = o.iterations ?? 10000
  const certDer = new X509Certificate(o.cert).raw
  const localKeyId = createHash('sha1').update(certDer).digest()
  const shrouded = o.key.export({ type: 'pkcs8', format: 'der', cipher: 'aes-256-cbc', passphrase: o.password })
  const keyBag = seq([oid(OID.keyBag), explicit0(fromDer(shrouded)), attributes(o.friendlyName, localKeyId)])
  const certBag = (d: Buffer, attrs?: forge.asn1.Asn1): forge.asn1.Asn1 =>
    seq([oid(OID.certBag), explicit0(seq([oid(OID.x509Certificate), explicit0(octets(d))])), ...(attrs ? [attrs] : [])])
  const certs = seq([certBag(certDer, attributes(o.friendlyName, localKeyId)), ...(o.chain ?? []).map(c => certBag(new X509Certificate(c).raw))])
  const authSafe = der(seq([dataContentInfo(der(certs)), dataContentInfo(der(seq([keyBag])))]))
  const salt = randomBytes(16)
  const macKey = pkcs12Kdf(o.password, salt, 3, iterations, 32)
  const mac = createHmac('sha256', macKey).update(authSafe).digest()
  const macData = seq([
    seq([seq([oid(OID.sha256), asn1.create(U, T.NULL, false, '')]), octets(mac)]),
    octets(salt),
    integer(iterations)
  ])
  return der(seq([integer(3), dataContentInfo(authSafe), macData]))
}
