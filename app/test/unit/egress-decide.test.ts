import t from 'tap'
import { afterResponse, batchSource, classify, lingerWait, type LingerInput } from '../../src/egress/decide.js'

const linger = (over: Partial<LingerInput> = {}): LingerInput => ({
  now: 1_000, oldestAt: 990, messages: 3, bytes: 300, lingerMs: 50, draining: false, batchMaxMessages: 1000, batchMaxBytes: 1 << 20, ...over
})

t.test('linger: counted from the oldest message; no wait when full, stopping or overdue', async t => {
  t.equal(lingerWait(linger()), 40)
  t.equal(lingerWait(linger({ now: 1_100 })), 0)
  t.equal(lingerWait(linger({ messages: 1000 })), 0, 'a full batch by count')
  t.equal(lingerWait(linger({ bytes: 1 << 20 })), 0, 'a full batch by bytes')
  t.equal(lingerWait(linger({ draining: true })), 0, 'stopping: send what there is')
  t.equal(lingerWait(linger({ messages: 0 })), Infinity, 'nothing to send')
  t.equal(lingerWait(linger({ oldestAt: undefined })), Infinity)
})

t.test('next batch: from memory when memory holds every committed undelivered row, else the outbox', async t => {
  const src = (committedUndelivered: number, committedInMemory: number, unsent: number): string => batchSource({ committedUndelivered, committedInMemory, unsentInMemory: () => unsent })
  t.equal(src(5, 5, 10), 'memory', 'steady state: committed rows kept since their commit, then uncommitted ones')
  t.equal(src(0, 0, 10), 'memory')
  t.equal(src(5, 5, 5), 'memory')
  t.equal(src(0, 0, 0), 'none', 'all sent, their commit (or 2xx) awaited')
  t.equal(src(5, 0, 10), 'outbox', 'after a restart: rows only the outbox has go first')
  t.equal(src(500, 20, 10), 'outbox', 'past the memory bound (a long outage)')
  t.equal(src(0, 0, 0), 'none')
})

t.test('classify: 2xx ok; 401/403 auth; 408, 429, 5xx retry; other statuses final', async t => {
  t.same([200, 204, 401, 403, 408, 429, 500, 503, 400, 404, 413, 301].map(classify),
    ['ok', 'ok', 'auth', 'auth', 'retry', 'retry', 'retry', 'retry', 'dead', 'dead', 'dead', 'dead'])
})

t.test('after a response: ack, dead letters, or wait for the commit of what was sent from memory', async t => {
  const o = { fromMemory: false, attempt: 0, backoffBaseMs: 500, backoffMaxMs: 60_000, random: () => 0 }
  t.same(afterResponse({ kind: 'ok' }, o), { do: 'ack' })
  t.same(afterResponse({ kind: 'ok' }, { ...o, fromMemory: true }), { do: 'ack' })
  t.same(afterResponse({ kind: 'dead', status: 400, reason: 'HTTP 400' }, o), { do: 'dead_letter' })
  t.same(afterResponse({ kind: 'dead', status: 400, reason: 'HTTP 400' }, { ...o, fromMemory: true }), { do: 'dead_letter_after_commit' },
    'uncommitted messages move to the dead letters once committed')
})

t.test('after a response: backoff doubles with jitter, capped, never under Retry-After', async t => {
  const o = { fromMemory: false, backoffBaseMs: 500, backoffMaxMs: 4_000 }
  const retry = { kind: 'retry' as const, status: 503, reason: 'HTTP 503' }
  t.same(afterResponse(retry, { ...o, attempt: 0, random: () => 0 }), { do: 'retry', delayMs: 250 }, 'half the ceiling at the least')
  t.same(afterResponse(retry, { ...o, attempt: 0, random: () => 0.999999 }), { do: 'retry', delayMs: 500 })
  t.same(afterResponse(retry, { ...o, attempt: 2, random: () => 0.999999 }), { do: 'retry', delayMs: 2_000 })
  t.same(afterResponse(retry, { ...o, attempt: 10, random: () => 0.999999 }), { do: 'retry', delayMs: 4_000 }, 'capped at backoffMaxMs')
  t.same(afterResponse({ ...retry, retryAfterMs: 30_000 }, { ...o, attempt: 0, random: () => 0 }), { do: 'retry', delayMs: 30_000 }, 'Retry-After wins')
  t.same(afterResponse({ kind: 'auth', status: 401, reason: 'HTTP 401' }, { ...o, attempt: 1, random: () => 0 }), { do: 'auth', delayMs: 500 })
})
