// The iot-gateway-time recipe: its units and drop-ins pass `systemd-analyze verify` against a fake
// root (as tests/systemd-units.test.mjs does for the other recipes), are ordered as the boot needs,
// and its scripts do what they say: the clock-advance script is run with its clock behind
// (libfaketime) and a stub in place of `date -s`; the first-boot wait with stubs of
// systemd-time-wait-sync.
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { t, LAYER, MOSQUITTO_UPSTREAM_UNIT, isRoot, run, unitRoot, which } from './helpers.mjs'

const TIME = join(LAYER, 'recipes-core', 'iot-gateway-time')
const FILES = join(TIME, 'files')
const GW = join(LAYER, 'recipes-gateway', 'iot-gateway', 'files')
const RECIPE = readFileSync(join(TIME, 'iot-gateway-time_1.0.bb'), 'utf8')

// systemd's own units as wrynose installs them, where the host lacks them
const TIMESYNCD = `[Unit]
Description=Network Time Synchronization
DefaultDependencies=no
After=systemd-sysusers.service
Before=time-set.target sysinit.target shutdown.target
Conflicts=shutdown.target
Wants=time-set.target

[Service]
AmbientCapabilities=CAP_SYS_TIME
CapabilityBoundingSet=CAP_SYS_TIME
ExecStart=!!/usr/lib/systemd/systemd-timesyncd
ProtectSystem=strict
StateDirectory=systemd/timesync
Type=notify
User=systemd-timesync

[Install]
WantedBy=sysinit.target
`
const STUBS = ['/usr/bin/iot-gateway', '/usr/sbin/mosquitto', '/usr/libexec/iot-gateway-clock-advance', '/usr/libexec/iot-gateway-time-wait',
  '/usr/lib/systemd/systemd-timesyncd', '/bin/kill', '/bin/mkdir', '/bin/sh']

/** Where the recipe installs each file (from its do_install), so the test follows the recipe. */
function installed () {
  const out = {}
  for (const m of RECIPE.matchAll(/install -D -m 0644 \$\{UNPACKDIR\}\/(\S+) \$\{D\}\$\{systemd_system_unitdir\}\/(\S+)/g)) out[m[2]] = m[1]
  return out
}

function fakeRoot (t) {
  const { root, unitDir } = unitRoot(t, 'iotgw-time-', { 'mosquitto.service': MOSQUITTO_UPSTREAM_UNIT, 'systemd-timesyncd.service': TIMESYNCD }, STUBS)
  for (const u of ['iot-gateway.service', 'iot-gateway-firstboot.service', 'iot-gateway-wireguard.service', 'iot-gateway-firewall.service', 'iot-gateway-firewall-fallback.service']) {
    if (existsSync(join(GW, u))) copyFileSync(join(GW, u), join(unitDir, u))
  }
  for (const [dest, src] of Object.entries(installed())) {
    mkdirSync(dirname(join(unitDir, dest)), { recursive: true })
    copyFileSync(join(FILES, src), join(unitDir, dest))
  }
  return { root, unitDir }
}

function verify (root, unitDir, units) {
  const r = run('systemd-analyze', ['verify', `--root=${root}`, '--man=no', '--generators=no', ...units], { cwd: unitDir })
  return { status: r.status, complaints: (r.stdout + r.stderr).split('\n').filter(l => l.trim() !== '') }
}

const haveAnalyze = which('systemd-analyze') !== null
const UNITS = ['iot-gateway-clock-advance.service', 'iot-gateway-time-wait.service', 'mosquitto.service', 'iot-gateway-firstboot.service', 'iot-gateway.service', 'systemd-timesyncd.service']

