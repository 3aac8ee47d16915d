// kas.yml and every conf/*.yml fragment validate against kas's own JSON schema (kas 5.4, in
// ../shared/schemas/), every repository is pinned by url + branch + commit, and kas.lock.yml
// lists the same commits.
import { readFileSync, readdirSync, existsSync } from 'node:fs'
import { join } from 'node:path'
import { t, require, REPO, SHARED, run, which } from './helpers.mjs'

const YAML = require('yaml')
const SCHEMA = join(SHARED, 'schemas', 'kas-schema.json')
const files = ['kas.yml', 'kas.lock.yml', ...readdirSync(join(REPO, 'conf')).filter(f => f.endsWith('.yml')).sort().map(f => `conf/${f}`)]
const load = f => YAML.parse(readFileSync(join(REPO, f), 'utf8'))

// python3-jsonschema validates (Draft 7, as kas itself does); no npm package needed
const VALIDATE_PY = `
import json, sys, yaml, jsonschema
schema = json.load(open(sys.argv[1]))
cls = jsonschema.validators.validator_for(schema)
cls.check_schema(schema)
bad = 0
for f in sys.argv[2:]:
    errs = sorted(cls(schema).iter_errors(yaml.safe_load(open(f))), key=lambda e: list(e.path))
    for e in errs:
        bad += 1
        print("%s: %s: %s" % (f, "/".join(map(str, e.path)) or "(top)", e.message))
sys.exit(1 if bad else 0)
`

t.test('kas files validate against the kas 5.4 schema', t => {
  if (!existsSync(SCHEMA)) return t.skip(`no kas schema at ${SCHEMA} (the shared folder beside the checkout is absent)`)
  const py = which('python3')
  if (!py) return t.skip('python3 is not installed')
  const probe = run(py, ['-c', 'import jsonschema, yaml'])
  if (probe.status !== 0) return t.skip('python3-jsonschema and python3-yaml are needed: ' + probe.stderr.trim())
  const r = run(py, ['-c', VALIDATE_PY, SCHEMA, ...files.map(f => join(REPO, f))])
  t.equal(r.status, 0, 'schema errors:\n' + r.stdout + r.stderr)
  // the validator must be able to fail: a wrong type is reported
  const bad = run(py, ['-c', VALIDATE_PY.replace('yaml.safe_load(open(f))', '{"header": {"version": "x"}, "machine": 3}'), SCHEMA, join(REPO, 'kas.yml')])
  t.not(bad.status, 0, 'an invalid document is rejected')
  t.end()
})

t.test('kas.yml: header, machine, distro, target', t => {
  const k = load('kas.yml')
  t.ok(Number.isInteger(k.header.version) && k.header.version >= 14, 'header version >= 14 (branch/commit keys)')
  t.equal(k.machine, 'raspberrypi3-64')
  t.equal(k.distro, 'iot-gateway-os', 'distro set explicitly (kas >= 5.3 defaults to nodistro)')
  t.equal(k.target, 'iot-gateway-image')
  t.end()
})

t.test('every remote repository is pinned by url + branch + commit', t => {
  const k = load('kas.yml')
  const wanted = { bitbake: '2.18', 'openembedded-core': 'wrynose', 'meta-openembedded': 'wrynose', 'meta-raspberrypi': 'wrynose' }
  for (const [name, branch] of Object.entries(wanted)) {
    const r = k.repos[name]
    t.ok(r, `${name} is in kas.yml`)
    if (!r) continue
    t.match(r.url, /^https:\/\//, `${name}: https url`)
    t.equal(String(r.branch), branch, `${name}: branch ${branch}`)
    t.match(String(r.commit), /^[0-9a-f]{40}$/, `${name}: full commit id`)
  }
  for (const [name, r] of Object.entries(k.repos)) {
    if (r && r.url) t.ok(r.branch && /^[0-9a-f]{40}$/.test(String(r.commit)), `${name}: pinned`)
  }
  t.same(Object.keys(k.repos.bitbake.layers ?? {}), ['.'], 'bitbake is not a layer')
  t.same(Object.keys(k.repos['meta-openembedded'].layers).sort(), ['meta-networking', 'meta-oe', 'meta-python'])
  t.end()
})

t.test('kas.lock.yml lists the same commits as kas.yml', t => {
  const k = load('kas.yml')
  const lock = load('kas.lock.yml')
  const locked = lock.overrides?.repos ?? {}
  const remote = Object.entries(k.repos).filter(([, r]) => r && r.url)
  t.same(Object.keys(locked).sort(), remote.map(([n]) => n).sort(), 'one lock entry per remote repository')
  for (const [name, r] of remote) t.equal(locked[name]?.commit, r.commit, `${name}: lock == kas.yml`)
  t.end()
})

t.test('conf/ fragments change one thing each and never pin repositories', t => {
  for (const f of files.filter(f => f.startsWith('conf/'))) {
    const k = load(f)
    t.ok(k.header?.version >= 14, `${f}: header`)
    t.notOk(k.repos, `${f}: no repos (kas.yml pins them)`)
    for (const key of Object.keys(k.local_conf_header ?? {})) t.match(key, /^iot-gateway/, `${f}: local_conf_header key ${key} named after the layer`)
  }
  t.equal(load('conf/qemuarm64.yml').machine, 'qemuarm64')
  // runqemu appends "rw" to QB_KERNEL_ROOT unless it says "ro" or "rw": the QEMU root must be
  // read-only like the Pi's
  t.match(load('conf/qemuarm64.yml').local_conf_header['iot-gateway-qemu'], /^QB_KERNEL_ROOT = "\/dev\/vda1 ro"$/m, 'QEMU: root A, read-only')
  t.equal(load('conf/raspberrypi3.yml').machine, 'raspberrypi3')
  t.match(load('conf/debug.yml').local_conf_header['iot-gateway-debug'], /empty-root-password/)
  t.notMatch(readFileSync(join(REPO, 'kas.yml'), 'utf8'), /empty-root-password|allow-root-login/, 'no debug access in the base file')
  t.end()
})
