// The console's server side without a browser: the session cookie in authorize(), and the bounded
// in-memory hour (ring of samples, last payloads, per-device rate). The browser test is
// test/integration/console.test.ts.
import { mkdtempSync, rmSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { apiAuth, authorize } from '../../src/api/auth.js'
import { buildConfig } from '../../src/config/load.js'
import { ConsoleHistory, HISTORY_POINTS, MAX_DEVICES, PAYLOAD_CHARS, RECENT_PER_DEVICE, STEP_SECONDS } from '../../src/console/history.js'

const req = (method: string, headers: Record<string, string>): IncomingMessage => ({ method, headers }) as unknown as IncomingMessage

t.test('authorize: the session cookie counts only for the console, and only with the console header for changes', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-console-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const a = apiAuth(buildConfig({ gateway: { dataDir: dir }, api: { host: '127.0.0.1', port: 8080 } }))
  const base = { host: '127.0.0.1:8080' }
  const status = (m: string, h: Record<string, string>, cookieOk: boolean): number | string => { const r = authorize(req(m, { ...base, ...h }), a, false, cookieOk); return r.ok ? r.principal : r.status }
  const good = { cookie: 'theme=dark; gw_session=s3cr3t' }
  t.equal(status('GET', good, true), 401, 'no session store: no cookie is accepted')
  a.session = id => id === 's3cr3t'
  t.equal(status('GET', good, true), 'console', 'a live session on a console route')
  t.equal(status('GET', good, false), 401, 'not on the other routes (/status, /commands, ...)')
  t.equal(status('GET', { cookie: 'gw_session=other' }, true), 401, 'an unknown session')
  t.equal(status('POST', good, true), 403, 'a change without X-Gateway-Console')
  t.equal(status('POST', { ...good, 'x-gateway-console': '1' }, true), 'console')
  t.equal(status('POST', { ...good, 'x-gateway-console': '1', origin: 'http://evil.example' }, true), 403, 'another Origin')
  t.equal(status('POST', { ...good, 'x-gateway-console': '1', 'sec-fetch-site': 'cross-site' }, true), 403, 'Sec-Fetch-Site cross-site')
  t.equal(status('POST', { ...good, 'x-gateway-console': '1', 'content-length': '5', 'content-type': 'text/plain' }, true), 415, 'a form body')
})

t.test('history: an hour of samples in a fixed ring, rates from counters, refusals per step', async t => {
  let received = 0; let delivered = 0; let depth = 0
  const h = new ConsoleHistory({ received: () => received, delivered: () => delivered, outboxDepth: () => depth, oldestAt: () => depth > 0 ? 1000 : null })
  let now = 1000
  h.sample(now)
  t.same(h.samples(), [], 'the first call only sets the baseline')
  received = 50; delivered = 40; depth = 10
  h.refusal('d1', 'bad_json', 'x')
  h.refusal(null, 'unknown_device', 'y')
  now += STEP_SECONDS * 1000
  h.sample(now)
  t.same(h.samples(), [{ at: now, inRate: 10, outRate: 8, refusals: { bad_json: 1, unknown_device: 1 }, outboxDepth: 10, oldestAgeSeconds: STEP_SECONDS }])
  for (let i = 0; i < HISTORY_POINTS + 10; i++) { now += STEP_SECONDS * 1000; h.sample(now) }
  const all = h.samples()
  t.equal(all.length, HISTORY_POINTS, 'never more than an hour')
  t.equal(all[all.length - 1]!.at, now, 'newest last')
  t.equal(all[0]!.at, now - (HISTORY_POINTS - 1) * STEP_SECONDS * 1000, 'oldest first')
  t.same(all[0]!.refusals, {}, 'refusals are per step')
})

t.test('history: last payloads and refusals per device, bounded; the rate over 30 to 60 s', async t => {
  const h = new ConsoleHistory({ received: () => 0, delivered: () => 0, outboxDepth: () => 0, oldestAt: () => null })
  const t0 = 1_000_000
  for (let i = 0; i < RECENT_PER_DEVICE + 5; i++) h.message('d1', 'telemetry', t0, JSON.stringify({ i }), t0)
  h.message('d1', 'telemetry', t0, 'x'.repeat(PAYLOAD_CHARS + 100), t0)
  const r = h.recentOf('d1')
  t.equal(r.messages.length, RECENT_PER_DEVICE)
  t.equal(r.messages[0]!.payload.length, PAYLOAD_CHARS + 1, 'newest first, truncated with an ellipsis')
  t.equal(r.messages[1]!.payload, JSON.stringify({ i: RECENT_PER_DEVICE + 4 }))
  t.equal(h.rate('d1', t0), (RECENT_PER_DEVICE + 6) / 30)
  t.equal(h.rate('d1', t0 + 45_000), (RECENT_PER_DEVICE + 6) / 45, 'the last bucket while the current one fills')
  t.equal(h.rate('d1', t0 + 120_000), 0, 'quiet for two buckets: 0')
  for (let i = 0; i < MAX_DEVICES + 10; i++) h.message(`x${i}`, 's', t0, '{}', t0)
  t.same(h.recentOf(`x${MAX_DEVICES + 5}`).messages, [], 'no more than MAX_DEVICES devices are remembered')
})
