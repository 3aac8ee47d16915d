import { createCipheriv, createDecipheriv, randomBytes, scryptSync } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { writeFileAtomic } from '../lib/atomic-file.js'
import { PkiError } from '../lib/errors.js'
import type { DB } from '../store/db.js'

/**
 * An encrypted backup of a gateway's identity: every file of <dataDir>/pki (device CA key and
 * certificate, CRL, the CoAP master secret the devices' CoAP keys derive from, the broker's and the
 * gateway's own certificates) and the device registry (devices, certificates, revocations). Restored
 * onto a new card, devices enrolled before keep connecting, and revoked ones stay refused.
 *
 * Why scrypt + AES-256-GCM (Node's crypto) and not PKCS#12: a PKCS#12 file carries keys and
 * certificates but not the registry or the CRL, and node-forge writes it with 3DES/SHA-1 PBE by
 * default. One authenticated envelope holds everything, a wrong passphrase or a flipped bit is
 * detected (the GCM tag), and the KDF's parameters are bound to the ciphertext (as its AAD).
 */
export const BACKUP_FORMAT = 'iot-gateway-pki-backup'
const VERSION = 1
// 2^15 x 8 x 128 bytes = 32 MiB and about a second on a Pi 3: costly to guess, cheap to run once.
const KDF = { name: 'scrypt', N: 32768, r: 8, p: 1 } as const
const MAXMEM = 64 * 1024 * 1024
const TABLES = ['devices', 'certificates'] as const
export const MIN_PASSPHRASE = 12

interface Envelope { format: string, version: number, kdf: typeof KDF & { salt: string }, cipher: 'aes-256-gcm', iv: string, tag: string, ciphertext: string }
interface Payload { gatewayId: string, createdAt: string, files: Record<string, { mode: number, data: string }>, tables: Record<string, Array<Record<string, unknown>>> }

export function readPassphrase (file: string): string {
  let text: string
  try { text = readFileSync(file, 'utf8') } catch (err) { throw new PkiError('GW_ERR_PKI_BACKUP_PASSPHRASE', `cannot read the passphrase file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`) }
  const p = text.replace(/\r?\n$/, '')
  if (p.length < MIN_PASSPHRASE) throw new PkiError('GW_ERR_PKI_BACKUP_PASSPHRASE', `the passphrase in ${file} is shorter than ${MIN_PASSPHRASE} characters`)
  return p
}

const header = (e: Pick<Envelope, 'format' | 'version' | 'kdf' | 'cipher'>): Buffer => Buffer.from(JSON.stringify([e.format, e.version, e.kdf, e.cipher]))
const key = (passphrase: string, kdf: Envelope['kdf']): Buffer => scryptSync(passphrase, Buffer.from(kdf.salt, 'base64'), 32, { N: kdf.N, r: kdf.r, p: kdf.p, maxmem: MAXMEM })

/** The backup's bytes (a JSON envelope around the ciphertext). */
export function exportBackup (pkiDir: string, db: DB, gatewayId: string, passphrase: string): { text: string, files: string[], devices: number } {
  if (!existsSync(join(pkiDir, 'ca.key'))) throw new PkiError('GW_ERR_PKI_BACKUP_NO_CA', `${pkiDir} has no ca.key: nothing to back up (pki init first)`)
  const files: Payload['files'] = {}
  for (const name of readdirSync(pkiDir).sort()) {
    const f = join(pkiDir, name)
    const st = statSync(f)
    if (!st.isFile() || name.startsWith('.')) continue
    files[name] = { mode: st.mode & 0o777, data: readFileSync(f).toString('base64') }
  }
  const tables: Payload['tables'] = {}
  db.transaction(() => {
    for (const t of TABLES) tables[t] = db.prepare(`SELECT * FROM ${t}`).all() as Array<Record<string, unknown>>
    tables.registry_meta = db.prepare('SELECT key, value FROM registry_meta').all() as Array<Record<string, unknown>>
  })()
  const payload: Payload = { gatewayId, createdAt: new Date().toISOString(), files, tables }
  const kdf = { ...KDF, salt: randomBytes(16).toString('base64') }
  const iv = randomBytes(12)
  const base = { format: BACKUP_FORMAT, version: VERSION, kdf, cipher: 'aes-256-gcm' as const }
  const c = createCipheriv('aes-256-gcm', key(passphrase, kdf), iv)
  c.setAAD(header(base))
  const ct = Buffer.concat([c.update(JSON.stringify(payload)), c.final()])
  const env: Envelope = { ...base, iv: iv.toString('base64'), tag: c.getAuthTag().toString('base64'), ciphertext: ct.toString('base64') }
  return { text: JSON.stringify(env) + '\n', files: Object.keys(files), devices: tables.devices!.length }
}

