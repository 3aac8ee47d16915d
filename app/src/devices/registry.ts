import type { Revoked } from '../pki/x509.js'
import type { DB } from '../store/db.js'

export type DeviceStatus = 'active' | 'revoked' | 'quarantined'

export interface DeviceRecord {
  id: string
  status: DeviceStatus
  statusReason: string | null
  statusChangedAt: number | null
  createdAt: number
  enrolledAt: number | null
  /** 'generated' (`device enroll`: the gateway made the key) or 'csr' (`device sign-csr`). */
  enrolment: string | null
  certSerial: string | null
  certNotAfter: number | null
  lastSeen: number | null
  messages: number
  rejected: number
  lastEpoch: number
  lastSeq: number
  /** null: never lowered (the configured initial score). */
  trustScore: number | null
  /** Security events counted by type since enrolment or the last release. */
  trustEvents: Record<string, number>
  held: number
}

const COLUMNS = `d.id, d.status, d.status_reason AS statusReason, d.status_changed_at AS statusChangedAt, d.created_at AS createdAt,
  d.enrolled_at AS enrolledAt, d.enrolment, d.cert_serial AS certSerial, d.cert_not_after AS certNotAfter, d.last_seen AS lastSeen,
  d.messages, d.rejected, d.last_epoch AS lastEpoch, d.last_seq AS lastSeq, d.trust_score AS trustScore, d.trust_events AS trustEvents,
  (SELECT count(*) FROM held_messages h WHERE h.device = d.id) AS held`

const toRecord = (r: Record<string, unknown>): DeviceRecord => ({ ...r, trustEvents: JSON.parse(String(r.trustEvents ?? '{}')) } as DeviceRecord)

export interface HeldMessage { id: number, device: string, transport: 'mqtt' | 'coap', stream: string, receivedAt: number, payload: Buffer }

/**
 * The device registry: the `devices` table (also fed by the data path), issued certificates,
 * a version counter that every change bumps (the daemon polls it to see what the CLI did), the CRL
 * number, and messages held back from quarantined devices. The CLI and the daemon are separate
 * processes on one SQLite file; every change is one transaction.
 */
export class DeviceRegistry {
  constructor (readonly db: DB) {}

  version (): number {
    return (this.db.prepare('SELECT value FROM registry_meta WHERE key = \'version\'').get() as { value: number }).value
  }

  private bump (): void {
    this.db.prepare('UPDATE registry_meta SET value = value + 1 WHERE key = \'version\'').run()
  }

  get (id: string): DeviceRecord | undefined {
    const r = this.db.prepare(`SELECT ${COLUMNS} FROM devices d WHERE d.id = ?`).get(id) as Record<string, unknown> | undefined
    return r ? toRecord(r) : undefined
  }

  list (): DeviceRecord[] {
    return (this.db.prepare(`SELECT ${COLUMNS} FROM devices d ORDER BY d.id`).all() as Array<Record<string, unknown>>).map(toRecord)
  }

  /** Status, score and certificate of every device (what the daemon's gate needs). */
  states (): Map<string, { status: DeviceStatus, trustScore: number | null, trustEvents: Record<string, number>, certSerial: string | null }> {
    const rows = this.db.prepare('SELECT id, status, trust_score AS trustScore, trust_events AS trustEvents, cert_serial AS certSerial FROM devices').all() as Array<{ id: string, status: DeviceStatus, trustScore: number | null, trustEvents: string, certSerial: string | null }>
    return new Map(rows.map(r => [r.id, { status: r.status, trustScore: r.trustScore, trustEvents: JSON.parse(r.trustEvents) as Record<string, number>, certSerial: r.certSerial }]))
  }

  certificates (id: string): Array<{ serial: string, issuedAt: number, notAfter: number, fingerprint: string, revokedAt: number | null }> {
    return this.db.prepare('SELECT serial, issued_at AS issuedAt, not_after AS notAfter, fingerprint, revoked_at AS revokedAt FROM certificates WHERE device = ? ORDER BY issued_at')
      .all(id) as Array<{ serial: string, issuedAt: number, notAfter: number, fingerprint: string, revokedAt: number | null }>
  }

  /** Records a newly issued certificate: the device becomes (or stays) active with a fresh trust score. */
  enrol (id: string, cert: { serial: string, notAfter: number, fingerprint: string }, enrolment: 'generated' | 'csr'): void {
    const now = Date.now()
    this.db.transaction(() => {
      this.db.prepare('INSERT INTO certificates (serial, device, issued_at, not_after, fingerprint) VALUES (?, ?, ?, ?, ?)').run(cert.serial, id, now, cert.notAfter, cert.fingerprint)
      this.db.prepare(`INSERT INTO devices (id, created_at, status, enrolled_at, enrolment, cert_serial, cert_not_after, status_changed_at, status_reason, trust_score, trust_events)
        VALUES (@id, @now, 'active', @now, @enrolment, @serial, @notAfter, @now, 'enrolled', NULL, '{}')
        ON CONFLICT(id) DO UPDATE SET status = 'active', enrolled_at = @now, enrolment = @enrolment, cert_serial = @serial, cert_not_after = @notAfter,
          status_changed_at = @now, status_reason = 'enrolled', trust_score = NULL, trust_events = '{}'`)
        .run({ id, now, enrolment, serial: cert.serial, notAfter: cert.notAfter })
      this.bump()
    }).immediate()
  }

