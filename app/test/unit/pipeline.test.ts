import t from 'tap'
import { buildConfig } from '../../src/config/load.js'
import { createLogger } from '../../src/lib/logger.js'
import { Registry } from '../../src/lib/metrics.js'
import { Pipeline, type Outcome } from '../../src/pipeline/pipeline.js'
import { openDatabase } from '../../src/store/db.js'
import { Store } from '../../src/store/store.js'

const setup = (outbox: Record<string, unknown> = {}): { p: Pipeline, store: Store, metrics: Registry } => {
  const store = new Store(openDatabase(':memory:'))
  const metrics = new Registry()
  const config = buildConfig({ version: 1, outbox: { commitLingerMs: 5000, commitEarlyMessages: 1000, ...outbox } })
  return { p: new Pipeline(store, config, metrics, createLogger('silent')), store, metrics }
}
const sub = (seq: number, redelivery = false) => ({ device: 'd1', transport: 'mqtt' as const, stream: 'telemetry', raw: JSON.stringify({ seq }), redelivery })

t.test('messages wait for their group commit; a group is one commit', async t => {
  const { p, store, metrics } = setup({ commitEarlyMessages: 3 })
  const outcomes = [p.submit(sub(1)), p.submit(sub(2))]
  let settled = false
  void Promise.all(outcomes).then(() => { settled = true })
  await new Promise(resolve => setImmediate(resolve))
  t.equal(settled, false, 'nothing acknowledged before the commit')
  t.equal(store.outboxDepth, 0)
  outcomes.push(p.submit(sub(3))) // the third fills the group: committed early
  t.same(await Promise.all(outcomes), [{ accepted: true }, { accepted: true }, { accepted: true }])
  t.equal(store.outboxDepth, 3)
  t.equal(metrics.counter('gateway_outbox_commits_total', '').total(), 1, 'one commit for the group')
  p.close()
})

const nextTick = (): Promise<void> => new Promise(resolve => process.nextTick(resolve))
const commitCount = (metrics: Registry): number => metrics.counter('gateway_outbox_commits_total', '').total()

t.test('a due group commits on the next tick, not from a timer that a burst of reads holds back', async t => {
  // mqtt.js reads a burst of packets in one chain of ticks; timers and setImmediate wait for its end.
  const { p, metrics } = setup({ commitEarlyMessages: 3, commitMinIntervalMs: 50 })
  const first = [p.submit(sub(1)), p.submit(sub(2)), p.submit(sub(3))]
  await nextTick()
  t.equal(commitCount(metrics), 1, 'the full group committed before any timer ran')
  await Promise.all(first)
  const second = [p.submit(sub(4)), p.submit(sub(5)), p.submit(sub(6))] // due 50 ms after that commit: a timer
  t.equal(commitCount(metrics), 1)
  // The event loop busy for longer than the spacing (a burst of reads): the timer cannot fire.
  for (const until = Date.now() + 60; Date.now() < until;);
  second.push(p.submit(sub(7))) // the next read sees the overdue commit
  await nextTick()
  t.equal(commitCount(metrics), 2, 'the overdue group committed within the burst')
  t.same(await Promise.all(second), Array(4).fill({ accepted: true }))
  p.close()
})

t.test('a transport whose window is full asks for the commit: no linger', async t => {
  const { p, metrics } = setup() // linger 5 s, early at 1,000
  const o = p.submit(sub(1))
  await nextTick()
  t.equal(commitCount(metrics), 0, 'lingering')
  p.commitSoon()
  await nextTick()
  t.equal(commitCount(metrics), 1, 'committed at once')
  t.same(await o, { accepted: true })
  p.close()
})

t.test('a redelivered copy is refused (acknowledged) only after the commit of the original', async t => {
  const { p, store } = setup()
  const original = p.submit(sub(1))
  let dupDone: Outcome | undefined
  const dup = p.submit(sub(1, true)).then(o => { dupDone = o; return o })
  await new Promise(resolve => setImmediate(resolve))
  t.equal(dupDone, undefined, 'not refused while the original is uncommitted')
  p.flush()
  t.same(await original, { accepted: true })
  t.match(await dup, { accepted: false, reason: 'redelivered' })
  t.equal(store.outboxDepth, 1)
  p.close()
})

t.test('refusals alone cause no commit; rollups are written once their minute is over', async t => {
  const { p, store, metrics } = setup()
  p.submit(sub(1))
  p.flush()
  for (let i = 0; i < 5; i++) await p.submit(sub(1)) // duplicates
  await new Promise(resolve => setImmediate(resolve))
  t.equal(metrics.counter('gateway_outbox_commits_total', '').total(), 1, 'five refusals, no commit')
  p.close()
  const rows = store.db.prepare('SELECT outcome, reason, messages FROM traffic_rollups ORDER BY outcome').all()
  t.same(rows, [{ outcome: 'accepted', reason: '', messages: 1 }, { outcome: 'rejected', reason: 'duplicate', messages: 5 }], 'written at close')
})

