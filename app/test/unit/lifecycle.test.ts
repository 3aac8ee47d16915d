// The gateway's capabilities start in list order and stop in reverse; a failing start stops what
// already started (and only that), and each step is logged with its duration.
import t from 'tap'
import { createLogger } from '../../src/lib/logger.js'
import { Lifecycle, type Capability } from '../../src/lib/lifecycle.js'

function recorder () {
  const events: string[] = []
  const lines: Array<Record<string, unknown>> = []
  const log = createLogger('debug', {}, line => { lines.push(JSON.parse(line)) })
  let clock = 0
  // A fake clock that advances 5 ms per reading: durations are counted, not timed.
  const now = (): number => { clock += 5; return clock }
  const cap = (name: string, o: { failStart?: boolean, failStop?: boolean, async?: boolean } = {}): Capability => ({
    name,
    start: async () => {
      if (o.async === true) await new Promise(resolve => setImmediate(resolve))
      events.push(`start ${name}`)
      if (o.failStart === true) throw new Error(`${name} cannot start`)
    },
    stop: (graceMs: number) => {
      events.push(`stop ${name} ${graceMs}`)
      if (o.failStop === true) throw new Error(`${name} cannot stop`)
    }
  })
  return { events, lines, log, now, cap }
}

t.test('starts in order, stops in reverse with the grace, each step logged with its duration', async t => {
  const r = recorder()
  const life = new Lifecycle(r.log, r.now)
  t.equal(await life.start([r.cap('store'), r.cap('egress', { async: true }), r.cap('mqtt'), r.cap('api')]), true)
  t.same(life.started, ['store', 'egress', 'mqtt', 'api'])
  await life.stop(3000)
  t.same(r.events, ['start store', 'start egress', 'start mqtt', 'start api', 'stop api 3000', 'stop mqtt 3000', 'stop egress 3000', 'stop store 3000'])
  t.same(r.lines.map(l => `${l.msg as string} ${l.step as string} ${l.ms as number}`), [
    'started store 5', 'started egress 5', 'started mqtt 5', 'started api 5',
    'stopped api 5', 'stopped mqtt 5', 'stopped egress 5', 'stopped store 5'
  ])
  await life.stop(3000)
  t.equal(r.events.length, 8, 'a second stop stops nothing again')
})

t.test('a failing start stops it and what already started, in reverse, and passes the error on', async t => {
  const r = recorder()
  const life = new Lifecycle(r.log, r.now)
  await t.rejects(life.start([r.cap('store'), r.cap('egress'), r.cap('mqtt', { failStart: true }), r.cap('api')]), { message: 'mqtt cannot start' })
  t.same(r.events, ['start store', 'start egress', 'start mqtt', 'stop mqtt 0', 'stop egress 0', 'stop store 0'], 'the half-started one is stopped too; the later one never started')
  t.same(life.started, [])
  t.match(r.lines.find(l => l.level === 'error'), { msg: 'start failed; stopping what started', step: 'mqtt', err: { message: 'mqtt cannot start' } })
})

t.test('a stop while starting stops what started, the one in progress too, and starts nothing more', async t => {
  const r = recorder()
  const life = new Lifecycle(r.log, r.now)
  let release!: () => void
  const gate = new Promise<void>(resolve => { release = resolve })
  const slow: Capability = { name: 'mqtt', start: async () => { r.events.push('start mqtt'); await gate }, stop: () => { r.events.push('stop mqtt') } }
  const starting = life.start([r.cap('store'), slow, r.cap('api')])
  while (!r.events.includes('start mqtt')) await new Promise(resolve => setImmediate(resolve))
  await life.stop(100) // SIGTERM while mqtt waits for the broker
  release()
  t.equal(await starting, false, 'start says it did not finish')
  t.same(r.events, ['start store', 'start mqtt', 'stop store 100', 'stop mqtt'], 'mqtt stopped once its start returned; api never started')
  t.same(life.started, [])
})

t.test('a failing stop is logged and the others still stop', async t => {
  const r = recorder()
  const life = new Lifecycle(r.log, r.now)
  await life.start([r.cap('store'), r.cap('egress', { failStop: true }), r.cap('api')])
  await life.stop(10)
  t.same(r.events.slice(3), ['stop api 10', 'stop egress 10', 'stop store 10'])
  t.match(r.lines.find(l => l.level === 'warn'), { msg: 'stop failed', step: 'egress', err: { message: 'egress cannot stop' } })
})
