import { createHash, randomUUID } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { promisify } from 'node:util'
import { gzip as gzipCb } from 'node:zlib'
import { Agent, type Dispatcher } from 'undici'
import type { Config } from '../config/schema.js'
import { backoffDelay, parseRetryAfter, sleep } from '../lib/backoff.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'
import type { Batch, Store } from '../store/store.js'

const gzip = promisify(gzipCb)

export type UplinkState = 'idle' | 'sending' | 'backoff' | 'auth_failed' | 'stopped'

/** What the cloud receives: one JSON document per batch. */
export function batchBody (gatewayId: string, instance: string, b: Batch): string {
  const messages = b.rows.map(r =>
    `{"id":"${gatewayId}:${instance}:${r.id}","device":${JSON.stringify(r.device)},"transport":"${r.transport}","stream":${JSON.stringify(r.stream)},"epoch":${r.epoch},"seq":${r.seq},"receivedAt":${r.receivedAt},"payload":${r.payload}}`)
  return `{"gateway":${JSON.stringify(gatewayId)},"batchId":${JSON.stringify(b.id)},"messages":[${messages.join(',')}]}`
}

/** RFC 9530 Content-Digest of the bytes on the wire. */
export const contentDigest = (body: Buffer): string => `sha-256=:${createHash('sha256').update(body).digest('base64')}:`

type SendResult = { kind: 'ok' } | { kind: 'retry' | 'auth', status: number | null, reason: string, retryAfterMs?: number } | { kind: 'dead', status: number, reason: string }

/**
 * Sorts an HTTP outcome: 2xx done; 408, 429 and 5xx retried; 401 and 403 pause the uplink (the
 * gateway's credentials are refused: no message is at fault, so none is dead-lettered); any other
 * status is final for the batch.
 */