/** A WAL syncer whose syncs the test ends, one by one, in any order (Store's seam for the fdatasync off the event loop). */
function heldSyncs (): { syncer: { sync: () => Promise<void>, syncNow: () => void }, calls: Array<{ resolve: () => void, reject: (e: Error) => void }>, blocking: () => number } {
  const calls: Array<{ resolve: () => void, reject: (e: Error) => void }> = []
  let blocking = 0
  return {
    syncer: {
      sync: () => new Promise<void>((resolve, reject) => { calls.push({ resolve, reject }) }),
      syncNow: () => { blocking++ }
    },
    calls,
    blocking: () => blocking
  }
}

const setupHeld = (outbox: Record<string, unknown> = {}): ReturnType<typeof setup> & ReturnType<typeof heldSyncs> => {
  const held = heldSyncs()
  const store = new Store(openDatabase(':memory:'), { walSync: held.syncer })
  const metrics = new Registry()
  const config = buildConfig({ version: 1, outbox: { commitLingerMs: 5000, commitEarlyMessages: 1000, ...outbox } })
  return { p: new Pipeline(store, config, metrics, createLogger('silent')), store, metrics, ...held }
}
const rows = (store: Store): number => (store.db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n

t.test('a store that syncs itself: a group is acknowledged only when its sync has returned', async t => {
  const { p, store, calls } = setupHeld({ commitEarlyMessages: 2 })
  t.ok(store.syncsItself)
  const outcomes = [p.submit(sub(1)), p.submit(sub(2))]
  let settled = false
  void Promise.all(outcomes).then(() => { settled = true })
  await nextTick()
  t.equal(rows(store), 2, 'written to the outbox')
  t.equal(calls.length, 1, 'one sync started for the group')
  for (let i = 0; i < 3; i++) await new Promise(resolve => setImmediate(resolve))
  t.equal(settled, false, 'not acknowledged while the sync runs')
  t.equal(store.outboxDepth, 0, 'the outbox counts it only once synced')
  t.equal(p.memory.uncommittedCount, 2, 'the egress still sends it from memory, as not committed')
  // A copy the broker sends again meanwhile is refused as already seen, but only after the sync.
  let copySettled = false
  const copy = p.submit(sub(2, true)).then(o => { copySettled = true; return o })
  await new Promise(resolve => setImmediate(resolve))
  t.equal(copySettled, false, 'a redelivered copy waits for the original\'s sync')
  calls[0]!.resolve()
  t.same(await Promise.all(outcomes), [{ accepted: true }, { accepted: true }])
  t.equal(store.outboxDepth, 2)
  t.match(await copy, { accepted: false, reason: 'redelivered' })
  p.close()
})

t.test('a store that syncs itself: a later sync covers the groups before it; acknowledged in order', async t => {
  const { p, store, calls } = setupHeld({ commitEarlyMessages: 1, commitMinIntervalMs: 0 })
  const order: number[] = []
  const a = p.submit(sub(1)).then(o => { order.push(1); return o })
  await nextTick()
  const b = p.submit(sub(2)).then(o => { order.push(2); return o })
  await nextTick()
  t.equal(calls.length, 2, 'two groups, two syncs in flight')
  calls[1]!.resolve() // the second group's sync returns first: both groups are on the disk
  await Promise.all([a, b])
  t.same(order, [1, 2], 'acknowledged in the order written')
  t.equal(store.outboxDepth, 2)
  calls[0]!.resolve() // late: nothing left to do
  await nextTick()
  t.equal(store.outboxDepth, 2)
  p.close()
})

t.test('a store that syncs itself: a failed sync acknowledges nothing and says so; close syncs what is left', async t => {
  const failing = setupHeld({ commitEarlyMessages: 1 })
  const failed: unknown[] = []
  failing.p.on('syncFailed', err => failed.push(err))
  let settled = false
  void failing.p.submit(sub(1)).then(() => { settled = true })
  await nextTick()
  failing.calls[0]!.reject(new Error('EIO'))
  for (let i = 0; i < 3; i++) await new Promise(resolve => setImmediate(resolve))
  t.equal(failed.length, 1, 'syncFailed: the daemon exits on it')
  t.equal(settled, false, 'nothing acknowledged')
  t.equal(failing.store.outboxDepth, 0)

  const closing = setupHeld({ commitEarlyMessages: 1 })
  const o = closing.p.submit(sub(1))
  await nextTick()
  t.equal(closing.calls.length, 1)
  closing.p.close()
  t.equal(closing.blocking(), 1, 'close syncs once, blocking')
  t.same(await o, { accepted: true }, 'and acknowledges')
  t.equal(closing.store.outboxDepth, 1)
})
