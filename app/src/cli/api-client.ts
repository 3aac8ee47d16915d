import { request } from 'undici'
import { apiTokenPath, localAddressOf, readApiToken } from '../api/auth.js'
import type { Config } from '../config/schema.js'
import { EXIT, Exit } from './io.js'

/** The running daemon's API as the CLI reaches it: a wildcard listener through loopback. */
export const apiBase = (c: Config): string => {
  const host = localAddressOf(c.api.host)
  return `http://${host.includes(':') ? `[${host}]` : host}:${c.api.port}`
}

/**
 * A request to the management API with the operator's credentials: the token file the daemon (or
 * `pki init`) made on /data, readable by root and the gateway's group. No file (api.auth "none", or
 * a daemon that never ran): no header, and the daemon's 401 says what is missing.
 */
export async function apiRequest (c: Config, method: 'GET' | 'POST', path: string, body?: unknown, timeoutMs = 5000): Promise<{ status: number, body: any }> {
  const headers: Record<string, string> = {}
  if (c.api.auth === 'token') {
    try { headers.authorization = `Bearer ${readApiToken(apiTokenPath(c))}` } catch { /* the daemon answers 401 */ }
  }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const r = await request(`${apiBase(c)}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs) })
  const text = await r.body.text()
  let parsed: any = text
  try { parsed = JSON.parse(text) } catch { /* not JSON: keep the text */ }
  if (r.statusCode === 401) {
    throw new Exit(EXIT.FAILURE, `the management API refused the CLI's token: read ${apiTokenPath(c)} as root or as a member of the gateway's group`)
  }
  return { status: r.statusCode, body: parsed }
}
