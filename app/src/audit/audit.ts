import { createHash } from 'node:crypto'
import type { DB } from '../store/db.js'

/** Security event types (the seed design's names where it has one). */
export type SecurityEventType =
  | 'bad_signature' | 'replay' | 'duplicate' | 'rate_limit_applied' | 'malformed_input' | 'acl_denied'
  | 'device_enrolled' | 'device_revoked' | 'device_quarantined' | 'device_released'
  | 'port_scan_detected' | 'firewall_applied' | 'firewall_rolled_back' | 'pki_initialised' | (string & {})

export interface SecurityEvent { type: SecurityEventType, device?: string | null, source?: string | null, detail?: Record<string, unknown>, at?: number }

export interface AuditRow { id: number, at: number, type: string, device: string | null, source: string | null, detail: string, prevHash: string, hash: string }

export const GENESIS = '0'.repeat(64)

/** The hash of a row covers its id, time, type, device, source, detail and the previous row's hash. */
export function rowHash (r: Omit<AuditRow, 'hash'>): string {
  return createHash('sha256')
    .update(JSON.stringify([r.id, r.at, r.type, r.device, r.source, r.detail, r.prevHash]))
    .digest('hex')
}

/**
 * Append-only, hash-chained security log in SQLite. Events are buffered and written together (one
 * transaction per I/O turn), so a flood of bad input costs the data path little.
 * `verify()` recomputes the chain and names the first row that was edited, removed or inserted.
 */
export class AuditLog {
  private buffer: SecurityEvent[] = []
  private scheduled = false
  private readonly insert
  private readonly head

  constructor (private readonly db: DB, private readonly onError: (err: unknown) => void = () => {}) {
    this.insert = db.prepare('INSERT INTO audit_log (id, at, type, device, source, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
    this.head = db.prepare('SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1')
  }

  record (e: SecurityEvent): void {
    this.buffer.push({ ...e, at: e.at ?? Date.now() })
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(() => this.flush())
    }
  }

  /** Writes the buffered events now. */
  flush (): void {
    this.scheduled = false
    if (this.buffer.length === 0) return
    const events = this.buffer.splice(0)
    try {
      this.db.transaction(() => {
        const h = this.head.get() as { id: number, hash: string } | undefined
        let id = h?.id ?? 0
        let prev = h?.hash ?? GENESIS
        for (const e of events) {
          id++
          const row = { id, at: e.at!, type: e.type, device: e.device ?? null, source: e.source ?? null, detail: JSON.stringify(e.detail ?? {}), prevHash: prev }
          const hash = rowHash(row)
          this.insert.run(row.id, row.at, row.type, row.device, row.source, row.detail, row.prevHash, hash)
          prev = hash
        }
      }).immediate()
    } catch (err) {
      this.onError(err)
    }
  }

  list (opts: { limit?: number, device?: string } = {}): AuditRow[] {
    const where = opts.device !== undefined ? 'WHERE device = ?' : ''
    return this.db.prepare(`SELECT id, at, type, device, source, detail, prev_hash AS prevHash, hash FROM audit_log ${where} ORDER BY id DESC LIMIT ?`)
      .all(...(opts.device !== undefined ? [opts.device] : []), opts.limit ?? 100) as AuditRow[]
  }
}

export type VerifyResult = { ok: true, rows: number, head: string } | { ok: false, rows: number, brokenAt: number, reason: string }

/** Walks the chain from the start. Works on a read-only connection. */
export function verifyAudit (db: DB): VerifyResult {
  let prev = GENESIS
  let expectedId = 1
  let n = 0
  for (const r of db.prepare('SELECT id, at, type, device, source, detail, prev_hash AS prevHash, hash FROM audit_log ORDER BY id').iterate() as IterableIterator<AuditRow>) {
    if (r.id !== expectedId) return { ok: false, rows: n, brokenAt: expectedId, reason: `row ${expectedId} is missing (next row is ${r.id})` }
    if (r.prevHash !== prev) return { ok: false, rows: n, brokenAt: r.id, reason: `row ${r.id} does not link to row ${r.id - 1}` }
    const { hash, ...rest } = r
    if (rowHash(rest) !== hash) return { ok: false, rows: n, brokenAt: r.id, reason: `row ${r.id} was changed after it was written` }
    prev = hash
    expectedId++
    n++
  }
  return { ok: true, rows: n, head: prev }
}
