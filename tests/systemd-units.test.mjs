// Every systemd unit and drop-in the layer installs passes `systemd-analyze verify`, run against
// a fake root (temp dir) that holds the host's targets, stand-ins of the upstream units our
// drop-ins extend, and stub executables where the image has the real ones. Also the layer's
// unit style: [Service] directives sorted, no MemoryDenyWriteExecute on Node units (commented).
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { t, LAYER, MOSQUITTO_UPSTREAM_UNIT, run, unitRoot, which } from './helpers.mjs'

const GW = join(LAYER, 'recipes-gateway', 'iot-gateway', 'files')
const MOSQ = join(LAYER, 'recipes-connectivity', 'mosquitto', 'files')
const SYSCONF = join(LAYER, 'recipes-core', 'iot-gateway-system-conf', 'files')
const UNIT_RE = /\.(service|path|socket|timer|mount)$/
// templates are verified as the instances the image starts (iot-gateway-api-tunnel.service starts
// iot-gateway-api@ADDRESS:PORT.socket, which starts the proxy of the same instance)
const INSTANCE = { 'iot-gateway-api@.socket': 'iot-gateway-api@10.66.0.2:8080.socket', 'iot-gateway-api@.service': 'iot-gateway-api@10.66.0.2:8080.service' }
const gatewayFiles = readdirSync(GW).filter(f => UNIT_RE.test(f)).sort()
const gatewayUnits = gatewayFiles.map(f => INSTANCE[f] ?? f)
// `systemd-analyze verify FILE:NAME` verifies FILE loaded as NAME: the template as its instance
const verifyArgs = units => units.map(u => Object.keys(INSTANCE).find(f => INSTANCE[f] === u) ? `${Object.keys(INSTANCE).find(f => INSTANCE[f] === u)}:${u}` : u)
// units of iot-gateway-system-conf (its .in files are drop-ins, checked below)
const sysconfUnits = readdirSync(SYSCONF).filter(f => UNIT_RE.test(f)).sort()

// Stand-ins of upstream units extended by drop-ins (as installed by their wrynose recipes).
const UPSTREAM = {
  'mosquitto.service': MOSQUITTO_UPSTREAM_UNIT,
  // meta-oe recipes-connectivity/hostapd/hostapd/hostapd.service (after its sed)
  'hostapd.service': `[Unit]
Description=Hostapd IEEE 802.11 AP, IEEE 802.1X/WPA/WPA2/EAP/RADIUS Authenticator
After=network.target

[Service]
Type=forking
PIDFile=/run/hostapd.pid
ExecStart=/usr/sbin/hostapd /etc/hostapd.conf -P /run/hostapd.pid -B

[Install]
WantedBy=multi-user.target
`,
  // oe-core recipes-core/dropbear/dropbear/*.socket|*.service (after the recipe's sed, usrmerge)
  'dropbear.socket': `[Unit]
Conflicts=dropbear.service

[Socket]
ListenStream=22
Accept=yes

[Install]
WantedBy=sockets.target
Also=dropbearkey.service
`,
  'dropbear@.service': `[Unit]
Description=SSH Per-Connection Server
Wants=dropbearkey.service
After=syslog.target dropbearkey.service

[Service]
Environment="DROPBEAR_RSAKEY_DIR=/etc/dropbear"
EnvironmentFile=-/etc/default/dropbear
ExecStart=-/usr/sbin/dropbear -i -r \${DROPBEAR_RSAKEY_DIR}/dropbear_rsa_host_key $DROPBEAR_EXTRA_ARGS
ExecReload=/usr/bin/kill -HUP $MAINPID
StandardInput=socket
KillMode=process
`,
  'dropbearkey.service': `[Unit]
Description=SSH Key Generation
RequiresMountsFor=/var /var/lib
ConditionPathExists=!/etc/dropbear/dropbear_rsa_host_key
ConditionPathExists=!/var/lib/dropbear/dropbear_rsa_host_key

[Service]
Environment="DROPBEAR_RSAKEY_DIR=/etc/dropbear"
EnvironmentFile=-/etc/default/dropbear
Type=oneshot
ExecStart=/usr/bin/mkdir -p \${DROPBEAR_RSAKEY_DIR}
ExecStart=/usr/sbin/dropbearkey -t rsa -f \${DROPBEAR_RSAKEY_DIR}/dropbear_rsa_host_key $DROPBEAR_RSAKEY_ARGS
RemainAfterExit=yes
Nice=10
`
}
const STUB_EXECUTABLES = ['/usr/bin/iot-gateway', '/usr/bin/node', '/usr/sbin/nft', '/usr/sbin/mosquitto',
  '/usr/sbin/hostapd', '/usr/sbin/iot-gateway-grow-data', '/usr/libexec/iot-gateway-machine-id', '/usr/libexec/iot-gateway-data-alert', '/usr/libexec/iot-gateway-wifi',
  '/usr/libexec/iot-gateway-identity', '/usr/libexec/iot-gateway-api-tunnel', '/usr/libexec/iot-gateway-firewall-stats', '/usr/libexec/iot-gateway-firewall-confirm', '/usr/lib/systemd/systemd-socket-proxyd', '/usr/sbin/dropbear', '/usr/sbin/dropbearkey', '/usr/libexec/iot-gateway-ssh-hostkeys', '/usr/bin/kill', '/usr/bin/mkdir', '/bin/systemctl', '/bin/kill', '/bin/mkdir', '/bin/chown', '/bin/chmod', '/bin/sh']

