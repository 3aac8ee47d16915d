#!/usr/bin/env node
// gen-npm-inc.mjs - write the BitBake .inc that fetches the gateway's npm dependencies.
//
// BitBake's npm/npmsw fetchers are disabled in wrynose, so the gateway recipe fetches every npm
// tarball with the plain https fetcher. This script reads app/package-lock.json (npm lockfile v3)
// and prints one SRC_URI entry (registry URL, sha256, unpack directory) per package the bundle
// needs, the same idea as oe-core's cargo-update-recipe-crates.
//
// Which packages: the production dependency closure of the app, minus the packages that stay
// external to the esbuild bundle (--external, default better-sqlite3: its own recipe compiles the
// native addon), plus esbuild and its prebuilt binary packages for the build hosts BitBake supports
// (--esbuild-platform, default linux-x64 and linux-arm64). Each package is unpacked where npm would
// install it (the lockfile's key), so the esbuild run in the recipe sees the same node_modules tree
// as `npm ci` and writes the same bytes.
//
// Checksums: the lockfile only has sha512 integrity values, BitBake wants sha256. The tarball is
// taken from npm's content cache (verified against the lockfile's integrity); when it is missing
// there, `npm cache add name@version` downloads it through the user's npm configuration. With
// --offline, nothing is downloaded: a package that is neither in the cache nor in the existing
// .inc (same integrity) is an error. The .inc records each tarball's integrity, so regenerating
// an up-to-date .inc works offline and gives the same bytes.
//
// Usage:
//   scripts/gen-npm-inc.mjs [--lockfile app/package-lock.json] [--out FILE] [--offline] [--check]
//                           [--external NAME]... [--esbuild-platform linux-x64]...
// --out FILE writes FILE (default: stdout). --check compares with FILE and exits 1 when it differs.
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..')
export const DEFAULT_LOCKFILE = join(REPO, 'app', 'package-lock.json')
export const DEFAULT_OUT = join(REPO, 'meta-iot-gateway', 'recipes-gateway', 'iot-gateway', 'iot-gateway-npm.inc')
export const DEFAULT_EXTERNALS = ['better-sqlite3']
export const DEFAULT_ESBUILD_PLATFORMS = ['linux-x64', 'linux-arm64']
const REGISTRY = 'https://registry.npmjs.org'

/** Registry tarball URL of name@version (npm omits `resolved` in this project's lockfile). */
export function tarballUrl (name, version) {
  const base = name.startsWith('@') ? name.split('/')[1] : name
  return `${REGISTRY}/${name}/-/${base}-${version}.tgz`
}

/** The package name of a lockfile key: the part after its last "node_modules/". */
export function nameOfKey (key) {
  const i = key.lastIndexOf('node_modules/')
  return key.slice(i + 'node_modules/'.length)
}

/** Resolve `dep` required from the package at lockfile key `from`, the way Node looks it up. */
function resolveDep (packages, from, dep) {
  let base = from
  for (;;) {
    const key = base ? `${base}/node_modules/${dep}` : `node_modules/${dep}`
    if (packages[key]) return key
    if (!base) return null
    const i = base.lastIndexOf('/node_modules/')
    base = i < 0 ? '' : base.slice(0, i)
  }
}

/**
 * The lockfile keys the recipe must fetch, with their role: "bundle" (production closure, ends up
 * in gateway.cjs) or "tool" (esbuild, build host only).
 */