t.test('the recipe installs every file it lists, and enables the clock advance', t => {
  const srcs = [...RECIPE.matchAll(/^\s+file:\/\/(\S+) \\$/gm)].map(m => m[1])
  t.same(srcs.sort(), readdirSync(FILES).sort(), 'SRC_URI lists exactly the files/ folder')
  for (const s of srcs) t.match(RECIPE, new RegExp(`\\$\\{UNPACKDIR\\}/${s.replace(/\./g, '\\.')} `), `${s} is installed`)
  t.same(Object.keys(installed()).sort(), ['iot-gateway-clock-advance.service', 'iot-gateway-firstboot.service.d/iot-gateway-time.conf',
    'iot-gateway-time-wait.service', 'iot-gateway.service.d/iot-gateway-time.conf', 'mosquitto.service.d/iot-gateway-time.conf',
    'systemd-timesyncd.service.d/iot-gateway.conf'])
  t.match(RECIPE, /^SYSTEMD_SERVICE:\$\{PN\} = "iot-gateway-clock-advance.service"$/m)
  t.end()
})

t.test('units and drop-ins pass systemd-analyze verify', { skip: !haveAnalyze && 'systemd-analyze is not installed' }, t => {
  const { root, unitDir } = fakeRoot(t)
  const r = verify(root, unitDir, UNITS)
  t.equal(r.status, 0, 'exit status')
  t.same(r.complaints, [], 'no warnings')
  t.end()
})

t.test('the check can fail: a broken drop-in of ours is reported', { skip: !haveAnalyze && 'systemd-analyze is not installed' }, t => {
  const { root, unitDir } = fakeRoot(t)
  writeFileSync(join(unitDir, 'mosquitto.service.d', 'iot-gateway-time.conf'), '[Unit]\nAfter=iot-gateway-clock-advance.service\nFooBar=1\n')
  const r = verify(root, unitDir, ['mosquitto.service'])
  t.match(r.complaints.join('\n'), /iot-gateway-time\.conf.*FooBar/, 'the drop-in is read and its error reported')
  t.end()
})

t.test('boot order: the clock is advanced before the broker, the gateway, the first boot and the tunnel', { skip: !haveAnalyze && 'systemd-analyze is not installed' }, t => {
  const { root } = fakeRoot(t)
  // what systemd itself makes of the files (drop-ins merged), not a text search
  const show = u => {
    const r = run('systemd-analyze', ['cat-config', `--root=${root}`, `systemd/system/${u}`])
    t.equal(r.status, 0, `cat-config ${u}`)
    const keys = {}
    for (const line of r.stdout.split('\n')) {
      const m = /^([A-Za-z]+)=(.*)$/.exec(line)
      if (m) keys[m[1]] = [...(keys[m[1]] ?? []), ...m[2].split(/\s+/).filter(Boolean)]
    }
    return keys
  }
  const adv = show('iot-gateway-clock-advance.service')
  for (const u of ['mosquitto.service', 'iot-gateway.service', 'iot-gateway-firstboot.service', 'iot-gateway-wireguard.service', 'systemd-networkd.service', 'systemd-timesyncd.service', 'time-set.target']) {
    t.ok(adv.Before.includes(u), `clock advance: Before=${u}`)
  }
  t.same(adv.CapabilityBoundingSet, ['CAP_DAC_READ_SEARCH', 'CAP_SYS_TIME'], 'only CAP_SYS_TIME, and reading the gateway\'s 0750 folders')
  t.notOk(adv.Requires, 'does not require /data (a failed mount must not stop the boot)')
  const mosq = show('mosquitto.service')
  t.ok(mosq.After.includes('iot-gateway-clock-advance.service') && mosq.Wants.includes('iot-gateway-clock-advance.service'), 'mosquitto: after and wants the advance')
  const first = show('iot-gateway-firstboot.service')
  t.ok(first.After.includes('iot-gateway-time-wait.service') && first.Wants.includes('iot-gateway-time-wait.service'), 'first boot: after the bounded wait for a sync')
  const wait = show('iot-gateway-time-wait.service')
  t.same(wait.ConditionPathExists, ['!/data/iot-gateway/pki/ca.key'], 'the wait is for the first boot only')
  t.same(wait.TimeoutStartSec, ['150'], 'and bounded')
  t.match(readFileSync(join(FILES, 'iot-gateway-time-wait.service'), 'utf8'), /ExecStart=\/usr\/libexec\/iot-gateway-time-wait 120$/m, 'the script waits 120 s, under the unit\'s timeout')
  const ts = show('systemd-timesyncd.service')
  t.same(ts.BindPaths, ['-/data/timesync:/var/lib/systemd/timesync'], 'timesyncd keeps its clock file on /data (optional: /data may be missing)')
  t.match(readFileSync(join(FILES, 'iot-gateway-time.tmpfiles'), 'utf8'), /^d \/data\/timesync 0755 systemd-timesync systemd-timesync -$/m, 'owned by timesyncd\'s user')
  const gw = show('iot-gateway.service')
  t.ok(gw.After.includes('iot-gateway-clock-advance.service'), 'the gateway after the advance')
  t.end()
})

