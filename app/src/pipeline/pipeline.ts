import { EventEmitter } from 'node:events'
import { statfsSync } from 'node:fs'
import type { Config } from '../config/schema.js'
import { DEVICE_ID_PATTERN } from '../devices/device-id.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'
import type { InboundMessage, Store, TrafficRollup } from '../store/store.js'
import { parseMessage, RateLimiter, sequenceVerdict, type RejectReason } from './checks.js'

export interface Submission {
  device: string
  transport: 'mqtt' | 'coap'
  stream: string
  raw: Buffer | string
  /** The transport says this is a resend (MQTT DUP flag): an old sequence number is then expected. */
  redelivery?: boolean
}

export type Outcome =
  | { accepted: true }
  | { accepted: false, reason: RejectReason, detail: string }

export interface RejectionEvent { device: string | null, transport: string, stream: string | null, reason: RejectReason, detail: string }

/** A hook for the identity layer: return a reason to refuse a device (revoked, quarantined, unknown). */
/**
 * `held`: the message was kept back (quarantine); the outcome waits for that write to commit, so a
 * transport acknowledges a held message only once it is on disk.
 */
export type DeviceGate = (device: string, submission: Submission) => { reason: RejectReason, detail: string, held?: Promise<void> } | undefined

interface Pending { msg: InboundMessage, size: number, resolve: (o: Outcome) => void, reject: (e: Error) => void }

/** Why the gateway holds back because of its disk: SQLite said full, or /data fell below the floor. */
export type DiskFullReason = 'sqlite_full' | 'free_space'

/** How often /data's free space is looked at (one statfs). */
const DISK_CHECK_MS = 2000
/** Free space above the floor needed to leave the disk-full state. */
const RESUME_MARGIN_BYTES = 1048576

/**
 * validate -> replay check -> rate limit -> group commit into the outbox. submit() resolves only
 * once the message is committed (or rejected), so a transport acknowledges a device only then.
 * Events: 'committed' (count, messages), 'rejected' (RejectionEvent), 'disk' (DiskFullReason | null).
 *
 * Group commit by a latency budget (app/docs/write-path.md): a message waits at most its
 * transport's budget for the commit (MQTT: `outbox.commitLingerMs`, the device has the broker's
 * PUBACK already; CoAP: `outbox.coapCommitLingerMs`, its 2.04 waits), a group is committed early
 * once it has `outbox.commitEarlyMessages`, and commits are at least `outbox.commitMinIntervalMs`
 * apart unless `outbox.commitMaxMessages` are waiting. So the fsyncs per second are bounded at any
 * rate and a quiet gateway still puts several messages in one commit.
 *
 * The traffic log is kept in memory as per-minute rollups and written with a commit once the minute
 * is over. A full disk (SQLITE_FULL, or less than `outbox.minFreeBytes` free on the data directory)
 * is a state: nothing is acknowledged or read meanwhile (the outbox counts as full), what was
 * pending stays pending, and the commit is tried again when space returns.
 */
export class Pipeline extends EventEmitter {
  private pending: Pending[] = []
  private readonly rollups = new Map<string, TrafficRollup>()
  private pendingBytes = 0
  private timer?: NodeJS.Timeout
  private timerAt = 0
  private immediate = false
  /** A transport stopped reading until its pending messages commit: no linger (see commitSoon). */
  private urgent = false
  /** When the last commit ended: the next starts at least commitMinIntervalMs later. */
  private lastCommitAt = 0
  /** Earliest commit deadline among the pending messages; Infinity: to be recomputed. */
  private groupDue = Infinity
  private diskLogged = false
  private readonly last = new Map<string, { epoch: number, seq: number }>()
  private readonly limiter: RateLimiter
  private readonly spaceWaiters: Array<() => void> = []
  private readonly drainWaiters: Array<() => void> = []
  private readonly received
  private readonly accepted
  private readonly rejected
  private readonly commits
  private diskTimer?: NodeJS.Timeout
  private rollupTimer?: NodeJS.Timeout
  /** Set while the disk holds the gateway back. */
  diskFullReason: DiskFullReason | null = null
  gate?: DeviceGate