function fakeRoot (t) {
  return unitRoot(t, 'iotgw-units-', UPSTREAM, STUB_EXECUTABLES)
}

function copyGw (u, unitDir) {
  const file = Object.keys(INSTANCE).find(f => INSTANCE[f] === u) ?? u
  copyFileSync(join(GW, file), join(unitDir, file))
}

function verify (root, unitDir, units) {
  const r = run('systemd-analyze', ['verify', `--root=${root}`, '--man=no', '--generators=no', ...units], { cwd: unitDir })
  // every complaint names one of our units or drop-ins; nothing but silence passes
  const complaints = (r.stdout + r.stderr).split('\n').filter(l => l.trim() !== '')
  return { status: r.status, complaints }
}

const haveAnalyze = which('systemd-analyze') !== null

t.test('units of the gateway recipe pass systemd-analyze verify', { skip: !haveAnalyze && 'systemd-analyze is not installed' }, t => {
  const { root, unitDir } = fakeRoot(t)
  for (const u of gatewayUnits) copyGw(u, unitDir)
  t.ok(gatewayUnits.length >= 6, `found ${gatewayUnits.join(' ')}`)
  const r = verify(root, unitDir, verifyArgs(gatewayUnits))
  t.equal(r.status, 0, 'exit status')
  t.same(r.complaints, [], 'no warnings')
  t.end()
})

t.test('units of the system-conf recipe pass systemd-analyze verify', { skip: !haveAnalyze && 'systemd-analyze is not installed' }, t => {
  const { root, unitDir } = fakeRoot(t)
  for (const u of sysconfUnits) copyFileSync(join(SYSCONF, u), join(unitDir, u))
  t.ok(sysconfUnits.includes('iot-gateway-grow-data.service'), `found ${sysconfUnits.join(' ')}`)
  const r = verify(root, unitDir, sysconfUnits)
  t.equal(r.status, 0, 'exit status')
  t.same(r.complaints, [], 'no warnings')
  t.end()
})

