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
  // One controller, its timer cleared when the answer is read: AbortSignal.timeout() would fire
  // (a DOMException with a stack, and an abort event) timeoutMs after every request, long done,
  // and keep each signal alive until then (a profile at 1,000 msg/s showed it).
  const ac = new AbortController()
  const timer = setTimeout(() => { ac.abort(new Error(`no answer within ${o.timeoutMs} ms`)) }, o.timeoutMs)
  const outer = o.signal
  const onAbort = (): void => { ac.abort(outer?.reason) }
  if (outer?.aborted === true) onAbort()
  else outer?.addEventListener('abort', onAbort, { once: true })
  let status: number
  let resHeaders: PostResult['headers']
  let text: string
  try {
    const res = await dispatcher.request({
      origin: url.origin,
      path: url.pathname + url.search,
      method: 'POST',
      headers,
      body,
      signal: ac.signal
    })
    status = res.statusCode
    resHeaders = res.headers
    text = (await res.body.text()).slice(0, o.maxText ?? 500)
  } finally {
    clearTimeout(timer)
    outer?.removeEventListener('abort', onAbort)
  }
  return { status, headers: resHeaders, text }
}
