import { createServer } from 'node:net'
import { createSocket } from 'node:dgram'

/** The one sleep for tests: pacing a load, never waiting for a result (use waitFor or a barrier). */
export { sleep } from '../../src/lib/backoff.js'

/** A port that was free a moment ago (bind to 0, read, close). For processes that need a port up front. */
export function freePort (host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, host, () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

export function freeUdpPort (host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4')
    s.once('error', reject)
    s.bind(0, host, () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/** Polls until `fn` returns a truthy value or the time is up. */
export async function waitFor<T> (fn: () => T | Promise<T>, what: string | (() => string | Promise<string>), timeoutMs = 20000, everyMs = 50): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v) return v as NonNullable<T>
    } catch (err) { last = err }
    if (Date.now() > until) {
      const text = typeof what === 'string' ? what : await what()
      throw new Error(`timed out waiting for ${text}${last ? `: ${(last as Error).message}` : ''}`)
    }
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}
