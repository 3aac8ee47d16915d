// The gateway recipe's do_compile, done here the way BitBake does it: the app sources of SRC_URI,
// every npm tarball of the generated .inc unpacked (striplevel=1) into its subdir, no network,
// then `node esbuild.config.mjs`. The bundle must be byte-identical to the app's own build, which
// also proves that the .inc holds every package the bundle needs. Tarballs come from npm's cache
// (verified against the .inc's sha256); without them the test skips.
import { createHash } from 'node:crypto'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, run } from './helpers.mjs'

const gen = await import('../scripts/gen-npm-inc.mjs')
const APP = join(REPO, 'app')
const INC = join(REPO, 'meta-iot-gateway', 'recipes-gateway', 'iot-gateway', 'iot-gateway-npm.inc')
const RECIPE = join(REPO, 'meta-iot-gateway', 'recipes-gateway', 'iot-gateway', 'iot-gateway.inc')

t.test('the recipe\'s esbuild step gives the same bytes as the app\'s build', { timeout: 240000 }, t => {
  if (!existsSync(join(APP, 'esbuild.config.mjs'))) return t.skip('app/esbuild.config.mjs does not exist yet')
  const inc = readFileSync(INC, 'utf8')
  const recipe = readFileSync(RECIPE, 'utf8')
  const cacheDir = gen.npmCacheDir()
  const known = gen.parseInc(inc)
  const entries = [...inc.matchAll(/^ {4}https:\/\/\S+;name=([^;]+);subdir=\$\{NPM_UNPACK_SUBDIR\}\/([^;]+);striplevel=1 \\$/gm)]
    .map(m => ({ name: m[1], subdir: m[2], ...known.get(m[1]) }))
  t.ok(entries.length > 10, `${entries.length} npm tarballs in the .inc`)

  const work = mkdtempSync(join(tmpdir(), 'iotgw-recipe-'))
  t.teardown(() => rmSync(work, { recursive: true, force: true }))
  const S = join(work, 'app')
  // SRC_URI's app files, as the recipe lists them
  const appFiles = [...recipe.matchAll(/file:\/\/app\/(\S+)/g)].map(m => m[1])
  t.ok(appFiles.includes('src') && appFiles.includes('esbuild.config.mjs'), `app files of SRC_URI: ${appFiles.join(' ')}`)
  for (const f of appFiles) if (!existsSync(join(APP, f))) return t.fail(`SRC_URI names app/${f}, which does not exist`)
  mkdirSync(join(S, 'node_modules'), { recursive: true })
  for (const e of entries) {
    const data = gen.cachedTarball({ name: e.name, version: e.version, integrity: e.integrity }, cacheDir)
    if (!data) return t.skip(`${e.name}@${e.version} is not in npm's cache (${cacheDir}): run npm ci in app/ first`)
    t.equal(createHash('sha256').update(data).digest('hex'), e.sha256, `${e.subdir}: sha256`)
    const dest = join(S, e.subdir)
    mkdirSync(dest, { recursive: true })
    const r = run('tar', ['--no-same-owner', '-xzf', '-', '--strip-components=1', '-C', dest], { input: data, encoding: 'buffer' })
    if (r.status !== 0) return t.fail(`unpacking ${e.subdir}: ${r.stderr}`)
  }
  const env = { ...process.env, NODE_PATH: '' }
  delete env.IOTGW_BUNDLE_OUT
  // digest of the app files the recipe takes, to notice an edit of app/ while both builds run
  const digest = dir => {
    const h = createHash('sha256')
    const walk = p => {
      const st = statSync(p)
      if (st.isDirectory()) for (const f of readdirSync(p).sort()) walk(join(p, f))
      else h.update(p.slice(dir.length)).update(readFileSync(p))
    }
    for (const f of appFiles) walk(join(dir, f))
    return h.digest('hex')
  }
  const refDir = join(work, 'ref')
  mkdirSync(refDir)
  for (let attempt = 1; ; attempt++) {
    for (const f of appFiles) {
      rmSync(join(S, f), { recursive: true, force: true })
      cpSync(join(APP, f), join(S, f), { recursive: true })
    }
    rmSync(join(S, 'dist'), { recursive: true, force: true })
    const built = run(process.execPath, ['esbuild.config.mjs'], { cwd: S, env })
    if (built.status !== 0) return t.fail('node esbuild.config.mjs in the recipe tree:\n' + built.stderr)
    const ref = run(process.execPath, ['esbuild.config.mjs'], { cwd: APP, env: { ...env, IOTGW_BUNDLE_OUT: join(refDir, 'gateway.cjs') } })
    if (ref.status !== 0) return t.fail('the app\'s build:\n' + ref.stderr)
    if (digest(S) === digest(APP)) break
    if (attempt === 3) return t.skip('app/ kept changing during the builds; run again')
  }
  const a = readFileSync(join(S, 'dist', 'gateway.cjs'))
  const b = readFileSync(join(refDir, 'gateway.cjs'))
  t.ok(a.equals(b), `byte-identical (recipe ${a.length} bytes, app ${b.length} bytes)`)
  t.end()
})