// ---- the scripts ----

const LIBFAKETIME = (() => {
  for (const d of ['/usr/lib', ...readdirSync('/usr/lib').filter(x => x.includes('-linux-')).map(x => join('/usr/lib', x))]) {
    if (existsSync(join(d, 'faketime', 'libfaketime.so.1'))) return join(d, 'faketime', 'libfaketime.so.1')
  }
  return null
})()

/**
 * Runs the clock-advance script with the clock shifted by `shift` seconds; returns its output and the
 * time it would set. `caps`: run as root with only these capabilities (setpriv), as the unit does.
 */
function advance (t, data, shift, caps) {
  const setLog = join(data, '..', 'set.log')
  rmSync(setLog, { force: true })
  const stub = join(data, '..', 'set-clock')
  writeFileSync(stub, `#!/bin/sh\necho "$1" >> '${setLog}'\n`)
  chmodSync(stub, 0o755)
  // NO_FAKE_STAT: files keep their real modification times, as on a Pi whose clock starts behind.
  const env = { ...process.env, IOTGW_CLOCK_DATA: data, IOTGW_CLOCK_SET: stub, LD_PRELOAD: LIBFAKETIME, FAKETIME: shift >= 0 ? `+${shift}` : String(shift), NO_FAKE_STAT: '1' }
  const r = caps === undefined
    ? run('sh', [join(FILES, 'iot-gateway-clock-advance.sh')], { env })
    : run('setpriv', ['--inh-caps=-all', '--ambient-caps=-all', `--bounding-set=-all${caps.map(c => ',+' + c.replace(/^CAP_/, '').toLowerCase()).join('')}`,
      'sh', join(FILES, 'iot-gateway-clock-advance.sh')], { env })
  t.equal(r.status, 0, `exit 0 (${r.stdout.trim()}${r.stderr.trim()})`)
  return { out: r.stdout, set: existsSync(setLog) ? readFileSync(setLog, 'utf8').trim() : null }
}