t.test('drop-ins of mosquitto and hostapd pass systemd-analyze verify', { skip: !haveAnalyze && 'systemd-analyze is not installed' }, t => {
  for (const psk of ['', 'ConditionPathExists=|/data/wifi/iot-gateway-lan.conf\nConditionPathExists=|/data/hostapd/wpa_psk']) {
    const { root, unitDir } = fakeRoot(t)
    for (const u of gatewayUnits) copyGw(u, unitDir)
    copyFileSync(join(SYSCONF, 'iot-gateway-wifi.service'), join(unitDir, 'iot-gateway-wifi.service'))
    mkdirSync(join(unitDir, 'mosquitto.service.d'))
    copyFileSync(join(MOSQ, 'mosquitto-iot-gateway.conf'), join(unitDir, 'mosquitto.service.d', 'iot-gateway.conf'))
    mkdirSync(join(unitDir, 'hostapd.service.d'))
    writeFileSync(join(unitDir, 'hostapd.service.d', 'iot-gateway.conf'),
      readFileSync(join(SYSCONF, 'hostapd-iot-gateway-dropin.conf.in'), 'utf8').replace('@PSK_CONDITION@', psk))
    const r = verify(root, unitDir, ['mosquitto.service', 'hostapd.service'])
    t.equal(r.status, 0, `exit status (psk condition: ${psk || 'none'})`)
    t.same(r.complaints, [], 'no warnings')
    // the drop-in really took effect
    const show = run('systemd-analyze', ['cat-config', `--root=${root}`, 'systemd/system/mosquitto.service'])
    if (show.status === 0) t.match(show.stdout, /iot-gateway\.conf/, 'drop-in is read')
  }
  t.end()
})

t.test('drop-ins of dropbear (iot-gateway-ssh) pass systemd-analyze verify', { skip: !haveAnalyze && 'systemd-analyze is not installed' }, t => {
  const SSH = join(LAYER, 'recipes-core', 'iot-gateway-ssh', 'files')
  const socket = readFileSync(join(SSH, 'dropbear-socket-iot-gateway.conf'), 'utf8')
  for (const listen of ['ListenStream=22', 'ListenStream=10.66.0.300:22']) {
    const { root, unitDir } = fakeRoot(t)
    const dropIns = {
      'dropbear.socket.d': socket.replace(/^ListenStream=22$/m, listen),
      'dropbear@.service.d': readFileSync(join(SSH, 'dropbear-service-iot-gateway.conf'), 'utf8'),
      'dropbearkey.service.d': readFileSync(join(SSH, 'dropbearkey-iot-gateway.conf'), 'utf8')
    }
    for (const [d, text] of Object.entries(dropIns)) {
      mkdirSync(join(unitDir, d))
      writeFileSync(join(unitDir, d, 'iot-gateway.conf'), text)
    }
    const r = verify(root, unitDir, ['dropbear.socket', 'dropbear@0.service', 'dropbearkey.service'])
    if (listen.includes('300')) {
      // the drop-ins are really read: a bad address in the socket's drop-in is reported
      t.match(r.complaints.join('\n'), /dropbear\.socket\.d\/iot-gateway\.conf.*10\.66\.0\.300/, 'a bad ListenStream in the drop-in is reported')
      continue
    }
    t.equal(r.status, 0, `exit status (${listen})`)
    t.same(r.complaints, [], 'no warnings')
  }
  t.end()
})

