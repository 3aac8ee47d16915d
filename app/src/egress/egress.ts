import { createHash } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { promisify } from 'node:util'
import { gzip as gzipCb, gzipSync } from 'node:zlib'
import type { Dispatcher } from 'undici'
import type { Config } from '../config/schema.js'
import { parseRetryAfter, sleep } from '../lib/backoff.js'
import { httpAgent, httpPost } from '../lib/http-post.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'
import type { PendingMessage } from '../pipeline/send-queue.js'
import type { Batch, OutboxRow } from '../store/store.js'
import type { Store } from '../store/store.js'
import { afterResponse, batchSource, classify, lingerWait, type SendResult } from './decide.js'

export { classify } from './decide.js'
export { contentDigest } from '../lib/http-post.js'

const gzip = promisify(gzipCb)
/**
 * Bodies up to this size are compressed on the event loop: the thread pool's hand-off costs about
 * three times the compression of a few KB (measured on x86-64: 130 against 44 us of CPU for a
 * 20-message, 4 KB body), and such a body blocks the loop for well under a millisecond. Larger
 * ones (a backlog's batches) go to the thread pool.
 */
const GZIP_INLINE_BYTES = 64 * 1024

export type UplinkState = 'idle' | 'sending' | 'backoff' | 'auth_failed' | 'stopped'

/** A batch as sent: from the outbox, or from memory (`memory`: admitted messages not yet committed). */
export type OutgoingBatch = Batch & { memory?: readonly PendingMessage[] }

/**
 * A message's id as the cloud sees it: the outbox database's random name, the device and the
 * message's (epoch, seq). Made of what the message is, not of where it is stored, so a message sent
 * from memory before its commit, and sent again after a crash once the broker redelivered it (and it
 * was committed under another row id), keeps its id and the cloud deduplicates it. Unique: the
 * gateway admits an (epoch, seq) of a device once (replay protection, in the same commit).
 */
export const messageId = (gatewayId: string, instance: string, r: { device: string, epoch: number, seq: number }): string =>
  `${gatewayId}:${instance}:${r.device}:${r.epoch}:${r.seq}`

/** What the cloud receives: one JSON document per batch. */
export function batchBody (gatewayId: string, instance: string, b: Batch): string {
  const messages = b.rows.map(r =>
    `{"id":${JSON.stringify(messageId(gatewayId, instance, r))},"device":${JSON.stringify(r.device)},"transport":"${r.transport}","stream":${JSON.stringify(r.stream)},"epoch":${r.epoch},"seq":${r.seq},"receivedAt":${r.receivedAt},"payload":${r.payload}}`)
  return `{"gateway":${JSON.stringify(gatewayId)},"batchId":${JSON.stringify(b.id)},"messages":[${messages.join(',')}]}`
}

/**
 * A batch of admitted messages not yet committed. Its Idempotency-Key is made of its messages' ids
 * (a digest), so the same messages in the same batch carry the same key; no write records it (that
 * would cost what sending from memory saves). After a crash the messages come again under new row
 * ids and perhaps other batches: the cloud then deduplicates by message id, as it already must after
 * a power cut (app/docs/write-path.md).
 */
export function memoryBatch (gatewayId: string, instance: string, ms: readonly PendingMessage[]): OutgoingBatch {
  const h = createHash('sha256')
  let bytes = 0
  const rows: OutboxRow[] = ms.map(m => {
    h.update(`${m.msg.device}:${m.msg.epoch}:${m.msg.seq}\n`)
    bytes += m.bytes
    return { id: 0, device: m.msg.device, transport: m.msg.transport, stream: m.msg.stream, epoch: m.msg.epoch, seq: m.msg.seq, receivedAt: m.msg.receivedAt, payload: m.msg.payload }
  })
  return { id: `${gatewayId}-${instance}-m${h.digest('base64url').slice(0, 22)}`, firstId: 0, lastId: 0, rows, bytes, memory: ms }
}

/** The pipeline's side of sending from memory (its SendQueue, `pipeline.memory`, implements it). */
export interface MemorySource {
  unsent (maxMessages: number, maxBytes: number): PendingMessage[]
  committedInMemory (deliveredThrough: number): number
  readonly uncommittedCount: number
  delivered (ms: readonly PendingMessage[]): void
  deliveredElsewhere (rows: ReadonlyArray<{ id: number }>): void
  settled (m: PendingMessage): Promise<void>
}

/**
 * Sends the outbox to the cloud in batches over one keep-alive HTTPS connection pool. One batch is in
 * flight at a time and a failed batch is retried before any later message goes, so the order per
 * device is the outbox order. A batch leaves the outbox only on a 2xx (at least once).
 */
