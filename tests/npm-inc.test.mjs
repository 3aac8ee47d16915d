// The generated npm .inc of the gateway recipe matches app/package-lock.json: regenerating it
// (offline: tarballs from npm's cache, or the checksums recorded in the .inc for unchanged
// integrity values) gives the same bytes, it covers exactly the packages the bundle needs, every
// entry is an https tarball with a sha256, and the sha256 of every tarball that is in npm's cache
// is verified. A stale .inc fails.
import { createHash } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO } from './helpers.mjs'

const gen = await import('../scripts/gen-npm-inc.mjs')
const LOCK = join(REPO, 'app', 'package-lock.json')
const INC = join(REPO, 'meta-iot-gateway', 'recipes-gateway', 'iot-gateway', 'iot-gateway-npm.inc')
const inc = readFileSync(INC, 'utf8')
const lock = JSON.parse(readFileSync(LOCK, 'utf8'))
const cacheDir = gen.npmCacheDir()

t.test('regenerating the .inc from the lockfile gives the committed file', t => {
  const again = gen.generate({ lockfile: LOCK, previous: inc, offline: true, cacheDir, lockfileRel: 'app/package-lock.json' })
  t.equal(again, inc, 'stale .inc: run scripts/gen-npm-inc.mjs --out meta-iot-gateway/recipes-gateway/iot-gateway/iot-gateway-npm.inc')
  t.end()
})

t.test('the .inc covers the bundle closure, esbuild and its build-host binaries', t => {
  const pkgs = gen.selectPackages(lock)
  const known = gen.parseInc(inc)
  t.equal(known.size, pkgs.length, 'one checksum line per selected package')
  for (const p of pkgs) {
    const k = known.get(gen.srcName(p.key))
    t.ok(k, `${p.key} is in the .inc`)
    if (!k) continue
    t.equal(`${k.name}@${k.version}`, `${p.name}@${p.version}`, `${p.key}: name@version as in the lockfile`)
    t.equal(k.integrity, p.integrity, `${p.key}: integrity as in the lockfile`)
    t.ok(inc.includes(`subdir=\${NPM_UNPACK_SUBDIR}/${p.key};`), `${p.key}: unpacked where npm installs it`)
  }
  const names = pkgs.map(p => p.key)
  for (const dep of Object.keys(lock.packages[''].dependencies)) {
    if (dep === 'better-sqlite3') t.notOk(names.includes('node_modules/better-sqlite3'), 'better-sqlite3 stays external (own recipe)')
    else t.ok(names.includes(`node_modules/${dep}`), `production dependency ${dep}`)
  }
  for (const k of ['node_modules/esbuild', 'node_modules/@esbuild/linux-x64', 'node_modules/@esbuild/linux-arm64']) t.ok(names.includes(k), k)
  t.notOk(names.some(k => /node_modules\/(typescript|tap|@types\/better-sqlite3)$/.test(k)), 'no dev-only packages')
  t.end()
})

t.test('every SRC_URI entry is an https registry tarball with a sha256', t => {
  const uris = [...inc.matchAll(/^ {4}(\S+) \\$/gm)].map(m => m[1])
  t.ok(uris.length > 10, `${uris.length} entries`)
  for (const u of uris) {
    t.match(u, /^https:\/\/registry\.npmjs\.org\/\S+\.tgz;downloadfilename=npm-[^;]+\.tgz;name=[^;]+;subdir=\$\{NPM_UNPACK_SUBDIR\}\/node_modules\/[^;]+;striplevel=1$/, u.split(';')[0])
    const name = /;name=([^;]+);/.exec(u)[1]
    t.match(inc, new RegExp(`^SRC_URI\\[${name.replace(/[.+]/g, '\\$&')}\\.sha256sum\\] = "[0-9a-f]{64}"`, 'm'), `${name}: sha256`)
  }
  t.notMatch(inc, /npm(sw)?:\/\//, 'no npm:// fetcher (disabled in wrynose)')
  t.end()
})

t.test('sha256 values agree with the tarballs in npm\'s cache', t => {
  let verified = 0
  for (const p of gen.selectPackages(lock)) {
    const data = gen.cachedTarball(p, cacheDir)
    if (!data) continue
    verified++
    const want = gen.parseInc(inc).get(gen.srcName(p.key)).sha256
    t.equal(createHash('sha256').update(data).digest('hex'), want, `${p.name}@${p.version}`)
  }
  if (verified === 0) t.skip(`no tarball of the lockfile in npm's cache (${cacheDir}); run npm ci in app/ first`)
  else t.pass(`${verified} tarballs verified against npm's cache`)
  t.end()
})

t.test('a stale .inc is detected', t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-npm-inc-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // the lockfile gains a dependency with a version the .inc does not know
  const changed = structuredClone(lock)
  const mq = changed.packages['node_modules/commander']
  mq.version = '0.0.0-stale'
  mq.integrity = 'sha512-' + Buffer.alloc(64, 1).toString('base64')
  const f = join(dir, 'package-lock.json')
  writeFileSync(f, JSON.stringify(changed))
  t.throws(() => gen.generate({ lockfile: f, previous: inc, offline: true, cacheDir: join(dir, 'no-cache'), lockfileRel: 'app/package-lock.json' }),
    /commander@0\.0\.0-stale is not in npm's cache/, 'offline regeneration refuses an unknown tarball')
  // a tampered checksum in the .inc is not carried over: regeneration differs
  const p = gen.selectPackages(lock).find(x => gen.cachedTarball(x, cacheDir))
  if (p) {
    const name = gen.srcName(p.key)
    const tampered = inc.replace(new RegExp(`(SRC_URI\\[${name.replace(/[.+]/g, '\\$&')}\\.sha256sum\\] = ")[0-9a-f]{64}`), `$1${'0'.repeat(64)}`)
    t.not(gen.generate({ lockfile: LOCK, previous: tampered, offline: true, cacheDir, lockfileRel: 'app/package-lock.json' }), tampered, 'a wrong sha256 is replaced by the cache\'s')
  }
  t.end()
})
