import Database from 'better-sqlite3'
import { join } from 'node:path'
import t from 'tap'
import { tempDir, testConfig } from '../helpers/env.js'
import { cli, enrollDevice } from '../helpers/identity.js'

t.test('audit verify: editing or removing any row makes it fail and name the row', async t => {
  const dir = tempDir(t)
  const { file, config } = await testConfig(dir)
  t.equal((await cli(file, ['pki', 'init'])).code, 0)
  for (const id of ['a-1', 'a-2', 'a-3']) await enrollDevice(file, join(dir, 'b'), id)
  t.equal((await cli(file, ['device', 'revoke', 'a-2', '--reason', 'test'])).code, 0)
  const ok = await cli(file, ['audit', 'verify'])
  t.equal(ok.code, 0, ok.err)
  t.match(ok.out, /intact: 4 rows/)
  const list = JSON.parse((await cli(file, ['audit', 'list', '--json'])).out) as Array<{ id: number, type: string }>
  t.same(list.map(r => r.type), ['device_revoked', 'device_enrolled', 'device_enrolled', 'device_enrolled'])

  const dbFile = join(config.gateway.dataDir, 'gateway.db')
  const edit = (sql: string, ...args: unknown[]): void => { const db = new Database(dbFile); db.prepare(sql).run(...args); db.close() }
  for (const column of ['detail', 'type', 'device', 'at']) {
    for (let id = 1; id <= 4; id++) {
      const db = new Database(dbFile)
      const orig = (db.prepare(`SELECT ${column} AS v FROM audit_log WHERE id = ?`).get(id) as { v: unknown }).v
      db.close()
      edit(`UPDATE audit_log SET ${column} = ? WHERE id = ?`, column === 'at' ? Number(orig) + 1 : `${String(orig)}x`, id)
      const r = await cli(file, ['audit', 'verify'])
      t.equal(r.code, 1, `edited ${column} of row ${id}: verify fails`)
      t.match(r.err, new RegExp(`broken at row ${id}:`), `and names row ${id}`)
      edit(`UPDATE audit_log SET ${column} = ? WHERE id = ?`, orig, id)
    }
  }
  t.equal((await cli(file, ['audit', 'verify'])).code, 0, 'intact again once restored')
  // Rewriting the hash of an edited row does not help: the next row no longer links to it.
  edit('UPDATE audit_log SET detail = \'{}\' WHERE id = 2')
  {
    const db = new Database(dbFile)
    const { rowHash } = await import('../../src/audit/audit.js')
    const r = db.prepare('SELECT id, at, type, device, source, detail, prev_hash AS prevHash FROM audit_log WHERE id = 2').get() as Parameters<typeof rowHash>[0]
    db.prepare('UPDATE audit_log SET hash = ? WHERE id = 2').run(rowHash(r))
    db.close()
  }
  const relinked = await cli(file, ['audit', 'verify', '--json'])
  t.equal(relinked.code, 1)
  t.match(relinked.out, /"brokenAt": 3/, 'a recomputed hash breaks the link of the next row')
  edit('DELETE FROM audit_log WHERE id = 3')
  const removed = await cli(file, ['audit', 'verify'])
  t.equal(removed.code, 1)
  t.match(removed.err, /row 3 is missing/, 'a removed row is named')
})
