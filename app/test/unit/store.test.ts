import t from 'tap'
import { join } from 'node:path'
import { migrate, migrations, openDatabase } from '../../src/store/db.js'
import { Store, type InboundMessage } from '../../src/store/store.js'
import { tempDir } from '../helpers/env.js'

const msg = (device: string, seq: number, payload = `{"seq":${seq}}`): InboundMessage =>
  ({ device, transport: 'mqtt', stream: 'telemetry', epoch: 0, seq, receivedAt: 1000 + seq, payload })

t.test('migrations run once, in order, and a newer schema is refused', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'g.db')
  const db = openDatabase(file)
  t.equal(db.pragma('user_version', { simple: true }), migrations.length)
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal')
  t.equal(db.pragma('synchronous', { simple: true }), 2, 'FULL')
  t.equal(migrate(db), migrations.length, 'idempotent')
  db.pragma(`user_version = ${migrations.length + 1}`)
  db.close()
  t.throws(() => openDatabase(file), { code: 'GW_ERR_STORE_VERSION', message: /newer than this gateway knows/ })
})

t.test('group commit, batches with stable ids, ack, dead letters, retry', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'g.db')
  let s = new Store(openDatabase(file))
  s.commitGroup([msg('a', 1), msg('b', 1), msg('a', 2)], [{ at: 1, device: 'a', transport: 'mqtt', stream: 'telemetry', seq: 9, bytes: 3, outcome: 'rejected', reason: 'replay' }])
  t.equal(s.outboxDepth, 3)
  t.same(s.device('a'), { id: 'a', status: 'active', lastEpoch: 0, lastSeq: 2 })
  const b1 = s.nextBatch('gw', 2, 1 << 20)!
  t.same(b1.rows.map(r => [r.device, r.seq]), [['a', 1], ['b', 1]])
  t.equal(b1.id, `gw-${s.instance}-${b1.firstId}-${b1.lastId}`)
  t.match(s.instance, /^[0-9a-f]{12}$/)
  // A restart between send and delete: the same messages come back under the same batch id,
  // even with other limits.
  s.db.close()
  s = new Store(openDatabase(file))
  t.equal(s.outboxDepth, 3, 'depth recounted from the database')
  const again = s.nextBatch('gw', 100, 1 << 20)!
  t.equal(again.id, b1.id, 'same Idempotency-Key after a restart')
  t.same(again.rows.map(r => r.id), b1.rows.map(r => r.id))
  s.ackBatch(again)
  const b2 = s.nextBatch('gw', 100, 1 << 20)!
  t.same(b2.rows.map(r => [r.device, r.seq]), [['a', 2]])
  t.equal(s.deadLetterBatch(b2, 400, 'HTTP 400: bad', 10), 0)
  t.equal(s.nextBatch('gw', 100, 1 << 20), undefined, 'outbox empty')
  const st = s.stats()
  t.equal(st.depth, 0)
  t.equal(st.deadLetters, 1)
  const dl = s.listDeadLetters(10)
  t.match(dl[0], { device: 'a', seq: 2, status: 400, reason: 'HTTP 400: bad' })
  t.equal(s.retryDeadLetters(), 1)
  t.equal(s.outboxDepth, 1)
  t.equal(s.stats().deadLetters, 0)
  t.same(s.nextBatch('gw', 100, 1 << 20)!.rows.map(r => r.seq), [2])
})

t.test('ids are never reused, even once the outbox was empty', async t => {
  const s = new Store(openDatabase(':memory:'))
  s.commitGroup([msg('a', 1), msg('a', 2)], [])
  const b1 = s.nextBatch('gw', 10, 1 << 20)!
  s.ackBatch(b1)
  t.equal(s.outboxDepth, 0)
  s.commitGroup([msg('a', 3)], [])
  const b2 = s.nextBatch('gw', 10, 1 << 20)!
  t.ok(b2.firstId > b1.lastId, `new id ${b2.firstId} after ${b1.lastId}`)
  t.not(b2.id, b1.id)
  t.not(new Store(openDatabase(':memory:')).instance, s.instance, 'each database has its own instance name')
})

t.test('batches respect the byte limit but always make progress', async t => {
  const s = new Store(openDatabase(':memory:'))
  s.commitGroup([msg('a', 1, 'x'.repeat(600)), msg('a', 2, 'y'.repeat(600)), msg('a', 3, 'z'.repeat(2000))], [])
  t.same(s.nextBatch('gw', 100, 1000)!.rows.map(r => r.seq), [1])
  s.ackBatch(s.nextBatch('gw', 100, 1000)!)
  t.same(s.nextBatch('gw', 100, 1000)!.rows.map(r => r.seq), [2])
  s.ackBatch(s.nextBatch('gw', 100, 1000)!)
  t.same(s.nextBatch('gw', 100, 1000)!.rows.map(r => r.seq), [3], 'a message larger than the limit goes alone')
})

t.test('dead letters are bounded; traffic log pruned by age and count', async t => {
  const s = new Store(openDatabase(':memory:'))
  for (let i = 1; i <= 5; i++) {
    s.commitGroup([msg('a', i)], [])
    const trimmed = s.deadLetterBatch(s.nextBatch('gw', 10, 1 << 20)!, 400, 'x', 3)
    t.equal(trimmed, i > 3 ? 1 : 0)
  }
  t.same(s.listDeadLetters(10).map(r => r.seq), [3, 4, 5], 'oldest removed first')
  const now = Date.now()
  const rows = Array.from({ length: 50 }, (_, i) => ({ at: i < 10 ? now - 10 * 3600_000 : now, device: 'a', transport: 'mqtt', stream: 'telemetry', seq: i, bytes: 1, outcome: 'accepted' as const, reason: null }))
  s.commitGroup([], rows)
  t.equal(s.pruneTrafficLog(3600_000, 1000, 3), 10, 'ten too old')
  t.equal(s.pruneTrafficLog(3600_000, 25, 7), 15, 'then down to 25 rows')
  t.equal((s.db.prepare('SELECT count(*) AS n FROM traffic_logs').get() as { n: number }).n, 25)
})

t.test('a failing commit leaves nothing behind', async t => {
  const s = new Store(openDatabase(':memory:'))
  s.db.exec(`CREATE TRIGGER boom BEFORE INSERT ON outbox WHEN NEW.seq = 2 BEGIN SELECT RAISE(ABORT, 'disk says no'); END`)
  t.throws(() => s.commitGroup([msg('a', 1), msg('a', 2)], []), /disk says no/)
  t.equal(s.outboxDepth, 0)
  t.equal((s.db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n, 0)
  t.equal(s.device('a'), undefined, 'no sequence state either')
})