export function selectPackages (lock, { externals = DEFAULT_EXTERNALS, esbuildPlatforms = DEFAULT_ESBUILD_PLATFORMS } = {}) {
  if (lock.lockfileVersion !== 3 && lock.lockfileVersion !== 2) {
    throw new Error(`lockfile version ${lock.lockfileVersion} is not supported (need 2 or 3)`)
  }
  const packages = lock.packages
  const root = packages[''] || {}
  const selected = new Map()
  const queue = []
  const need = (from, deps, optional, role) => {
    for (const dep of Object.keys(deps || {})) {
      if (externals.includes(dep)) continue
      const key = resolveDep(packages, from, dep)
      if (!key) {
        if (optional) continue
        throw new Error(`${from || 'the app'} needs ${dep}, which is not in the lockfile`)
      }
      if (!selected.has(key)) {
        selected.set(key, role)
        queue.push(key)
      }
    }
  }
  need('', root.dependencies, false, 'bundle')
  need('', root.optionalDependencies, true, 'bundle')
  while (queue.length) {
    const key = queue.shift()
    const p = packages[key]
    need(key, p.dependencies, false, 'bundle')
    need(key, p.optionalDependencies, true, 'bundle')
    // npm >= 7 installs peers; one that is absent from the lockfile was optional
    need(key, p.peerDependencies, true, 'bundle')
    // Optional peers (peerDependenciesMeta only, e.g. debug -> supports-color) are probed with
    // require() in try/catch. esbuild bundles them when they are installed, and `npm ci` installs
    // them when anything else (even a dev tool) needs them: fetch them too, so the recipe's
    // node_modules gives the same bundle as the app's.
    need(key, Object.fromEntries(Object.entries(p.peerDependenciesMeta || {}).filter(([, m]) => m && m.optional).map(([n]) => [n, '*'])), true, 'bundle')
  }
  const esbuild = resolveDep(packages, '', 'esbuild')
  if (!esbuild) throw new Error('esbuild is not in the lockfile (the recipe bundles with it)')
  if (!selected.has(esbuild)) selected.set(esbuild, 'tool')
  for (const plat of esbuildPlatforms) {
    const key = resolveDep(packages, esbuild, `@esbuild/${plat}`)
    if (!key) throw new Error(`@esbuild/${plat} is not in the lockfile`)
    selected.set(key, 'tool')
  }
  const out = []
  for (const [key, role] of selected) {
    const p = packages[key]
    if (p.link) throw new Error(`${key} is a link (workspace); the recipe cannot fetch it`)
    if (!p.version || !p.integrity) throw new Error(`${key} has no version or integrity in the lockfile`)
    const name = p.name || nameOfKey(key) // "name" is set for aliased packages
    out.push({ key, name, version: p.version, integrity: p.integrity, license: p.license || '', role })
  }
  out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
  return out
}