export class Egress {
  state: UplinkState = 'idle'
  lastError: string | null = null
  lastSuccessAt: number | null = null
  private dispatcher?: Dispatcher
  private readonly url: URL
  private token: string | undefined
  /** mtime, size and inode of the token file when it was read: a change means a rotated token. */
  private tokenStamp = ''
  /** True while the cloud refuses the gateway's credentials (401/403): for /health and the alerts. */
  authFailing = false
  private ackTimer?: NodeJS.Timeout
  private readonly abort = new AbortController()
  private wake?: () => void
  private draining = false
  private loop?: Promise<void>
  private readonly m
  // Alert lane hooks (app/src/alerts): pending alerts are sent before every telemetry batch, and
  // delivered rows feed the receipt-to-cloud latency histogram.
  beforeBatch?: () => Promise<void>
  onDelivered?: (rows: Batch['rows']) => void
  /** Admitted messages not yet committed (the pipeline): sent once every committed row is delivered. */
  memory?: MemorySource

  constructor (private readonly config: Config, private readonly store: Store, metrics: Registry, private readonly log: Logger,
    private readonly onDrained: () => void = () => {}) {
    this.url = new URL(config.uplink.url)
    this.m = {
      sent: metrics.counter('gateway_uplink_messages_delivered_total', 'Messages the cloud acknowledged (2xx).').init(),
      batches: metrics.counter('gateway_uplink_batches_total', 'Batches sent, by result (ok, retry, dead, auth).').init(...['ok', 'retry', 'dead', 'auth'].map(result => ({ result }))),
      dead: metrics.counter('gateway_uplink_dead_letters_total', 'Messages moved to dead letters after a final refusal.').init(),
      trimmed: metrics.counter('gateway_dead_letters_trimmed_total', 'Dead letters removed because the dead-letter table was full.').init(),
      bytes: metrics.counter('gateway_uplink_bytes_total', 'Request body bytes sent (after compression).').init(),
      fromMemory: metrics.counter('gateway_uplink_messages_from_memory_total', 'Messages the cloud acknowledged that were sent from memory (before their commit, or kept since it) rather than read back from the outbox.').init()
    }
    metrics.gauge('gateway_uplink_up', '1 when the last batch was accepted by the cloud.', () => this.state === 'backoff' || this.state === 'auth_failed' ? 0 : 1)
    metrics.gauge('gateway_uplink_auth_failed', '1 while the cloud refuses the gateway\'s credentials (401/403); the uplink is paused, nothing is dead-lettered.', () => this.authFailing ? 1 : 0)
  }

  /** Reads the token, CA and client certificate files (the constructor does no I/O), then runs. */
  start (): void {
    const u = this.config.uplink
    this.reloadToken()
    this.dispatcher = httpAgent(u, { timeoutMs: u.timeoutMs, connections: 2 })
    this.loop = this.run()
    // Acknowledgements are written in bulk: at most a second after the last one when no commit did it.
    this.ackTimer = setInterval(() => this.flushAcks(), 1000).unref()
  }

  private flushAcks (force = false): void {
    try {
      this.store.flushAcks(Date.now(), force)
    } catch (err) {
      this.log.error('writing delivered messages failed', { err })
    }
  }

  /**
   * Reads the token file if it changed (mtime, size, inode) since the last read: rotating the token
   * needs no restart. Called at start and before every retry. A missing file keeps the last token.
   */
  reloadToken (): void {
    const f = this.config.uplink.tokenFile
    if (f === '') return
    let stamp: string
    try {
      const st = statSync(f)
      stamp = `${st.mtimeMs}:${st.size}:${st.ino}`
    } catch (err) {
      if (this.token === undefined) throw err
      return
    }
    if (stamp === this.tokenStamp) return
    const first = this.token === undefined
    try {
      this.token = readFileSync(f, 'utf8').trim()
    } catch (err) {
      // At start a missing or unreadable token is a configuration error; later the last one is kept.
      if (first) throw err
      this.log.warn('uplink token file changed but cannot be read; keeping the previous token', { file: f, err })
      return
    }
    this.tokenStamp = stamp
    if (!first) this.log.info('uplink token file changed; using the new token', { file: f })
  }

  /** New messages are in the outbox. */
  kick (): void { this.wake?.() }

  /** A message was admitted: wakes the uplink only if it waits for work (cheap enough per message). */
  admitted (): void { if (this.state === 'idle' && this.idleWait) this.wake?.() }

