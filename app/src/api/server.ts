import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from '../lib/logger.js'
import { HttpError } from '../lib/errors.js'
import { authorize, type ApiAuth } from './auth.js'
import type { Registry } from '../lib/metrics.js'

export interface ApiRoutes {
  health: () => { ok: boolean, body: Record<string, unknown> }
  status: () => Record<string, unknown>
  /** Extra routes that other capabilities add: "METHOD /path" -> handler returning [status, JSON body]. */
  extra?: Map<string, (body: unknown, req: IncomingMessage) => Promise<[number, unknown]>>
  /** The console (app/src/console): its page and assets are public, its /console/api/* routes take the session cookie too. */
  console?: ConsoleRoutes
}

export interface ConsoleRoutes {
  isPublic: (method: string, path: string) => boolean
  handle: (req: IncomingMessage, res: ServerResponse, path: string, principal: string, body: () => Promise<unknown>) => Promise<void>
}

export const json = (res: ServerResponse, status: number, body: unknown): void => {
  const text = JSON.stringify(body, null, 2) + '\n'
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(text)
}

async function readJson (req: IncomingMessage, limit = 65536): Promise<unknown> {
  const chunks: Buffer[] = []
  let n = 0
  for await (const c of req) {
    n += (c as Buffer).length
    if (n > limit) throw new HttpError(413, 'request body too large')
    chunks.push(c as Buffer)
  }
  if (n === 0) return undefined
  try { return JSON.parse(Buffer.concat(chunks).toString('utf8')) } catch { throw new HttpError(400, 'request body is not JSON') }
}

/**
 * The management API: /health (200 ready, 503 not), /status (JSON), /metrics (Prometheus text), and
 * the routes other capabilities add. Every request passes `authorize` (auth.ts) first: Host, Origin
 * and content type always; the bearer token for everything but GET /health and GET /metrics.
 * Without `auth` (unit tests of other parts only) nothing is checked.
 */
export class ApiServer {
  private server?: Server
  private readonly refused
  constructor (private readonly host: string, private readonly port: number, private readonly routes: ApiRoutes, private readonly metrics: Registry, private readonly log: Logger, private readonly auth?: ApiAuth) {
    this.refused = metrics.counter('gateway_api_refused_total', 'Management API requests refused before any route ran, by HTTP status (401 no or wrong token, 403 foreign Host or cross-site, 415 not JSON).').init(...['401', '403', '415'].map(status => ({ status })))
  }

  async start (): Promise<AddressInfo> {
    const server = createServer((req, res) => { void this.handle(req, res) })
    server.keepAliveTimeout = 5000
    server.headersTimeout = 10000
    server.requestTimeout = 15000
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.port, this.host, () => { server.off('error', reject); resolve() })
    })
    const a = server.address() as AddressInfo
    if (this.auth) this.auth.port = a.port
    return a
  }

  private async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    const isConsole = this.routes.console !== undefined && (path === '/console' || path.startsWith('/console/'))
    let principal = 'anonymous'
    if (this.auth) {
      const isPublic = (req.method === 'GET' && (path === '/health' || path === '/metrics')) || (isConsole && this.routes.console!.isPublic(req.method ?? 'GET', path))
      const verdict = authorize(req, this.auth, isPublic, isConsole)
      if (!verdict.ok) {
        this.refused.inc({ status: String(verdict.status) })
        req.resume()
        res.setHeader('connection', 'close')
        if (verdict.status === 401) res.setHeader('www-authenticate', 'Bearer realm="iot-gateway"')
        json(res, verdict.status, { error: verdict.error })
        return
      }
      principal = verdict.principal
    }
    try {
      if (isConsole) {
        await this.routes.console!.handle(req, res, path, principal, async () => await readJson(req))
      } else if (req.method === 'GET' && path === '/health') {
        const h = this.routes.health()
        json(res, h.ok ? 200 : 503, h.body)
      } else if (req.method === 'GET' && path === '/status') {
        json(res, 200, this.routes.status())
      } else if (req.method === 'GET' && path === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(this.metrics.render())
      } else {
        const handler = this.routes.extra?.get(`${req.method ?? 'GET'} ${path}`)
        if (!handler) { json(res, 404, { error: 'not found' }); return }
        const [status, body] = await handler(await readJson(req), req)
        json(res, status, body)
      }
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 500
      if (status >= 500) this.log.error('api request failed', { err, path })
      json(res, status, { error: (err as Error).message })
    }
  }

  async stop (): Promise<void> {
    const s = this.server
    if (!s) return
    s.closeAllConnections()
    await new Promise<void>(resolve => s.close(() => resolve()))
  }
}
