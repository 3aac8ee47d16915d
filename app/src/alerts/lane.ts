import { readFileSync } from 'node:fs'
import type { Dispatcher } from 'undici'
import type { Config } from '../config/schema.js'
import { backoffDelay, parseRetryAfter, sleep } from '../lib/backoff.js'
import { httpAgent, httpPost } from '../lib/http-post.js'
import type { Logger } from '../lib/logger.js'
import type { Counter } from '../lib/metrics.js'
import type { AlertStore } from './store.js'

/** Deliveries per request: alerts are small, and a burst after an outage still goes in one or two requests. */
const MAX_PER_REQUEST = 200

export interface LaneTarget {
  name: 'cloud' | 'webhook'
  url: string
  /** The uplink's token file (re-read before every attempt, so a rotated token is used at once); '' sends none. */
  tokenFile: string
}

/**
 * The alert lane: its own persisted queue (alert_outbox), its own backoff, the uplink's TLS settings,
 * one request at a time. It never waits behind telemetry: the egress calls flushNow() before each
 * batch, so after an outage the first request to the cloud carries the alerts.
 *
 * Envelope (POST, JSON): {"gateway": id, "kind": "alerts", "alerts": [ {id, rule, key, state, …} ]};
 * see app/docs/operations.md. 2xx: delivered. 401/403: credentials refused (authRefused, retried with
 * backoff and the token file read again). 408, 429, 5xx, network errors: retried. Other 4xx: the
 * receiver does not understand the envelope; the deliveries are dropped with an error line, so one
 * bad alert cannot block every later one.
 */
export class AlertLane {
  authRefused = false
  lastError: string | null = null
  lastSuccessAt: number | null = null
  private readonly dispatcher: Dispatcher
  private readonly url: URL
  private readonly abort = new AbortController()
  private inflight: Promise<boolean> | null = null
  private wake?: () => void
  private loop?: Promise<void>
  private attempt = 0

  constructor (private readonly config: Config, private readonly store: AlertStore, readonly target: LaneTarget,
    private readonly deliveries: Counter, private readonly log: Logger) {
    const u = config.uplink
    this.url = new URL(target.url)
    this.dispatcher = httpAgent(u, { timeoutMs: u.timeoutMs, connections: 1, clientCert: target.name === 'cloud' })
    for (const result of ['ok', 'retry', 'auth_refused', 'refused']) deliveries.init({ target: target.name, result })
  }

  start (): void { this.loop = this.run() }

  /** New deliveries were queued. */
  kick (): void { this.wake?.() }

  get pending (): number { return this.store.countPending(this.target.name) }

  /**
   * Sends what is queued now, ignoring the backoff timer (the egress is about to talk to the same
   * cloud anyway). Resolves once the queue is empty or an attempt failed; never throws.
   */
  async flushNow (): Promise<void> {
    // A failure is tried once more at once: after an outage the first request often meets a
    // keep-alive socket the receiver closed while it was away (undici does not retry a POST), and
    // the telemetry batch that follows, on its own connection, would then arrive first.
    let failures = 0
    for (let i = 0; i < 10 && !this.abort.signal.aborted; i++) {
      if (this.store.pending(this.target.name, 1).length === 0) return
      if (!await this.sendOnce() && ++failures > 1) return
    }
  }

  private sendOnce (): Promise<boolean> {
    // One request at a time: a caller arriving during a send waits for it and then looks again.
    this.inflight ??= this.send().finally(() => { this.inflight = null })
    return this.inflight
  }

  private async run (): Promise<void> {
    const u = this.config.uplink
    while (!this.abort.signal.aborted) {
      if (this.store.pending(this.target.name, 1).length === 0) {
        await new Promise<void>(resolve => {
          const done = (): void => { clearTimeout(t); this.abort.signal.removeEventListener('abort', done); this.wake = undefined; resolve() }
          const t = setTimeout(done, 30_000)
          this.wake = done
          this.abort.signal.addEventListener('abort', done, { once: true })
        })
        continue
      }
      if (await this.sendOnce()) continue
      const delay = backoffDelay(this.attempt, u.backoffBaseMs, u.backoffMaxMs)
      await sleep(delay, this.abort.signal)
    }
  }

  private token (): string | undefined {
    if (this.target.tokenFile === '') return undefined
    try { return readFileSync(this.target.tokenFile, 'utf8').trim() } catch (err) {
      this.log.error('cannot read the uplink token file', { err, file: this.target.tokenFile })
      return undefined
    }
  }

  /** One request with up to MAX_PER_REQUEST deliveries; true when they left the queue. */
  private async send (): Promise<boolean> {
    const rows = this.store.pending(this.target.name, MAX_PER_REQUEST)
    if (rows.length === 0) return true
    const body = Buffer.from(`{"gateway":${JSON.stringify(this.config.gateway.id)},"kind":"alerts","alerts":[${rows.map(r => r.body).join(',')}]}`)
    const last = rows[rows.length - 1]!.id
    try {
      const res = await httpPost(this.dispatcher, this.url, body, {
        headers: { 'idempotency-key': `alerts-${this.config.gateway.id}-${rows[0]!.id}-${last}` },
        token: this.token(),
        timeoutMs: this.config.uplink.timeoutMs,
        signal: this.abort.signal,
        maxText: 300
      })
      const text = res.text
      const s = res.status
      if (s >= 200 && s < 300) {
        this.store.done(this.target.name, last)
        this.deliveries.inc({ target: this.target.name, result: 'ok' }, rows.length)
        if (this.authRefused) this.log.info('alert receiver accepts the credentials again', { target: this.target.name })
        this.authRefused = false
        this.lastError = null
        this.lastSuccessAt = Date.now()
        this.attempt = 0
        return true
      }
      this.lastError = `HTTP ${s}${text !== '' ? `: ${text}` : ''}`
      if (s === 401 || s === 403) {
        if (!this.authRefused) this.log.error('alert receiver refuses the credentials; retrying with the token file read again', { target: this.target.name, status: s })
        this.authRefused = true
        this.deliveries.inc({ target: this.target.name, result: 'auth_refused' }, rows.length)
        this.attempt++
        return false
      }
      if (s === 408 || s === 429 || s >= 500) {
        const ra = parseRetryAfter(res.headers['retry-after'])
        this.deliveries.inc({ target: this.target.name, result: 'retry' }, rows.length)
        this.attempt++
        if (ra !== undefined) await sleep(Math.min(ra, this.config.uplink.backoffMaxMs), this.abort.signal)
        return false
      }
      this.store.done(this.target.name, last)
      this.deliveries.inc({ target: this.target.name, result: 'refused' }, rows.length)
      this.log.error('alert receiver refused the alerts; dropped', { target: this.target.name, status: s, reason: this.lastError, alerts: rows.length })
      return true
    } catch (err) {
      const e = err as Error & { code?: string }
      this.lastError = `${e.code ?? e.name}: ${e.message}`
      this.deliveries.inc({ target: this.target.name, result: 'retry' }, rows.length)
      this.attempt++
      return false
    }
  }

  /** Idempotent: aborts a request in flight and the backoff, then closes the connection. */
  async stop (): Promise<void> {
    this.abort.abort()
    await this.loop
    await this.inflight?.catch(() => {})
    await this.dispatcher.close().catch(() => {})
  }
}
