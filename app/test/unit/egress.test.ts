import t, { type Test } from 'tap'
import { join } from 'node:path'
import { buildConfig } from '../../src/config/load.js'
import { Egress, messageId } from '../../src/egress/egress.js'
import { createLogger } from '../../src/lib/logger.js'
import { Registry } from '../../src/lib/metrics.js'
import { Pipeline } from '../../src/pipeline/pipeline.js'
import { openDatabase, type DB } from '../../src/store/db.js'
import { Store } from '../../src/store/store.js'
import { Cloud } from '../helpers/cloud.js'
import { waitFor } from '../helpers/ports.js'
import { tempDir } from '../helpers/temp.js'

/**
 * The egress with a real pipeline, a real SQLite outbox and a real HTTPS cloud (test/helpers/cloud.ts):
 * sending from memory while the commit lingers, and what the cloud sees.
 */
async function stack (t: any, db: DB, cloud: Cloud, outbox: Record<string, unknown> = {}, limits: Record<string, unknown> = {}): Promise<{ p: Pipeline, e: Egress, store: Store, metrics: Registry }> {
  const config = buildConfig({
    version: 1,
    gateway: { id: 'gw' },
    outbox: { commitLingerMs: 5000, commitEarlyMessages: 1000, ...outbox },
    limits,
    uplink: { url: cloud.url, caFile: cloud.caFile, lingerMs: 0, backoffBaseMs: 20, backoffMaxMs: 50 }
  })
  const store = new Store(db)
  const metrics = new Registry()
  const log = createLogger('silent')
  const p = new Pipeline(store, config, metrics, log)
  const e = new Egress(config, store, metrics, log, () => p.notifySpace())
  p.on('committed', () => e.kick())
  e.memory = p.memory
  p.onAdmit = () => e.admitted()
  e.start()
  let stopped = false
  const stop = async (): Promise<void> => { if (stopped) return; stopped = true; p.close(); await e.stop(0) }
  t.teardown(stop)
  return { p, e, store, metrics }
}

