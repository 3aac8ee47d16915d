import { createSocket, type RemoteInfo, type Socket } from 'node:dgram'
import { isIPv6 } from 'node:net'
import { createServer, type IncomingMessage, type OutgoingMessage, type Server } from 'coap'
import { parse as parsePacket } from 'coap-packet'
import type { Config } from '../config/schema.js'
import { DEVICE_ID_PATTERN } from '../devices/device-id.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'
import { RateLimiter } from '../pipeline/checks.js'
import type { Outcome, Pipeline } from '../pipeline/pipeline.js'
import { COAP_MAC_OPTION, verifyCoapMac } from './auth.js'

/** The refusal reasons and the CoAP codes that say what went wrong. */
export function codeFor (o: Outcome): { code: string, maxAge?: number } {
  if (o.accepted) return { code: '2.04' }
  switch (o.reason) {
    case 'bad_json':
    case 'invalid_utf8':
    case 'duplicate_key':
    case 'bad_schema':
    case 'bad_device_id': return { code: '4.00' }
    case 'bad_signature':
    case 'unknown_device':
    case 'replay': // as OSCORE (RFC 8613 §7.4): a replayed request is an authentication failure
    case 'duplicate':
    case 'redelivered': return { code: '4.01' }
    case 'device_blocked': return { code: '4.03' }
    case 'unknown_stream': return { code: '4.04' }
    case 'oversize': return { code: '4.13' }
    case 'rate_limited': return { code: '4.29', maxAge: 1 }
    case 'outbox_full': return { code: '5.03', maxAge: 5 }
  }
}

export interface CoapKeys {
  coapKey: (id: string) => Buffer | undefined
  /** A request that failed authentication, by source address (never charged to the id it claims). */
  unauthenticated?: (source: string, reason: 'bad_signature' | 'unknown_device', claimed: string, transport: string) => void
}

/**
 * CoAP ingress: `POST /d/<device id>/<stream>` with a JSON payload (the same messages as MQTT:
 * `seq`, optional `epoch`) and the HMAC option. Bound to the configured LAN address only (never a
 * wildcard); while that address does not exist yet (Wi-Fi not up) binding is retried. Answers:
 * 2.04 committed to the outbox; 4.00 malformed; 4.01 unknown device, wrong or missing MAC, replay;
 * 4.03 device quarantined; 4.04 unknown resource or stream; 4.05 not POST; 4.13 too large;
 * 4.29 rate limited; 5.03 outbox full (Max-Age says when to retry).
 *
 * Datagrams that are not well-formed CoAP requests are dropped before node-coap sees them (counted),
 * and error answers to one source address are rate limited, so a flood costs a parse per datagram and
 * cannot be reflected at full rate.
 */
export class CoapIngress {
  private server?: Server
  private socket?: Socket
  private retry?: NodeJS.Timeout
  private stopping = false
  bound?: { address: string, port: number }
  private readonly requests
  private readonly dropped
  private readonly errorLimiter = new RateLimiter(20, 50)

  constructor (private readonly config: Config, private readonly pipeline: Pipeline, private readonly keys: CoapKeys,
    metrics: Registry, private readonly log: Logger) {
    this.requests = metrics.counter('gateway_coap_requests_total', 'CoAP requests answered, by response code.')
    this.dropped = metrics.counter('gateway_coap_dropped_total', 'CoAP datagrams dropped without an answer, by reason.').init(...['malformed', 'not_a_request', 'error_rate'].map(reason => ({ reason })))
    metrics.gauge('gateway_coap_listening', '1 while the CoAP ingress is bound to its address.', () => this.bound ? 1 : 0)
  }

  /** Binds (retrying in the background while the address is missing); resolves once bound or on the first failure. */
  start (): Promise<void> {
    return new Promise(resolve => this.bind(resolve))
  }

