import type { InboundMessage, Store } from '../store/store.js'

/**
 * A message admitted and waiting for its group commit. The egress may send it to the cloud
 * meanwhile (sending from memory, app/docs/write-path.md); the delivery is recorded only once the
 * row is committed.
 */
export interface PendingMessage {
  readonly msg: InboundMessage
  /** Bytes of its payload as the outbox counts them. */
  readonly bytes: number
  /** The cloud has it (2xx): its commit records the delivery at once. */
  delivered: boolean
  /** Its outbox row id once committed; 0 while pending; -1 when its commit failed (never acknowledged). */
  id: number
  /**
   * The store has recorded it (its depth and bytes no longer count it): delivered ahead of the
   * rows before it, by this path or by the outbox's priority lane, or moved to the dead letters.
   */
  counted: boolean
}

/** Most committed, undelivered messages kept in memory for the egress (about 300 B each). */
const MEMORY_MAX = 10_000

/**
 * What the egress sends from memory (app/docs/write-path.md, "Sending from memory"): the messages
 * admitted but not yet committed (the pipeline's pending group, read through `pending`) and the
 * committed ones kept until the cloud has them, in row order, and the bookkeeping that records each
 * delivery in the store exactly once (a delivered prefix after the watermark in one step, anything
 * delivered out of order one by one). The pipeline owns the commits; this class owns what memory
 * knows about delivery. The egress sees it as its MemorySource.
 */
export class SendQueue {
  /** Committed, not yet delivered, in row order: what the egress sends from memory (see unsent). */
  private recent: PendingMessage[] = []
  /** Messages of `recent` the store has recorded already (`counted`): not undelivered rows of the outbox. */
  private countedInRecent = 0
  /**
   * Priority-stream messages admitted since unsent() last found none waiting in memory: an upper
   * bound, so a gateway without events never scans for them (zeroed when a scan finds none).
   */
  private priorityAdmitted = 0
  private settleWaiters: Array<{ m: PendingMessage, resolve: () => void }> = []

  constructor (private readonly store: Store,
    /** The pipeline's messages waiting for their commit, oldest first, in groups (no copy of them is made). */
    private readonly pending: () => ReadonlyArray<readonly PendingMessage[]>,
    /** Deliveries were recorded: the outbox has room again (the pipeline's notifySpace). */
    private readonly onRecorded: () => void) {}

  /** A message was admitted (it is in `pending` now). */
  admitted (m: PendingMessage): void {
    if (this.store.isPriority(m.msg.stream)) this.priorityAdmitted++
  }

  /** Admitted messages not yet committed. */
  get uncommittedCount (): number {
    let n = 0
    for (const list of this.pending()) n += list.length
    return n
  }

  /**
   * Messages not yet delivered that the egress can send from memory, up to the limits (at least
   * one): committed ones kept since their commit, then admitted ones not yet committed. Messages of a
   * priority stream (device `events`, Store.prioritise) go first: while any waits, the batch is made
   * of them alone, oldest first, whatever telemetry backlog is older (issue #13; their order among
   * themselves, and so per device and stream, holds). Otherwise oldest first.
   */
  unsent (maxMessages: number, maxBytes: number): PendingMessage[] {
    if (this.priorityAdmitted > 0) {
      const first = this.take(maxMessages, maxBytes, true)
      if (first.length > 0) return first
      this.priorityAdmitted = 0
    }
    return this.take(maxMessages, maxBytes, false)
  }

  private take (maxMessages: number, maxBytes: number, priorityOnly: boolean): PendingMessage[] {
    const out: PendingMessage[] = []
    let bytes = 0
    for (const list of [this.recent, ...this.pending()]) {
      for (const p of list) {
        if (p.delivered || (priorityOnly && !this.store.isPriority(p.msg.stream))) continue
        if (out.length >= maxMessages || (out.length > 0 && bytes + p.bytes > maxBytes)) return out
        out.push(p)
        bytes += p.bytes
      }
    }
    return out
  }

  /**
   * How many committed, undelivered messages are kept in memory. When that is every committed
   * undelivered row of the outbox, the egress sends from memory: no read of the outbox, and no
   * bookkeeping write per batch. Those the outbox delivered meanwhile (`deliveredThrough`) are dropped.
   */
  committedInMemory (deliveredThrough: number): number {
    let n = 0
    while (n < this.recent.length && this.recent[n]!.id <= deliveredThrough) n++
    this.dropHead(n)
    return this.recent.length - this.countedInRecent
  }

  /** Removes the first n messages of `recent`. */
  private dropHead (n: number): void {
    if (n === 0) return
    if (this.countedInRecent > 0) for (let i = 0; i < n; i++) if (this.recent[i]!.counted) this.countedInRecent--
    this.recent.splice(0, n)
  }

