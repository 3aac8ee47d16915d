import { createPrivateKey, createPublicKey, generateKeyPairSync } from 'node:crypto'
import { chmodSync, closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { WireguardError } from '../lib/errors.js'

/** PKCS#8 wrapping of a raw X25519 private key (RFC 8410): the only form Node's crypto imports. */
const PKCS8_X25519_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex')

const b64urlToBuf = (s: string): Buffer => Buffer.from(s, 'base64url')

/** A new private key, clamped as `wg genkey` clamps it, in wg's base64 form. */
export function generatePrivateKey (): string {
  const jwk = generateKeyPairSync('x25519').privateKey.export({ format: 'jwk' })
  const k = b64urlToBuf(jwk.d!)
  k[0]! &= 248
  k[31]! &= 127
  k[31]! |= 64
  return k.toString('base64')
}

/** Raw 32-byte key from wg's base64 form; anything else is refused. */
export function decodeKey (b64: string, what = 'key'): Buffer {
  const text = b64.trim()
  const k = Buffer.from(text, 'base64')
  if (k.length !== 32 || k.toString('base64') !== text) throw new WireguardError('GW_ERR_WIREGUARD_BAD_KEY', `${what} is not a WireGuard key (32 bytes in base64)`)
  return k
}

/** X25519 public key of a private key, as `wg pubkey` derives it (the scalar is clamped by X25519 itself). */
export function publicKeyOf (privateB64: string): string {
  const der = Buffer.concat([PKCS8_X25519_PREFIX, decodeKey(privateB64, 'private key')])
  const pub = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' })
  return b64urlToBuf(pub.x!).toString('base64')
}

export const defaultKeyFile = (dataDir: string): string => join(dataDir, 'wireguard', 'private.key')
export const publicKeyFileFor = (privateKeyFile: string): string => join(dirname(privateKeyFile), 'public.key')

export interface KeyInfo { privateKeyFile: string, publicKey: string, created: boolean }

/**
 * The gateway's WireGuard key on the data directory, made on first use: private.key (mode 0600,
 * directory 0700) and public.key (0644, so an unprivileged `wg pubkey` can print it). Creation is
 * exclusive (O_EXCL), so two first boots racing cannot end with two keys. The key is never logged.
 */
export function ensureKey (privateKeyFile: string): KeyInfo {
  const dir = dirname(privateKeyFile)
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  let created = false
  let priv: string
  try {
    const fd = openSync(privateKeyFile, 'wx', 0o600)
    priv = generatePrivateKey()
    try {
      writeSync(fd, priv + '\n')
      fsyncSync(fd)
    } finally { closeSync(fd) }
    chmodSync(privateKeyFile, 0o600)
    created = true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw new WireguardError('GW_ERR_WIREGUARD_KEY_WRITE', `cannot create ${privateKeyFile}: ${(err as Error).message}`, { cause: err })
    priv = readPrivateKey(privateKeyFile)
  }
  const publicKey = publicKeyOf(priv)
  const pubFile = publicKeyFileFor(privateKeyFile)
  let current = ''
  try { current = readFileSync(pubFile, 'utf8').trim() } catch {}
  if (current !== publicKey) {
    writeFileSync(`${pubFile}.tmp`, publicKey + '\n', { mode: 0o644 })
    renameSync(`${pubFile}.tmp`, pubFile)
  }
  return { privateKeyFile, publicKey, created }
}

export function readPrivateKey (file: string): string {
  let text: string
  try { text = readFileSync(file, 'utf8') } catch (err) {
    throw new WireguardError('GW_ERR_WIREGUARD_KEY_READ', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err })
  }
  decodeKey(text, file)
  return text.trim()
}

/** The public key for an operator: derived from the private key when readable, else public.key. */
export function readPublicKey (privateKeyFile: string): string {
  try {
    return publicKeyOf(readPrivateKey(privateKeyFile))
  } catch (err) {
    try {
      const text = readFileSync(publicKeyFileFor(privateKeyFile), 'utf8').trim()
      decodeKey(text, 'public key')
      return text
    } catch { throw err }
  }
}