// The boot's transaction: every unit and drop-in of the layer in one fake root, and one start job
// that pulls in what a boot does (the targets and our units). Ordering cycles only show up here (a
// unit verified alone has no sockets.target or firewall in its transaction); at boot systemd breaks
// a cycle by dropping a start job, which can be the firewall's, the tunnel's or SSH's.
t.test('the whole layer at boot: no ordering cycle', { skip: !haveAnalyze && 'systemd-analyze is not installed' }, t => {
  const { root, unitDir } = fakeRoot(t)
  const PROV = join(LAYER, 'recipes-core', 'iot-gateway-provision', 'files')
  const SSH = join(LAYER, 'recipes-core', 'iot-gateway-ssh', 'files')
  for (const u of gatewayUnits) copyGw(u, unitDir)
  for (const u of sysconfUnits) copyFileSync(join(SYSCONF, u), join(unitDir, u))
  copyFileSync(join(PROV, 'iot-gateway-provision.service'), join(unitDir, 'iot-gateway-provision.service'))
  mkdirSync(join(root, 'usr/libexec'), { recursive: true })
  writeFileSync(join(root, 'usr/libexec/iot-gateway-provision'), '#!/bin/sh\n', { mode: 0o755 })
  const dropIns = {
    'mosquitto.service.d': readFileSync(join(MOSQ, 'mosquitto-iot-gateway.conf'), 'utf8'),
    'hostapd.service.d': readFileSync(join(SYSCONF, 'hostapd-iot-gateway-dropin.conf.in'), 'utf8').replace('@PSK_CONDITION@', ''),
    'dropbear.socket.d': readFileSync(join(SSH, 'dropbear-socket-iot-gateway.conf'), 'utf8'),
    'dropbear@.service.d': readFileSync(join(SSH, 'dropbear-service-iot-gateway.conf'), 'utf8'),
    'dropbearkey.service.d': readFileSync(join(SSH, 'dropbearkey-iot-gateway.conf'), 'utf8')
  }
  for (const [d, text] of Object.entries(dropIns)) {
    mkdirSync(join(unitDir, d))
    writeFileSync(join(unitDir, d, 'iot-gateway.conf'), text)
  }
  const ours = [...gatewayUnits, ...sysconfUnits, 'iot-gateway-provision.service', 'mosquitto.service', 'hostapd.service', 'dropbear.socket']
  writeFileSync(join(unitDir, 'boot-probe.target'), `[Unit]\nWants=sysinit.target sockets.target basic.target network-pre.target ${ours.join(' ')}\n`)
  const r = verify(root, unitDir, ['boot-probe.target'])
  const cycles = r.complaints.filter(l => /ordering cycle|deleted to break/.test(l))
  t.same(cycles, [], 'no ordering cycle in the boot transaction')
  t.same(r.complaints, [], 'nothing else either')
  // and the check can fail: the provisioning unit with the default dependencies closes a cycle
  writeFileSync(join(unitDir, 'iot-gateway-provision.service'),
    readFileSync(join(PROV, 'iot-gateway-provision.service'), 'utf8').replace(/^DefaultDependencies=no\n/m, ''))
  t.match(verify(root, unitDir, ['boot-probe.target']).complaints.join('\n'), /ordering cycle/, 'a cycle is reported')
  t.end()
})

t.test('the check can fail: unknown directive and missing executable are reported', { skip: !haveAnalyze && 'systemd-analyze is not installed' }, t => {
  const { root, unitDir } = fakeRoot(t)
  writeFileSync(join(unitDir, 'broken.service'), '[Service]\nType=oneshot\nFooBar=1\nExecStart=/usr/bin/does-not-exist\n')
  const r = verify(root, unitDir, ['broken.service'])
  t.ok(r.status !== 0 || r.complaints.length > 0, 'a broken unit is not silent')
  t.match(r.complaints.join('\n'), /FooBar|does-not-exist/)
  t.end()
})

function sections (text) {
  const out = {}
  let cur = null
  for (const line of text.split('\n')) {
    const m = /^\[(.+)\]$/.exec(line)
    if (m) { cur = m[1]; out[cur] = { keys: [], comments: [] }; continue }
    if (!cur) continue
    if (line.startsWith('#')) out[cur].comments.push(line)
    else if (/^[A-Za-z]+=/.test(line)) out[cur].keys.push(line.split('=')[0])
  }
  return out
}

