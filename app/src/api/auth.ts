import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { chmodSync, closeSync, fsyncSync, linkSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { isIP } from 'node:net'
import { networkInterfaces } from 'node:os'
import { dirname, join } from 'node:path'
import type { Config } from '../config/schema.js'
import { apiTunnelListen } from '../wireguard/api-listen.js'

/** The management API's token file: made once on /data (by `pki init` at first boot, or by the daemon at start). */
export const apiTokenPath = (c: Config): string => c.api.tokenFile !== '' ? c.api.tokenFile : join(c.gateway.dataDir, 'api-token')

/**
 * Creates the token file if it does not exist: 32 random bytes (base64url), mode 0640 so that the
 * gateway's group (and root, the operator over SSH) can read it and nobody else. Written to a temp
 * file, fsynced, then hard-linked into place: the file appears whole or not at all, and a file that
 * already exists (another process won the race, or an operator put their own token there) is kept.
 */
export function ensureApiToken (file: string): { created: boolean } {
  try {
    if (readFileSync(file, 'utf8').trim() !== '') return { created: false }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
  const fd = openSync(tmp, 'wx', 0o640)
  try {
    writeSync(fd, randomBytes(32).toString('base64url') + '\n')
    fsyncSync(fd)
  } finally { closeSync(fd) }
  chmodSync(tmp, 0o640) // the umask may have taken the group's read bit
  let created = true
  try {
    linkSync(tmp, file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') { unlinkSync(tmp); throw err }
    created = false
  }
  unlinkSync(tmp)
  try {
    const d = openSync(dirname(file), 'r')
    try { fsyncSync(d) } finally { closeSync(d) }
  } catch { /* the directory entry reaches the card with the next sync anyway */ }
  return { created }
}

export function readApiToken (file: string): string {
  const token = readFileSync(file, 'utf8').trim()
  if (token.length < 16) throw new Error(`${file} holds no token (fewer than 16 characters)`)
  return token
}

/** What the API's one check needs: the token (null: api.auth "none"), and which Host names are ours. */
export interface ApiAuth {
  token: string | null
  /** The listener's address (its interfaces' addresses for a wildcard) and api.allowedHosts. */
  hostAllowed: (hostname: string) => boolean
  /** The listener's port (set by the server once it listens, for api.port 0). */
  port: number
  /** The console's sessions (app/src/console/session.ts): true for a live session id. Unset: no cookie is ever accepted. */
  session?: (id: string) => boolean
}

/** The console's session cookie: HttpOnly, SameSite=Strict, Path=/ (set by POST /console/login). */
export const SESSION_COOKIE = 'gw_session'
/** Every state-changing console request carries this header: a page on another site cannot set it without a CORS preflight, which the API never answers. */
export const CONSOLE_HEADER = 'x-gateway-console'

/** The value of one cookie in a Cookie header (first match), or undefined. */
export function cookieValue (header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const i = part.indexOf('=')
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim()
  }
  return undefined
}

/** A listener on every address of the host: api.host '', 0.0.0.0 or ::. */
export const isWildcardHost = (host: string): boolean => host === '' || host === '0.0.0.0' || host === '::'

/** The address a client on the gateway itself uses for a listener on `host`: a wildcard through loopback. */
export const localAddressOf = (host: string): string => host === '::' ? '::1' : isWildcardHost(host) ? '127.0.0.1' : host

export function apiAuth (c: Config): ApiAuth {
  let token: string | null = null
  if (c.api.auth === 'token') {
    const file = apiTokenPath(c)
    ensureApiToken(file)
    token = readApiToken(file)
  }
  const extra = new Set(c.api.allowedHosts.map(h => h.toLowerCase()))
  // Through iot-gateway-api@.socket the hub names the tunnel's address (an address, not a name a
  // web page's DNS could rebind); without it every request through the tunnel would get 403.
  const tunnel = apiTunnelListen(c)
  if (tunnel !== null) extra.add(normalise(tunnel.address))
  const wildcard = isWildcardHost(c.api.host)
  const listener = normalise(c.api.host)
  return {
    token,
    port: c.api.port,
    hostAllowed: (name: string): boolean => {
      const h = normalise(name)
      if (extra.has(h)) return true
      // A name that resolves to loopback cannot be rebound by a web page's DNS to another host.
      if (h === 'localhost') return isLoopback(listener) || wildcard
      if (isIP(h) === 0) return false
      if (!wildcard) return h === listener
      // Any address the host has now (the WireGuard address appears after the daemon starts).
      return Object.values(networkInterfaces()).some(list => (list ?? []).some(a => normalise(a.address) === h))
    }
  }
}

const normalise = (h: string): string => h.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, '$1')
const isLoopback = (h: string): boolean => h === '::1' || /^127\./.test(h)

export type AuthResult =
  | { ok: true, principal: 'operator' | 'anonymous' | 'console' }
  | { ok: false, status: 401 | 403 | 415, error: string }

/** Splits a Host header ("name", "name:port", "[v6]:port") into name and port. */
function splitHost (host: string): { name: string, port: number | null } | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(host.trim())
  if (!m) return undefined
  return { name: m[1]!, port: m[2] !== undefined ? Number(m[2]) : null }
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest()

/**
 * The API's single access check, run before any route. In order:
 *  1. Host: only the listener's own address(es), `localhost` on loopback, or api.allowedHosts (and the
 *     listener's port if one is given): a web page that rebinds its DNS name to the gateway is refused.
 *  2. Cross-site: an `Origin` must name an allowed host too (`null` is refused), `Sec-Fetch-Site`
 *     cross-site/same-site is refused, and a request with a body must say `application/json`, so no
 *     HTML form (text/plain, urlencoded, multipart) can reach a route.
 *  3. Credentials, unless the route is public (GET /health, GET /metrics): `Authorization: Bearer
 *     <token>`, compared in constant time. For the console's routes (`cookieOk`), the console's
 *     session cookie (HttpOnly, SameSite=Strict) is a second credential, behind the same Host and
 *     Origin checks; a request other than GET that relies on the cookie must also carry the
 *     X-Gateway-Console header (no cross-site page can send it without a preflight we never allow).
 */
export function authorize (req: IncomingMessage, auth: ApiAuth, isPublic: boolean, cookieOk = false): AuthResult {
  const host = splitHost(String(req.headers.host ?? ''))
  if (!host || !auth.hostAllowed(host.name) || (host.port !== null && host.port !== auth.port)) {
    return { ok: false, status: 403, error: `Host "${String(req.headers.host ?? '')}" is not this API's address (api.allowedHosts adds names)` }
  }
  const origin = req.headers.origin
  if (origin !== undefined) {
    let o: URL | undefined
    try { o = new URL(origin) } catch { o = undefined }
    const oh = o ? splitHost(o.host) : undefined
    if (!o || o.protocol !== 'http:' || !oh || !auth.hostAllowed(oh.name) || (oh.port ?? 80) !== auth.port) {
      return { ok: false, status: 403, error: `cross-site request refused (Origin ${origin})` }
    }
  }
  const site = req.headers['sec-fetch-site']
  if (site === 'cross-site' || site === 'same-site') return { ok: false, status: 403, error: `cross-site request refused (Sec-Fetch-Site ${String(site)})` }
  const hasBody = (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0') || req.headers['transfer-encoding'] !== undefined
  if (hasBody && !/^application\/json\s*(;|$)/i.test(String(req.headers['content-type'] ?? ''))) {
    return { ok: false, status: 415, error: 'request bodies must be Content-Type: application/json' }
  }
  if (isPublic || auth.token === null) return { ok: true, principal: 'anonymous' }
  const m = /^Bearer\s+(\S+)\s*$/i.exec(String(req.headers.authorization ?? ''))
  if (!m && cookieOk && auth.session) {
    const id = cookieValue(req.headers.cookie, SESSION_COOKIE)
    if (id !== undefined && auth.session(id)) {
      if (req.method !== 'GET' && req.method !== 'HEAD' && req.headers[CONSOLE_HEADER] !== '1') return { ok: false, status: 403, error: 'console requests must carry X-Gateway-Console: 1 (cross-site request refused)' }
      return { ok: true, principal: 'console' }
    }
  }
  // Hashes first: timingSafeEqual needs equal lengths, and the token's length stays secret too.
  if (!m || !timingSafeEqual(digest(m[1]!), digest(auth.token))) return { ok: false, status: 401, error: 'missing or wrong bearer token (the token is in api.tokenFile, default <dataDir>/api-token)' }
  return { ok: true, principal: 'operator' }
}