  /**
   * A group was committed (its messages have their row ids, in row order). The group stays in
   * memory until delivered, so the egress need not read it back; those the cloud already has (sent
   * from memory) are recorded as delivered now, by the same prefix rule as a delivery. Returns
   * whether any delivery was recorded.
   */
  committed (group: readonly PendingMessage[]): boolean {
    let delivered = 0
    for (const p of group) {
      this.recent.push(p)
      if (p.delivered) delivered++
    }
    if (delivered > 0) this.record(group.filter(p => p.delivered))
    // Bounded (a long outage): past the bound the outbox is read instead, until it has caught up.
    // What memory delivered is recorded in the store by now (record above), so nothing is lost.
    if (this.recent.length - this.countedInRecent > MEMORY_MAX) { this.recent = []; this.countedInRecent = 0 }
    this.settle()
    return delivered > 0
  }

  /**
   * The cloud has these messages (2xx on a batch sent from memory). Those committed meanwhile are
   * recorded as delivered now; the others when their commit is done; those whose commit failed were
   * never acknowledged, and come again from the device or broker (same message id).
   */
  delivered (ms: readonly PendingMessage[]): void {
    for (const m of ms) m.delivered = true
    if (this.record(ms)) this.onRecorded()
  }

  /**
   * The outbox path delivered these rows (the store's priority lane, which may send rows memory
   * holds too, after a restart or an overflow) or moved them to the dead letters: the store has
   * recorded them, so memory marks them delivered and never sends them again.
   */
  deliveredElsewhere (rows: ReadonlyArray<{ id: number }>): void {
    const through = this.store.deliveredThrough
    let any = false
    for (const r of rows) {
      if (r.id <= through) continue
      const m = this.findRecent(r.id)
      if (m === undefined || m.counted) continue
      m.delivered = true
      m.counted = true
      this.countedInRecent++
      any = true
    }
    if (any) this.record([])
  }

  /** The message of `recent` with this row id (ids ascend in `recent`): a binary search. */
  private findRecent (id: number): PendingMessage | undefined {
    let lo = 0
    let hi = this.recent.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >> 1
      const m = this.recent[mid]!
      if (m.id === id) return m
      if (m.id < id) lo = mid + 1
      else hi = mid - 1
    }
    return undefined
  }

  /**
   * Records in the store what memory knows is delivered, without counting a row twice:
   * - the delivered PREFIX of `recent` (rows right after the watermark) with one ackCommitted (no
   *   outbox read in the usual case), including rows of it recorded ahead already (the store does not
   *   subtract those again);
   * - `ms` (just delivered or just committed) that lie after an undelivered row (events sent ahead of
   *   a telemetry backlog) one by one, ahead of the watermark (ackAhead), so the outbox path, should it
   *   take over, does not send them again.
   * Returns whether anything was recorded.
   */
  private record (ms: readonly PendingMessage[]): boolean {
    let n = 0
    const through = this.store.deliveredThrough
    while (n < this.recent.length && this.recent[n]!.id <= through) n++
    this.dropHead(n)
    let count = 0
    let bytes = 0
    let recorded = false
    while (count < this.recent.length && this.recent[count]!.delivered) bytes += this.recent[count++]!.bytes
    if (count > 0) {
      const prefix = this.recent.slice(0, count)
      this.dropHead(count)
      // Not the rows after the watermark (another process added rows): recorded one by one instead.
      if (!this.store.ackCommitted(prefix[count - 1]!.id, count, bytes)) this.store.ackAhead(prefix.map(m => ({ id: m.id, bytes: m.bytes })))
      for (const m of prefix) m.counted = true
      recorded = true
    }
    const ahead = ms.filter(m => m.id > 0 && m.delivered && !m.counted)
    if (ahead.length > 0) {
      this.store.ackAhead(ahead.map(m => ({ id: m.id, bytes: m.bytes })))
      const first = this.recent[0]?.id ?? Infinity
      for (const m of ahead) {
        m.counted = true
        if (m.id >= first) this.countedInRecent++
      }
      recorded = true
    }
    return recorded
  }

  /** Resolves once `m` is committed or its commit failed (the egress waits so after a refusal). */
  settled (m: PendingMessage): Promise<void> {
    if (m.id !== 0) return Promise.resolve()
    return new Promise(resolve => this.settleWaiters.push({ m, resolve }))
  }

  /** Commits ended (or failed): wakes those waiting in settled() for messages that have an id now. */
  settle (): void {
    if (this.settleWaiters.length === 0) return
    this.settleWaiters = this.settleWaiters.filter(w => { if (w.m.id === 0) return true; w.resolve(); return false })
  }
}