  private bind (first?: () => void): void {
    const c = this.config.coap
    const sock = createSocket({ type: isIPv6(c.bind) ? 'udp6' : 'udp4', reuseAddr: false })
    const onError = (err: Error): void => {
      sock.close()
      this.log.warn('CoAP cannot bind; retrying', { address: c.bind, port: c.port, err, retryMs: c.retryBindMs })
      if (!this.stopping) this.retry = setTimeout(() => this.bind(), c.retryBindMs)
      first?.()
    }
    sock.once('error', onError)
    sock.bind(c.port, c.bind, () => {
      sock.off('error', onError)
      sock.on('error', err => this.log.warn('CoAP socket error', { err }))
      this.socket = sock
      const server = createServer({ piggybackReplyMs: c.piggybackMs, sendAcksForNonConfirmablePackets: false })
      server.on('request', (req: IncomingMessage, res: OutgoingMessage) => { this.handle(req, res) })
      server.on('error', err => this.log.warn('CoAP server error', { err }))
      server.listen(sock)
      // Filter in front of node-coap: only well-formed requests reach it.
      const handlers = sock.listeners('message') as Array<(msg: Buffer, rinfo: RemoteInfo) => void>
      sock.removeAllListeners('message')
      sock.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
        if (!this.wellFormed(msg)) return
        for (const h of handlers) h(msg, rinfo)
      })
      this.server = server
      const a = sock.address()
      this.bound = { address: a.address, port: a.port }
      this.log.info('CoAP listening', this.bound)
      first?.()
    })
  }

  private wellFormed (msg: Buffer): boolean {
    if (msg.length < 4 || msg.length > 65507 || (msg[0]! >> 6) !== 1) { this.dropped.inc({ reason: 'malformed' }); return false }
    try {
      const p = parsePacket(msg)
      // Requests (0.01-0.31) and empty ACK/RST for node-coap's own exchanges; no responses.
      if (p.code !== '0.00' && !p.code.startsWith('0.')) { this.dropped.inc({ reason: 'not_a_request' }); return false }
      return true
    } catch {
      this.dropped.inc({ reason: 'malformed' })
      return false
    }
  }

  private answer (req: IncomingMessage, res: OutgoingMessage, code: string, diagnostic: string, maxAge?: number): void {
    if (code !== '2.04' && !this.errorLimiter.take(req.rsinfo.address)) {
      // Too many errors for this source: no answer (a confirmable request is retried, then given up).
      this.dropped.inc({ reason: 'error_rate' })
      return
    }
    this.requests.inc({ code })
    res.code = code
    if (maxAge !== undefined) res.setOption('Max-Age', maxAge)
    res.end(diagnostic === '' ? undefined : Buffer.from(diagnostic.slice(0, 200)))
  }

  private handle (req: IncomingMessage, res: OutgoingMessage): void {
    res.on('error', err => this.log.debug('CoAP response not delivered', { err }))
    try {
      const options = req._packet.options ?? []
      const path = options.filter(o => o.name === 'Uri-Path').map(o => (o.value as Buffer).toString('utf8'))
      if (path.length !== 3 || path[0] !== 'd') { this.answer(req, res, '4.04', 'resources: POST /d/<device id>/<stream>'); return }
      if (req.method !== 'POST') { this.answer(req, res, '4.05', 'POST only'); return }
      const [, device, stream] = path as [string, string, string]
      const payload = req.payload ?? Buffer.alloc(0)
      const submission = { device, transport: 'coap' as const, stream, raw: payload }
      if (!DEVICE_ID_PATTERN.test(device)) { this.reply(req, res, this.pipeline.reject({ ...submission, device: '' }, 'bad_device_id', 'bad device id in the path')); return }
      const key = this.keys.coapKey(device)
      if (!key) {
        this.keys.unauthenticated?.(req.rsinfo.address, 'unknown_device', device, 'coap')
        this.reply(req, res, this.pipeline.reject(submission, 'unknown_device', 'not enrolled, or revoked'))
        return
      }
      const mac = options.find(o => String(o.name) === String(COAP_MAC_OPTION))?.value as Buffer | undefined
      if (!verifyCoapMac(key, device, stream, payload, mac)) {
        this.keys.unauthenticated?.(req.rsinfo.address, 'bad_signature', device, 'coap')
        this.reply(req, res, this.pipeline.reject(submission, 'bad_signature', mac ? 'wrong MAC' : `no MAC (option ${COAP_MAC_OPTION})`))
        return
      }
      // Authenticated from here on: what the pipeline refuses (stream, JSON, replay, rate) counts against the device.
      this.pipeline.submit(submission).then(o => this.reply(req, res, o), err => {
        this.log.error('CoAP submit failed', { err })
        this.answer(req, res, '5.03', 'store error; retry', 5)
      })
    } catch (err) {
      this.log.warn('CoAP request failed', { err })
      this.answer(req, res, '5.00', '')
    }
  }

  private reply (req: IncomingMessage, res: OutgoingMessage, o: Outcome): void {
    const { code, maxAge } = codeFor(o)
    this.answer(req, res, code, o.accepted ? '' : `${o.reason}: ${o.detail}`, maxAge)
  }

  async stop (): Promise<void> {
    this.stopping = true
    if (this.retry) clearTimeout(this.retry)
    const server = this.server
    if (server) await new Promise<void>(resolve => server.close(() => resolve()))
    this.socket?.close()
    this.bound = undefined
  }
}
