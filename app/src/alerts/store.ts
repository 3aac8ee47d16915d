import type Database from 'better-sqlite3'
import type { RuleName } from './config.js'
import type { AlertState } from './rules.js'

// The handle's type from the driver itself: store/db.ts imports ALERTS_DDL from here (its migration).
type DB = Database.Database

/**
 * Tables of the alerting capability (migration appended in store/db.ts). Written on state changes
 * only: an alert that fires, one that resolves, a delivery queued or done, and the refusal counts
 * once a minute. Nothing per device message, for the SD card's sake.
 */
export const ALERTS_DDL = `
  -- Alerts firing now (pending ones are not kept: their duration starts again after a restart).
  CREATE TABLE alerts (
    key        TEXT PRIMARY KEY,
    rule       TEXT    NOT NULL,
    labels     TEXT    NOT NULL,
    since      INTEGER NOT NULL,
    fired_at   INTEGER NOT NULL,
    value      REAL,
    threshold  REAL,
    summary    TEXT    NOT NULL
  );
  -- Deliveries waiting, per receiver ('cloud', 'webhook'): the priority lane's own queue.
  CREATE TABLE alert_outbox (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    target     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    body       TEXT    NOT NULL
  );
  CREATE INDEX alert_outbox_target ON alert_outbox(target, id);
  -- Why a device's messages were refused: counts by reason and the last one (flushed in bulk).
  CREATE TABLE device_refusals (
    device      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    count       INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    last_detail TEXT    NOT NULL,
    PRIMARY KEY (device, reason)
  );
`

export class AlertStore {
  constructor (private readonly db: DB) {}

  firing (): Map<string, AlertState> {
    const rows = this.db.prepare('SELECT key, rule, labels, since, fired_at AS firedAt, value, threshold, summary FROM alerts').all() as Array<Record<string, unknown>>
    return new Map(rows.map(r => [String(r.key), { key: String(r.key), rule: r.rule as RuleName, labels: JSON.parse(String(r.labels)), state: 'firing', since: Number(r.since), firedAt: Number(r.firedAt), value: r.value as number | null, threshold: r.threshold as number | null, summary: String(r.summary) }]))
  }

  /** Records the transitions (in order) and queues their deliveries, in one transaction. */
  apply (ops: ReadonlyArray<{ fire: AlertState } | { resolve: string }>, deliveries: ReadonlyArray<{ target: string, body: string }>, now: number): void {
    const ins = this.db.prepare('INSERT OR REPLACE INTO alerts (key, rule, labels, since, fired_at, value, threshold, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
    const del = this.db.prepare('DELETE FROM alerts WHERE key = ?')
    const q = this.db.prepare('INSERT INTO alert_outbox (target, created_at, body) VALUES (?, ?, ?)')
    this.db.transaction(() => {
      for (const op of ops) {
        if ('fire' in op) { const a = op.fire; ins.run(a.key, a.rule, JSON.stringify(a.labels), a.since, a.firedAt ?? now, a.value, a.threshold, a.summary) } else del.run(op.resolve)
      }
      for (const d of deliveries) q.run(d.target, now, d.body)
    })()
  }

  /** Prepared once: the egress asks before every telemetry batch (AlertLane.flushNow). */
  private pendingQuery?: Database.Statement<[string, number]>

  pending (target: string, limit: number): Array<{ id: number, body: string }> {
    this.pendingQuery ??= this.db.prepare<[string, number]>('SELECT id, body FROM alert_outbox WHERE target = ? ORDER BY id LIMIT ?')
    return this.pendingQuery.all(target, limit) as Array<{ id: number, body: string }>
  }

  countPending (target: string): number {
    return (this.db.prepare('SELECT count(*) AS n FROM alert_outbox WHERE target = ?').get(target) as { n: number }).n
  }

  done (target: string, upToId: number): void {
    this.db.prepare('DELETE FROM alert_outbox WHERE target = ? AND id <= ?').run(target, upToId)
  }

  refusals (): Array<{ device: string, reason: string, count: number, lastAt: number, lastDetail: string }> {
    return this.db.prepare('SELECT device, reason, count, last_at AS lastAt, last_detail AS lastDetail FROM device_refusals').all() as Array<{ device: string, reason: string, count: number, lastAt: number, lastDetail: string }>
  }

  /** One device's refusals, most recent reason first (for `device show`). */
  refusalsOf (device: string): Array<{ reason: string, count: number, lastAt: number, lastDetail: string }> {
    return this.db.prepare('SELECT reason, count, last_at AS lastAt, last_detail AS lastDetail FROM device_refusals WHERE device = ? ORDER BY last_at DESC').all(device) as Array<{ reason: string, count: number, lastAt: number, lastDetail: string }>
  }

  saveRefusals (rows: Array<{ device: string, reason: string, delta: number, lastAt: number, lastDetail: string }>): void {
    const up = this.db.prepare(`INSERT INTO device_refusals (device, reason, count, last_at, last_detail) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (device, reason) DO UPDATE SET count = count + excluded.count, last_at = excluded.last_at, last_detail = excluded.last_detail`)
    this.db.transaction(() => { for (const r of rows) up.run(r.device, r.reason, r.delta, r.lastAt, r.lastDetail) })()
  }
}