export function classify (status: number): 'ok' | 'retry' | 'auth' | 'dead' {
  if (status >= 200 && status < 300) return 'ok'
  if (status === 401 || status === 403) return 'auth'
  if (status === 408 || status === 429 || status >= 500) return 'retry'
  return 'dead'
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
  private readonly dispatcher: Dispatcher
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

  constructor (private readonly config: Config, private readonly store: Store, metrics: Registry, private readonly log: Logger,
    private readonly onDrained: () => void = () => {}) {
    const u = config.uplink
    this.url = new URL(u.url)
    this.reloadToken()
    this.dispatcher = new Agent({
      connections: 2,
      keepAliveTimeout: 60000,
      keepAliveMaxTimeout: 600000,
      headersTimeout: u.timeoutMs,
      bodyTimeout: u.timeoutMs,
      connect: {
        timeout: u.timeoutMs,
        ...(u.caFile !== '' ? { ca: readFileSync(u.caFile) } : {}),
        ...(u.certFile !== '' ? { cert: readFileSync(u.certFile), key: readFileSync(u.keyFile) } : {})
      }
    })
    this.m = {
      sent: metrics.counter('gateway_uplink_messages_delivered_total', 'Messages the cloud acknowledged (2xx).'),
      batches: metrics.counter('gateway_uplink_batches_total', 'Batches sent, by result (ok, retry, dead).'),
      dead: metrics.counter('gateway_uplink_dead_letters_total', 'Messages moved to dead letters after a final refusal.'),
      trimmed: metrics.counter('gateway_dead_letters_trimmed_total', 'Dead letters removed because the dead-letter table was full.'),
      bytes: metrics.counter('gateway_uplink_bytes_total', 'Request body bytes sent (after compression).')
    }
    metrics.gauge('gateway_uplink_up', '1 when the last batch was accepted by the cloud.', () => this.state === 'backoff' || this.state === 'auth_failed' ? 0 : 1)
    metrics.gauge('gateway_uplink_auth_failed', '1 while the cloud refuses the gateway\'s credentials (401/403); the uplink is paused, nothing is dead-lettered.', () => this.authFailing ? 1 : 0)
  }

  start (): void {
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
      if (this.store.outboxDepth === 0) {
        this.state = 'idle'
        await this.waitForWork(1000)
        // While idle, look again at the table itself: `outbox retry` from the CLI adds rows from another process.
        this.store.refreshTotals()
        continue
      }
      // Linger: a partial batch waits a little for more, counted from its oldest message. The totals
      // are kept in memory; only the oldest message's time is read, once per wait.
      const oldest = this.store.oldestReceivedAt() ?? 0
      for (;;) {
        const wait = oldest + (this.draining ? 0 : u.lingerMs) - Date.now()
        if (wait <= 0 || this.store.outboxDepth >= u.batchMaxMessages || this.store.outboxBytes >= u.batchMaxBytes || this.abort.signal.aborted) break
        await this.waitForWork(wait)
      }
      if (this.abort.signal.aborted) break
      const batch = this.store.nextBatch(this.config.gateway.id, u.batchMaxMessages, u.batchMaxBytes)
      if (!batch) continue
      this.state = 'sending'
      await this.beforeBatch?.()
      const r = await this.send(batch)
      if (r.kind === 'ok') {
        this.store.ackBatch(batch)
        this.m.sent.inc({}, batch.rows.length)
        this.onDelivered?.(batch.rows)
        this.m.batches.inc({ result: 'ok' })
        this.lastSuccessAt = Date.now()
        this.lastError = null
        if (this.authFailing) this.log.info('cloud accepts the gateway\'s credentials again')
        this.authFailing = false
        attempt = 0
        this.onDrained()
      } else if (r.kind === 'dead') {
        const trimmed = this.store.deadLetterBatch(batch, r.status, r.reason, this.config.outbox.deadLetterMax)
        this.m.batches.inc({ result: 'dead' })
        this.m.dead.inc({}, batch.rows.length)
        if (trimmed > 0) this.m.trimmed.inc({}, trimmed)
        this.log.error('cloud refused batch; moved to dead letters', { batch: batch.id, status: r.status, reason: r.reason, messages: batch.rows.length })
        this.onDrained()
      } else if (r.kind === 'auth') {
        // Paused, not failed: the messages are fine and stay in order; the token may be rotated meanwhile.
        this.m.batches.inc({ result: 'auth' })
        this.lastError = r.reason
        this.state = 'auth_failed'
        if (!this.authFailing) this.log.error('cloud refuses the gateway\'s credentials; uplink paused, retrying (rotate uplink.tokenFile if it expired)', { status: r.status, reason: r.reason })
        this.authFailing = true
        const delay = Math.max(r.retryAfterMs ?? 0, backoffDelay(attempt++, u.backoffBaseMs, u.backoffMaxMs))
        await this.waitForToken(delay)
        this.reloadToken()
      } else {
        this.m.batches.inc({ result: 'retry' })
        this.lastError = r.reason
        this.state = 'backoff'
        const delay = Math.max(r.retryAfterMs ?? 0, backoffDelay(attempt++, u.backoffBaseMs, u.backoffMaxMs))
        this.log.warn('uplink failed; will retry', { batch: batch.id, status: r.status, reason: r.reason, retryInMs: delay })
        await sleep(delay, this.abort.signal)
        this.reloadToken()
      }
    }
    this.state = 'stopped'
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

  private async send (b: Batch): Promise<SendResult> {
    const u = this.config.uplink
    const json = Buffer.from(batchBody(this.config.gateway.id, this.store.instance, b))
    const body = u.gzip ? await gzip(json, { level: 6 }) : json
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'idempotency-key': b.id,
      'content-digest': contentDigest(body),
      'x-request-id': randomUUID(),
      ...(u.gzip ? { 'content-encoding': 'gzip' } : {}),
      // an empty token file (the image's, before provisioning) means no token, not "Bearer "
      ...(this.token !== undefined && this.token !== '' ? { authorization: `Bearer ${this.token}` } : {})
    }
    try {
      const res = await this.dispatcher.request({
        origin: this.url.origin,
        path: this.url.pathname + this.url.search,
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.any([this.abort.signal, AbortSignal.timeout(u.timeoutMs)])
      })
      const text = (await res.body.text()).slice(0, 500)
      this.m.bytes.inc({}, body.length)
      const kind = classify(res.statusCode)
      if (kind === 'ok') return { kind: 'ok' }
      const reason = `HTTP ${res.statusCode}${text !== '' ? `: ${text}` : ''}`
      if (kind === 'dead') return { kind: 'dead', status: res.statusCode, reason }
      if (kind === 'auth') return { kind: 'auth', status: res.statusCode, reason }
      const retryAfterMs = parseRetryAfter(res.headers['retry-after'])
      return { kind: 'retry', status: res.statusCode, reason, ...(retryAfterMs !== undefined ? { retryAfterMs } : {}) }
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
      while (Date.now() < deadline && this.store.outboxDepth > 0 && this.state !== 'backoff' && this.state !== 'auth_failed') await sleep(20)
      this.abort.abort()
      await loop
    }
    if (this.ackTimer) clearInterval(this.ackTimer)
    this.flushAcks(true)
    await this.dispatcher.close().catch(() => {})
    this.state = 'stopped'
  }
}
