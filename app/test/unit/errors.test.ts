// The error codes are a closed, documented list: app/docs/errors.md has a row for exactly the codes
// of src/lib/errors.ts, the source uses no code outside that list, and none is assembled at run time
// (a template like `GW_ERR_STORE_${what}` cannot be found with grep).
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError, ERROR_CODES, PkiError, StoreError, UsageError } from '../../src/lib/errors.js'

const app = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const CODE = /GW_ERR_[A-Z0-9_]+/g

function sources (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter(e => e.isFile() && /\.(ts|mjs)$/.test(e.name))
    .map(e => join(e.parentPath, e.name))
}

t.test('app/docs/errors.md lists exactly the codes of src/lib/errors.ts, once each', async t => {
  const rows = readFileSync(join(app, 'docs', 'errors.md'), 'utf8').split('\n').filter(l => l.startsWith('| `GW_ERR_'))
  const documented = rows.map(l => /^\| `(GW_ERR_[A-Z0-9_]+)`/.exec(l)![1]!)
  t.same([...documented].sort(), [...ERROR_CODES].sort(), 'one row per code, no row for a code that does not exist')
  t.equal(new Set(ERROR_CODES).size, ERROR_CODES.length, 'no code listed twice')
  for (const row of rows) {
    const exit = row.split('|')[2]!.trim()
    const code = /`(GW_ERR_[A-Z0-9_]+)`/.exec(row)![1]!
    // Configuration and usage errors exit 2 (src/cli/index.ts); everything else 1.
    t.equal(exit, /^GW_ERR_(CONFIG_|USAGE$)/.test(code) ? '2' : '1', `${code}: exit status in the table`)
  }
})

t.test('the source uses only listed codes, each written out, and every listed code is used', async t => {
  const used = new Map<string, number>()
  for (const file of sources(join(app, 'src'))) {
    const text = readFileSync(file, 'utf8')
    t.notMatch(text, /GW_ERR_[A-Z0-9_]*\$\{/, `${relative(app, file)}: no code assembled from a template`)
    for (const m of text.matchAll(CODE)) used.set(m[0], (used.get(m[0]) ?? 0) + 1)
  }
  const unknown = [...used.keys()].filter(c => !(ERROR_CODES as readonly string[]).includes(c))
  t.same(unknown, [], 'no code in src/ that errors.ts does not list')
  // Each code appears in its list and at least once more: where it is thrown (or a class's default).
  const unused = ERROR_CODES.filter(c => (used.get(c) ?? 0) < 2)
  t.same(unused, [], 'no listed code that nothing throws')
})

t.test('each class carries the code it is given, and its area only (checked by tsc)', async t => {
  t.equal(new StoreError('GW_ERR_STORE_OPEN', 'x').code, 'GW_ERR_STORE_OPEN')
  t.equal(new PkiError('GW_ERR_PKI_CSR', 'x').code, 'GW_ERR_PKI_CSR')
  t.equal(new UsageError('x').code, 'GW_ERR_USAGE')
  t.equal(new ConfigError('a.b', 'bad').code, 'GW_ERR_CONFIG_INVALID')
  t.equal(new ConfigError('a.b', 'is not set', 'GW_ERR_CONFIG_MISSING').code, 'GW_ERR_CONFIG_MISSING')
  t.equal(new ConfigError('a.b', 'bad').message, 'a.b: bad')
  // @ts-expect-error a PKI code is not a store code: the compiler refuses it
  void new StoreError('GW_ERR_PKI_CSR', 'x')
})
