import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { createCertificate, keyToPem, newKeyPair } from '../../src/pki/x509.js'

export interface CloudMessage { id: string, device: string, transport: string, stream: string, epoch: number, seq: number, receivedAt: number, payload: any }
export interface CloudBatch { batchId: string, idempotencyKey: string, digestOk: boolean, authorization: string | undefined, messages: CloudMessage[], at: number }

/** Decides the answer to a request; the default accepts. */
export type Responder = (batch: CloudBatch, req: IncomingMessage) => { status: number, headers?: Record<string, string>, body?: string } | undefined

/**
 * A real HTTPS server standing in for the cloud: its own CA (written to caFile for the gateway to
 * trust), checks Content-Digest and gzip, records every batch and message it accepted.
 */
export class Cloud {
  readonly batches: CloudBatch[] = []
  readonly accepted: CloudMessage[] = []
  requests = 0
  respond: Responder = () => undefined
  /** Alert envelopes ({"kind":"alerts"}, the gateway's alert lane): each alert accepted, and the order of accepted requests. */
  readonly alerts: any[] = []
  readonly order: Array<'alerts' | 'batch'> = []
  respondAlerts: (body: any, req: IncomingMessage) => { status: number, body?: string } | undefined = () => undefined
  url = ''
  caFile = ''
  private server?: Server
  /** Every TCP connection of the running server, the TLS handshake included (see stop). */
  private readonly sockets = new Set<Socket>()
  private port = 0
  private tls?: { key: string, cert: string }

  constructor (private readonly dir: string) {}

  async start (port = 0): Promise<void> {
    if (!this.tls) {
      const ca = newKeyPair()
      const caCert = createCertificate({ subject: { CN: 'test cloud CA' }, publicKey: ca.publicKey, selfKey: ca.privateKey, days: 30, ca: true })
      const k = newKeyPair()
      const cert = createCertificate({ subject: { CN: 'localhost' }, publicKey: k.publicKey, issuer: { cert: caCert, key: ca.privateKey }, days: 30, serverNames: { dns: ['localhost'], ip: ['127.0.0.1', '10.0.2.2'] } })
      this.tls = { key: keyToPem(k.privateKey), cert }
      this.caFile = join(this.dir, 'cloud-ca.crt')
      writeFileSync(this.caFile, caCert)
    }
    const server = createServer({ ...this.tls, keepAliveTimeout: 30000 }, (req, res) => { this.handle(req, res) })
    server.on('connection', (s: Socket) => { this.sockets.add(s); s.once('close', () => this.sockets.delete(s)) })
    this.server = server
    await new Promise<void>(resolve => server.listen(port === 0 ? this.port : port, '127.0.0.1', resolve))
    this.port = (server.address() as { port: number }).port
    this.url = `https://localhost:${this.port}/ingest`
  }

  private handle (req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = []
    req.on('data', c => chunks.push(c))
    req.on('end', () => {
      this.requests++
      const raw = Buffer.concat(chunks)
      const digest = `sha-256=:${createHash('sha256').update(raw).digest('base64')}:`
      let body: any
      try {
        body = JSON.parse((req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8'))
      } catch {
        res.writeHead(400).end('bad body')
        return
      }
      if (body.kind === 'alerts') {
        const answer = this.respondAlerts(body, req)
        if (answer && (answer.status < 200 || answer.status >= 300)) { res.writeHead(answer.status).end(answer.body ?? ''); return }
        this.alerts.push(...body.alerts)
        this.order.push('alerts')
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
        return
      }
      const batch: CloudBatch = {
        batchId: body.batchId,
        idempotencyKey: String(req.headers['idempotency-key']),
        digestOk: req.headers['content-digest'] === digest,
        authorization: req.headers.authorization,
        messages: body.messages,
        at: Date.now()
      }
      const answer = this.respond(batch, req)
      if (answer && (answer.status < 200 || answer.status >= 300)) {
        res.writeHead(answer.status, answer.headers ?? {}).end(answer.body ?? '')
        return
      }
      this.batches.push(batch)
      this.order.push('batch')
      this.accepted.push(...batch.messages)
      res.writeHead(answer?.status ?? 200, { 'content-type': 'application/json' }).end('{"ok":true}')
    })
  }

  /** Distinct messages by id (the gateway may send a message twice after a crash). */
  unique (): Map<string, CloudMessage> {
    const m = new Map<string, CloudMessage>()
    for (const msg of this.accepted) if (!m.has(msg.id)) m.set(msg.id, msg)
    return m
  }

  /**
   * Stops accepting connections and drops every open one (the uplink goes down); start() brings it
   * back on the same port. Every TCP socket, not only closeAllConnections(): that one knows HTTP
   * connections only, and a connection still in its TLS handshake then would go on being served
   * with keep-alive after close(), and close() would wait for it for as long as the client used it.
   */
  async stop (): Promise<void> {
    const s = this.server
    if (!s) return
    const closed = new Promise<void>(resolve => s.close(() => resolve()))
    for (const socket of this.sockets) socket.destroy()
    this.sockets.clear()
    await closed
    this.server = undefined
  }
}
