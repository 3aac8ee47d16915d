import t from 'tap'
import { duplicateKey, parseMessage, RateLimiter, sequenceVerdict } from '../../src/pipeline/checks.js'
import { backoffDelay, parseRetryAfter } from '../../src/lib/backoff.js'

t.test('parseMessage: size, JSON, seq and epoch', async t => {
  t.same(parseMessage('{"seq":1,"v":2}', 100), { ok: true, value: { epoch: 0, seq: 1, payload: '{"seq":1,"v":2}' } })
  t.same(parseMessage(Buffer.from('{"seq":0,"epoch":7}'), 100), { ok: true, value: { epoch: 7, seq: 0, payload: '{"seq":0,"epoch":7}' } })
  const reason = (raw: string, max = 100): string | undefined => { const r = parseMessage(raw, max); return r.ok ? undefined : r.reason }
  t.equal(reason('{"seq":1}', 5), 'oversize')
  t.equal(reason('{"seq":1'), 'bad_json')
  t.equal(reason('[1,2]'), 'bad_schema')
  t.equal(reason('null'), 'bad_schema')
  t.equal(reason('{"seq":-1}'), 'bad_schema')
  t.equal(reason('{"seq":1.5}'), 'bad_schema')
  t.equal(reason('{"seq":"1"}'), 'bad_schema')
  t.equal(reason('{"seq":1,"epoch":-2}'), 'bad_schema')
  t.equal(reason('{"seq":9007199254740993}'), 'bad_schema')
  t.equal(reason('{"seq":1,"x":"ü"}', 12), 'oversize', 'size counts bytes, not characters')
})

t.test('sequenceVerdict orders (epoch, seq)', async t => {
  t.equal(sequenceVerdict({ epoch: -1, seq: -1 }, { epoch: 0, seq: 0 }), 'new')
  t.equal(sequenceVerdict({ epoch: 0, seq: 5 }, { epoch: 0, seq: 6 }), 'new')
  t.equal(sequenceVerdict({ epoch: 0, seq: 5 }, { epoch: 0, seq: 5 }), 'duplicate')
  t.equal(sequenceVerdict({ epoch: 0, seq: 5 }, { epoch: 0, seq: 4 }), 'replay')
  t.equal(sequenceVerdict({ epoch: 1, seq: 0 }, { epoch: 0, seq: 99 }), 'replay')
  t.equal(sequenceVerdict({ epoch: 1, seq: 99 }, { epoch: 2, seq: 0 }), 'new')
})

t.test('RateLimiter: burst, then the sustained rate, per device', async t => {
  let now = 0
  const r = new RateLimiter(10, 3, () => now)
  t.same([r.take('a'), r.take('a'), r.take('a'), r.take('a')], [true, true, true, false])
  t.ok(r.take('b'), 'another device has its own bucket')
  now += 100
  t.ok(r.take('a'), 'one token back after 100 ms at 10/s')
  t.notOk(r.take('a'))
})

t.test('backoff grows with jitter up to the cap; Retry-After both forms', async t => {
  t.equal(backoffDelay(0, 100, 1000, () => 0), 50)
  t.equal(backoffDelay(0, 100, 1000, () => 1), 100)
  t.equal(backoffDelay(3, 100, 1000, () => 1), 800)
  t.equal(backoffDelay(30, 100, 1000, () => 1), 1000)
  t.equal(parseRetryAfter('3'), 3000)
  t.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4_000), 6000)
  t.equal(parseRetryAfter('soon'), undefined)
  t.equal(parseRetryAfter(undefined), undefined)
})

t.test('duplicateKey and invalid UTF-8', async t => {
  t.equal(duplicateKey('{"seq":1,"seq":2}'), 'seq')
  t.equal(duplicateKey('{"seq":1,"\\u0073eq":2}'), 'seq', 'names compared unescaped')
  t.equal(duplicateKey('{"a":{"b":1,"b":2}}'), 'b', 'nested objects')
  t.equal(duplicateKey('{"a":[{"b":1},{"b":2}],"c":{"b":3}}'), undefined, 'the same name in different objects is fine')
  t.equal(duplicateKey('{"a":"seq","seq":"a","s":["seq","seq"]}'), undefined, 'string values are not names')
  t.equal(duplicateKey('{"a\\"b":1,"a\\\\":2,"x":{"":1,"":2}}'), '', 'escaped quotes and backslashes, the empty name')
  const r = parseMessage(Buffer.from([0x7b, 0x22, 0x73, 0x65, 0x71, 0x22, 0x3a, 0x31, 0x2c, 0x22, 0x78, 0x22, 0x3a, 0x22, 0xc3, 0x22, 0x7d]), 100)
  t.same(r, { ok: false, reason: 'invalid_utf8', detail: 'payload is not valid UTF-8' })
  const d = parseMessage('{"seq":1,"seq":1000000}', 100)
  t.equal(d.ok ? undefined : d.reason, 'duplicate_key')
})
