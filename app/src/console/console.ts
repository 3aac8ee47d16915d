import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { SESSION_COOKIE, cookieValue } from '../api/auth.js'
import { json, type ConsoleRoutes } from '../api/server.js'
import type { AlertState, Transition } from '../alerts/rules.js'
import type { AuditLog } from '../audit/audit.js'
import type { Config } from '../config/schema.js'
import { releaseDevice, revokeDevice } from '../devices/operations.js'
import type { DeviceGuard } from '../devices/guard.js'
import { confirmRequestDir, type FirewallMonitor } from '../firewall/monitor.js'
import type { WireguardStats } from '../wireguard/stats.js'
import type { Logger } from '../lib/logger.js'
import { UsageError } from '../lib/errors.js'
import type { DB } from '../store/db.js'
import type { ConsoleHistory } from './history.js'

// The page's script and style, put into the bundle by esbuild.config.mjs (define). Running from
// the TypeScript sources (unit tests) they are absent and the page says so.
declare const __CONSOLE_JS__: string | undefined
declare const __CONSOLE_CSS__: string | undefined
const JS = typeof __CONSOLE_JS__ === 'string' ? __CONSOLE_JS__ : 'document.body.textContent="console script not bundled (npm run build)"'
const CSS = typeof __CONSOLE_CSS__ === 'string' ? __CONSOLE_CSS__ : ''

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>iot-gateway console</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/console/app.css"></head>
<body><div id="app"><p>Loading…</p></div><script src="/console/app.js"></script></body></html>
`

/** Everything from the bundle; nothing else may load (no CDN, no font, no frame). */
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store'
}

const SESSION_SECONDS = 12 * 3600
const MAX_SESSIONS = 32

export interface ConsoleDeps {
  config: Config
  db: DB
  token: string | null
  history: ConsoleHistory
  devices: () => DeviceGuard | undefined
  firewall: () => FirewallMonitor | undefined
  wireguard: () => WireguardStats | undefined
  health: () => { ok: boolean, body: Record<string, unknown> }
  status: () => Record<string, unknown>
  firing: () => AlertState[]
  refusalSummary: () => Record<string, { last: { reason: string, at: string, detail: string }, byReason: Record<string, number> }>
  retryDeadLetters: () => number
  /** The existing POST /commands handler (devices/api.ts): same checks, same audit. */
  sendCommand: (body: unknown, req: IncomingMessage) => Promise<[number, unknown]>
  audit: AuditLog
  log: Logger
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest()

/** The console's routes on the management API, and its sessions (in memory: a restart logs everyone out). */
export class Console implements ConsoleRoutes {
  private readonly sessions = new Map<string, number>()
  /** Failed logins are audited at most once a minute (with the count): a guessing client must not fill the card. */
  private failed = { at: 0, suppressed: 0 }
  private readonly resolved: Array<{ rule: string, key: string, summary: string, firedAt: number | null, resolvedAt: number }> = []

  constructor (private readonly d: ConsoleDeps) {}

  /** For authorize(): a live session id. */
  session = (id: string): boolean => {
    const exp = this.sessions.get(id)
    if (exp === undefined) return false
    if (exp < Date.now()) { this.sessions.delete(id); return false }
    return true
  }

  /** The alert manager's transitions: the console keeps the last 20 resolutions. */
  transitions (ts: readonly Transition[]): void {
    for (const t of ts) {
      if (t.to !== 'resolved') continue
      this.resolved.unshift({ rule: t.alert.rule, key: t.alert.key, summary: t.alert.summary, firedAt: t.alert.firedAt, resolvedAt: t.at })
      if (this.resolved.length > 20) this.resolved.pop()
    }
  }

  isPublic (method: string, path: string): boolean {
    return (method === 'GET' && (path === '/console' || path === '/console/' || path === '/console/app.js' || path === '/console/app.css')) ||
      (method === 'GET' && path === '/console/session') ||
      (method === 'POST' && (path === '/console/login' || path === '/console/logout'))
  }

  async handle (req: IncomingMessage, res: ServerResponse, path: string, principal: string, body: () => Promise<unknown>): Promise<void> {
    const m = req.method ?? 'GET'
    if (m === 'GET' && (path === '/console' || path === '/console/')) return this.send(res, 'text/html; charset=utf-8', PAGE)
    if (m === 'GET' && path === '/console/app.js') return this.send(res, 'text/javascript; charset=utf-8', JS)
    if (m === 'GET' && path === '/console/app.css') return this.send(res, 'text/css; charset=utf-8', CSS)
    // Public, so that the page learns whether to show the login form without a 401 in the browser's console.
    if (m === 'GET' && path === '/console/session') {
      const id = cookieValue(req.headers.cookie, SESSION_COOKIE)
      json(res, 200, { loggedIn: this.d.token === null || (id !== undefined && this.session(id)) })
      return
    }
    if (m === 'POST' && path === '/console/login') return await this.login(req, res, await body())
    if (m === 'POST' && path === '/console/logout') {
      const id = cookieValue(req.headers.cookie, SESSION_COOKIE)
      if (id !== undefined) this.sessions.delete(id)
      res.setHeader('set-cookie', `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`)
      json(res, 200, { ok: true })
      return
    }
    const [status, out] = await this.api(m, path, req, body, principal)
    json(res, status, out)
  }

  private send (res: ServerResponse, type: string, text: string): void {
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': type }).end(text)
  }

  private async login (req: IncomingMessage, res: ServerResponse, body: unknown): Promise<void> {
    const given = (body as { token?: unknown } | undefined)?.token
    const want = this.d.token
    if (want === null) { json(res, 400, { error: 'api.auth is "none": the console needs no login' }); return }
    if (typeof given !== 'string' || !timingSafeEqual(digest(given), digest(want))) {
      const now = Date.now()
      if (now - this.failed.at >= 60_000) {
        this.d.audit.record({ type: 'console_login_failed', source: 'console', detail: { from: req.socket.remoteAddress ?? null, suppressed: this.failed.suppressed } })
        this.failed = { at: now, suppressed: 0 }
      } else this.failed.suppressed++
      json(res, 401, { error: 'wrong token (it is in api.tokenFile, default <dataDir>/api-token)' })
      return
    }
    const now = Date.now()
    for (const [k, exp] of this.sessions) if (exp < now) this.sessions.delete(k)
    while (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!)
    const id = randomBytes(32).toString('base64url')
    this.sessions.set(id, now + SESSION_SECONDS * 1000)
    this.d.audit.record({ type: 'console_login', source: 'console', detail: { from: req.socket.remoteAddress ?? null } })
    res.setHeader('set-cookie', `${SESSION_COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_SECONDS}`)
    json(res, 200, { ok: true })
  }

  private async api (m: string, path: string, req: IncomingMessage, body: () => Promise<unknown>, principal: string): Promise<[number, unknown]> {
    const source = principal === 'console' ? 'console' : 'api'
    const guard = this.d.devices()
    if (m === 'GET' && path === '/console/api/state') return [200, this.state()]
    if (m === 'GET' && path === '/console/api/device') {
      const id = new URL(req.url ?? '/', 'http://x').searchParams.get('id') ?? ''
      return this.device(id)
    }
    if (m !== 'POST') return [404, { error: 'not found' }]
    const b = (await body() ?? {}) as Record<string, unknown>
    if (path === '/console/api/command') return await this.d.sendCommand(b, req)
    if (path === '/console/api/retry') {
      const moved = this.d.retryDeadLetters()
      this.d.audit.record({ type: 'dead_letters_retried', source, detail: { moved } })
      return [200, { moved }]
    }
    if (path === '/console/api/firewall-confirm') {
      // The daemon has no root: it asks the privileged path unit, which confirms only this apply.
      const fw = this.d.firewall()
      if (!fw) return [503, { error: 'not ready' }]
      const r = fw.requestConfirm(confirmRequestDir(this.d.config.gateway.dataDir), source)
      if (r === null) return [409, { error: 'nothing to confirm: no firewall change is waiting (it may have been rolled back already)' }]
      return [202, { requested: r.id, note: 'iot-gateway-firewall-confirm confirms it within seconds; the change stays pending (and rolls back at its deadline) if it does not' }]
    }
    if (!guard) return [503, { error: 'not ready' }]
    const id = typeof b.device === 'string' ? b.device : ''
    const ctx = { config: this.d.config, registry: guard.registry, audit: { record: (e: Parameters<AuditLog['record']>[0]) => guard.audit.record({ ...e, source }) } as unknown as AuditLog }
    try {
      if (path === '/console/api/release') {
        const r = releaseDevice(ctx, id, b.discard === true)
        guard.reload()
        return [200, r]
      }
      if (path === '/console/api/revoke') {
        const reason = typeof b.reason === 'string' && b.reason.trim() !== '' ? b.reason.slice(0, 200) : 'revoked from the console'
        const r = revokeDevice(ctx, id, reason)
        guard.reload()
        return [200, r]
      }
    } catch (err) {
      if (err instanceof UsageError) return [409, { error: (err as Error).message }]
      throw err
    }
    return [404, { error: 'not found' }]
  }

  state (): Record<string, unknown> {
    const guard = this.d.devices()
    const fw = this.d.firewall()
    const refusals = this.d.refusalSummary()
    const devices = guard
      ? guard.registry.list().map(r => ({
        id: r.id,
        status: r.status,
        trust: r.trustScore,
        lastSeen: r.lastSeen,
        messages: r.messages,
        rejected: r.rejected,
        held: r.held,
        rate: Math.round(this.d.history.rate(r.id) * 100) / 100,
        lastRefusal: refusals[r.id]?.last.reason ?? null
      }))
      : []
    const st = this.d.status()
    return {
      at: Date.now(),
      gateway: this.d.config.gateway.id,
      health: this.d.health().body,
      system: st.system ?? null,
      outbox: st.outbox ?? null,
      uplink: st.uplink ?? null,
      history: this.d.history.samples(),
      alerts: { firing: this.d.firing().map(a => ({ rule: a.rule, key: a.key, summary: a.summary, firedAt: a.firedAt })), resolved: this.resolved },
      devices,
      firewall: fw
        ? { snapshot: fw.snapshot, pending: fw.pending() }
        : null,
      wireguard: this.d.wireguard()?.view() ?? { available: false, why: 'not started' }
    }
  }

  private device (id: string): [number, unknown] {
    const guard = this.d.devices()
    const r = guard?.registry.get(id)
    if (!guard || !r) return [404, { error: `no device "${id}"` }]
    guard.audit.flush()
    const audit = this.d.db.prepare('SELECT id, at, type, source, detail FROM audit_log WHERE device = ? ORDER BY id DESC LIMIT 50').all(id)
    const recent = this.d.history.recentOf(id)
    return [200, {
      device: r,
      certificates: guard.registry.certificates(id),
      refusals: this.d.refusalSummary()[id] ?? null,
      recentRefusals: recent.refusals,
      messages: recent.messages,
      audit
    }]
  }
}
