import t from 'tap'
import { copyFileSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { migrate, migrations, openDatabase, PAGE_SIZE } from '../../src/store/db.js'
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
  t.equal(db.pragma('page_size', { simple: true }), PAGE_SIZE, 'a new database gets small pages')
  // A newer release whose change this one cannot use says so with min_compatible_version.
  db.pragma(`user_version = ${migrations.length + 1}`)
  db.prepare("UPDATE store_meta SET value = ? WHERE key = 'min_compatible_version'").run(String(migrations.length + 1))
  db.close()
  t.throws(() => openDatabase(file), { code: 'GW_ERR_STORE_VERSION', message: /newer than this gateway knows/ })
})

t.test('rollback: a database a newer release migrated compatibly still opens, untouched', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'g.db')
  let db = openDatabase(file)
  t.equal((db.prepare("SELECT value FROM store_meta WHERE key = 'min_compatible_version'").get() as { value: string }).value, '0', 'no step so far breaks older code')
  // What a newer, additive release does: one more table, a higher version, min compatible unchanged.
  db.exec('CREATE TABLE from_the_future (x INTEGER)')
  db.pragma(`user_version = ${migrations.length + 2}`)
  const s = new Store(db)
  s.commitGroup([msg('a', 1)], [])
  db.close()
  db = openDatabase(file)
  t.equal(db.pragma('user_version', { simple: true }), migrations.length + 2, 'the newer version is left as it is')
  t.equal(new Store(db).outboxDepth, 1, 'and its outbox is usable')
  db.close()
})

t.test('a database written by release 5b12154 (schema 3) is migrated and its queue delivered in order', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'g.db')
  copyFileSync(join(import.meta.dirname, '..', 'fixtures', 'outbox-v3.db'), file)
  const old = new Database(file, { readonly: true })
  t.equal(old.pragma('user_version', { simple: true }), 3, 'the fixture is what that release wrote')
  const queued = old.prepare('SELECT id, seq FROM outbox ORDER BY id').all() as Array<{ id: number, seq: number }>
  const inflight = (old.prepare('SELECT batch_id AS b FROM outbox WHERE batch_id IS NOT NULL LIMIT 1').get() as { b: string }).b
  old.close()
  t.equal(queued.length, 30)
  const s = new Store(openDatabase(file))
  t.equal(s.db.pragma('user_version', { simple: true }), migrations.length)
  t.equal(s.outboxDepth, 30, 'every queued message is still there')
  t.same(s.device('dev-a'), { id: 'dev-a', status: 'active', lastEpoch: 7, lastSeq: 30 }, 'replay protection carries over')
  t.equal(s.stats().deadLetters, 2)
  const sent: number[] = []
  const first = s.nextBatch('gw-fixture', 100, 1 << 20)!
  t.equal(first.id, inflight, 'the batch in flight at the old release goes again under its Idempotency-Key')
  t.equal(first.rows.length, 10)
  for (let b: ReturnType<typeof s.nextBatch> = first; b; b = s.nextBatch('gw-fixture', 100, 1 << 20)) {
    sent.push(...b.rows.map(r => r.seq))
    s.ackBatch(b)
  }
  t.same(sent, queued.map(q => q.seq), 'all delivered, in order, once')
  t.ok(s.flushAcks(Date.now() + 5000, true))
  t.equal((s.db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n, 0, 'and deleted')
})