t.test('unit style: [Service] sorted, Node units without MemoryDenyWriteExecute (and say why)', t => {
  const files = gatewayFiles.filter(u => u.endsWith('.service')).map(u => join(GW, u))
    .concat(sysconfUnits.filter(u => u.endsWith('.service')).map(u => join(SYSCONF, u)), join(MOSQ, 'mosquitto-iot-gateway.conf'))
  for (const f of files) {
    const text = readFileSync(f, 'utf8')
    const s = sections(text).Service
    t.ok(s, `${f}: has [Service]`)
    if (!s) continue
    // ExecStart= (reset) followed by ExecStart=... must stay in that order: compare names only
    const names = s.keys
    const sorted = [...names].sort((a, b) => a.localeCompare(b, 'en'))
    t.same(names, sorted, `${f.split('/').pop()}: [Service] directives sorted`)
    if (/ExecStart=\/usr\/bin\/iot-gateway/.test(text)) {
      t.notMatch(text, /^MemoryDenyWriteExecute=/m, `${f.split('/').pop()}: no MemoryDenyWriteExecute (V8 JIT)`)
      t.match(s.comments.join('\n'), /MemoryDenyWriteExecute=.*V8/, `${f.split('/').pop()}: says why it is omitted`)
    }
  }
  const main = readFileSync(join(GW, 'iot-gateway.service'), 'utf8')
  t.match(main, /^CapabilityBoundingSet=$/m, 'daemon: empty capability bounding set')
  t.match(main, /^User=iot-gateway$/m, 'daemon: own user')
  t.match(main, /^ReadWritePaths=\/data\/iot-gateway$/m, 'daemon: writes only /data/iot-gateway')
  t.match(main, /^NotifyAccess=all$/m, 'daemon: systemd-notify child may notify')
  t.notMatch(main, /^StateDirectory=/m, 'no StateDirectory= (would be tmpfs on the read-only image)')
  for (const u of ['iot-gateway-firewall.service', 'iot-gateway-wireguard.service']) {
    t.match(readFileSync(join(GW, u), 'utf8'), /^CapabilityBoundingSet=.*CAP_NET_ADMIN/m, `${u}: CAP_NET_ADMIN`)
  }
  t.end()
})

// systemd-analyze security --offline=true: the exposure score of a unit file (with its drop-ins)
// as systemd rates it. hostapd (raw 802.11 frames from untrusted sensors) and the CRL reload unit
// scored 9.6 ("UNSAFE") before their sandboxes; now they must stay near the gateway's own units.
// The measured scores are in the layer README ("Unit sandboxing").
const offlineSecurity = haveAnalyze && /--offline/.test(run('systemd-analyze', ['--help']).stdout)
t.test('exposure scores (systemd-analyze security --offline=true)', { skip: !offlineSecurity && 'systemd-analyze has no --offline (systemd < 250)' }, t => {
  const { root, unitDir } = fakeRoot(t)
  for (const u of gatewayUnits) copyGw(u, unitDir)
  for (const u of sysconfUnits) copyFileSync(join(SYSCONF, u), join(unitDir, u))
  mkdirSync(join(unitDir, 'hostapd.service.d'))
  writeFileSync(join(unitDir, 'hostapd.service.d', 'iot-gateway.conf'),
    readFileSync(join(SYSCONF, 'hostapd-iot-gateway-dropin.conf.in'), 'utf8').replace('@PSK_CONDITION@', 'ConditionPathExists=|/data/wifi/iot-gateway-lan.conf\nConditionPathExists=|/data/hostapd/wpa_psk'))
  const score = u => {
    const r = run('systemd-analyze', ['security', '--offline=true', `--root=${root}`, u], { cwd: unitDir })
    const m = /Overall exposure level for \S+: ([0-9.]+)/.exec(r.stdout + r.stderr)
    return m ? Number(m[1]) : NaN
  }
  const gateway = score('iot-gateway.service')
  t.ok(gateway <= 3, `iot-gateway.service: ${gateway}`)
  const limits = {
    'hostapd.service': 3.0,
    'iot-gateway-crl-reload.service': 2.0,
    'iot-gateway-firewall-stats.service': 4.0,
    'iot-gateway-firewall-confirm.service': 3.0,
    'iot-gateway-identity.service': 4.0,
    'iot-gateway-api@10.66.0.2:8080.service': 2.0,
    'iot-gateway-api-tunnel.service': 2.5,
    // a bind mount in the host's mount namespace: no namespace-based protection is possible
    'iot-gateway-machine-id.service': 4.0,
    'iot-gateway-data-alert.service': 2.0,
    // reads /data, writes under /run: no network, no capabilities
    'iot-gateway-wifi.service': 2.0
  }
  const scores = {}
  for (const [u, max] of Object.entries(limits)) {
    scores[u] = score(u)
    t.ok(scores[u] <= max, `${u}: ${scores[u]} (at most ${max}; the gateway: ${gateway})`)
  }
  t.comment(JSON.stringify({ 'iot-gateway.service': gateway, ...scores }))
  t.end()
})
