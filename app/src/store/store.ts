import type { DB } from './db.js'
import type { WalSyncer } from './wal-sync.js'

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

/** Traffic of one device, transport, stream, outcome and reason during one minute (the log, rolled up). */
export interface TrafficRollup {
  minute: number
  device: string | null
  transport: string
  stream: string | null
  outcome: 'accepted' | 'rejected'
  reason: string | null
  messages: number
  bytes: number
}

const isFull = (err: unknown): boolean => (err as { code?: string }).code === 'SQLITE_FULL'

/** A group written by Store.writeGroup, counted by the outbox once durable (groupDurable). */
export interface GroupWrite { firstId: number, messages: number, bytes: number, priorityIds: number[] }

/**
 * The SQLite side of the gateway: the outbox, dead letters, device sequence state and the traffic log.
 *
 * Written for an SD card (app/docs/write-path.md):
 * - Every write of the data path goes through commitGroup(), one transaction for many messages:
 *   outbox rows, one device row per device, and, at most once a minute, the traffic rollups. No
 *   secondary index is touched per message. It is `synchronous=FULL`; or, with a {@link WalSyncer},
 *   `synchronous=NORMAL` followed by the syncer's fdatasync of the WAL off the event loop
 *   (writeGroup, sync, groupDurable: the pipeline acknowledges the group only after the sync).
 * - The uplink's bookkeeping writes no outbox row: a delivered watermark (`delivered_through`) and
 *   the batch in flight are one store_meta row each, written with `synchronous=NORMAL` (in the WAL,
 *   so a killed process keeps them; made durable by the next FULL commit or checkpoint), and
 *   delivered rows are deleted in bulk, inside a later commit.
 * - An acknowledgement is kept in memory first: if it cannot be written (disk full) it is retried,
 *   and what it covers is never sent again by this process.
 */
