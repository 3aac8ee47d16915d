import t from 'tap'
import { join } from 'node:path'
import { deviceCreds, mqttDevice } from '../helpers/devices.js'
import { startStack, tempDir } from '../helpers/env.js'
import { waitFor } from '../helpers/ports.js'
import { openDatabase } from '../../src/store/db.js'
import { Store, type Batch, type InboundMessage } from '../../src/store/store.js'

const msg = (device: string, stream: string, seq: number): InboundMessage =>
  ({ device, transport: 'mqtt', stream, epoch: 0, seq, receivedAt: 1000 + seq, payload: `{"seq":${seq}}` })

/** Sends everything as the egress does (nextBatch, then ack), recording what the cloud would get. */
function drain (store: Store, max = 100, until = Infinity): Batch[] {
  const sent: Batch[] = []
  for (let b = store.nextBatch('gw', max, 1 << 20); b !== undefined && sent.length < until; b = store.nextBatch('gw', max, 1 << 20)) {
    sent.push(b)
    store.ackBatch(b)
  }
  return sent
}

t.test('store: events rows overtake an older telemetry backlog, once each, in order, with the totals right', async t => {
  const db = openDatabase(join(tempDir(t), 'g.db'))
  t.teardown(() => db.close())
  const store = new Store(db)
  store.prioritise(['events'])
  // 1,000 telemetry messages of two devices, with three events of device a among them and one after.
  const msgs: InboundMessage[] = []
  for (let i = 1; i <= 1000; i++) msgs.push(msg(i % 2 === 0 ? 'a' : 'b', 'telemetry', i))
  msgs.splice(10, 0, msg('a', 'events', 1))
  msgs.splice(500, 0, msg('a', 'events', 2))
  msgs.splice(900, 0, msg('b', 'events', 1))
  store.commitGroup(msgs.slice(0, 600), [])
  store.commitGroup(msgs.slice(600), [])
  store.commitGroup([msg('a', 'events', 3)], [])
  t.equal(store.outboxDepth, 1004)
  t.equal(store.priorityDepth, 4)
  const sent = drain(store)
  t.same(sent[0]!.rows.map(r => `${r.device}:${r.stream}:${r.seq}`), ['a:events:1', 'a:events:2', 'b:events:1', 'a:events:3'], 'the first batch carries the events, in outbox order, and nothing else')
  const all = sent.flatMap(b => b.rows)
  t.equal(all.length, 1004, 'every message sent')
  t.equal(new Set(all.map(r => r.id)).size, 1004, 'each once: the regular batches skip what the priority lane delivered')
  for (const dev of ['a', 'b']) {
    for (const stream of ['telemetry', 'events']) {
      const seqs = all.filter(r => r.device === dev && r.stream === stream).map(r => r.seq)
      t.same(seqs, [...seqs].sort((x, y) => x - y), `${dev}/${stream} in order`)
    }
  }
  t.equal(store.outboxDepth, 0, 'depth back to 0')
  t.equal(store.outboxBytes, 0, 'bytes back to 0')
  t.equal(store.oldestReceivedAt(), null)
  t.ok(store.flushAcks(Date.now(), true))
  t.equal((db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n, 0, 'every row deleted by the watermark')
})

t.test('store: a crash after the events went ahead sends them again (at least once), never loses one', async t => {
  const file = join(tempDir(t), 'g.db')
  let db = openDatabase(file)
  let store = new Store(db)
  store.prioritise(['events'])
  store.commitGroup(Array.from({ length: 300 }, (_, i) => msg('a', 'telemetry', i + 1)), [])
  store.commitGroup([msg('a', 'events', 1)], [])
  // The events batch, then one regular batch, acknowledged; then the process dies.
  const sent = drain(store, 100, 2)
  t.equal(sent[0]!.rows[0]!.stream, 'events')
  db.close()
  db = openDatabase(file)
  t.teardown(() => db.close())
  store = new Store(db)
  store.prioritise(['events'])
  t.equal(store.priorityDepth, 1, 'the event not covered by the written watermark is found again at start')
  const again = drain(store)
  t.equal(again[0]!.rows[0]!.stream, 'events', 'and goes first again')
  const ids = new Set([...sent, ...again].flatMap(b => b.rows.map(r => r.id)))
  t.equal(ids.size, 301, 'nothing lost')
  t.equal(store.outboxDepth, 0)
})

t.test('store: a refused events batch goes to dead letters alone; a refused regular batch does not take the events with it', async t => {
  const db = openDatabase(join(tempDir(t), 'g.db'))
  t.teardown(() => db.close())
  const store = new Store(db)
  store.prioritise(['events'])
  store.commitGroup([msg('a', 'telemetry', 1), msg('a', 'events', 1), msg('a', 'telemetry', 2)], [])
  const ev = store.nextBatch('gw', 100, 1 << 20)!
  store.ackBatch(ev)
  const reg = store.nextBatch('gw', 100, 1 << 20)!
  t.same(reg.rows.map(r => r.seq), [1, 2], 'the regular batch skips the delivered event')
  store.deadLetterBatch(reg, 400, 'no', 1000)
  t.same(store.listDeadLetters(10).map(d => `${d.stream}:${d.seq}`), ['telemetry:1', 'telemetry:2'], 'the delivered event is not a dead letter')
  store.commitGroup([msg('a', 'events', 2), msg('a', 'telemetry', 3)], [])
  const ev2 = store.nextBatch('gw', 100, 1 << 20)!
  t.same(ev2.rows.map(r => `${r.stream}:${r.seq}`), ['events:2'])
  store.deadLetterBatch(ev2, 400, 'no', 1000)
  t.same(store.listDeadLetters(10).map(d => `${d.stream}:${d.seq}`), ['telemetry:1', 'telemetry:2', 'events:2'])
  t.same(drain(store).flatMap(b => b.rows.map(r => `${r.stream}:${r.seq}`)), ['telemetry:3'], 'the rest still goes')
  t.equal(store.outboxDepth, 0)
})

t.test('gateway: after an outage, the first request the cloud accepts carries the device event, ahead of 20,000 telemetry messages', async t => {
  const s = await startStack(t, {}, { startGateway: false })
  // The backlog: 20,000 telemetry messages already waiting (as after a long outage).
  const db = openDatabase(join(s.config.gateway.dataDir, 'gateway.db'))
  const store = new Store(db)
  const now = Date.now()
  for (let b = 0; b < 20; b++) store.commitGroup(Array.from({ length: 1000 }, (_, i) => ({ ...msg('bulk-1', 'telemetry', b * 1000 + i), receivedAt: now })), [])
  db.close()
  await s.cloud.stop()
  await s.gateway.start()
  const dev = await mqttDevice(s.broker.lanPort, deviceCreds(s.config, 'door-1'))
  t.teardown(() => dev.endAsync())
  // The broker acknowledges the device; the gateway commits what it reads from the broker, and
  // acknowledges the broker only then: the outbox depth says when the three are on disk.
  await dev.publishAsync('devices/door-1/telemetry', JSON.stringify({ seq: 1, open: 0 }), { qos: 1 })
  // One sequence per device, across its streams.
  await dev.publishAsync('devices/door-1/events', JSON.stringify({ seq: 2, event: 'door_opened' }), { qos: 1 })
  await dev.publishAsync('devices/door-1/events', JSON.stringify({ seq: 3, event: 'door_closed' }), { qos: 1 })
  await waitFor(async () => (await s.gateway.health()).body.outbox.depth === 20003, 'the device\'s messages committed')
  await s.cloud.start()
  await waitFor(() => s.cloud.batches.length > 0, 'the first accepted batch')
  const first = s.cloud.batches[0]!.messages
  t.same(first.map(m => `${m.device}:${m.stream}:${m.seq}`), ['door-1:events:2', 'door-1:events:3'], 'the first accepted request carries the events, in order')
  t.same(first[0]!.payload, { seq: 2, event: 'door_opened' })
  await waitFor(() => s.cloud.unique().size === 20003, 'the backlog delivered after them', 120_000, 200)
  t.equal(s.cloud.accepted.filter(m => m.stream === 'events').length, 2, 'each event delivered once')
  const door = s.cloud.accepted.filter(m => m.device === 'door-1').map(m => m.stream)
  t.same(door, ['events', 'events', 'telemetry'], 'the device\'s telemetry, not a priority stream, waited its turn')
  await waitFor(async () => (await s.gateway.health()).body.outbox.depth === 0, 'outbox empty')
})