  /** True while the loop waits with nothing to send (not while a partial batch lingers). */
  private idleWait = false

  private waitForWork (ms: number): Promise<void> {
    return new Promise(resolve => {
      const signal = this.abort.signal
      const done = (): void => {
        clearTimeout(t)
        signal.removeEventListener('abort', done)
        if (this.wake === done) this.wake = undefined
        resolve()
      }
      const t = setTimeout(done, ms)
      this.wake = done
      signal.addEventListener('abort', done, { once: true })
    })
  }

  private async run (): Promise<void> {
    const u = this.config.uplink
    let attempt = 0
    while (!this.abort.signal.aborted) {
      // Linger: a partial batch waits a little for more, counted from its oldest message. The totals
      // are kept in memory; only the oldest committed message's time is read, once per wait.
      const committed = this.store.outboxDepth
      let memory: PendingMessage[] = []
      const source = batchSource({
        committedUndelivered: committed,
        committedInMemory: this.memory?.committedInMemory(this.store.deliveredThrough) ?? 0,
        unsentInMemory: () => (memory = this.memory?.unsent(u.batchMaxMessages, u.batchMaxBytes) ?? []).length
      })
      if (source === 'none') {
        this.state = 'idle'
        this.idleWait = true
        await this.waitForWork(1000)
        this.idleWait = false
        // While idle, look again at the table itself: `outbox retry` from the CLI adds rows from another process.
        if (this.state === 'idle' && (this.memory?.uncommittedCount ?? 0) === 0) this.store.refreshTotals()
        continue
      }
      const oldestAt = source === 'outbox' ? this.store.oldestReceivedAt() ?? undefined : memory[0]!.msg.receivedAt
      const wait = lingerWait({
        now: Date.now(),
        oldestAt,
        messages: source === 'outbox' ? committed : memory.length,
        bytes: source === 'outbox' ? this.store.outboxBytes : memory.reduce((n, m) => n + m.bytes, 0),
        lingerMs: u.lingerMs,
        draining: this.draining,
        batchMaxMessages: u.batchMaxMessages,
        batchMaxBytes: u.batchMaxBytes
      })
      if (wait > 0) {
        this.state = 'idle'
        await this.waitForWork(wait)
        continue
      }
      const batch: OutgoingBatch | undefined = source === 'outbox'
        ? this.store.nextBatch(this.config.gateway.id, u.batchMaxMessages, u.batchMaxBytes)
        : memoryBatch(this.config.gateway.id, this.store.instance, memory)
      if (!batch) continue
      this.state = 'sending'
      await this.beforeBatch?.()
      const r = await this.send(batch)
      const step = afterResponse(r, { fromMemory: batch.memory !== undefined, attempt, backoffBaseMs: u.backoffBaseMs, backoffMaxMs: u.backoffMaxMs, random: Math.random })
      if (r.kind === 'ok') {
        // Sent from memory: recorded as delivered for the rows committed by now, the others at their commit.
        if (batch.memory) this.memory!.delivered(batch.memory)
        else {
          this.store.ackBatch(batch)
          // The priority lane may have sent rows memory holds too: memory must not send them again.
          this.memory?.deliveredElsewhere(batch.rows)
        }
        this.m.sent.inc({}, batch.rows.length)
        this.onDelivered?.(batch.rows)
        this.m.batches.inc({ result: 'ok' })
        if (batch.memory) this.m.fromMemory.inc({}, batch.rows.length)
        this.lastSuccessAt = Date.now()
        this.lastError = null
        if (this.authFailing) this.log.info('cloud accepts the gateway\'s credentials again')
        this.authFailing = false
        attempt = 0
        this.onDrained()
        continue
      }
      if (r.kind === 'dead') {
        this.m.batches.inc({ result: 'dead' })
        let refused: Batch | undefined = batch
        if (step.do === 'dead_letter_after_commit') {
          refused = await this.committedRows(batch.memory!)
          // A commit failed (never acknowledged: they come again) or rows of another process lie
          // between them: the outbox sends what was committed again, and a refusal there moves it.
          if (refused === undefined) continue
        }
        // Sent from memory: row by row (events first are not the rows after the watermark). Memory
        // marks them done either way (the outbox's priority lane may refuse rows memory holds too).
        const trimmed = this.store.deadLetterBatch(refused, r.status, r.reason, this.config.outbox.deadLetterMax, batch.memory !== undefined)
        this.memory?.deliveredElsewhere(refused.rows)
        this.m.dead.inc({}, refused.rows.length)
        if (trimmed > 0) this.m.trimmed.inc({}, trimmed)
        this.log.error('cloud refused batch; moved to dead letters', { batch: batch.id, status: r.status, reason: r.reason, messages: refused.rows.length })
        this.onDrained()
        continue
      }
      const delay = step.do === 'retry' || step.do === 'auth' ? step.delayMs : 0
      attempt++
      this.lastError = r.reason
      if (r.kind === 'auth') {
        // Paused, not failed: the messages are fine and stay in order; the token may be rotated meanwhile.
        this.m.batches.inc({ result: 'auth' })
        this.state = 'auth_failed'
        if (!this.authFailing) this.log.error('cloud refuses the gateway\'s credentials; uplink paused, retrying (rotate uplink.tokenFile if it expired)', { status: r.status, reason: r.reason })
        this.authFailing = true
        await this.waitForToken(delay)
      } else {
        this.m.batches.inc({ result: 'retry' })
        this.state = 'backoff'
        this.log.warn('uplink failed; will retry', { batch: batch.id, status: r.status, reason: r.reason, retryInMs: delay })
        await sleep(delay, this.abort.signal)
      }
      this.reloadToken()
    }
    this.state = 'stopped'
  }

