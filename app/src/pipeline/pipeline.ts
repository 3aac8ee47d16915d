import { EventEmitter } from 'node:events'
import { statfsSync } from 'node:fs'
import type { Config } from '../config/schema.js'
import { DEVICE_ID_PATTERN } from '../devices/device-id.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'
import type { GroupWrite, InboundMessage, Store, TrafficRollup } from '../store/store.js'
import { admissionVerdict, commitPlan, type AdmissionContext } from './admission.js'
import { REJECT_REASONS, RateLimiter, type RejectReason } from './checks.js'
import { SendQueue, type PendingMessage } from './send-queue.js'

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

interface Pending extends PendingMessage { size: number, resolve: (o: Outcome) => void, reject: (e: Error) => void }

/** What `refuse` needs to count, log and emit a refusal. */
interface RefusalRecord { submission: Submission, size: number, reason: RejectReason, detail: string, record?: boolean }

/** Why the gateway holds back because of its disk: SQLite said full, or /data fell below the floor. */
export type DiskFullReason = 'sqlite_full' | 'free_space'

/** How often /data's free space is looked at (one statfs). */
const DISK_CHECK_MS = 2000
const ACCEPTED: Outcome = Object.freeze({ accepted: true })
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
  /**
   * Groups written to the WAL whose sync has not returned yet (a store that syncs itself), oldest
   * first: not acknowledged, still sent from memory as not committed, counted as pending.
   */
  private unsynced: Array<{ group: Pending[], write: GroupWrite, seq: number }> = []
  private unsyncedMessages = 0
  private writes = 0
  private durableThrough = 0
  private closed = false
  private readonly rollups = new Map<string, TrafficRollup>()
  private pendingBytes = 0
  private timer?: NodeJS.Timeout
  private timerAt = 0
  private immediate = false
  /** A transport stopped reading until its pending messages commit: no linger (see commitSoon). */
  private urgent = false
  /** When the last commit ended: the next starts at least commitMinIntervalMs later. */
  private lastCommitAt = 0
  /** Arrival of the oldest pending MQTT and CoAP message: they set the group's deadline. */
  private oldestMqtt: number | undefined
  private oldestCoap: number | undefined
  private diskLogged = false
  private readonly last = new Map<string, { epoch: number, seq: number }>()
  private readonly limiter: RateLimiter
  private readonly admission: AdmissionContext
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
  /** Called for every admitted message (the egress, which may send it before its commit). */
  onAdmit?: () => void
  /** What the egress sends from memory: pending messages and committed ones until delivered. */
  readonly memory: SendQueue

  constructor (private readonly store: Store, private readonly config: Config, metrics: Registry, private readonly log: Logger,
    /** Where free space is measured (the data directory); undefined: not measured. */
    private readonly dataDir?: string) {
    super()
    this.memory = new SendQueue(store, () => this.uncommitted(), () => this.notifySpace())
    this.limiter = new RateLimiter(config.limits.ratePerSecond, config.limits.rateBurst)
    // Made once: closures made per message cost measurably at 1,000 msg/s (the bundle keeps names).
    this.admission = {
      streams: config.mqtt.streams,
      maxPayloadBytes: config.limits.maxPayloadBytes,
      ratePerSecond: config.limits.ratePerSecond,
      last: d => this.lastSeen(d),
      // Written and not yet synced counts too: a copy refused as already seen is acknowledged only
      // once the original is on the disk.
      pendingFrom: d => this.pending.some(p => p.msg.device === d) || this.unsynced.some(u => u.group.some(p => p.msg.device === d)),
      takeToken: d => this.limiter.take(d)
    }
    // Every counter's known series at 0 where it is defined (Prometheus by the book: a series that
    // appears only at its first increment makes rate() and increase() miss that increment).
    const transports = (config.coap.enabled ? ['mqtt', 'coap'] : ['mqtt']).map(transport => ({ transport }))
    this.received = metrics.counter('gateway_messages_received_total', 'Messages received from devices, by transport.').init(...transports)
    this.accepted = metrics.counter('gateway_messages_accepted_total', 'Messages committed to the outbox, by transport.').init(...transports)
    this.rejected = metrics.counter('gateway_messages_rejected_total', 'Messages refused before the outbox, by reason and transport.')
      .init(...transports.flatMap(({ transport }) => REJECT_REASONS.map(reason => ({ reason, transport }))))
    this.commits = metrics.counter('gateway_outbox_commits_total', 'Group commits into the outbox (each fsynced before its messages are acknowledged).').init()
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
    return this.store.outboxDepth + this.unsyncedMessages + this.pending.length >= o.maxMessages || this.store.outboxBytes + this.pendingBytes >= o.maxBytes
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
    // The identity gate runs only for a well-formed device id on a known stream (as before #16).
    const blocked = DEVICE_ID_PATTERN.test(s.device) && this.config.mqtt.streams.includes(s.stream) ? this.gate?.(s.device, s) : undefined
    if (blocked?.held) return blocked.held.then(() => this.refuse({ submission: s, size, reason: blocked.reason, detail: blocked.detail }))
    const v = admissionVerdict({ device: s.device, stream: s.stream, raw: s.raw, redelivery: s.redelivery === true, gate: blocked, full: this.full }, this.admission)
    if (!v.admit) {
      const refusal = (): Outcome => this.refuse({ submission: s, size, reason: v.reason, detail: v.detail, record: v.record })
      return v.afterCommit ? this.committed().then(refusal) : Promise.resolve(refusal())
    }
    const { epoch, seq, payload } = v
    this.last.set(s.device, { epoch, seq })
    const msg: InboundMessage = { device: s.device, transport: s.transport, stream: s.stream, epoch, seq, receivedAt: Date.now(), payload }
    this.count(msg.receivedAt, s.device, s.transport, s.stream, 'accepted', null, size)
    this.pendingBytes += size
    if (msg.transport === 'coap') this.oldestCoap ??= msg.receivedAt
    else this.oldestMqtt ??= msg.receivedAt
    return new Promise<Outcome>((resolve, reject) => {
      const p: Pending = { msg, size, bytes: Buffer.byteLength(payload), delivered: false, id: 0, counted: false, resolve, reject }
      this.pending.push(p)
      this.memory.admitted(p)
      this.schedule()
      this.onAdmit?.()
    })
  }

  /**
   * A transport that refuses a message before submit() (CoAP authentication) reports it here, so
   * every refusal is counted, logged in the traffic log and emitted as 'rejected' the same way.
   */
  reject (s: Submission, reason: RejectReason, detail: string): Outcome {
    this.received.inc({ transport: s.transport })
    return this.refuse({ submission: s, size: typeof s.raw === 'string' ? Buffer.byteLength(s.raw) : s.raw.length, reason, detail })
  }

  /** Resolves once nothing is pending (after a commit, or when pending messages were failed). */
  private committed (): Promise<void> {
    return new Promise(resolve => this.drainWaiters.push(resolve))
  }

  private drained (): void {
    if (this.pending.length === 0 && this.unsynced.length === 0) for (const w of this.drainWaiters.splice(0)) w()
  }

  /** Admitted and not yet acknowledged, oldest first: the written groups waiting for their sync, then the pending group. */
  private uncommitted (): ReadonlyArray<readonly Pending[]> {
    return this.unsynced.length === 0 ? [this.pending] : [...this.unsynced.map(u => u.group), this.pending]
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
    this.recomputeOldest()
    let write: GroupWrite
    try {
      write = this.store.writeGroup(group.map(p => p.msg), rollups)
    } catch (err) {
      this.lastCommitAt = Date.now()
      if ((err as { code?: string }).code === 'SQLITE_FULL') {
        // Nothing was written. Keep everything for the retry: no device has been acknowledged.
        this.pending.unshift(...group)
        this.recomputeOldest()
        this.restoreRollups(rollups)
        this.setDiskFull('sqlite_full')
        return
      }
      // Nothing of the group is in the outbox: forget the sequence state it advanced and fail every
      // message, so the transport does not acknowledge them and the devices (or broker) send again.
      for (const p of group) this.last.delete(p.msg.device)
      this.log.error('outbox commit failed', { err, messages: group.length })
      const e = err instanceof Error ? err : new Error(String(err))
      for (const p of group) { this.pendingBytes -= p.size; p.id = -1; p.reject(e) }
      this.memory.settle()
      this.drained()
      if (this.pending.length > 0) this.schedule()
      return
    }
    // The spacing counts from the end of the commit, so the event loop has at least
    // commitMinIntervalMs between two commits to read the next group and send PUBACKs and batches.
    this.lastCommitAt = Date.now()
    this.commits.inc()
    if (this.store.syncsItself) {
      // The card's sync runs on the thread pool (10-100 ms on an SD card): the event loop goes on
      // reading meanwhile. The group is acknowledged when its sync, or a later one, has returned.
      const seq = ++this.writes
      this.unsynced.push({ group, write, seq })
      this.unsyncedMessages += group.length
      this.store.sync().then(() => { this.durable(seq) }, (err: unknown) => { this.syncFailed(err) })
    } else {
      this.store.groupDurable(write)
      this.acknowledge(group, write.firstId)
    }
    if (this.pending.length > 0) this.schedule()
  }

  /** The syncs started after write `seq` have returned: that group and all before it are on the disk. */
  private durable (seq: number): void {
    this.durableThrough = Math.max(this.durableThrough, seq)
    while (this.unsynced.length > 0 && this.unsynced[0]!.seq <= this.durableThrough) {
      const u = this.unsynced.shift()!
      this.unsyncedMessages -= u.group.length
      this.store.groupDurable(u.write)
      this.acknowledge(u.group, u.write.firstId)
    }
  }

  /**
   * The WAL could not be synced: what the unsynced groups wrote may not be on the disk (after an
   * fsync error Linux may have dropped the pages). Nothing of them is acknowledged, and the gateway
   * stops ('syncFailed', the daemon exits): after the restart the outbox is what the disk has, and
   * the broker and the devices send again what was not acknowledged, as after a crash.
   */
  private syncFailed (err: unknown): void {
    if (this.closed || this.unsynced.length === 0) return
    this.log.error('the outbox could not be synced to the disk: stopping without acknowledging it', { err, messages: this.unsyncedMessages })
    this.emit('syncFailed', err)
  }

  /** A group is in the outbox for good: its messages are acknowledged and kept in memory until delivered. */
  private acknowledge (group: readonly Pending[], firstId: number): void {
    // Rows are numbered in the order inserted (one transaction, AUTOINCREMENT): the group's ids are
    // consecutive.
    let coap = 0
    for (let i = 0; i < group.length; i++) {
      const p = group[i]!
      p.id = firstId + i
      this.pendingBytes -= p.size
      if (p.msg.transport === 'coap') coap++
      p.resolve(ACCEPTED)
    }
    // Once per commit and transport, not per message.
    if (group.length > coap) this.accepted.inc({ transport: 'mqtt' }, group.length - coap)
    if (coap > 0) this.accepted.inc({ transport: 'coap' }, coap)
    // Kept in memory until delivered; those the cloud has already (sent from memory) recorded now.
    const recorded = this.memory.committed(group)
    if (group.length > 0) this.emit('committed', group.length, group.map(p => p.msg))
    this.drained()
    if (recorded) this.notifySpace()
  }

  /** The oldest pending message of each transport sets the group's deadline (see commitPlan). */
  private recomputeOldest (): void {
    this.oldestMqtt = this.pending.find(p => p.msg.transport === 'mqtt')?.msg.receivedAt
    this.oldestCoap = this.pending.find(p => p.msg.transport === 'coap')?.msg.receivedAt
  }

  close (): void {
    if (this.diskTimer) clearInterval(this.diskTimer)
    if (this.rollupTimer) clearInterval(this.rollupTimer)
    if (this.diskFullReason !== null) this.tryResume()
    this.flush(true)
    while (this.pending.length > 0 && this.diskFullReason === null) this.flush(true)
    // What was written and not yet synced: one blocking sync now, then acknowledged.
    if (this.unsynced.length > 0) {
      try {
        this.store.syncNow()
        this.durable(this.writes)
      } catch (err) {
        this.syncFailed(err)
      }
    }
    this.closed = true
    // Still full: what is pending was never acknowledged; the broker or the device sends it again.
    for (const p of this.pending.splice(0)) { p.id = -1; p.reject(new Error('stopping with a full disk')) }
    this.pendingBytes = 0
    this.recomputeOldest()
    this.memory.settle()
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
    const plan = commitPlan({
      now: Date.now(),
      pending: this.pending.length,
      oldestMqtt: this.oldestMqtt,
      oldestCoap: this.oldestCoap,
      urgent: this.urgent,
      lastCommitAt: this.lastCommitAt,
      ...(this.timer ? { timerAt: this.timerAt } : {}),
      commitLingerMs: o.commitLingerMs,
      coapCommitLingerMs: o.coapCommitLingerMs,
      commitEarlyMessages: o.commitEarlyMessages,
      commitMinIntervalMs: o.commitMinIntervalMs,
      commitMaxMessages: o.commitMaxMessages
    })
    if (plan === 'none') return
    if (plan === 'now') {
      this.flushNextTick()
      return
    }
    if (this.timer && this.timerAt <= plan.at) return
    if (this.timer) clearTimeout(this.timer)
    this.timerAt = plan.at
    this.timer = setTimeout(() => { this.timer = undefined; this.flush() }, Math.max(0, plan.at - Date.now()))
  }

  private flushNextTick (): void {
    if (this.timer) { clearTimeout(this.timer); this.timer = undefined }
    this.immediate = true
    process.nextTick(() => { if (this.immediate) this.flush() })
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

  private refuse ({ submission: s, size, reason, detail, record = true }: RefusalRecord): Outcome {
    this.rejected.inc({ reason, transport: s.transport })
    const device = DEVICE_ID_PATTERN.test(s.device) ? s.device : null
    if (record) this.count(Date.now(), device, s.transport, s.stream, 'rejected', reason, size)
    this.emit('rejected', { device, transport: s.transport, stream: s.stream, reason, detail } satisfies RejectionEvent)
    return { accepted: false, reason, detail }
  }
}