t.test('the clock-advance script moves a clock that is behind to the newest saved time, never back', { skip: LIBFAKETIME === null && 'libfaketime is not installed (scripts/install-deps.sh)' }, t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-clock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const data = join(dir, 'data')
  t.same(advance(t, data, -30 * 86400).set, null, 'nothing on /data (first boot): left alone')

  const now = Math.floor(Date.now() / 1000)
  mkdirSync(join(data, 'iot-gateway', 'clock'), { recursive: true })
  mkdirSync(join(data, 'iot-gateway', 'pki'), { recursive: true })
  mkdirSync(join(data, 'timesync'), { recursive: true })
  writeFileSync(join(data, 'iot-gateway', 'clock', 'latest-known'), `${now - 600}\n`)
  let r = advance(t, data, -30 * 86400)
  t.equal(r.set, `@${now - 600}`, '30 days behind: moved to the gateway\'s latest known time')
  t.match(r.out, /behind the latest known time \(.*latest-known\): moving it forward/)

  writeFileSync(join(data, 'timesync', 'clock'), '')
  utimesSync(join(data, 'timesync', 'clock'), now - 300, now - 300)
  t.equal(advance(t, data, -7200).set, `@${now - 300}`, 'timesyncd\'s clock file is newer: its time')

  for (const f of ['ca.crt', 'broker.crt', 'crl.pem']) writeFileSync(join(data, 'iot-gateway', 'pki', f), 'x')
  utimesSync(join(data, 'iot-gateway', 'pki', 'crl.pem'), now - 60, now - 60)
  utimesSync(join(data, 'iot-gateway', 'pki', 'ca.crt'), now - 9000, now - 9000)
  utimesSync(join(data, 'iot-gateway', 'pki', 'broker.crt'), now - 9000, now - 9000)
  t.equal(advance(t, data, -7200).set, `@${now - 60}`, 'a CRL written later: its time (never before its thisUpdate)')

  r = advance(t, data, 0)
  t.same(r.set, null, 'a clock that is not behind is left alone')
  t.match(r.out, /is not behind the latest known time .*left alone/)
  t.same(advance(t, data, 365 * 86400).set, null, 'a clock ahead is never moved back (NTP does that)')

  writeFileSync(join(data, 'iot-gateway', 'clock', 'latest-known'), '99999999999999999999; rm -rf /\n')
  t.equal(advance(t, data, -7200).set, `@${now - 60}`, 'a garbled latest-known file is ignored')
  t.end()
})

t.test('with the unit\'s capabilities only, root reads the gateway\'s 0750 folders', { skip: (LIBFAKETIME === null && 'libfaketime is not installed') || (!isRoot && 'needs root (setpriv, chown)') || (!which('setpriv') && 'setpriv is not installed') }, t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-clock-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const data = join(dir, 'data')
  const clockDir = join(data, 'iot-gateway', 'clock')
  mkdirSync(clockDir, { recursive: true })
  const now = Math.floor(Date.now() / 1000)
  writeFileSync(join(clockDir, 'latest-known'), `${now}\n`, { mode: 0o640 })
  // as on the image: the gateway's user (here: nobody), umask 0027
  for (const p of [join(data, 'iot-gateway'), clockDir]) { chownSync(p, 65534, 65534); chmodSync(p, 0o750) }
  chownSync(join(clockDir, 'latest-known'), 65534, 65534)
  const unit = readFileSync(join(FILES, 'iot-gateway-clock-advance.service'), 'utf8')
  const caps = /^CapabilityBoundingSet=(.*)$/m.exec(unit)[1].split(/\s+/)
  t.same(advance(t, data, -7200, caps.filter(c => c !== 'CAP_DAC_READ_SEARCH')).set, null, 'without CAP_DAC_READ_SEARCH the saved time is out of reach (the check can fail)')
  t.equal(advance(t, data, -7200, caps).set, `@${now}`, 'with the unit\'s capabilities it is read')
  t.end()
})

t.test('the first-boot wait: a sync ends it; without one it logs the fallback and lets the boot go on', t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-wait-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const synced = join(dir, 'synced')
  writeFileSync(synced, '#!/bin/sh\nexit 0\n')
  const never = join(dir, 'never')
  // stands for systemd-time-wait-sync on a site that blocks NTP: waits until killed (by timeout)
  writeFileSync(never, '#!/bin/sh\nexec sleep 600\n')
  chmodSync(synced, 0o755)
  chmodSync(never, 0o755)
  const script = join(FILES, 'iot-gateway-time-wait.sh')
  let r = run('sh', [script, '5'], { env: { ...process.env, IOTGW_TIME_WAIT_SYNC: synced } })
  t.equal(r.status, 0)
  t.match(r.stdout, /^clock synchronised: /)
  r = run('sh', [script, '1'], { env: { ...process.env, IOTGW_TIME_WAIT_SYNC: never } })
  t.equal(r.status, 0, 'the boot goes on')
  t.match(r.stdout, /^<4>no time sync within 1 s \(is UDP 123 blocked\?\): the first certificates are dated from the clock as it is/, 'a warning in the journal says why')
  t.end()
})