  /**
   * Waits for the commit of messages sent from memory, and returns those committed as outbox rows
   * (not necessarily consecutive: events go first); undefined when none is (their commit failed:
   * never acknowledged, they come again from the device or broker).
   */
  private async committedRows (ms: readonly PendingMessage[]): Promise<Batch | undefined> {
    for (const m of ms) await this.memory!.settled(m)
    const committed = ms.filter(m => m.id > 0)
    if (committed.length === 0) return undefined
    const b = memoryBatch(this.config.gateway.id, this.store.instance, committed)
    b.rows.forEach((r, i) => { r.id = committed[i]!.id })
    return { ...b, firstId: committed[0]!.id, lastId: committed[committed.length - 1]!.id }
  }

  /** The auth backoff, cut short when the token file changes (checked once a second: one stat). */
  private async waitForToken (ms: number): Promise<void> {
    const until = Date.now() + ms
    const before = this.tokenStamp
    while (!this.abort.signal.aborted && Date.now() < until) {
      await sleep(Math.min(1000, until - Date.now()), this.abort.signal)
      try {
        const st = statSync(this.config.uplink.tokenFile)
        if (`${st.mtimeMs}:${st.size}:${st.ino}` !== before) return
      } catch {}
    }
  }

  private async send (b: OutgoingBatch): Promise<SendResult> {
    const u = this.config.uplink
    const json = Buffer.from(batchBody(this.config.gateway.id, this.store.instance, b))
    const body = !u.gzip ? json : json.length <= GZIP_INLINE_BYTES ? gzipSync(json, { level: 6 }) : await gzip(json, { level: 6 })
    try {
      const res = await httpPost(this.dispatcher!, this.url, body, {
        headers: { 'idempotency-key': b.id, ...(u.gzip ? { 'content-encoding': 'gzip' } : {}) },
        token: this.token,
        timeoutMs: u.timeoutMs,
        signal: this.abort.signal
      })
      this.m.bytes.inc({}, body.length)
      const kind = classify(res.status)
      if (kind === 'ok') return { kind: 'ok' }
      const reason = `HTTP ${res.status}${res.text !== '' ? `: ${res.text}` : ''}`
      if (kind === 'dead') return { kind: 'dead', status: res.status, reason }
      if (kind === 'auth') return { kind: 'auth', status: res.status, reason }
      const retryAfterMs = parseRetryAfter(res.headers['retry-after'])
      return { kind: 'retry', status: res.status, reason, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) }
    } catch (err) {
      const e = err as Error & { code?: string }
      return { kind: 'retry', status: null, reason: `${e.code ?? e.name}: ${e.message}` }
    }
  }

  /**
   * Keeps sending for up to `graceMs` (no linger) so that little is left behind, then stops. What is
   * not delivered by then stays in the outbox for the next start.
   */
  async stop (graceMs: number): Promise<void> {
    const loop = this.loop
    if (loop) {
      this.draining = true
      this.kick()
      const deadline = Date.now() + graceMs
      while (Date.now() < deadline && this.store.outboxDepth + (this.memory?.uncommittedCount ?? 0) > 0 && this.state !== 'backoff' && this.state !== 'auth_failed') await sleep(20)
      this.abort.abort()
      await loop
    }
    if (this.ackTimer) clearInterval(this.ackTimer)
    this.flushAcks(true)
    await this.dispatcher?.close().catch(() => {})
    this.state = 'stopped'
  }
}