  constructor (private readonly store: Store, private readonly config: Config, metrics: Registry, private readonly log: Logger,
    /** Where free space is measured (the data directory); undefined: not measured. */
    private readonly dataDir?: string) {
    super()
    this.limiter = new RateLimiter(config.limits.ratePerSecond, config.limits.rateBurst)
    this.received = metrics.counter('gateway_messages_received_total', 'Messages received from devices, by transport.')
    this.accepted = metrics.counter('gateway_messages_accepted_total', 'Messages committed to the outbox, by transport.')
    this.rejected = metrics.counter('gateway_messages_rejected_total', 'Messages refused before the outbox, by reason and transport.')
    this.commits = metrics.counter('gateway_outbox_commits_total', 'Group commits (synchronous=FULL transactions) into the outbox.')
    metrics.gauge('gateway_disk_full', '1 while a full data disk (SQLITE_FULL or below outbox.minFreeBytes) holds ingress back.', () => this.diskFullReason === null ? 0 : 1)
    metrics.gauge('gateway_outbox_meta_writes_total', 'Uplink bookkeeping writes (synchronous=NORMAL: batch ids, delivered watermark, bulk deletes).', () => store.counts.meta, 'counter')
  }

  /** Starts watching the data directory's free space. */
  start (): void {
    // A quiet minute's rollups (or one of refusals only) still reach the disk within a minute.
    this.rollupTimer = setInterval(() => this.flushRollups(), 60_000).unref()
    if (this.dataDir === undefined) return
    this.checkDisk()
    this.diskTimer = setInterval(() => this.checkDisk(), DISK_CHECK_MS).unref()
  }

  /** True while the disk is full: /health reports it (503 "disk_full"). */
  get diskFull (): boolean { return this.diskFullReason !== null }

  /** True while the outbox (committed + pending) is at capacity or the disk is full: transports must hold back. */
  get full (): boolean {
    if (this.diskFullReason !== null) return true
    const o = this.config.outbox
    return this.store.outboxDepth + this.pending.length >= o.maxMessages || this.store.outboxBytes + this.pendingBytes >= o.maxBytes
  }

