// better-sqlite3 forces -flto, so its code and debug information are generated at LINK time; a
// debug prefix map given to the compiler alone leaves the build directory in DW_AT_comp_dir, and
// Yocto's buildpaths QA check fails the recipe. scripts/build-sqlite-addon.sh builds the addon the
// way the recipe does (the shared settings, -g like TARGET_CFLAGS, the prefix map at compile and
// link time); this checks what it built: there IS debug information (the check is not vacuous),
// every compilation unit's directory is the mapped one, and the build directory appears nowhere in
// the file (strings), which is what the recipe's own check and the QA check look for.
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { t, REPO, run, which } from './helpers.mjs'

const SCRIPT = join(REPO, 'scripts', 'build-sqlite-addon.sh')
const missing = ['aarch64-linux-gnu-g++', 'readelf', 'strings', 'make', 'python3'].filter(c => !which(c))
const skip = missing.length ? `missing: ${missing.join(' ')} (Debian: g++-aarch64-linux-gnu binutils make python3)` : false

t.test('the addon built by build-sqlite-addon.sh carries no build path', { skip, timeout: 900000 }, t => {
  // cached when the settings and the script are unchanged; a build takes ~100 s on 2 cores
  const r = run('bash', [SCRIPT, '--arch', 'arm64'], { timeout: 880000 })
  t.equal(r.status, 0, `build-sqlite-addon.sh:\n${r.stderr.slice(-3000)}`)
  if (r.status !== 0) return t.end()
  const pkg = r.stdout.trim().split('\n').pop()
  const info = JSON.parse(readFileSync(join(pkg, '..', 'build-info.json'), 'utf8'))
  t.ok(info.buildDir && info.debugSrcDir, 'build-info.json names the build directory and where it was mapped to')
  const addon = join(pkg, 'build', 'Release', 'better_sqlite3.node')
  t.ok(existsSync(addon), addon)

  const dwarf = run('readelf', ['--debug-dump=info', addon])
  t.equal(dwarf.status, 0, dwarf.stderr)
  const compDirs = [...dwarf.stdout.matchAll(/DW_AT_comp_dir\s*:.*?:\s*(\S+)\s*$/gm)].map(m => m[1])
  t.ok(compDirs.length > 0, `the addon has debug information (${compDirs.length} compilation units), as with Yocto's -g`)
  const unmapped = [...new Set(compDirs.filter(d => !d.startsWith(info.debugSrcDir)))]
  t.same(unmapped, [], `every DW_AT_comp_dir is under ${info.debugSrcDir} (LTO units included)`)

  const strings = run('strings', ['-a', addon])
  t.equal(strings.status, 0)
  const leaks = strings.stdout.split('\n').filter(l => l.includes(info.buildDir) || l.includes(join(pkg, '..', '..')))
  t.same(leaks.slice(0, 5), [], 'the build directory and the cache appear nowhere in the file')
  t.end()
})
