// The test command's progress (tap runs from app/, where its plugins are, on files in a temp folder): scripts/tap-summary.mjs, fed by a real tap run, prints each test
// file's line as soon as tap reports that file (here: to a pipe, not a terminal), and the last line
// is "N passed, N failed[, N skipped]". File B only finishes after the harness has SEEN file A's
// line, so a summariser that buffered until the end would hang here (and the test times out).
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { REPO, t } from './helpers.mjs'

const APP = join(REPO, 'app')

t.test('each file\'s result is printed as it finishes, then the count line', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-tapsum-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const barrier = join(dir, 'go')
  const head = `import { createRequire } from 'node:module'\nimport { existsSync } from 'node:fs'\nconst t = createRequire(${JSON.stringify(join(APP, 'package.json'))})('tap')\n`
  writeFileSync(join(dir, 'a.test.mjs'), head + "t.test('one', async t => { t.pass('x') })\nt.test('two', async t => { t.pass('y') })\nt.test('later', { skip: 'not here' }, async () => {})\n")
  writeFileSync(join(dir, 'b.test.mjs'), head + `t.test('waits for the summary of a', async t => {\n  while (!existsSync(${JSON.stringify(barrier)})) await new Promise(r => setTimeout(r, 50))\n  t.equal(1, 2, 'a failing assertion')\n})\n`)
  const tap = spawn(process.execPath, [join(APP, 'node_modules', '.bin', 'tap'), '--reporter=tap', '--disable-coverage', '--jobs=2', '--timeout=60', join(dir, 'a.test.mjs'), join(dir, 'b.test.mjs')], { cwd: APP, stdio: ['ignore', 'pipe', 'pipe'] })
  const sum = spawn(process.execPath, [join(REPO, 'scripts', 'tap-summary.mjs')], { stdio: ['pipe', 'pipe', 'inherit'] })
  tap.stdout.pipe(sum.stdin)
  tap.stderr.pipe(sum.stdin, { end: false })
  let text = ''
  let sawA = false
  const done = new Promise(resolve => sum.once('exit', code => resolve(code)))
  sum.stdout.on('data', d => {
    text += d
    if (!sawA && /\] ok {3}\S*\/a\.test\.mjs: 2 passed, 1 skipped/.test(text)) { sawA = true; writeFileSync(barrier, '') }
  })
  const code = await done
  t.ok(sawA, 'a.test.mjs was reported while b.test.mjs was still running')
  t.match(text, /^\[ ?\d+m\d\ds\] ok {3}\S*\/a\.test\.mjs: 2 passed, 1 skipped in [\d.]+ s$/m, 'the file line: elapsed time, counts, own time')
  t.match(text, /^\[ ?\d+m\d\ds\] FAIL \S*\/b\.test\.mjs: 0 passed, 1 failed/m, 'the failed file')
  t.match(text, /not ok \d+ - a failing assertion/, 'with its failing assertion')
  t.match(text, /FAILED: waits for the summary of a/)
  t.equal(text.trimEnd().split('\n').pop(), '2 passed, 1 failed, 1 skipped', 'the last line')
  t.equal(code, 1, 'exit 1 when something failed')
})