  /** Resolves when the outbox has room again (or the signal aborts). */
  waitForSpace (signal?: AbortSignal): Promise<void> {
    if (!this.full || signal?.aborted === true) return Promise.resolve()
    return new Promise(resolve => {
      const done = (): void => { signal?.removeEventListener('abort', done); resolve() }
      this.spaceWaiters.push(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  /** Called when messages leave the outbox. */
  notifySpace (): void {
    if (this.full) return
    for (const w of this.spaceWaiters.splice(0)) w()
  }

  submit (s: Submission): Promise<Outcome> {
    const size = typeof s.raw === 'string' ? Buffer.byteLength(s.raw) : s.raw.length
    this.received.inc({ transport: s.transport })
    if (!DEVICE_ID_PATTERN.test(s.device)) return Promise.resolve(this.refuse(s, size, 'bad_device_id', 'device id has characters outside [A-Za-z0-9_.-] or is too long', null))
    if (!this.config.mqtt.streams.includes(s.stream)) return Promise.resolve(this.refuse(s, size, 'unknown_stream', `stream "${s.stream}" is not one of ${this.config.mqtt.streams.join(', ')}`, null))
    const blocked = this.gate?.(s.device, s)
    if (blocked) {
      if (blocked.held) return blocked.held.then(() => this.refuse(s, size, blocked.reason, blocked.detail, null))
      return Promise.resolve(this.refuse(s, size, blocked.reason, blocked.detail, null))
    }
    const parsed = parseMessage(s.raw, this.config.limits.maxPayloadBytes)
    if (!parsed.ok) return Promise.resolve(this.refuse(s, size, parsed.reason, parsed.detail, null))
    const { epoch, seq, payload } = parsed.value
    const last = this.lastSeen(s.device)
    const verdict = sequenceVerdict(last, parsed.value)
    if (verdict !== 'new') {
      // After a gateway crash the broker resends what the gateway had committed but not yet
      // acknowledged: those are dropped as 'redelivered' and do not count against the device.
      const refusal = (): Outcome => this.refuse(s, size, s.redelivery === true ? 'redelivered' : verdict, `(epoch ${epoch}, seq ${seq}) is not after (epoch ${last.epoch}, seq ${last.seq})`, seq)
      // The copy that set this sequence number may still wait for its commit (a broker reconnect
      // during the linger resends it): refusing this one is acknowledging it, so only after that commit.
      if (this.pending.some(p => p.msg.device === s.device)) return this.committed().then(refusal)
      return Promise.resolve(refusal())
    }
    if (!this.limiter.take(s.device)) return Promise.resolve(this.refuse(s, size, 'rate_limited', `more than ${this.config.limits.ratePerSecond}/s`, seq))
    if (this.full) return Promise.resolve(this.refuse(s, size, 'outbox_full', 'outbox at capacity; retry later', seq, false))

    this.last.set(s.device, { epoch, seq })
    const msg: InboundMessage = { device: s.device, transport: s.transport, stream: s.stream, epoch, seq, receivedAt: Date.now(), payload }
    this.count(msg.receivedAt, s.device, s.transport, s.stream, 'accepted', null, size)
    this.pendingBytes += size
    return new Promise<Outcome>((resolve, reject) => {
      this.pending.push({ msg, size, resolve, reject })
      if (this.groupDue !== Infinity) this.groupDue = Math.min(this.groupDue, this.deadline(msg))
      this.schedule()
    })
  }

  /**
   * A transport that refuses a message before submit() (CoAP authentication) reports it here, so
   * every refusal is counted, logged in the traffic log and emitted as 'rejected' the same way.
   */
  reject (s: Submission, reason: RejectReason, detail: string): Outcome {
    this.received.inc({ transport: s.transport })
    return this.refuse(s, typeof s.raw === 'string' ? Buffer.byteLength(s.raw) : s.raw.length, reason, detail, null)
  }

  /** Resolves once nothing is pending (after a commit, or when pending messages were failed). */
  private committed (): Promise<void> {
    return new Promise(resolve => this.drainWaiters.push(resolve))
  }

  private drained (): void {
    if (this.pending.length === 0) for (const w of this.drainWaiters.splice(0)) w()
  }

  /** Commits what is pending now (up to commitMaxMessages), with the rollups of finished minutes. */
  flush (all = false): void {
    this.immediate = false
    this.urgent = false
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined }
    if (this.diskFullReason !== null && !all) return
    const rollups = this.takeRollups(all)
    if (this.pending.length === 0 && rollups.length === 0) return
    const max = this.config.outbox.commitMaxMessages
    const group = this.pending.splice(0, max)
    this.groupDue = Infinity // recomputed from what is left
    try {
      this.store.commitGroup(group.map(p => p.msg), rollups)
    } catch (err) {
      this.lastCommitAt = Date.now()
      if ((err as { code?: string }).code === 'SQLITE_FULL') {
        // Nothing was written. Keep everything for the retry: no device has been acknowledged.
        this.pending.unshift(...group)
        this.restoreRollups(rollups)
        this.setDiskFull('sqlite_full')
        return
      }
      // Nothing of the group is in the outbox: forget the sequence state it advanced and fail every
      // message, so the transport does not acknowledge them and the devices (or broker) send again.
      for (const p of group) this.last.delete(p.msg.device)
      this.log.error('outbox commit failed', { err, messages: group.length })
      const e = err instanceof Error ? err : new Error(String(err))
      for (const p of group) { this.pendingBytes -= p.size; p.reject(e) }
      this.drained()
      if (this.pending.length > 0) this.schedule()
      return
    }
    // The spacing counts from the end of the commit: on an SD card an fsync takes 10-50 ms and blocks
    // the event loop, so this leaves the loop at least commitMinIntervalMs between two commits to
    // read the next group and send PUBACKs and batches.
    this.lastCommitAt = Date.now()
    this.commits.inc()
    for (const p of group) {
      this.pendingBytes -= p.size
      this.accepted.inc({ transport: p.msg.transport })
      p.resolve({ accepted: true })
    }
    if (group.length > 0) this.emit('committed', group.length, group.map(p => p.msg))
    this.drained()
    if (this.pending.length > 0) this.schedule()
  }

  close (): void {
    if (this.diskTimer) clearInterval(this.diskTimer)
    if (this.rollupTimer) clearInterval(this.rollupTimer)
    if (this.diskFullReason !== null) this.tryResume()
    this.flush(true)
    while (this.pending.length > 0 && this.diskFullReason === null) this.flush(true)
    // Still full: what is pending was never acknowledged; the broker or the device sends it again.
    for (const p of this.pending.splice(0)) p.reject(new Error('stopping with a full disk'))
    this.pendingBytes = 0
    this.drained()
    for (const w of this.spaceWaiters.splice(0)) w()
  }

  /**
   * A transport has stopped reading until what it has pending is committed (MQTT: its window of
   * unacknowledged messages is full, and the broker sends nothing more until PUBACKs come back).
   * Waiting for a linger would only idle the gateway, so the group is committed as soon as the
   * commit spacing allows.
   */
  commitSoon (): void {
    if (this.pending.length === 0) return
    this.urgent = true
    this.schedule()
  }

  /**
   * Sets the commit for the pending group's deadline (see the class comment). A commit that is due
   * runs on the next tick, not from a timer: a burst of MQTT packets is handled in one chain of
   * ticks (mqtt.js reads the next packet on process.nextTick), which holds timers and setImmediate
   * back until the whole burst is read (measured: up to 2,000 messages and 800 ms at saturation),
   * so the commit, and with it the PUBACKs that let the broker send more, would wait for the burst.
   */
  private schedule (): void {
    if (this.immediate || this.diskFullReason !== null || this.pending.length === 0) return
    const o = this.config.outbox
    if (this.pending.length >= o.commitMaxMessages) {
      this.flushNextTick()
      return
    }
    const now = Date.now()
    let due: number
    if (this.pending.length >= o.commitEarlyMessages || this.urgent) due = now
    else {
      // The earliest deadline of a pending message (kept up to date by submit()).
      // The oldest message of each transport sets the deadline; all pending are in arrival order.
      due = Infinity
      for (const p of this.pending) {
        const d = p.msg.receivedAt + (p.msg.transport === 'coap' ? o.coapCommitLingerMs : o.commitLingerMs)
        if (d < due) due = d
        if (p.msg.transport === 'coap') break
      }
    }
    due = Math.max(due, this.lastCommitAt + o.commitMinIntervalMs)
    // Due now, or a timer already overdue (the event loop is busy with a burst of reads).
    if (Math.min(due, this.timer ? this.timerAt : Infinity) <= now) {
      this.flushNextTick()
      return
    }
    if (this.timer && this.timerAt <= due) return
    if (this.timer) clearTimeout(this.timer)
    this.timerAt = due
    this.timer = setTimeout(() => { this.timer = undefined; this.flush() }, Math.max(0, due - now))
  }

  private flushNextTick (): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined }
    this.immediate = true
    process.nextTick(() => { if (this.immediate) this.flush() })
  }

  private deadline (m: InboundMessage): number {
    return m.receivedAt + (m.transport === 'coap' ? this.config.outbox.coapCommitLingerMs : this.config.outbox.commitLingerMs)
  }

  /** Counts a message in its minute's rollup (the traffic log). */
  private count (at: number, device: string | null, transport: string, stream: string | null, outcome: 'accepted' | 'rejected', reason: string | null, bytes: number): void {
    const minute = Math.floor(at / 60000)
    const key = `${minute}\u0000${device ?? ''}\u0000${transport}\u0000${stream ?? ''}\u0000${outcome}\u0000${reason ?? ''}`
    let r = this.rollups.get(key)
    if (!r) {
      r = { minute, device, transport, stream, outcome, reason, messages: 0, bytes: 0 }
      this.rollups.set(key, r)
    }
    r.messages++
    r.bytes += bytes
  }

  /** Rollups of minutes that are over (all of them when closing or when there are many). */
  private takeRollups (all: boolean): TrafficRollup[] {
    if (this.rollups.size === 0) return []
    const minute = Math.floor(Date.now() / 60000)
    const everything = all || this.rollups.size > 20000
    const out: TrafficRollup[] = []
    for (const [k, r] of this.rollups) {
      if (everything || r.minute < minute) { out.push(r); this.rollups.delete(k) }
    }
    return out
  }

  private restoreRollups (rs: readonly TrafficRollup[]): void {
    for (const r of rs) {
      const key = `${r.minute}\u0000${r.device ?? ''}\u0000${r.transport}\u0000${r.stream ?? ''}\u0000${r.outcome}\u0000${r.reason ?? ''}`
      const cur = this.rollups.get(key)
      if (cur) { cur.messages += r.messages; cur.bytes += r.bytes } else this.rollups.set(key, r)
    }
  }

  /**
   * Writes the finished minutes' rollups when nothing else commits (a quiet gateway, or only
   * refusals); called by the gateway's timer once a minute.
   */
  flushRollups (): void {
    if (this.pending.length === 0 && this.diskFullReason === null) this.flush()
  }

  /** statfs of the data directory: below the floor the gateway holds back before SQLite fails. */
  freeBytes (): number | undefined {
    if (this.dataDir === undefined) return undefined
    try {
      const s = statfsSync(this.dataDir)
      return s.bavail * s.bsize
    } catch {
      return undefined
    }
  }

  private checkDisk (): void {
    const free = this.freeBytes()
    const floor = this.config.outbox.minFreeBytes
    if (this.diskFullReason === null) {
      if (free !== undefined && free < floor) this.setDiskFull('free_space', free)
      return
    }
    // Resume with a margin above the floor (at least 1 MB, even with no floor after SQLITE_FULL),
    // so the state does not flap around it.
    if (free === undefined || free >= floor + Math.max(RESUME_MARGIN_BYTES, Math.min(4 * 1048576, floor / 4))) this.tryResume()
  }

  private setDiskFull (reason: DiskFullReason, free?: number): void {
    if (this.diskFullReason !== null) return
    this.diskFullReason = reason
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined }
    if (this.diskLogged) return // a failed retry: said once already
    this.diskLogged = true
    this.log.error('data disk full: not acknowledging or reading devices until space returns', {
      reason, freeBytes: free ?? this.freeBytes(), floorBytes: this.config.outbox.minFreeBytes, pending: this.pending.length
    })
    this.emit('disk', reason)
  }