t.test('group commit, batches with stable ids, ack, dead letters, retry', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'g.db')
  let s = new Store(openDatabase(file))
  s.commitGroup([msg('a', 1), msg('b', 1), msg('a', 2)], [{ minute: 1, device: 'a', transport: 'mqtt', stream: 'telemetry', messages: 1, bytes: 3, outcome: 'rejected', reason: 'replay' }])
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
  t.equal(s.outboxDepth, 1, 'acknowledged in memory at once')
  t.equal((s.db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n, 3, 'deleted later, in bulk')
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

t.test('acknowledged batches are never sent again by this process, even when their delete cannot be written', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'g.db')
  let s = new Store(openDatabase(file))
  s.commitGroup([msg('a', 1), msg('a', 2), msg('a', 3)], [])
  const b1 = s.nextBatch('gw', 2, 1 << 20)!
  s.ackBatch(b1)
  // The disk refuses writes now (as SQLITE_FULL would): the acknowledgement stays in memory.
  s.db.exec('CREATE TRIGGER full BEFORE DELETE ON outbox BEGIN SELECT RAISE(FAIL, \'full\'); END')
  t.throws(() => s.flushAcks(Date.now() + 5000, true), /full/)
  const b2 = s.nextBatch('gw', 10, 1 << 20)!
  t.same(b2.rows.map(r => r.seq), [3], 'the acknowledged rows are not in the next batch')
  s.ackBatch(b2)
  t.equal(s.nextBatch('gw', 10, 1 << 20), undefined)
  s.db.exec('DROP TRIGGER full')
  t.ok(s.flushAcks(Date.now() + 5000, true), 'retried once the disk has room')
  t.equal((s.db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n, 0)
  s.db.close()
  s = new Store(openDatabase(file))
  t.equal(s.outboxDepth, 0, 'nothing comes back after a restart')
})

t.test('a crash after the acknowledgement, before it is written, sends the batch again under its id', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'g.db')
  let s = new Store(openDatabase(file))
  s.commitGroup([msg('a', 1), msg('a', 2)], [])
  const b1 = s.nextBatch('gw', 10, 1 << 20)!
  s.ackBatch(b1)
  s.db.close() // no flushAcks: the process died
  s = new Store(openDatabase(file))
  const again = s.nextBatch('gw', 1000, 1 << 20)!
  t.equal(again.id, b1.id)
  t.same(again.rows.map(r => r.seq), [1, 2])
})

