import { createHash, randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { Agent, type Dispatcher } from 'undici'

/**
 * The one HTTPS POST to the cloud (telemetry batches in egress/egress.ts, alerts in
 * alerts/lane.ts): the same headers (Content-Digest, X-Request-Id, the bearer token), the same
 * timeout, one keep-alive connection pool per sender.
 */

export { HttpError } from './errors.js'

export interface TlsFiles { caFile: string, certFile: string, keyFile: string }

/**
 * A keep-alive pool for one receiver. Reads the CA and client certificate files: call it from a
 * start(), not a constructor. `clientCert` false: no client certificate (a receiver other than the cloud).
 */
export function httpAgent (tls: TlsFiles, o: { timeoutMs: number, connections: number, clientCert?: boolean }): Dispatcher {
  return new Agent({
    connections: o.connections,
    keepAliveTimeout: 60000,
    keepAliveMaxTimeout: 600000,
    headersTimeout: o.timeoutMs,
    bodyTimeout: o.timeoutMs,
    connect: {
      timeout: o.timeoutMs,
      ...(tls.caFile !== '' ? { ca: readFileSync(tls.caFile) } : {}),
      ...(tls.certFile !== '' && o.clientCert !== false ? { cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) } : {})
    }
  })
}

/** RFC 9530 Content-Digest of the bytes on the wire. */
export const contentDigest = (body: Buffer): string => `sha-256=:${createHash('sha256').update(body).digest('base64')}:`

export interface PostResult {
  status: number
  headers: Record<string, string | string[] | undefined>
  /** The answer's body, cut to `maxText` characters (it goes into logs and lastError). */
  text: string
}

/**
 * POSTs `body` as JSON with Content-Digest, a fresh X-Request-Id and, when `token` is a non-empty
 * string, `Authorization: Bearer` (an empty token file, the image's before provisioning, means no
 * token, not "Bearer "). Aborts after `timeoutMs` or on `signal`. Network errors throw (undici's).
 */
export async function httpPost (dispatcher: Dispatcher, url: URL, body: Buffer, o: {
  headers?: Record<string, string>
  token?: string | undefined
  timeoutMs: number
  signal?: AbortSignal
  maxText?: number
}): Promise<PostResult> {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'content-digest': contentDigest(body),
    'x-request-id': randomUUID(),
    ...o.headers,
    ...(o.token !== undefined && o.token !== '' ? { authorization: `Bearer ${o.token}` } : {})
  }
  const timeout = AbortSignal.timeout(o.timeoutMs)
  const res = await dispatcher.request({
    origin: url.origin,
    path: url.pathname + url.search,
    method: 'POST',
    headers,
    body,
    signal: o.signal ? AbortSignal.any([o.signal, timeout]) : timeout
  })
  const text = (await res.body.text()).slice(0, o.maxText ?? 500)
  return { status: res.statusCode, headers: res.headers, text }
}