  /** Tries the pending commit again; leaves the disk-full state only if it succeeds. */
  private tryResume (): void {
    const reason = this.diskFullReason
    this.diskFullReason = null
    if (this.pending.length > 0 || this.rollups.size > 0) {
      this.flush()
      if (this.diskFullReason !== null) return
    }
    if (reason !== null && this.diskLogged) {
      this.diskLogged = false
      this.log.info('data disk has room again: resuming', { freeBytes: this.freeBytes(), was: reason })
      this.emit('disk', null)
    }
    this.notifySpace()
  }

  private lastSeen (device: string): { epoch: number, seq: number } {
    let l = this.last.get(device)
    if (!l) {
      const row = this.store.device(device)
      l = row ? { epoch: row.lastEpoch, seq: row.lastSeq } : { epoch: -1, seq: -1 }
      if (this.last.size >= 200000) this.last.clear()
      this.last.set(device, l)
    }
    return l
  }

  private refuse (s: Submission, size: number, reason: RejectReason, detail: string, seq: number | null, record = true): Outcome {
    this.rejected.inc({ reason, transport: s.transport })
    const device = DEVICE_ID_PATTERN.test(s.device) ? s.device : null
    if (record) this.count(Date.now(), device, s.transport, s.stream, 'rejected', reason, size)
    this.emit('rejected', { device, transport: s.transport, stream: s.stream, reason, detail } satisfies RejectionEvent)
    return { accepted: false, reason, detail }
  }
}