  /** Marks the device and all its certificates revoked. Returns the serials newly revoked. */
  revoke (id: string, reason: string): string[] {
    const now = Date.now()
    let serials: string[] = []
    this.db.transaction(() => {
      serials = (this.db.prepare('SELECT serial FROM certificates WHERE device = ? AND revoked_at IS NULL').all(id) as Array<{ serial: string }>).map(r => r.serial)
      this.db.prepare('UPDATE certificates SET revoked_at = ? WHERE device = ? AND revoked_at IS NULL').run(now, id)
      this.db.prepare(`INSERT INTO devices (id, created_at, status, status_changed_at, status_reason) VALUES (?, ?, 'revoked', ?, ?)
        ON CONFLICT(id) DO UPDATE SET status = 'revoked', status_changed_at = excluded.status_changed_at, status_reason = excluded.status_reason`).run(id, now, now, reason)
      this.db.prepare('DELETE FROM held_messages WHERE device = ?').run(id)
      this.bump()
    }).immediate()
    return serials
  }

  /** Quarantine (by the daemon's trust check). No-op unless the device is active. */
  quarantine (id: string, reason: string, score: number, events: Record<string, number>): boolean {
    let changed = false
    this.db.transaction(() => {
      const now = Date.now()
      this.db.prepare('INSERT INTO devices (id, created_at) VALUES (?, ?) ON CONFLICT(id) DO NOTHING').run(id, now)
      changed = this.db.prepare(`UPDATE devices SET status = 'quarantined', status_changed_at = ?, status_reason = ?, trust_score = ?, trust_events = ?
        WHERE id = ? AND status = 'active'`).run(now, reason, score, JSON.stringify(events), id).changes > 0
      if (changed) this.bump()
    }).immediate()
    return changed
  }

  /** An operator clears a quarantined device: active again, score back to the initial value. */
  release (id: string): boolean {
    let changed = false
    this.db.transaction(() => {
      changed = this.db.prepare(`UPDATE devices SET status = 'active', status_changed_at = ?, status_reason = 'released by operator', trust_score = NULL, trust_events = '{}'
        WHERE id = ? AND status = 'quarantined'`).run(Date.now(), id).changes > 0
      if (changed) this.bump()
    }).immediate()
    return changed
  }

  /** Writes trust scores the daemon keeps in memory, unless the registry changed under it (then nothing is written and false returned). */
  saveScores (knownVersion: number, scores: ReadonlyArray<{ id: string, score: number, events: Record<string, number> }>): boolean {
    let ok = false
    this.db.transaction(() => {
      if (this.version() !== knownVersion) return
      const upd = this.db.prepare('UPDATE devices SET trust_score = ?, trust_events = ? WHERE id = ? AND status = \'active\'')
      for (const s of scores) upd.run(s.score, JSON.stringify(s.events), s.id)
      ok = true
    }).immediate()
    return ok
  }

  revokedSerials (): Revoked[] {
    return (this.db.prepare('SELECT serial, revoked_at AS revokedAt FROM certificates WHERE revoked_at IS NOT NULL ORDER BY revoked_at').all() as Revoked[])
  }

  revokedDevices (): string[] {
    return (this.db.prepare('SELECT id FROM devices WHERE status = \'revoked\' ORDER BY id').all() as Array<{ id: string }>).map(r => r.id)
  }

  /** The next CRL number (monotonic; the first CRL from `pki init` is number 1). */
  nextCrlNumber (): number {
    let n = 0
    this.db.transaction(() => {
      this.db.prepare('UPDATE registry_meta SET value = value + 1 WHERE key = \'crl_number\'').run()
      n = (this.db.prepare('SELECT value FROM registry_meta WHERE key = \'crl_number\'').get() as { value: number }).value
    }).immediate()
    return n
  }

  hold (msgs: ReadonlyArray<Omit<HeldMessage, 'id'>>, maxPerDevice: number): number {
    let dropped = 0
    this.db.transaction(() => {
      const count = this.db.prepare('SELECT count(*) AS n FROM held_messages WHERE device = ?')
      const ins = this.db.prepare('INSERT INTO held_messages (device, transport, stream, received_at, payload) VALUES (?, ?, ?, ?, ?)')
      const n = new Map<string, number>()
      for (const m of msgs) {
        const have = n.get(m.device) ?? (count.get(m.device) as { n: number }).n
        if (have >= maxPerDevice) { dropped++; continue }
        ins.run(m.device, m.transport, m.stream, m.receivedAt, m.payload)
        n.set(m.device, have + 1)
      }
    })()
    return dropped
  }

  held (id: string): HeldMessage[] {
    return this.db.prepare('SELECT id, device, transport, stream, received_at AS receivedAt, payload FROM held_messages WHERE device = ? ORDER BY id').all(id) as HeldMessage[]
  }

  dropHeld (id: string, upToId = Number.MAX_SAFE_INTEGER): number {
    return this.db.prepare('DELETE FROM held_messages WHERE device = ? AND id <= ?').run(id, upToId).changes
  }
}
