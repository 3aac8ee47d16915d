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
