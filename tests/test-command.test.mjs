// The test command's progress (scripts/tap-summary.mjs fed by a real tap run, to a pipe, not a
// terminal): each file's line is printed as soon as that file ends, even when a slower file comes
// before it in tap's own (ordered) stream, and the last line is "N passed, N failed[, N skipped]".
// slow.test.mjs is first and only finishes after the harness has SEEN fast.test.mjs's line, so a
// summariser that waited for the stream's order, or for the end, would hang here (tap's timeout).
// tap runs in a temp folder whose node_modules is a link to app's, so it writes its results there.
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { REPO, t } from './helpers.mjs'

const APP = join(REPO, 'app')

t.test('each file\'s result is printed as it finishes, then the count line', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-tapsum-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const barrier = join(dir, 'go')
  symlinkSync(join(APP, 'node_modules'), join(dir, 'node_modules'))
  const head = "import { existsSync } from 'node:fs'\nimport t from 'tap'\n"
  writeFileSync(join(dir, 'slow.test.mjs'), head + `t.test('waits for the line of the fast file', async t => {\n  while (!existsSync(${JSON.stringify(barrier)})) await new Promise(r => setTimeout(r, 50))\n  t.equal(1, 2, 'a failing assertion')\n})\n`)
  writeFileSync(join(dir, 'fast.test.mjs'), head + "t.test('one', async t => { t.pass('x') })\nt.test('two', async t => { t.pass('y') })\nt.test('later', { skip: 'not here' }, async () => {})\n")
  const tap = spawn(process.execPath, [join(APP, 'node_modules', '.bin', 'tap'), '--reporter=tap', '--disable-coverage', '--jobs=2', '--timeout=60', 'slow.test.mjs', 'fast.test.mjs'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  const sum = spawn(process.execPath, [join(REPO, 'scripts', 'tap-summary.mjs'), '--results', join(dir, '.tap', 'test-results')], { stdio: ['pipe', 'pipe', 'inherit'] })
  tap.stdout.pipe(sum.stdin)
  tap.stderr.pipe(sum.stdin, { end: false })
  let text = ''
  let sawFast = false
  const done = new Promise(resolve => sum.once('exit', code => resolve(code)))
  sum.stdout.on('data', d => {
    text += d
    if (!sawFast && /\] ok {3}fast\.test\.mjs: 2 passed, 1 skipped/.test(text)) { sawFast = true; writeFileSync(barrier, '') }
  })
  const code = await done
  t.ok(sawFast, 'fast.test.mjs was reported while slow.test.mjs, before it in the stream, was still running')
  t.match(text, /^\[ ?\d+m\d\ds\] ok {3}fast\.test\.mjs: 2 passed, 1 skipped in [\d.]+ s$/m, 'the file line: elapsed time, counts, own time')
  t.match(text, /^\[ ?\d+m\d\ds\] FAIL slow\.test\.mjs: 0 passed, 1 failed/m, 'the failed file')
  t.equal(text.match(/^\[.*\] (ok {2}|FAIL) fast\.test\.mjs:/gm)?.length, 1, 'one line per file (not again when the stream reaches it)')
  t.equal(text.match(/^\[.*\] (ok {2}|FAIL) slow\.test\.mjs:/gm)?.length, 1)
  t.ok(text.search(/\] ok {3}fast\.test\.mjs/) < text.search(/\] FAIL slow\.test\.mjs/), 'the fast file\'s line comes first')
  t.match(text, /not ok \d+ - a failing assertion/, 'with its failing assertion')
  t.match(text, /FAILED: waits for the line of the fast file/)
  t.equal(text.trimEnd().split('\n').pop(), '2 passed, 1 failed, 1 skipped', 'the last line')
  t.equal(code, 1, 'exit 1 when something failed')
})
