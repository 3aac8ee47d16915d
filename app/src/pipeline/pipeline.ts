import { EventEmitter } from 'node:events'
import type { Config } from '../config/schema.js'
import { DEVICE_ID_PATTERN } from '../config/schema.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'
import type { InboundMessage, Store, TrafficRow } from '../store/store.js'
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

interface Pending { msg: InboundMessage, resolve: (o: Outcome) => void, reject: (e: Error) => void }

/**
 * validate -> replay check -> rate limit -> group commit into the outbox. submit() resolves only
 * once the message is committed (or rejected), so a transport acknowledges a device only then.
 * Events: 'committed' (count, messages), 'rejected' (RejectionEvent).
 */
export class Pipeline extends EventEmitter {
  private pending: Pending[] = []
  private traffic: TrafficRow[] = []
  private pendingBytes = 0
  private scheduled = false
  private lingerTimer?: NodeJS.Timeout
  private readonly last = new Map<string, { epoch: number, seq: number }>()
  private readonly limiter: RateLimiter
  private readonly spaceWaiters: Array<() => void> = []
  private readonly received
  private readonly accepted
  private readonly rejected
  private readonly commits
  gate?: DeviceGate

  constructor (private readonly store: Store, private readonly config: Config, metrics: Registry, private readonly log: Logger) {
    super()
    this.limiter = new RateLimiter(config.limits.ratePerSecond, config.limits.rateBurst)
    this.received = metrics.counter('gateway_messages_received_total', 'Messages received from devices, by transport.')
    this.accepted = metrics.counter('gateway_messages_accepted_total', 'Messages committed to the outbox, by transport.')
    this.rejected = metrics.counter('gateway_messages_rejected_total', 'Messages refused before the outbox, by reason and transport.')
    this.commits = metrics.counter('gateway_outbox_commits_total', 'Group commits (transactions) into the outbox.')
  }

  /** True while the outbox (committed + pending) is at capacity: transports must hold back. */
  get full (): boolean {
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
      return Promise.resolve(this.refuse(s, size, s.redelivery === true ? 'redelivered' : verdict, `(epoch ${epoch}, seq ${seq}) is not after (epoch ${last.epoch}, seq ${last.seq})`, seq))
    }
    if (!this.limiter.take(s.device)) return Promise.resolve(this.refuse(s, size, 'rate_limited', `more than ${this.config.limits.ratePerSecond}/s`, seq))
    if (this.full) return Promise.resolve(this.refuse(s, size, 'outbox_full', 'outbox at capacity; retry later', seq, false))

    this.last.set(s.device, { epoch, seq })
    const msg: InboundMessage = { device: s.device, transport: s.transport, stream: s.stream, epoch, seq, receivedAt: Date.now(), payload }
    this.traffic.push({ at: msg.receivedAt, device: s.device, transport: s.transport, stream: s.stream, seq, bytes: size, outcome: 'accepted', reason: null })
    this.pendingBytes += size
    return new Promise<Outcome>((resolve, reject) => {
      this.pending.push({ msg, resolve, reject })
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

  /** Commits whatever is pending now. */
  flush (): void {
    this.scheduled = false
    if (this.lingerTimer) { clearTimeout(this.lingerTimer); this.lingerTimer = undefined }
    if (this.pending.length === 0 && this.traffic.length === 0) return
    const max = this.config.outbox.commitMaxMessages
    const group = this.pending.splice(0, max)
    const traffic = this.traffic.splice(0, this.traffic.length)
    this.pendingBytes = this.pending.reduce((n, p) => n + Buffer.byteLength(p.msg.payload), 0)
    try {
      this.store.commitGroup(group.map(p => p.msg), traffic)
    } catch (err) {
      // Nothing of the group is in the outbox: forget the sequence state it advanced and fail every
      // message, so the transport does not acknowledge them and the devices (or broker) send again.
      for (const p of group) this.last.delete(p.msg.device)
      this.log.error('outbox commit failed', { err, messages: group.length })
      const e = err instanceof Error ? err : new Error(String(err))
      for (const p of group) p.reject(e)
      if (this.pending.length > 0) this.schedule()
      return
    }
    this.commits.inc()
    for (const p of group) {
      this.accepted.inc({ transport: p.msg.transport })
      p.resolve({ accepted: true })
    }
    if (group.length > 0) this.emit('committed', group.length, group.map(p => p.msg))
    if (this.pending.length > 0) this.schedule()
  }

  close (): void {
    this.flush()
    while (this.pending.length > 0) this.flush()
    for (const w of this.spaceWaiters.splice(0)) w()
  }

  private schedule (): void {
    if (this.scheduled) return
    this.scheduled = true
    if (this.pending.length >= this.config.outbox.commitMaxMessages) { setImmediate(() => this.flush()); return }
    const linger = this.config.outbox.commitLingerMs
    if (linger > 0) this.lingerTimer = setTimeout(() => this.flush(), linger)
    else setImmediate(() => this.flush())
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
    if (record) {
      this.traffic.push({ at: Date.now(), device, transport: s.transport, stream: s.stream, seq, bytes: size, outcome: 'rejected', reason })
      this.schedule()
    }
    this.emit('rejected', { device, transport: s.transport, stream: s.stream, reason, detail } satisfies RejectionEvent)
    return { accepted: false, reason, detail }
  }
}
