// Two clones of the same commit build the same gateway package: the same bundle bytes and the
// same recipe variables (PV, SOURCE_DATE_EPOCH). The clones are checked out at different times
// (the second one's files get other mtimes), which is what made the old SOURCE_DATE_EPOCH (the
// newest file time under app/, OE's rule for plain files) differ between builders. The recipe's
// variables come from meta-iot-gateway/lib/iotgw/source.py, the code BitBake runs (addpylib).
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, utimesSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, LAYER, run, which } from './helpers.mjs'

const DESCRIBE = `
import sys
sys.path.insert(0, sys.argv[1])
import iotgw.source as s
d = s.describe(sys.argv[2], *sys.argv[3:])
print(d)
`
const describe = (dir, ...stated) => {
  const r = run('python3', ['-c', DESCRIBE, join(LAYER, 'lib'), dir, ...stated])
  if (r.status !== 0) throw new Error(r.stderr)
  return Object.fromEntries(r.stdout.trim().split(';').map(p => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]))
}
const git = (dir, ...args) => run('git', ['-C', dir, ...args])

function touchAll (dir, when) {
  for (const f of readdirSync(dir)) {
    if (f === '.git' || f === 'node_modules') continue
    const p = join(dir, f)
    if (statSync(p).isDirectory()) touchAll(p, when)
    utimesSync(p, when, when)
  }
}
function newestMtime (dir) {
  let newest = 0
  for (const f of readdirSync(dir)) {
    if (f === 'node_modules' || f === 'dist') continue
    const p = join(dir, f)
    const st = statSync(p)
    newest = Math.max(newest, st.isDirectory() ? newestMtime(p) : st.mtimeMs)
  }
  return newest
}

const head = git(REPO, 'rev-parse', 'HEAD')
const skip = !which('git')
  ? 'git is not installed'
  : !which('python3')
      ? 'python3 is not installed'
      : head.status !== 0
        ? 'the repository is not a git checkout'
        : !existsSync(join(REPO, 'app', 'node_modules', 'esbuild')) ? 'app/node_modules is not installed (npm ci in app/)' : false

t.test('two clones: the same bundle, PV and SOURCE_DATE_EPOCH', { skip, timeout: 240000 }, t => {
  const work = mkdtempSync(join(tmpdir(), 'iotgw-repro-'))
  t.teardown(() => rmSync(work, { recursive: true, force: true }))
  const clones = ['a', 'b'].map(n => join(work, n))
  for (const c of clones) {
    const r = run('git', ['clone', '-q', '--no-hardlinks', REPO, c])
    t.equal(r.status, 0, r.stderr)
    symlinkSync(join(REPO, 'app', 'node_modules'), join(c, 'app', 'node_modules'))
  }
  // the second builder checked out a day later
  touchAll(clones[1], new Date(Date.now() + 86400000))
  t.not(newestMtime(join(clones[0], 'app')), newestMtime(join(clones[1], 'app')), 'the clones\' file times differ (the old rule would give two SOURCE_DATE_EPOCHs)')

  const [a, b] = clones.map(c => describe(c))
  t.equal(a.error, '', a.error)
  t.same(a, b, 'the same recipe variables from both clones')
  const last = git(clones[0], 'log', '-1', '--format=%H %ct', '--', 'app').stdout.trim().split(' ')
  t.equal(a.epoch, last[1], 'SOURCE_DATE_EPOCH: the time of the last commit of app/')
  const version = JSON.parse(readFileSync(join(clones[0], 'app', 'package.json'), 'utf8')).version
  t.equal(a.pv, `${version}+git${last[0].slice(0, 12)}`, 'PV: the app\'s version + the commit')

  // the recipe marks git's state files as parse dependencies, so a new commit reparses it
  const state = run('python3', ['-c', 'import sys; sys.path.insert(0, sys.argv[1]); import iotgw.source as s; print("\\n".join(s.state_files(sys.argv[2])))', join(LAYER, 'lib'), clones[0]])
  const files = state.stdout.trim().split('\n')
  t.ok(files.includes(join(clones[0], '.git', 'HEAD')) && files.includes(join(clones[0], '.git', 'index')), `git state files: ${files.join(' ')}`)
  t.ok(files.some(f => f.includes(join('.git', 'refs', 'heads')) || f.endsWith('packed-refs')), 'the branch\'s ref')

  const bundles = clones.map(c => {
    const out = join(c, 'bundle.cjs')
    const r = run(process.execPath, ['esbuild.config.mjs'], { cwd: join(c, 'app'), env: { ...process.env, NODE_PATH: '', IOTGW_BUNDLE_OUT: out } })
    t.equal(r.status, 0, r.stderr)
    return readFileSync(out)
  })
  t.ok(bundles[0].length > 100000 && bundles[0].equals(bundles[1]), `the same bundle bytes (${bundles[0].length})`)

  // a tracked change under app/ shows in PV; stated values win where there is no git
  const pkg = join(clones[1], 'app', 'package.json')
  const text = readFileSync(pkg, 'utf8')
  run('sh', ['-c', `printf '%s ' >> "${pkg}"`])
  t.match(describe(clones[1]).pv, /\+dirty$/, 'uncommitted changes to app/: PV says +dirty')
  run('sh', ['-c', `git -C "${clones[1]}" checkout -q -- app/package.json`])
  t.equal(readFileSync(pkg, 'utf8'), text)
  rmSync(join(clones[1], '.git'), { recursive: true, force: true })
  const exported = describe(clones[1])
  t.match(exported.error, /not a git checkout.*IOT_GATEWAY_SOURCE_DATE_EPOCH/, 'an exported tree without stated values: the recipe is skipped with the reason')
  const stated = describe(clones[1], '1700000000', 'abcdef0123456789')
  t.same([stated.error, stated.epoch, stated.pv], ['', '1700000000', `${version}+gitabcdef012345`], 'stated values')
  t.end()
})