t.test('the uplink bookkeeping does not change the configured synchronous level', async t => {
  const dir = tempDir(t)
  for (const [mode, level] of [['FULL', 2], ['NORMAL', 1]] as const) {
    const s = new Store(openDatabase(join(dir, `${mode}.db`), { synchronous: mode }))
    s.commitGroup([msg('a', 1)], [])
    s.ackBatch(s.nextBatch('gw', 10, 1 << 20)!)
    t.ok(s.flushAcks(Date.now() + 5000, true))
    t.equal(s.db.pragma('synchronous', { simple: true }), level, `${mode} stays ${mode}`)
    s.db.close()
  }
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
  // The per-message traffic log of older releases is no longer written, only pruned.
  const log = s.db.prepare('INSERT INTO traffic_logs (at, device, transport, stream, seq, bytes, outcome, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
  for (let i = 0; i < 50; i++) log.run(i < 10 ? now - 10 * 3600_000 : now, 'a', 'mqtt', 'telemetry', i, 1, 'accepted', null)
  s.commitGroup([], [{ minute: Math.floor((now - 10 * 3600_000) / 60000), device: 'a', transport: 'mqtt', stream: 'telemetry', outcome: 'accepted', reason: null, messages: 3, bytes: 9 },
    { minute: Math.floor(now / 60000), device: 'a', transport: 'mqtt', stream: 'telemetry', outcome: 'accepted', reason: null, messages: 2, bytes: 6 }])
  s.commitGroup([], [{ minute: Math.floor(now / 60000), device: 'a', transport: 'mqtt', stream: 'telemetry', outcome: 'accepted', reason: null, messages: 1, bytes: 3 }])
  t.same(s.db.prepare('SELECT messages, bytes FROM traffic_rollups ORDER BY minute DESC LIMIT 1').get(), { messages: 3, bytes: 9 }, 'a minute\'s rollup adds up')
  t.equal(s.pruneTrafficRollups(3600_000), 1, 'old rollups pruned')
  t.equal(s.pruneTrafficLog(3600_000, 1000, 3), 10, 'ten too old')
  t.equal(s.pruneTrafficLog(3600_000, 25, 7), 15, 'then down to 25 rows')
  t.equal((s.db.prepare('SELECT count(*) AS n FROM traffic_logs').get() as { n: number }).n, 25)
})

t.test('a failing commit leaves nothing behind', async t => {
  const s = new Store(openDatabase(':memory:'))
  s.db.exec('CREATE TRIGGER boom BEFORE INSERT ON outbox WHEN NEW.seq = 2 BEGIN SELECT RAISE(ABORT, \'disk says no\'); END')
  t.throws(() => s.commitGroup([msg('a', 1), msg('a', 2)], []), /disk says no/)
  t.equal(s.outboxDepth, 0)
  t.equal((s.db.prepare('SELECT count(*) AS n FROM outbox').get() as { n: number }).n, 0)
  t.equal(s.device('a'), undefined, 'no sequence state either')
})

t.test('a delivery from memory moves the watermark only over the rows it names (rows another process added stay)', async t => {
  const s = new Store(openDatabase(':memory:'))
  const first = s.commitGroup([msg('a', 1), msg('a', 2)], [])
  t.equal(first, 1, 'commitGroup returns the first row id')
  t.ok(s.ackCommitted(2, 2, 16), 'rows 1-2, the next after the watermark')
  t.equal(s.outboxDepth, 0)
  // The CLI's `outbox retry` inserts from another connection: this process does not count it.
  s.db.prepare("INSERT INTO outbox (device, transport, stream, epoch, seq, received_at, payload, bytes) VALUES ('b', 'mqtt', 'telemetry', 0, 9, 1, '{}', 2)").run()
  const next = s.commitGroup([msg('a', 3)], [])
  t.equal(next, 4)
  t.notOk(s.ackCommitted(4, 1, 8), 'row 3 lies between: not recorded')
  t.equal(s.deliveredThrough, 2)
  s.refreshTotals()
  t.equal(s.outboxDepth, 2, 'both rows left for the outbox to send (row 4 again: same message id)')
})

t.test('priority lane and deliveries from memory: each row counted once, whichever path records it first', async t => {
  const s = new Store(openDatabase(':memory:'))
  s.prioritise(['events'])
  const ev = (device: string, seq: number): InboundMessage => ({ ...msg(device, seq), stream: 'events' })
  // Rows 1-6: telemetry 1, event 2, telemetry 3, event 4, telemetry 5, event 6 (9 payload bytes each).
  s.commitGroup([msg('a', 1), ev('e', 1), msg('a', 2), ev('e', 2), msg('a', 3), ev('e', 3)], [])
  t.equal(s.outboxDepth, 6)
  t.equal(s.outboxBytes, 54)
  t.equal(s.priorityDepth, 3)
  // Memory delivers event 2 ahead of the telemetry (out of order): recorded by id.
  s.ackAhead([{ id: 2, bytes: 9 }])
  t.equal(s.outboxDepth, 5)
  t.equal(s.priorityDepth, 2, 'no longer waits in the lane: the outbox path would not send it again')
  s.ackAhead([{ id: 2, bytes: 9 }])
  t.equal(s.outboxDepth, 5, 'recorded twice, counted once')
  // The outbox's priority lane delivers events 4 and 6.
  const p = s.nextBatch('gw', 100, 1 << 20)!
  t.same(p.rows.map(r => r.id), [4, 6], 'the lane sends only what memory has not delivered')
  s.ackBatch(p)
  t.equal(s.outboxDepth, 3)
  // Memory's prefix 1-4 (every row of the range, rows 2 and 4 included): only 1 and 3 are new.
  t.ok(s.ackCommitted(4, 4, 36))
  t.equal(s.deliveredThrough, 4)
  t.equal(s.outboxDepth, 1, 'rows 2 and 4 not subtracted again')
  t.equal(s.outboxBytes, 9)
  t.ok(s.ackCommitted(6, 2, 18))
  t.equal(s.outboxDepth, 0)
  t.equal(s.outboxBytes, 0)
  t.equal(s.priorityDepth, 0)
  t.equal(s.nextBatch('gw', 100, 1 << 20), undefined, 'nothing sent again')
  s.refreshTotals()
  t.equal(s.outboxDepth, 0, 'and the table agrees')
})

t.test('a delivery from memory over events still queued in the lane drops them from it', async t => {
  const s = new Store(openDatabase(':memory:'))
  s.prioritise(['events'])
  s.commitGroup([msg('a', 1), { ...msg('e', 1), stream: 'events' }, msg('a', 2)], [])
  t.equal(s.priorityDepth, 1)
  t.ok(s.ackCommitted(3, 3, 27))
  t.equal(s.priorityDepth, 0, 'the event is delivered: the lane does not send it again')
  t.equal(s.outboxDepth, 0)
  t.equal(s.nextBatch('gw', 100, 1 << 20), undefined)
})