const sub = (device: string, seq: number, redelivery = false) => ({ device, transport: 'mqtt' as const, stream: 'telemetry', raw: JSON.stringify({ epoch: 1, seq, v: seq }), redelivery })
const outboxRows = (db: DB): number => (db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n

/** A test's folder and a running test cloud, torn down with the test. */
async function withCloud (t: Test): Promise<{ dir: string, cloud: Cloud }> {
  const dir = tempDir(t)
  const cloud = new Cloud(dir)
  await cloud.start()
  t.teardown(() => cloud.stop())
  return { dir, cloud }
}

/** The same, with an open database in the folder. */
async function fixture (t: Test): Promise<{ dir: string, cloud: Cloud, db: DB }> {
  const { dir, cloud } = await withCloud(t)
  const db = openDatabase(join(dir, 'gw.db'))
  t.teardown(() => db.close())
  return { dir, cloud, db }
}

t.test('a message reaches the cloud before its commit; the commit then records its delivery', async t => {
  const { cloud, db } = await fixture(t)
  const { p, store, metrics } = await stack(t, db, cloud)
  let acked = false
  const outcome = p.submit(sub('d1', 1)).then(o => { acked = true; return o })
  // The cloud's 2xx handled by the egress (not only the request arrived).
  await waitFor(() => metrics.counter('gateway_uplink_messages_from_memory_total', '').total() === 1, 'the message delivered from memory')
  t.equal(cloud.accepted.length, 1)
  t.equal(acked, false, 'the transport is not acknowledged: the commit lingers (5 s)')
  t.equal(outboxRows(db), 0, 'nothing committed yet')
  t.equal(cloud.accepted[0]!.id, messageId('gw', store.instance, { device: 'd1', epoch: 1, seq: 1 }))
  p.flush()
  t.same(await outcome, { accepted: true }, 'acknowledged once committed')
  t.equal(store.outboxDepth, 0, 'the commit recorded the delivery: nothing left to send')
  t.ok(store.flushAcks(Date.now(), true))
  t.equal(outboxRows(db), 0, 'and the delivered row is deleted with the watermark')
  // Another message goes the same way; the first is never sent twice.
  // The commit may also come first, while the request is in flight: the 2xx then records it.
  const second = p.submit(sub('d1', 2))
  await waitFor(() => cloud.accepted.length === 2, 'the second message at the cloud')
  p.flush()
  await second
  await waitFor(() => metrics.counter('gateway_uplink_messages_from_memory_total', '').total() === 2, 'its 2xx handled')
  t.equal(store.outboxDepth, 0, 'recorded as delivered by the 2xx, after the commit')
  t.same(cloud.accepted.map(m => m.seq), [1, 2], 'each once, in order')
})

t.test('rows committed while the cloud is down go first, from memory; per-device order holds; no outbox read or write per batch', async t => {
  const { cloud, db } = await fixture(t)
  // The cloud is down while the first messages are committed; then more arrive, still pending.
  let down = true
  cloud.respond = () => down ? { status: 503 } : undefined
  const { p, store, metrics } = await stack(t, db, cloud)
  const first = [1, 2, 3].map(s => p.submit(sub('d1', s)))
  await waitFor(() => cloud.requests >= 1, 'a refused attempt from memory')
  p.flush()
  await Promise.all(first)
  t.equal(store.outboxDepth, 3, 'committed, not delivered')
  const later = [4, 5].map(s => p.submit(sub('d1', s)))
  down = false
  await waitFor(() => cloud.accepted.length === 5, 'all five at the cloud')
  t.same(cloud.accepted.map(m => m.seq), [1, 2, 3, 4, 5], 'in the order accepted')
  await waitFor(() => metrics.counter('gateway_uplink_messages_from_memory_total', '').total() === 5, 'the 2xx handled')
  t.equal(store.counts.meta, 0, 'no batch id written: nothing was read back from the outbox')
  p.flush()
  await Promise.all(later)
  t.equal(store.outboxDepth, 0)
})

t.test('rows only the outbox holds (a restart) go first, from the outbox, under a recorded batch id', async t => {
  const { dir, cloud } = await withCloud(t)
  const file = join(dir, 'gw.db')
  const db1 = openDatabase(file)
  const s1 = new Store(db1)
  s1.commitGroup([1, 2].map(seq => ({ device: 'd1', transport: 'mqtt' as const, stream: 'telemetry', epoch: 1, seq, receivedAt: Date.now(), payload: '{}' })))
  db1.close()
  const db = openDatabase(file)
  t.teardown(() => db.close())
  const { p, store, metrics } = await stack(t, db, cloud, { commitLingerMs: 0 })
  await p.submit(sub('d1', 3))
  await waitFor(() => cloud.accepted.length === 3 && store.outboxDepth === 0, 'all three delivered')
  t.same(cloud.accepted.map(m => m.seq), [1, 2, 3])
  t.match(cloud.batches[0]!.idempotencyKey, new RegExp(`^gw-${store.instance}-\\d+-\\d+$`), 'the outbox batch: row ids in its key')
  t.ok(store.counts.meta >= 1, 'its batch id recorded before the send')
  t.equal(metrics.counter('gateway_uplink_messages_from_memory_total', '').total(), 1, 'the new message from memory')
})

t.test('a crash before the commit: the redelivered copy is committed and sent again under the same message id', async t => {
  const { dir, cloud } = await withCloud(t)
  const file = join(dir, 'gw.db')
  const db1 = openDatabase(file)
  const one = await stack(t, db1, cloud)
  void one.p.submit(sub('d1', 7)).catch(() => {})
  await waitFor(() => cloud.accepted.length === 1, 'sent from memory')
  // The process dies here: the pending group is never committed, the device never acknowledged.
  await one.e.stop(0)
  db1.close()
  const db2 = openDatabase(file)
  t.teardown(() => db2.close())
  const two = await stack(t, db2, cloud, { commitLingerMs: 0 })
  t.same(await two.p.submit(sub('d1', 7, true)), { accepted: true }, 'the broker\'s redelivery is new to the outbox')
  await waitFor(() => cloud.accepted.length === 2, 'sent again')
  t.equal(cloud.accepted[1]!.id, cloud.accepted[0]!.id, 'the same message id: the cloud deduplicates it')
  t.equal(cloud.unique().size, 1)
  await waitFor(() => two.store.outboxDepth === 0, 'delivered')
})

t.test('a final refusal of a batch sent from memory: dead-lettered once committed, not sent again', async t => {
  const { cloud, db } = await fixture(t)
  cloud.respond = b => b.messages.some(m => m.device === 'poison') ? { status: 422, body: 'schema' } : undefined
  const { p, store, metrics } = await stack(t, db, cloud)
  const o = [p.submit(sub('poison', 1)), p.submit(sub('poison', 2))]
  await waitFor(() => cloud.requests === 1, 'refused from memory')
  t.equal(store.stats().deadLetters, 0, 'nothing to move while uncommitted')
  p.flush()
  await Promise.all(o)
  await waitFor(() => store.stats().deadLetters === 2, 'dead-lettered after the commit')
  t.equal(cloud.requests, 1, 'not sent again')
  t.equal(metrics.counter('gateway_uplink_dead_letters_total', '').total(), 2)
  t.equal(store.outboxDepth, 0)
  const later = p.submit(sub('d2', 1))
  await waitFor(() => cloud.accepted.length === 1, 'later messages flow')
  p.flush()
  await later
})

t.test('a failed commit after a send from memory records no delivery; the resend keeps its id', async t => {
  const { cloud, db } = await fixture(t)
  const { p, store } = await stack(t, db, cloud)
  const o = p.submit(sub('d1', 1))
  await waitFor(() => cloud.accepted.length === 1, 'sent from memory')
  const write = store.writeGroup.bind(store)
  store.writeGroup = () => { throw new Error('I/O error') }
  p.flush()
  await t.rejects(o, /I\/O error/, 'not acknowledged: the device or broker sends it again')
  store.writeGroup = write
  t.equal(store.outboxDepth, 0)
  t.same(await p.submit(sub('d1', 1, true)), { accepted: true } as never, 'the resend is admitted (the failed commit kept no sequence state)')
})

t.test('an outage longer than the memory bound: the outbox takes over, in order, nothing lost', async t => {
  const { cloud, db } = await fixture(t)
  let down = true
  cloud.respond = () => down ? { status: 503 } : undefined
  const { p, store, metrics } = await stack(t, db, cloud, { commitLingerMs: 0, commitEarlyMessages: 1000, commitMinIntervalMs: 0 }, { ratePerSecond: 100000, rateBurst: 100000 })
  const N = 10_500 // above the 10,000 committed messages kept in memory
  const outcomes = []
  for (let seq = 1; seq <= N; seq++) outcomes.push(p.submit(sub(`d${seq % 7}`, seq)))
  t.same(new Set((await Promise.all(outcomes)).map(o => JSON.stringify(o))), new Set([JSON.stringify({ accepted: true })]), 'all accepted')
  t.equal(store.outboxDepth, N, 'all committed, none delivered')
  down = false
  await waitFor(() => store.outboxDepth === 0, 'delivered after the outage', 60000)
  t.equal(cloud.unique().size, N, 'every message at the cloud')
  const order = new Map<string, number>()
  let outOfOrder = 0
  for (const m of cloud.accepted) { if ((order.get(m.device) ?? 0) > m.seq) outOfOrder++; order.set(m.device, m.seq) }
  t.equal(outOfOrder, 0, 'per device, in order')
  t.ok(cloud.batches.some(b => new RegExp(`^gw-${store.instance}-\\d+-\\d+$`).test(b.idempotencyKey)), 'batches from the outbox (row ids in the key): memory had dropped its copy')
  t.ok(metrics.counter('gateway_uplink_messages_from_memory_total', '').total() < N, 'not all from memory')
})

/**
 * Checks depth after every delivery, before the egress's idle re-read of the table could mend a
 * wrong count: with `total` rows committed up front, depth is total minus the distinct messages the
 * cloud has.
 */
function exactDepth (e: Egress, store: Store, cloud: Cloud, total: number): string[] {
  const wrong: string[] = []
  e.onDelivered = () => {
    const want = total - cloud.unique().size
    if (store.outboxDepth !== want || store.outboxBytes < 0 || (want === 0 && store.outboxBytes !== 0)) wrong.push(`depth ${store.outboxDepth} bytes ${store.outboxBytes}, want depth ${want}`)
  }
  return wrong
}

const ev = (device: string, seq: number) => ({ device, transport: 'mqtt' as const, stream: 'events', raw: JSON.stringify({ epoch: 1, seq, alarm: true }) })

t.test('sending from memory: events overtake a telemetry backlog queued during an outage (the first accepted request holds only events), each message once', async t => {
  const { cloud, db } = await fixture(t)
  let down = true
  cloud.respond = () => down ? { status: 503 } : undefined
  const { p, e, store, metrics } = await stack(t, db, cloud, { commitLingerMs: 0, commitMinIntervalMs: 0 }, { ratePerSecond: 100000, rateBurst: 100000 })
  store.prioritise(['events'])
  const N = 2000
  const wrong = exactDepth(e, store, cloud, N + 3)
  const outcomes = []
  for (let seq = 1; seq <= N; seq++) outcomes.push(p.submit(sub(`d${seq % 7}`, seq)))
  await Promise.all(outcomes)
  await Promise.all([ev('d1', N + 1), ev('d2', N + 2), ev('d1', N + 3)].map(s => p.submit(s)))
  t.equal(store.outboxDepth, N + 3, 'all committed, none delivered')
  t.equal(p.memory.committedInMemory(store.deliveredThrough), N + 3, 'and all held in memory: the memory path')
  // A request built after the events were committed has been refused: the next one is built now too.
  const r0 = cloud.requests
  await waitFor(() => cloud.requests >= r0 + 2, 'refused attempts after the events')
  down = false
  await waitFor(() => store.outboxDepth === 0 && cloud.unique().size === N + 3, 'everything delivered', 60000)
  t.same(cloud.batches[0]!.messages.map(m => `${m.device}:${m.stream}:${m.seq}`), [`d1:events:${N + 1}`, `d2:events:${N + 2}`, `d1:events:${N + 3}`], 'the first accepted request: the events alone, in order')
  t.equal(cloud.accepted.length, N + 3, 'each message sent once')
  t.same(wrong, [], 'depth exact after every delivery, bytes 0 at the end')
  t.equal(store.outboxBytes, 0, 'bytes back to 0')
  t.equal(metrics.counter('gateway_uplink_messages_from_memory_total', '').total(), N + 3, 'all from memory')
  t.equal(store.counts.meta, 0, 'no outbox batch (no batch id written)')
  const order = new Map<string, number>()
  let outOfOrder = 0
  for (const m of cloud.accepted.filter(m => m.stream === 'telemetry')) { if ((order.get(m.device) ?? 0) > m.seq) outOfOrder++; order.set(m.device, m.seq) }
  t.equal(outOfOrder, 0, 'telemetry per device in order')
  t.ok(store.flushAcks(Date.now(), true))
  t.equal(outboxRows(db), 0, 'every row deleted by the watermark')
})

t.test('both paths: events delivered ahead by the outbox lane are never sent again from memory; depth and bytes reach 0 exactly', async t => {
  const { dir, cloud } = await withCloud(t)
  const file = join(dir, 'gw.db')
  // Rows only the outbox holds (a restart): telemetry of d1, events of d2 among them.
  const db1 = openDatabase(file)
  const s1 = new Store(db1)
  const row = (device: string, stream: string, seq: number) => ({ device, transport: 'mqtt' as const, stream, epoch: 1, seq, receivedAt: Date.now(), payload: `{"seq":${seq}}` })
  s1.commitGroup([row('d1', 'telemetry', 1), row('d2', 'events', 1), row('d1', 'telemetry', 2), row('d1', 'telemetry', 3), row('d2', 'events', 2)])
  db1.close()
  const db = openDatabase(file)
  t.teardown(() => db.close())
  let down = true
  cloud.respond = () => down ? { status: 503 } : undefined
  const { p, e, store, metrics } = await stack(t, db, cloud, { commitLingerMs: 0, commitMinIntervalMs: 0 })
  store.prioritise(['events'])
  const wrong = exactDepth(e, store, cloud, 10)
  t.equal(store.priorityDepth, 2, 'the events found at start')
  // New messages, committed and held in memory, events among them.
  await Promise.all([sub('d1', 4), ev('d2', 3), sub('d1', 5), sub('d3', 1), ev('d3', 2)].map(s => p.submit(s)))
  t.equal(store.outboxDepth, 10)
  t.equal(store.priorityDepth, 4, 'the new events queued in the store\'s lane too')
  const r0 = cloud.requests
  await waitFor(() => cloud.requests >= r0 + 2, 'refused attempts after the commit')
  down = false
  await waitFor(() => store.outboxDepth === 0 && cloud.unique().size === 10, 'everything delivered')
  t.same(cloud.batches[0]!.messages.map(m => `${m.device}:${m.stream}:${m.seq}`), ['d2:events:1', 'd2:events:2', 'd2:events:3', 'd3:events:2'], 'the outbox\'s priority lane first: the events alone (the old and those memory holds)')
  t.match(cloud.batches[0]!.idempotencyKey, /-p\d+-\d+$/, 'a priority batch of the outbox')
  t.equal(cloud.accepted.length, 10, 'each message once: memory did not send the events again')
  t.same(wrong, [], 'depth exact after every delivery, bytes 0 at the end')
  e.onDelivered = undefined
  t.equal(store.outboxDepth, 0, 'depth exactly 0')
  t.equal(store.outboxBytes, 0, 'bytes exactly 0')
  t.equal(store.priorityDepth, 0)
  t.equal(metrics.counter('gateway_uplink_messages_from_memory_total', '').total(), 3, 'the new telemetry from memory once the outbox caught up')
  t.same(cloud.accepted.filter(m => m.stream === 'telemetry').map(m => `${m.device}:${m.seq}`), ['d1:1', 'd1:2', 'd1:3', 'd1:4', 'd1:5', 'd3:1'], 'telemetry in order')
  // More traffic afterwards is exact too (no stale bookkeeping).
  await Promise.all([sub('d1', 6), ev('d2', 4)].map(s => p.submit(s)))
  await waitFor(() => cloud.unique().size === 12 && store.outboxDepth === 0, 'later messages delivered')
  t.equal(cloud.accepted.length, 12)
  t.equal(store.outboxBytes, 0)
  t.ok(store.flushAcks(Date.now(), true))
  t.equal(outboxRows(db), 0, 'every row deleted by the watermark')
})

t.test('a final refusal of events sent first from memory: those rows dead-lettered one by one, the telemetry before them still delivered, depth exact', async t => {
  const { cloud, db } = await fixture(t)
  let down = true
  cloud.respond = b => b.messages.some(m => m.stream === 'events') ? { status: 422, body: 'schema' } : down ? { status: 503 } : undefined
  const { p, e, store } = await stack(t, db, cloud, { commitLingerMs: 0, commitMinIntervalMs: 0 })
  store.prioritise(['events'])
  await Promise.all([sub('d1', 1), sub('d1', 2), ev('d2', 1), sub('d1', 3), ev('d2', 2)].map(s => p.submit(s)))
  await waitFor(() => store.stats().deadLetters === 2, 'the events refused and dead-lettered')
  const dead = db.prepare('SELECT stream, seq FROM dead_letters ORDER BY id').all() as Array<{ stream: string, seq: number }>
  t.same(dead.map(d => `${d.stream}:${d.seq}`), ['events:1', 'events:2'], 'only the events')
  t.equal(store.outboxDepth, 3, 'the telemetry still waits')
  t.equal(store.deliveredThrough, 0, 'the watermark has not passed the undelivered telemetry')
  const wrong = exactDepth(e, store, cloud, 3)
  down = false
  await waitFor(() => cloud.unique().size === 3 && store.outboxDepth === 0, 'the telemetry delivered')
  t.same(cloud.accepted.map(m => `${m.device}:${m.seq}`), ['d1:1', 'd1:2', 'd1:3'], 'each once, in order')
  t.same(wrong, [], 'depth exact after every delivery')
  t.equal(store.outboxBytes, 0)
  t.ok(store.flushAcks(Date.now(), true))
  t.equal(outboxRows(db), 0)
})

t.test('both paths: events the outbox lane dead-letters are not sent again from memory; depth exact', async t => {
  const { dir, cloud } = await withCloud(t)
  const file = join(dir, 'gw.db')
  const db1 = openDatabase(file)
  const s1 = new Store(db1)
  s1.commitGroup([1, 2].map(seq => ({ device: 'd1', transport: 'mqtt' as const, stream: seq === 2 ? 'events' : 'telemetry', epoch: 1, seq, receivedAt: Date.now(), payload: '{}' })))
  db1.close()
  const db = openDatabase(file)
  t.teardown(() => db.close())
  let down = true
  cloud.respond = b => b.messages.some(m => m.stream === 'events') ? (down ? { status: 503 } : { status: 422, body: 'schema' }) : down ? { status: 503 } : undefined
  const { p, e, store } = await stack(t, db, cloud, { commitLingerMs: 0, commitMinIntervalMs: 0 })
  store.prioritise(['events'])
  await Promise.all([sub('d1', 3), ev('d1', 4), sub('d1', 5)].map(s => p.submit(s)))
  const r0 = cloud.requests
  await waitFor(() => cloud.requests >= r0 + 2, 'refused attempts after the commit')
  const wrong = exactDepth(e, store, cloud, 3)
  const requests = cloud.requests
  down = false
  await waitFor(() => store.stats().deadLetters === 2 && cloud.unique().size === 3 && store.outboxDepth === 0, 'events dead-lettered, telemetry delivered')
  t.same(cloud.accepted.map(m => `${m.stream}:${m.seq}`), ['telemetry:1', 'telemetry:3', 'telemetry:5'], 'the telemetry, each once')
  t.equal(cloud.requests - requests, 3, 'one refused events batch (the outbox lane), then the telemetry of the outbox and of memory: the event is not sent again from memory')
  t.same(wrong, [], 'depth exact after every delivery')
  t.equal(store.outboxBytes, 0)
})
