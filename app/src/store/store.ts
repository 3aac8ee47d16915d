import type { DB } from './db.js'

export interface InboundMessage {
  device: string
  transport: 'mqtt' | 'coap'
  stream: string
  epoch: number
  seq: number
  receivedAt: number
  /** The device's JSON payload, as received (validated). */
  payload: string
}

export interface TrafficRow {
  at: number
  device: string | null
  transport: string
  stream: string | null
  seq: number | null
  bytes: number
  outcome: 'accepted' | 'rejected'
  reason: string | null
}

export interface OutboxRow {
  id: number
  device: string
  transport: string
  stream: string
  epoch: number
  seq: number
  receivedAt: number
  payload: string
}

export interface Batch { id: string, firstId: number, lastId: number, rows: OutboxRow[], bytes: number }

export interface DeviceState { id: string, status: string, lastEpoch: number, lastSeq: number }

export interface OutboxStats { depth: number, bytes: number, oldestReceivedAt: number | null, deadLetters: number }

/**
 * The SQLite side of the gateway: the outbox, dead letters, device sequence state and the traffic log.
 * Every write the data path makes goes through commitGroup(), one transaction for many messages.
 */
export class Store {
  private depth = 0
  private bytes = 0
  private readonly q
  /** Random per database; part of every id the cloud sees (`<gateway>:<instance>:<row id>`). */
  readonly instance: string
  constructor (readonly db: DB) {
    this.instance = (db.prepare("SELECT value FROM store_meta WHERE key = 'instance'").get() as { value: string }).value
    this.q = {
      insert: db.prepare('INSERT INTO outbox (device, transport, stream, epoch, seq, received_at, payload, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      log: db.prepare('INSERT INTO traffic_logs (at, device, transport, stream, seq, bytes, outcome, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      upsertDevice: db.prepare(`INSERT INTO devices (id, created_at, last_seen, messages, rejected, last_epoch, last_seq)
        VALUES (@id, @now, @now, @messages, @rejected, @epoch, @seq)
        ON CONFLICT(id) DO UPDATE SET last_seen = @now, messages = messages + @messages, rejected = rejected + @rejected,
          last_epoch = CASE WHEN @epoch > last_epoch OR (@epoch = last_epoch AND @seq > last_seq) THEN @epoch ELSE last_epoch END,
          last_seq   = CASE WHEN @epoch > last_epoch OR (@epoch = last_epoch AND @seq > last_seq) THEN @seq   ELSE last_seq END`),
      device: db.prepare('SELECT id, status, last_epoch AS lastEpoch, last_seq AS lastSeq FROM devices WHERE id = ?'),
      head: db.prepare('SELECT id, batch_id AS batchId FROM outbox ORDER BY id LIMIT 1'),
      byBatch: db.prepare('SELECT id, device, transport, stream, epoch, seq, received_at AS receivedAt, payload, bytes FROM outbox WHERE batch_id = ? ORDER BY id'),
      oldest: db.prepare('SELECT id, device, transport, stream, epoch, seq, received_at AS receivedAt, payload, bytes FROM outbox ORDER BY id LIMIT ?'),
      setBatch: db.prepare('UPDATE outbox SET batch_id = ? WHERE id >= ? AND id <= ?'),
      deleteRange: db.prepare('DELETE FROM outbox WHERE id >= ? AND id <= ?'),
      toDead: db.prepare(`INSERT INTO dead_letters (outbox_id, device, transport, stream, epoch, seq, received_at, payload, bytes, batch_id, failed_at, status, reason)
        SELECT id, device, transport, stream, epoch, seq, received_at, payload, bytes, batch_id, ?, ?, ? FROM outbox WHERE id >= ? AND id <= ?`),
      deadCount: db.prepare('SELECT count(*) AS n FROM dead_letters'),
      trimDead: db.prepare('DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?)'),
      oldestAt: db.prepare('SELECT received_at AS at FROM outbox ORDER BY id LIMIT 1'),
      totals: db.prepare('SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM outbox')
    }
    this.refreshTotals()
  }

  /** Re-reads the totals: another process (the CLI's `outbox retry`) may have changed the outbox. */
  refreshTotals (): void {
    const t = this.q.totals.get() as { n: number, b: number }
    this.depth = t.n
    this.bytes = t.b
  }

  get outboxDepth (): number { return this.depth }
  get outboxBytes (): number { return this.bytes }

  device (id: string): DeviceState | undefined {
    return this.q.device.get(id) as DeviceState | undefined
  }

  /** One transaction: accepted messages into the outbox, traffic rows, device counters and sequence state. */
  commitGroup (accepted: readonly InboundMessage[], traffic: readonly TrafficRow[]): void {
    const perDevice = new Map<string, { messages: number, rejected: number, epoch: number, seq: number }>()
    let added = 0
    this.db.transaction(() => {
      for (const m of accepted) {
        const bytes = Buffer.byteLength(m.payload)
        this.q.insert.run(m.device, m.transport, m.stream, m.epoch, m.seq, m.receivedAt, m.payload, bytes)
        added += bytes
        const d = perDevice.get(m.device) ?? { messages: 0, rejected: 0, epoch: -1, seq: -1 }
        d.messages++
        if (m.epoch > d.epoch || (m.epoch === d.epoch && m.seq > d.seq)) { d.epoch = m.epoch; d.seq = m.seq }
        perDevice.set(m.device, d)
      }
      for (const r of traffic) {
        this.q.log.run(r.at, r.device, r.transport, r.stream, r.seq, r.bytes, r.outcome, r.reason)
        if (r.outcome === 'rejected' && r.device !== null) {
          const d = perDevice.get(r.device) ?? { messages: 0, rejected: 0, epoch: -1, seq: -1 }
          d.rejected++
          perDevice.set(r.device, d)
        }
      }
      const now = Date.now()
      for (const [id, d] of perDevice) this.q.upsertDevice.run({ id, now, ...d })
    })()
    this.depth += accepted.length
    this.bytes += added
  }

  /**
   * The oldest messages as a batch. A batch id, once given, is kept in the outbox, so after a crash
   * between the send and the delete the same messages go out again under the same Idempotency-Key.
   */
  nextBatch (gatewayId: string, maxMessages: number, maxBytes: number): Batch | undefined {
    const head = this.q.head.get() as { id: number, batchId: string | null } | undefined
    if (!head) return undefined
    if (head.batchId !== null) {
      const rows = this.q.byBatch.all(head.batchId) as Array<OutboxRow & { bytes: number }>
      return toBatch(head.batchId, rows)
    }
    const candidates = this.q.oldest.all(maxMessages) as Array<OutboxRow & { bytes: number }>
    const rows: Array<OutboxRow & { bytes: number }> = []
    let bytes = 0
    for (const r of candidates) {
      if (rows.length > 0 && bytes + r.bytes > maxBytes) break
      rows.push(r)
      bytes += r.bytes
    }
    const first = rows[0]!.id
    const last = rows[rows.length - 1]!.id
    const id = `${gatewayId}-${this.instance}-${first}-${last}`
    this.q.setBatch.run(id, first, last)
    return toBatch(id, rows)
  }

  /** The cloud has the batch (2xx): it leaves the outbox. */
  ackBatch (b: Batch): void {
    this.q.deleteRange.run(b.firstId, b.lastId)
    this.depth -= b.rows.length
    this.bytes -= b.bytes
  }

  /** The cloud refused the batch for good (4xx): it moves to dead letters with the reason. */
  deadLetterBatch (b: Batch, status: number | null, reason: string, max: number): number {
    let trimmed = 0
    this.db.transaction(() => {
      this.q.toDead.run(Date.now(), status, reason, b.firstId, b.lastId)
      this.q.deleteRange.run(b.firstId, b.lastId)
      const n = (this.q.deadCount.get() as { n: number }).n
      if (n > max) trimmed = this.q.trimDead.run(n - max).changes
    })()
    this.depth -= b.rows.length
    this.bytes -= b.bytes
    return trimmed
  }

  oldestReceivedAt (): number | null {
    return (this.q.oldestAt.get() as { at: number } | undefined)?.at ?? null
  }

  stats (): OutboxStats {
    return {
      depth: this.depth,
      bytes: this.bytes,
      oldestReceivedAt: this.oldestReceivedAt(),
      deadLetters: (this.q.deadCount.get() as { n: number }).n
    }
  }

  listDeadLetters (limit: number): Array<Record<string, unknown>> {
    return this.db.prepare(`SELECT id, outbox_id AS outboxId, device, stream, seq, received_at AS receivedAt, failed_at AS failedAt, status, reason, batch_id AS batchId
      FROM dead_letters ORDER BY id LIMIT ?`).all(limit) as Array<Record<string, unknown>>
  }

  /** Moves dead letters back to the end of the outbox (all of them, or the given ids). Returns how many. */
  retryDeadLetters (ids?: readonly number[]): number {
    const where = ids ? `WHERE id IN (${ids.map(() => '?').join(',')})` : ''
    const args = ids ?? []
    let moved = 0
    this.db.transaction(() => {
      const r = this.db.prepare(`INSERT INTO outbox (device, transport, stream, epoch, seq, received_at, payload, bytes)
        SELECT device, transport, stream, epoch, seq, received_at, payload, bytes FROM dead_letters ${where} ORDER BY id`).run(...args)
      moved = r.changes
      this.db.prepare(`DELETE FROM dead_letters ${where}`).run(...args)
    })()
    this.refreshTotals()
    return moved
  }

  /** Keeps the traffic log within its age and row bounds. Deletes in chunks so the data path never waits long. */
  pruneTrafficLog (maxAgeMs: number, maxRows: number, chunk = 5000): number {
    let removed = 0
    const cutoff = Date.now() - maxAgeMs
    const byAge = this.db.prepare('DELETE FROM traffic_logs WHERE id IN (SELECT id FROM traffic_logs WHERE at < ? ORDER BY id LIMIT ?)')
    for (let r = chunk; r === chunk;) { r = byAge.run(cutoff, chunk).changes; removed += r }
    const maxId = (this.db.prepare('SELECT max(id) AS m FROM traffic_logs').get() as { m: number | null }).m
    if (maxId !== null) {
      const byCount = this.db.prepare('DELETE FROM traffic_logs WHERE id IN (SELECT id FROM traffic_logs WHERE id <= ? ORDER BY id LIMIT ?)')
      for (let r = chunk; r === chunk;) { r = byCount.run(maxId - maxRows, chunk).changes; removed += r }
    }
    return removed
  }
}

function toBatch (id: string, rows: Array<OutboxRow & { bytes: number }>): Batch {
  let bytes = 0
  const out: OutboxRow[] = rows.map(r => {
    bytes += r.bytes
    return { id: r.id, device: r.device, transport: r.transport, stream: r.stream, epoch: r.epoch, seq: r.seq, receivedAt: r.receivedAt, payload: r.payload }
  })
  return { id, firstId: rows[0]!.id, lastId: rows[rows.length - 1]!.id, rows: out, bytes }
}