export function decryptBackup (text: string, passphrase: string): Payload {
  let env: Envelope
  try { env = JSON.parse(text) } catch { throw new PkiError('GW_ERR_PKI_BACKUP_FORMAT', 'not a PKI backup (not JSON)') }
  if (env?.format !== BACKUP_FORMAT) throw new PkiError('GW_ERR_PKI_BACKUP_FORMAT', 'not a PKI backup (format)')
  if (env.version !== VERSION || env.cipher !== 'aes-256-gcm' || env.kdf?.name !== 'scrypt') throw new PkiError('GW_ERR_PKI_BACKUP_FORMAT', `unsupported PKI backup version ${String(env.version)}`)
  try {
    const d = createDecipheriv('aes-256-gcm', key(passphrase, env.kdf), Buffer.from(env.iv, 'base64'))
    d.setAAD(header(env))
    d.setAuthTag(Buffer.from(env.tag, 'base64'))
    return JSON.parse(Buffer.concat([d.update(Buffer.from(env.ciphertext, 'base64')), d.final()]).toString('utf8')) as Payload
  } catch {
    throw new PkiError('GW_ERR_PKI_BACKUP_DECRYPT', 'the backup cannot be decrypted: wrong passphrase, or the file is damaged')
  }
}

/**
 * Restores a backup onto this data directory: the PKI files (their modes kept, each written
 * atomically) and the registry rows (one transaction). A registry that already has devices is
 * refused unless `force` (they would be replaced); a fresh card's own new CA is simply replaced.
 */
export function importBackup (pkiDir: string, db: DB, payload: Payload, force = false): { files: string[], devices: number, revoked: string[] } {
  const have = (db.prepare('SELECT count(*) AS n FROM devices').get() as { n: number }).n
  if (have > 0 && !force) throw new PkiError('GW_ERR_PKI_BACKUP_NOT_EMPTY', `this gateway's registry already has ${have} device(s); --force replaces them with the backup's`)
  if (payload.files['ca.key'] === undefined || payload.files['ca.crt'] === undefined) throw new PkiError('GW_ERR_PKI_BACKUP_FORMAT', 'the backup has no CA')
  mkdirSync(pkiDir, { recursive: true, mode: 0o750 })
  // The registry first: if it fails, the card's own CA is untouched; if the files fail, a re-run
  // (with --force, the registry now has the devices) completes it.
  db.transaction(() => {
    for (const t of [...TABLES].reverse()) db.prepare(`DELETE FROM ${t}`).run()
    for (const t of TABLES) {
      const cols = new Set((db.prepare(`PRAGMA table_info(${t})`).all() as Array<{ name: string }>).map(c => c.name))
      for (const row of payload.tables[t] ?? []) {
        const keys = Object.keys(row).filter(k => cols.has(k))
        db.prepare(`INSERT INTO ${t} (${keys.join(', ')}) VALUES (${keys.map(() => '?').join(', ')})`).run(...keys.map(k => row[k]))
      }
    }
    // The next CRL must have a higher number than the restored one (relying parties may keep the highest seen).
    const crl = (payload.tables.registry_meta ?? []).find(r => r.key === 'crl_number')
    if (typeof crl?.value === 'number') db.prepare('UPDATE registry_meta SET value = max(value, ?) WHERE key = \'crl_number\'').run(crl.value)
    // A running daemon polls this to notice registry changes.
    db.prepare('UPDATE registry_meta SET value = value + 1 WHERE key = \'version\'').run()
  })()
  for (const [name, f] of Object.entries(payload.files)) {
    if (name.includes('/') || name.startsWith('.')) throw new PkiError('GW_ERR_PKI_BACKUP_FORMAT', `bad file name in backup: ${name}`)
    writeFileAtomic(join(pkiDir, name), Buffer.from(f.data, 'base64'), f.mode)
  }
  const revoked = (db.prepare('SELECT id FROM devices WHERE status = \'revoked\' ORDER BY id').all() as Array<{ id: string }>).map(r => r.id)
  return { files: Object.keys(payload.files), devices: (payload.tables.devices ?? []).length, revoked }
}