/** BitBake-safe SRC_URI name of a lockfile key: node_modules/a/node_modules/@s/b -> a.s-b */
export function srcName (key) {
  return key.split('/node_modules/').map((seg) => seg.replace(/^node_modules\//, '').replace(/^@/, '').replace(/\//g, '-')).join('.')
}

function downloadName (name, version) {
  return `npm-${name.replace(/^@/, '').replace(/\//g, '-')}-${version}.tgz`
}

/** Path of a tarball in npm's content-addressed cache, from its sha512 integrity. */
export function cachePath (integrity, cacheDir) {
  const m = /sha512-([A-Za-z0-9+/=]+)/.exec(integrity)
  if (!m) return null
  const hex = Buffer.from(m[1], 'base64').toString('hex')
  return join(cacheDir, '_cacache', 'content-v2', 'sha512', hex.slice(0, 2), hex.slice(2, 4), hex.slice(4))
}

export function npmCacheDir () {
  if (process.env.npm_config_cache) return process.env.npm_config_cache
  try {
    return execFileSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim()
  } catch {
    return join(homedir(), '.npm')
  }
}

/** Read the tarball of `pkg` from npm's cache, verified against its sha512 integrity; null if absent. */
export function cachedTarball (pkg, cacheDir) {
  const p = cachePath(pkg.integrity, cacheDir)
  if (!p || !existsSync(p)) return null
  const data = readFileSync(p)
  const want = /sha512-([A-Za-z0-9+/=]+)/.exec(pkg.integrity)[1]
  if (createHash('sha512').update(data).digest('base64') !== want) {
    throw new Error(`npm cache entry for ${pkg.name}@${pkg.version} does not match the lockfile integrity`)
  }
  return data
}

/** sha256 and integrity recorded in an existing .inc, keyed by SRC_URI name. */
export function parseInc (text) {
  const known = new Map()
  const re = /^# (\S+)@(\S+) (sha512-\S+)\nSRC_URI\[([^\]]+)\.sha256sum\] = "([0-9a-f]{64})"$/gm
  let m
  while ((m = re.exec(text))) known.set(m[4], { sha256: m[5], name: m[1], version: m[2], integrity: m[3] })
  return known
}

// SPDX identifiers that npm packages still use but SPDX (and oe-core's common-licenses) renamed
const SPDX_RENAMED = { 'GPL-2.0': 'GPL-2.0-only', 'GPL-3.0': 'GPL-3.0-only', 'LGPL-2.1': 'LGPL-2.1-only', 'LGPL-3.0': 'LGPL-3.0-only' }

function spdxToBitbake (expr) {
  return expr
    .replace(/^\((.*)\)$/, '$1')
    .replace(/ OR /g, ' | ')
    .replace(/ AND /g, ' & ')
    .replace(/[A-Za-z0-9.+-]+/g, (id) => SPDX_RENAMED[id] || id)
}

/** Render the .inc text. `sha256Of(pkg)` returns the sha256 hex of the package's tarball. */
export function renderInc (pkgs, sha256Of, lockfileRel) {
  const L = []
  L.push(`# Generated by scripts/gen-npm-inc.mjs from ${lockfileRel}: do not edit by hand.`)
  L.push('# Regenerate after every change of the lockfile:  scripts/gen-npm-inc.mjs --out <this file>')
  L.push('# One plain https tarball per npm package (the npm fetchers are disabled in wrynose), unpacked')
  L.push('# where `npm ci` would install it. Above each checksum: name@version and the lockfile integrity.')
  L.push('')
  const licenses = [...new Set(pkgs.filter((p) => p.role === 'bundle' && p.license).map((p) => spdxToBitbake(p.license)))].sort()
  L.push('# Licences of the packages bundled into gateway.cjs (esbuild itself is only a build tool).')
  L.push(`NPM_BUNDLED_LICENSES = "${licenses.map((l) => (l.includes(' ') ? `(${l})` : l)).join(' & ')}"`)
  L.push('')
  L.push('SRC_URI += " \\')
  for (const p of pkgs) {
    const name = srcName(p.key)
    L.push(`    ${tarballUrl(p.name, p.version)};downloadfilename=${downloadName(p.name, p.version)};name=${name};subdir=\${NPM_UNPACK_SUBDIR}/${p.key};striplevel=1 \\`)
  }
  L.push('"')
  L.push('')
  for (const p of pkgs) {
    L.push(`# ${p.name}@${p.version} ${p.integrity}`)
    L.push(`SRC_URI[${srcName(p.key)}.sha256sum] = "${sha256Of(p)}"`)
  }
  L.push('')
  return L.join('\n')
}

export function generate ({ lockfile = DEFAULT_LOCKFILE, previous = '', offline = false, cacheDir = npmCacheDir(), externals, esbuildPlatforms, lockfileRel } = {}) {
  const lock = JSON.parse(readFileSync(lockfile, 'utf8'))
  const pkgs = selectPackages(lock, { externals, esbuildPlatforms })
  const known = parseInc(previous)
  const sha256Of = (p) => {
    let data = cachedTarball(p, cacheDir)
    if (!data) {
      const k = known.get(srcName(p.key))
      if (k && k.integrity === p.integrity && k.name === p.name && k.version === p.version) return k.sha256
      if (offline) throw new Error(`${p.name}@${p.version} is not in npm's cache (${cacheDir}) and not in the previous .inc; run without --offline`)
      execFileSync('npm', ['cache', 'add', `${p.name}@${p.version}`], { stdio: ['ignore', 'ignore', 'inherit'] })
      data = cachedTarball(p, cacheDir)
      if (!data) throw new Error(`npm cache add ${p.name}@${p.version} did not put the tarball with integrity ${p.integrity} into ${cacheDir}`)
    }
    return createHash('sha256').update(data).digest('hex')
  }
  return renderInc(pkgs, sha256Of, lockfileRel || relative(REPO, lockfile))
}

function main (argv) {
  const opts = { externals: [], esbuildPlatforms: [] }
  let out = null
  let check = false
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--lockfile') opts.lockfile = resolve(argv[++i])
    else if (a === '--out') out = resolve(argv[++i])
    else if (a === '--offline') opts.offline = true
    else if (a === '--check') check = true
    else if (a === '--external') opts.externals.push(argv[++i])
    else if (a === '--esbuild-platform') opts.esbuildPlatforms.push(argv[++i])
    else if (a === '-h' || a === '--help') {
      process.stdout.write(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1).filter((l) => l.startsWith('//')).map((l) => l.slice(3)).join('\n') + '\n')
      return 0
    } else throw new Error(`unknown argument ${a}`)
  }
  if (!opts.externals.length) opts.externals = DEFAULT_EXTERNALS
  if (!opts.esbuildPlatforms.length) opts.esbuildPlatforms = DEFAULT_ESBUILD_PLATFORMS
  if (check && !out) out = DEFAULT_OUT
  opts.previous = out && existsSync(out) ? readFileSync(out, 'utf8') : ''
  const text = generate(opts)
  if (check) {
    if (text !== opts.previous) {
      process.stderr.write(`${relative(process.cwd(), out)} is stale: run scripts/gen-npm-inc.mjs --out ${relative(process.cwd(), out)}\n`)
      return 1
    }
    return 0
  }
  if (out) writeFileSync(out, text)
  else process.stdout.write(text)
  return 0
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exitCode = main(process.argv.slice(2))
  } catch (e) {
    process.stderr.write(`gen-npm-inc: ${e.message}\n`)
    process.exitCode = 2
  }
}
