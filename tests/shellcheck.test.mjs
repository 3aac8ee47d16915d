// shellcheck over every shell script of the repository: scripts/*.sh and the layer's *.sh files.
// Sourced files are followed (-x, relative to the script), so variables set in disk-checks.sh and
// used by flash.sh are seen as set.
//
// EXCLUDED lists findings that are known and owned elsewhere: per file, the shellcheck codes allowed
// there, nothing else. Keep it minimal: a new kind of finding in those files still fails, and so does
// an entry that no longer matches anything (remove it once the file is fixed).
import { existsSync, readdirSync, statSync } from 'node:fs'
import { join, relative } from 'node:path'
import { LAYER, REPO, run, t, which } from './helpers.mjs'

const EXCLUDED = {
  'scripts/disk-checks.sh': ['SC2148', 'SC2012'], // a sourced file without a shell directive
  'scripts/reflash.sh': ['SC2046', 'SC2015', 'SC2086'],
  'meta-iot-gateway/recipes-core/iot-gateway-system-conf/files/iot-gateway-grow-data.sh': ['SC2015', 'SC2046'],
  // Files from parallel branches (checked once merged; an entry for a file not in the tree is ignored).
  'meta-iot-gateway/recipes-gateway/iot-gateway/files/iot-gateway-firewall-stats.sh': ['SC2015'],
  'scripts/standin.sh': ['SC2015'],
  'scripts/standin-rootfs.sh': ['SC2016']
}

function shellFiles (dir) {
  const out = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...shellFiles(p))
    else if (name.endsWith('.sh')) out.push(p)
  }
  return out
}

const files = [
  ...readdirSync(join(REPO, 'scripts')).filter(f => f.endsWith('.sh')).map(f => join(REPO, 'scripts', f)),
  ...shellFiles(LAYER)
].map(f => relative(REPO, f)).sort()

t.test('shellcheck finds nothing outside the documented exclusions', t => {
  // install-deps.sh installs it: a lint that skips itself when the tool is missing could never fail.
  t.ok(which('shellcheck'), 'shellcheck is installed (scripts/install-deps.sh)')
  if (!which('shellcheck')) return t.end()
  t.ok(files.length >= 10, `${files.length} shell files found`)
  const r = run('shellcheck', ['-x', '-P', 'SCRIPTDIR', '-f', 'json1', ...files], { cwd: REPO })
  t.ok(r.status === 0 || r.status === 1, `shellcheck ran: ${r.stderr}`)
  const { comments } = JSON.parse(r.stdout || '{"comments":[]}')
  const used = new Set()
  const findings = []
  for (const c of comments) {
    const file = c.file
    const code = `SC${c.code}`
    if ((EXCLUDED[file] ?? []).includes(code)) { used.add(`${file} ${code}`); continue }
    findings.push(`${file}:${c.line}:${c.column}: ${c.level}: ${c.message} [${code}]`)
  }
  t.same(findings, [], 'no findings')
  const stale = Object.entries(EXCLUDED).filter(([file]) => existsSync(join(REPO, file))).flatMap(([file, codes]) => codes.map(code => `${file} ${code}`)).filter(x => !used.has(x))
  t.same(stale, [], 'every exclusion still matches a finding (remove the ones fixed)')
  t.end()
})

t.test('the lint fails on a finding (control)', t => {
  if (!which('shellcheck')) return t.end()
  const r = run('shellcheck', ['-f', 'json1', '-'], { input: '#!/bin/sh\necho $1\n' })
  t.equal(r.status, 1)
  t.match(JSON.parse(r.stdout).comments, [{ code: 2086 }])
  t.end()
})