export class Store {
  private depth = 0
  private bytes = 0
  /** Every outbox row with id <= this has reached the cloud (in memory first; see ackBatch). */
  private delivered = 0
  /** ...and every row with id <= this has been deleted. */
  private deleted = 0
  /** `delivered` as last written to store_meta. */
  private deliveredWritten = 0
  private lastDeleteAt = 0
  /** Batches given an id and not covered by the written watermark: resent under the same id after a crash. */
  private batches: Array<{ id: string, first: number, last: number }> = []
  private readonly q
  /**
   * The priority lane (events and the like, see prioritise()): ids of rows of a priority stream not
   * yet delivered, oldest first, and rows the cloud already has although the watermark has not
   * reached them (id -> bytes). In memory only: after a crash those rows are simply sent again
   * (at least once, under the same message ids).
   */
  private priorityStreams = new Set<string>()
  private readonly priority: number[] = []
  private readonly pendingPriority = new Set<number>()
  private readonly ahead = new Map<number, number>()
  /**
   * Rows moved to the dead letters one by one ahead of the watermark (id -> bytes): gone from the
   * outbox and already subtracted from depth and bytes. Kept until the watermark passes them so an
   * acknowledgement from memory (ackCommitted), which counts every row of its range, does not count
   * them twice.
   */
  private readonly gone = new Map<number, number>()
  private readonly priorityBatches = new WeakSet<Batch>()
  /** Random per database; part of every id the cloud sees (`<gateway>:<instance>:<row id>`). */
  readonly instance: string
  /** Commits by kind, for the write-path counters (`group`: FULL; `meta`: NORMAL bookkeeping). */
  readonly counts = { group: 0, meta: 0, deletes: 0, metaFailures: 0 }
  /** The connection's synchronous level as opened (2 FULL, 1 NORMAL), restored after bookkeeping writes. */
  private readonly synchronous: number
  /** Makes group commits durable off the event loop; undefined: they are FULL transactions. */
  private readonly walSync?: WalSyncer
  constructor (readonly db: DB, opts: { walSync?: WalSyncer } = {}) {
    this.synchronous = db.pragma('synchronous', { simple: true }) as number
    // Only where the connection syncs its commits (FULL): at NORMAL nothing is synced to begin with.
    if (this.synchronous >= 2) this.walSync = opts.walSync
    this.instance = (db.prepare("SELECT value FROM store_meta WHERE key = 'instance'").get() as { value: string }).value
    this.q = {
      insert: db.prepare('INSERT INTO outbox (device, transport, stream, epoch, seq, received_at, payload, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      rollup: db.prepare(`INSERT INTO traffic_rollups (minute, device, transport, stream, outcome, reason, messages, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT DO UPDATE SET messages = messages + excluded.messages, bytes = bytes + excluded.bytes`),
      upsertDevice: db.prepare(`INSERT INTO devices (id, created_at, last_seen, messages, rejected, last_epoch, last_seq)
        VALUES (@id, @now, @now, @messages, @rejected, @epoch, @seq)
        ON CONFLICT(id) DO UPDATE SET last_seen = @now, messages = messages + @messages, rejected = rejected + @rejected,
          last_epoch = CASE WHEN @epoch > last_epoch OR (@epoch = last_epoch AND @seq > last_seq) THEN @epoch ELSE last_epoch END,
          last_seq   = CASE WHEN @epoch > last_epoch OR (@epoch = last_epoch AND @seq > last_seq) THEN @seq   ELSE last_seq END`),
      device: db.prepare('SELECT id, status, last_epoch AS lastEpoch, last_seq AS lastSeq FROM devices WHERE id = ?'),
      head: db.prepare('SELECT id, batch_id AS batchId FROM outbox WHERE id > ? ORDER BY id LIMIT 1'),
      byBatch: db.prepare('SELECT id, device, transport, stream, epoch, seq, received_at AS receivedAt, payload, bytes FROM outbox WHERE batch_id = ? AND id > ? ORDER BY id'),
      range: db.prepare('SELECT id, device, transport, stream, epoch, seq, received_at AS receivedAt, payload, bytes FROM outbox WHERE id >= ? AND id <= ? ORDER BY id'),
      oldest: db.prepare('SELECT id, device, transport, stream, epoch, seq, received_at AS receivedAt, payload, bytes FROM outbox WHERE id > ? ORDER BY id LIMIT ?'),
      deleteThrough: db.prepare('DELETE FROM outbox WHERE id <= ?'),
      deleteRange: db.prepare('DELETE FROM outbox WHERE id >= ? AND id <= ?'),
      getMeta: db.prepare('SELECT value FROM store_meta WHERE key = ?'),
      setMeta: db.prepare('INSERT INTO store_meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value'),
      toDead: db.prepare(`INSERT INTO dead_letters (outbox_id, device, transport, stream, epoch, seq, received_at, payload, bytes, batch_id, failed_at, status, reason)
        SELECT id, device, transport, stream, epoch, seq, received_at, payload, bytes, ?, ?, ?, ? FROM outbox WHERE id >= ? AND id <= ?`),
      deadCount: db.prepare('SELECT count(*) AS n FROM dead_letters'),
      trimDead: db.prepare('DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?)'),
      oldestAt: db.prepare('SELECT received_at AS at FROM outbox WHERE id > ? ORDER BY id LIMIT 1'),
      countAfter: db.prepare('SELECT count(*) AS n FROM outbox WHERE id > ? AND id <= ?'),
      totals: db.prepare('SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM outbox WHERE id > ?'),
      byId: db.prepare('SELECT id, device, transport, stream, epoch, seq, received_at AS receivedAt, payload, bytes FROM outbox WHERE id = ?')
    }
    this.delivered = this.deliveredWritten = Number((this.q.getMeta.get('delivered_through') as { value: string } | undefined)?.value ?? 0)
    const batches = (this.q.getMeta.get('batches') as { value: string } | undefined)?.value
    if (batches !== undefined) {
      try { this.batches = JSON.parse(batches) } catch { this.batches = [] }
    }
    this.refreshTotals()
  }

  /** Re-reads the totals: another process (the CLI's `outbox retry`) may have changed the outbox. */
  refreshTotals (): void {
    const t = this.q.totals.get(this.delivered) as { n: number, b: number }
    this.depth = t.n - this.ahead.size
    this.bytes = t.b
    for (const b of this.ahead.values()) this.bytes -= b
  }

  /**
   * Rows of these streams (device `events`) go to the cloud ahead of everything else waiting: the
   * next batch is made of them alone, whatever telemetry backlog is older. Their order among
   * themselves is the outbox order, so the order per device and stream holds. Called once at start;
   * it looks up the rows of those streams already waiting (one scan of the outbox).
   */
  prioritise (streams: readonly string[]): void {
    this.priorityStreams = new Set(streams)
    this.priority.length = 0
    this.pendingPriority.clear()
    if (streams.length === 0) return
    const rows = this.db.prepare(`SELECT id FROM outbox WHERE id > ? AND stream IN (${streams.map(() => '?').join(',')}) ORDER BY id`).all(this.delivered, ...streams) as Array<{ id: number }>
    for (const r of rows) { this.priority.push(r.id); this.pendingPriority.add(r.id) }
  }

  /** Whether messages of this stream take the priority lane (the pipeline's memory path asks too). */
  isPriority (stream: string): boolean { return this.priorityStreams.has(stream) }

  /** Waiting rows of a priority stream. */
  get priorityDepth (): number { return this.priority.length }

  /** The next priority batch: waiting priority rows only, oldest first, within the batch limits. */
  private priorityBatch (gatewayId: string, maxMessages: number, maxBytes: number): Batch | undefined {
    const rows: Array<OutboxRow & { bytes: number }> = []
    let bytes = 0
    for (const id of this.priority) {
      if (rows.length >= maxMessages) break
      const r = this.q.byId.get(id) as (OutboxRow & { bytes: number }) | undefined
      if (r === undefined) continue
      if (rows.length > 0 && bytes + r.bytes > maxBytes) break
      rows.push(r)
      bytes += r.bytes
    }
    if (rows.length === 0) {
      // Rows gone from under the queue (an `outbox` command from another process): forget them.
      this.priority.length = 0
      this.pendingPriority.clear()
      return undefined
    }
    // "p": the ids are not a range; the same rows always get the same key (resent after a failure).
    const b = toBatch(`${gatewayId}-${this.instance}-p${rows[0]!.id}-${rows[rows.length - 1]!.id}`, rows)
    this.priorityBatches.add(b)
    return b
  }

  /** A priority batch left the queue (delivered or dead-lettered): drop its ids from it. */
  private unqueuePriority (b: Batch): void {
    const ids = new Set(b.rows.map(r => r.id))
    for (const id of ids) this.pendingPriority.delete(id)
    let k = 0
    for (const id of this.priority) if (!ids.has(id)) this.priority[k++] = id
    this.priority.length = k
  }

  /** The watermark passes rows already delivered ahead of it (so the outbox's head is a row to send). */
  private skipAhead (): void {
    for (const id of this.ahead.keys()) if (id <= this.delivered) this.ahead.delete(id)
    for (const id of this.gone.keys()) if (id <= this.delivered) this.gone.delete(id)
    while (this.ahead.size > 0) {
      const head = this.q.head.get(this.delivered) as { id: number } | undefined
      if (!head || !this.ahead.has(head.id)) return
      this.ahead.delete(head.id)
      this.delivered = head.id
    }
  }

  /** A regular batch leaves out rows sent (or to be sent) in the priority lane. */
  private withoutPriority<T extends { id: number }> (rows: T[]): T[] {
    return this.ahead.size === 0 && this.pendingPriority.size === 0 ? rows : rows.filter(r => !this.ahead.has(r.id) && !this.pendingPriority.has(r.id))
  }

  get outboxDepth (): number { return this.depth }
  /** Every outbox row with an id up to this has reached the cloud (in memory; written later). */
  get deliveredThrough (): number { return this.delivered }
  get outboxBytes (): number { return this.bytes }
  /** Delivered rows whose deletion (or watermark) is not written yet: retried by flushAcks(). */
  get ackBacklog (): number { return this.delivered - Math.max(this.deleted, this.deliveredWritten) }

  device (id: string): DeviceState | undefined {
    return this.q.device.get(id) as DeviceState | undefined
  }

  /** True when group commits become durable only by {@link sync} (a WalSyncer was given). */
  get syncsItself (): boolean { return this.walSync !== undefined }

  /** Everything written so far is on the disk when this resolves (the WAL's fdatasync, off the event loop). */
  sync (): Promise<void> { return this.walSync?.sync() ?? Promise.resolve() }

  /** The same, blocking: at shutdown. */
  syncNow (): void { this.walSync?.syncNow() }

  /**
   * A whole group commit, durable when it returns (FULL, or NORMAL and a blocking sync): the tests'
   * and tools' way. The pipeline uses writeGroup, sync and groupDurable instead.
   */
  commitGroup (accepted: readonly InboundMessage[], rollups: readonly TrafficRollup[] = []): number {
    const w = this.writeGroup(accepted, rollups)
    if (this.walSync) this.walSync.syncNow()
    this.groupDurable(w)
    return w.firstId
  }

  /**
   * One transaction: accepted messages into the outbox, each device's counters and sequence state
   * once, the traffic rollups given, and the bulk deletion of delivered rows when due. FULL; or, with
   * a WalSyncer, NORMAL, and durable only once {@link sync} resolves after it. Throws (nothing
   * written) on failure: SQLITE_FULL included. The first message's row id is `firstId`; the others
   * follow it without a gap (one transaction, one connection, AUTOINCREMENT). The outbox's depth,
   * bytes and priority lane count the group from {@link groupDurable} on: until then the egress sends
   * it from memory, as a group not yet committed.
   */
  writeGroup (accepted: readonly InboundMessage[], rollups: readonly TrafficRollup[] = []): GroupWrite {
    const perDevice = new Map<string, { messages: number, rejected: number, epoch: number, seq: number }>()
    const priorityIds: number[] = []
    let added = 0
    let firstId = 0
    const deleteThrough = this.deleteDue(Date.now()) ? this.delivered : 0
    this.atLevel(this.walSync ? 1 : this.synchronous, () => {
      for (const m of accepted) {
        const bytes = Buffer.byteLength(m.payload)
        const id = Number(this.q.insert.run(m.device, m.transport, m.stream, m.epoch, m.seq, m.receivedAt, m.payload, bytes).lastInsertRowid)
        if (firstId === 0) firstId = id
        if (this.priorityStreams.size > 0 && this.priorityStreams.has(m.stream)) priorityIds.push(id)
        added += bytes
        const d = perDevice.get(m.device) ?? { messages: 0, rejected: 0, epoch: -1, seq: -1 }
        d.messages++
        if (m.epoch > d.epoch || (m.epoch === d.epoch && m.seq > d.seq)) { d.epoch = m.epoch; d.seq = m.seq }
        perDevice.set(m.device, d)
      }
      for (const r of rollups) {
        this.q.rollup.run(r.minute, r.device ?? '', r.transport, r.stream ?? '', r.outcome, r.reason ?? '', r.messages, r.bytes)
        if (r.outcome === 'rejected' && r.device !== null) {
          const d = perDevice.get(r.device) ?? { messages: 0, rejected: 0, epoch: -1, seq: -1 }
          d.rejected += r.messages
          perDevice.set(r.device, d)
        }
      }
      const now = Date.now()
      for (const [id, d] of perDevice) this.q.upsertDevice.run({ id, now, ...d })
      if (deleteThrough > 0) this.writeDelete(deleteThrough)
    })
    this.counts.group++
    if (deleteThrough > 0) this.deleteDone(deleteThrough)
    return { firstId, messages: accepted.length, bytes: added, priorityIds }
  }

  /** A written group is durable: the outbox counts it (depth, bytes, the priority lane). */
  groupDurable (w: GroupWrite): void {
    this.depth += w.messages
    this.bytes += w.bytes
    for (const id of w.priorityIds) { this.priority.push(id); this.pendingPriority.add(id) }
  }

  /** Delivered rows are deleted at most once a second (one bulk DELETE instead of one per batch). */
  private deleteDue (now: number): boolean {
    return this.delivered > this.deleted && now - this.lastDeleteAt >= 1000
  }

  private writeDelete (through: number): void {
    this.q.deleteThrough.run(through)
    this.q.setMeta.run('delivered_through', String(through))
  }

  private deleteDone (through: number): void {
    this.deleted = Math.max(this.deleted, through)
    this.deliveredWritten = Math.max(this.deliveredWritten, through)
    this.lastDeleteAt = Date.now()
    this.counts.deletes++
  }

  /** A small bookkeeping write at synchronous=NORMAL (no fsync; the WAL keeps it across a process crash). */
  private normal (fn: () => void): void {
    this.atLevel(1, fn)
    this.counts.meta++
  }

  /**
   * One transaction at a synchronous level (1 NORMAL, 2 FULL), and back to the connection's own
   * (outbox.synchronous; FULL by default) after it: the audit log, the registry and the alerts share
   * the connection and keep their FULL commits.
   */
  private atLevel (level: number, fn: () => void): void {
    if (level !== this.synchronous) this.db.pragma(`synchronous = ${level}`)
    try {
      this.db.transaction(fn)()
    } finally {
      if (level !== this.synchronous) this.db.pragma(`synchronous = ${this.synchronous}`)
    }
  }

  /**
   * The oldest messages not yet delivered, as a batch. A batch id, once given, is remembered (one
   * store_meta row), so after a crash between the send and the acknowledgement the same messages go
   * out again under the same Idempotency-Key. Batches that an older release marked in the outbox's
   * batch_id column are honoured the same way.
   */
  nextBatch (gatewayId: string, maxMessages: number, maxBytes: number): Batch | undefined {
    if (this.priority.length > 0) {
      const p = this.priorityBatch(gatewayId, maxMessages, maxBytes)
      if (p !== undefined) return p
    }
    this.skipAhead()
    const head = this.q.head.get(this.delivered) as { id: number, batchId: string | null } | undefined
    if (!head) return undefined
    if (head.batchId !== null) {
      const rows = this.withoutPriority(this.q.byBatch.all(head.batchId, this.delivered) as Array<OutboxRow & { bytes: number }>)
      if (rows.length > 0) return toBatch(head.batchId, rows)
    }
    const f = this.batches.find(b => b.first <= head.id && head.id <= b.last)
    if (f !== undefined) {
      const rows = this.withoutPriority(this.q.range.all(head.id, f.last) as Array<OutboxRow & { bytes: number }>)
      if (rows.length > 0) return toBatch(f.id, rows)
    }
    const candidates = this.withoutPriority(this.q.oldest.all(this.delivered, maxMessages) as Array<OutboxRow & { bytes: number }>)
    const rows: Array<OutboxRow & { bytes: number }> = []
    let bytes = 0
    for (const r of candidates) {
      if (rows.length > 0 && bytes + r.bytes > maxBytes) break
      rows.push(r)
      bytes += r.bytes
    }
    if (rows.length === 0) return undefined
    const first = rows[0]!.id
    const last = rows[rows.length - 1]!.id
    const id = `${gatewayId}-${this.instance}-${first}-${last}`
    // The watermark rides along, so an acknowledgement costs no write of its own.
    const through = this.delivered
    this.batches = this.batches.filter(b => b.last > through)
    this.batches.push({ id, first, last })
    try {
      this.normal(() => {
        this.q.setMeta.run('batches', JSON.stringify(this.batches))
        if (through > this.deliveredWritten) this.q.setMeta.run('delivered_through', String(through))
      })
      this.deliveredWritten = Math.max(this.deliveredWritten, through)
    } catch (err) {
      // Disk full: send anyway. After a crash the batch may go again under another key (same message ids).
      if (!isFull(err)) throw err
      this.counts.metaFailures++
    }
    return toBatch(id, rows)
  }

  /**
   * The cloud has the batch (2xx). Recorded in memory at once: depth, and the watermark that keeps
   * these rows from being sent again by this process. The watermark reaches the disk with the next
   * batch or commit, or flushAcks() (a second later at most); the rows are deleted in bulk. Until
   * then a crash sends them again under their recorded batch id (at least once).
   */
  ackBatch (b: Batch): void {
    if (this.priorityBatches.has(b)) {
      // Delivered ahead of the watermark: remembered so no regular batch sends them again.
      if (!this.pendingPriority.has(b.firstId)) return
      this.unqueuePriority(b)
      for (const r of b.rows) if (r.id > this.delivered) this.ahead.set(r.id, Buffer.byteLength(r.payload))
      this.depth -= b.rows.length
      this.bytes -= b.bytes
      this.skipAhead()
      return
    }
    if (b.lastId <= this.delivered) return
    this.delivered = b.lastId
    this.depth -= b.rows.length
    this.bytes -= b.bytes
    this.skipAhead()
  }

  /**
   * Messages sent from memory reached the cloud: the `count` committed rows right after the
   * watermark, through `lastId`, of `bytes` payload bytes (every row of that range, including rows
   * already recorded ahead of the watermark: those are not subtracted twice). The watermark moves
   * only if they are all the rows after it (true unless another process, the CLI's `outbox retry`,
   * added rows meanwhile); if not, nothing is recorded and false is returned (the caller then records
   * them by id, ackAhead()).
   */
  ackCommitted (lastId: number, count: number, bytes: number): boolean {
    if (lastId <= this.delivered) return true
    if (lastId - count !== this.delivered) {
      let gone = 0
      for (const id of this.gone.keys()) if (id > this.delivered && id <= lastId) gone++
      if ((this.q.countAfter.get(this.delivered, lastId) as { n: number }).n + gone !== count) return false
    }
    // Rows of the range recorded already (delivered by the priority lane, or dead letters) are in
    // depth and bytes no more.
    for (const [id, b] of this.ahead) if (id <= lastId) { count--; bytes -= b; this.ahead.delete(id) }
    for (const [id, b] of this.gone) if (id <= lastId) { count--; bytes -= b; this.gone.delete(id) }
    this.delivered = lastId
    this.depth -= count
    this.bytes -= bytes
    // Every row up to lastId is delivered: none of them waits in the priority lane any more.
    if (this.priority.length > 0 && this.priority[0]! <= lastId) {
      let k = 0
      for (const id of this.priority) {
        if (id <= lastId) this.pendingPriority.delete(id)
        else this.priority[k++] = id
      }
      this.priority.length = k
    }
    this.skipAhead()
    return true
  }

  /**
   * Committed rows the cloud has, recorded one by one ahead of the watermark (the memory path sent
   * them out of order: events first, or their range is not the rows after the watermark). Rows
   * recorded already are skipped, so a row is subtracted from depth and bytes once.
   */
  ackAhead (rows: ReadonlyArray<{ id: number, bytes: number }>): void {
    const done = new Set<number>()
    for (const r of rows) {
      if (r.id <= this.delivered || this.ahead.has(r.id) || this.gone.has(r.id)) continue
      this.ahead.set(r.id, r.bytes)
      this.depth--
      this.bytes -= r.bytes
      if (this.pendingPriority.delete(r.id)) done.add(r.id)
    }
    if (done.size > 0) {
      let k = 0
      for (const id of this.priority) if (!done.has(id)) this.priority[k++] = id
      this.priority.length = k
    }
    this.skipAhead()
  }

  /**
   * Writes what ackBatch() kept in memory when no commit or batch did: called by a timer. Returns
   * false when the disk refused it (kept in memory, retried at the next call).
   */
  flushAcks (now = Date.now(), force = false): boolean {
    if (!force && !this.deleteDue(now)) return true
    if (this.delivered <= this.deleted) return true
    const through = this.delivered
    try {
      this.normal(() => this.writeDelete(through))
    } catch (err) {
      if (!isFull(err)) throw err
      this.counts.metaFailures++
      return false
    }
    this.deleteDone(through)
    return true
  }

  /**
   * The cloud refused the batch for good (4xx): it moves to dead letters with the reason. `each`:
   * row by row, not as the range after the watermark (a batch sent from memory: events first, or not
   * at the outbox's head); the watermark then stays.
   */
  deadLetterBatch (b: Batch, status: number | null, reason: string, max: number, each = false): number {
    let trimmed = 0
    const priority = each || this.priorityBatches.has(b)
    this.db.transaction(() => {
      if (priority) {
        // Its rows are not a range: one by one.
        for (const r of b.rows) { this.q.toDead.run(b.id, Date.now(), status, reason, r.id, r.id); this.q.deleteRange.run(r.id, r.id) }
      } else {
        // Rows in the range the priority lane already delivered are not dead letters: deleted first.
        for (const id of this.ahead.keys()) if (id >= b.firstId && id <= b.lastId) this.q.deleteRange.run(id, id)
        this.q.toDead.run(b.id, Date.now(), status, reason, b.firstId, b.lastId)
        this.q.deleteRange.run(b.firstId, b.lastId)
      }
      const n = (this.q.deadCount.get() as { n: number }).n
      if (n > max) trimmed = this.q.trimDead.run(n - max).changes
    })()
    if (priority) {
      this.unqueuePriority(b)
      for (const r of b.rows) if (r.id > this.delivered && !this.ahead.has(r.id)) this.gone.set(r.id, Buffer.byteLength(r.payload))
    } else this.delivered = Math.max(this.delivered, b.lastId)
    this.depth -= b.rows.length
    this.bytes -= b.bytes
    this.skipAhead()
    return trimmed
  }

  oldestReceivedAt (): number | null {
    return (this.q.oldestAt.get(this.delivered) as { at: number } | undefined)?.at ?? null
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

  /** Removes traffic rollups older than the retention. */
  pruneTrafficRollups (maxAgeMs: number): number {
    return this.db.prepare('DELETE FROM traffic_rollups WHERE minute < ?').run(Math.floor((Date.now() - maxAgeMs) / 60000)).changes
  }

  /** Keeps the (pre-rollup) traffic log within its age and row bounds. Deletes in chunks so the data path never waits long. */
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
