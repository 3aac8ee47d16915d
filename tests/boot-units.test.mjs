// The boot-time helpers of the image, run for real on the build host:
// - iot-gateway-machine-id: in private mount namespaces, each one a "boot" in which a stand-in
//   for systemd has bind-mounted a fresh transient id over the empty /etc/machine-id. The first
//   boot commits its id to /data; every later boot shows the saved one, read-only.
// - iot-gateway-data-alert: the alert text lands on the boot partition, in /run and in the journal
//   stream at priority crit, and the unit fails (degraded, not emergency).
// - iot-gateway-identity: on a first-boot identity made by the gateway's own `pki init` and `wg
//   pubkey`, the boot partition's file names the gateway id, the CA's SHA-256 fingerprint (as
//   openssl computes it) and the WireGuard public key; a second boot does not rewrite it.
// - iot-gateway-firewall-stats: in a network namespace with a gateway table, the shell script
//   writes the same nft.json as `iot-gateway firewall stats` (the daemon's contract).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, LAYER, run, which, isRoot } from './helpers.mjs'

const SYSCONF = join(LAYER, 'recipes-core', 'iot-gateway-system-conf', 'files')
const GW = join(LAYER, 'recipes-gateway', 'iot-gateway', 'files')
const BUNDLE = join(REPO, 'app', 'dist', 'gateway.cjs')
const SBIN_PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin:/usr/bin:/bin`

function scratch (t, prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

const unshare = which('unshare')
t.test('machine id: committed to /data on the first boot, the same on every later boot', { skip: !isRoot ? 'needs root (mount namespaces)' : !unshare && 'unshare is not installed' }, t => {
  const dir = scratch(t, 'iotgw-machine-id-')
  mkdirSync(join(dir, 'etc'))
  mkdirSync(join(dir, 'data'))
  writeFileSync(join(dir, 'etc', 'machine-id'), '') // the image's empty file
  const etc = join(dir, 'etc', 'machine-id')
  const saved = join(dir, 'data', 'machine-id')
  // one boot: systemd's transient id over the empty file, then the unit's script, then what
  // /etc/machine-id shows and whether it can be written
  const boot = () => {
    const transient = randomBytes(16).toString('hex')
    writeFileSync(join(dir, 'transient'), transient + '\n')
    const r = run(unshare, ['-m', '--propagation', 'private', 'sh', '-c',
      `mount --bind "${dir}/transient" "${etc}" && "$0" && echo "etc=$(cat "${etc}")" && if (echo 0 > "${etc}") 2>/dev/null; then echo writable; fi`,
      join(SYSCONF, 'iot-gateway-machine-id.sh')], {
      env: { ...process.env, PATH: SBIN_PATH, IOTGW_MACHINE_ID_ETC: etc, IOTGW_MACHINE_ID_SAVED: saved, IOTGW_MACHINE_ID_RESTART_JOURNALD: '0' }
    })
    return { ...r, transient, shown: /etc=(\S*)/.exec(r.stdout)?.[1] }
  }
  const b1 = boot()
  t.equal(b1.status, 0, `first boot:\n${b1.stderr}`)
  t.equal(readFileSync(saved, 'utf8'), b1.transient + '\n', 'first boot: its id is committed to /data')
  t.equal(b1.shown, b1.transient, 'first boot: /etc/machine-id shows it')
  t.notMatch(b1.stdout, /writable/, '/etc/machine-id is read-only')
  t.equal(statSync(saved).mode & 0o222, 0, 'the saved id is not writable')
  const b2 = boot()
  t.equal(b2.status, 0, `second boot:\n${b2.stderr}`)
  t.not(b2.transient, b1.transient)
  t.equal(b2.shown, b1.transient, 'second boot: /etc/machine-id shows the saved id, not the new transient one')
  t.equal(readFileSync(saved, 'utf8'), b1.transient + '\n', 'second boot: the saved id is unchanged')
  t.equal(readFileSync(etc, 'utf8'), '', 'outside the "boots" the image\'s file is still empty (nothing wrote to the root)')
  // a damaged file on /data: a new id is committed, with a message
  writeFileSync(saved, 'garbage\n')
  const b3 = boot()
  t.equal(b3.status, 0, b3.stderr)
  t.match(b3.stderr, /holds no valid machine id/)
  t.equal(b3.shown, b3.transient, 'after a damaged file: this boot\'s id is committed and shown')
  t.equal(readFileSync(saved, 'utf8'), b3.transient + '\n')
  t.end()
})

t.test('data alert: boot partition, /run, journal at crit, unit fails', t => {
  const dir = scratch(t, 'iotgw-data-alert-')
  mkdirSync(join(dir, 'boot'))
  const r = run('sh', [join(SYSCONF, 'iot-gateway-data-alert.sh')], {
    env: { ...process.env, PATH: SBIN_PATH, IOTGW_ALERT_BOOT: join(dir, 'boot'), IOTGW_ALERT_RUN: join(dir, 'run'), IOTGW_ALERT_DATA: '/data' }
  })
  t.equal(r.status, 1, 'exits 1: the unit shows as failed, the system as degraded')
  const alert = readFileSync(join(dir, 'boot', 'IOT-GATEWAY-ALERT.txt'), 'utf8')
  t.match(alert, /IOT-GATEWAY ALERT: the data partition is not mounted on \/data/)
  t.match(alert, /When \/data fails/, 'points to the recovery section of the README')
  t.ok(existsSync(join(dir, 'run', 'iot-gateway-data-failed')), '/run marker')
  const lines = r.stdout.trim().split('\n')
  t.ok(lines.length > 2 && lines.every(l => l.startsWith('<2>')), 'every journal line at priority crit (<2>)')
  const unit = readFileSync(join(SYSCONF, 'iot-gateway-data-alert.service'), 'utf8')
  t.match(unit, /^ConditionPathIsMountPoint=!\/data$/m, 'runs only when /data is not mounted')
  t.match(unit, /^StandardOutput=journal\+console$/m, 'on the console too')
  for (const wks of ['iot-gateway-rpi.wks.in', 'iot-gateway-qemu.wks.in']) {
    const line = readFileSync(join(LAYER, 'files', 'wic', wks), 'utf8').split('\n').find(l => l.startsWith('part /data '))
    const opts = /--fsoptions "([^"]*)"/.exec(line)[1].split(',')
    for (const o of ['nofail', 'x-systemd.before=local-fs.target', 'noatime']) t.ok(opts.includes(o), `${wks}: ${o}`)
    t.ok(opts.some(o => /^commit=\d+$/.test(o)), `${wks}: an explicit commit=`)
  }
  t.end()
})

t.test('identity: gateway id, CA fingerprint, WireGuard key on the boot partition', { skip: !existsSync(BUNDLE) && 'app/dist/gateway.cjs is not built (npm run build in app/)' }, t => {
  const dir = scratch(t, 'iotgw-identity-')
  const data = join(dir, 'data')
  mkdirSync(join(data, 'pki'), { recursive: true, mode: 0o2750 })
  mkdirSync(join(data, 'mosquitto'), { mode: 0o2770 })
  mkdirSync(join(dir, 'wireguard'), { mode: 0o700 })
  mkdirSync(join(dir, 'boot'))
  const cfg = join(dir, 'gateway.json')
  writeFileSync(cfg, JSON.stringify({ version: 1, gateway: { dataDir: data, id: 'gw-bench-7' }, wireguard: { privateKeyFile: join(dir, 'wireguard', 'private.key') } }))
  const env = { ...process.env, GATEWAY_CONFIG: '' }
  const init = run(process.execPath, [BUNDLE, '--config', cfg, 'pki', 'init'], { env })
  t.equal(init.status, 0, init.stderr)
  const identity = () => run('sh', [join(GW, 'iot-gateway-identity.sh'), cfg], {
    env: { ...env, PATH: SBIN_PATH, IOTGW_IDENTITY_BOOT: join(dir, 'boot'), IOTGW_IDENTITY_RUN: join(dir, 'run', 'identity.txt'), IOTGW_IDENTITY_CLI: `${process.execPath} ${BUNDLE}`, IOTGW_IDENTITY_SSH_KEY: join(dir, 'none') }
  })
  const r = identity()
  t.equal(r.status, 0, r.stderr)
  const file = join(dir, 'boot', 'iot-gateway-identity.txt')
  const text = readFileSync(file, 'utf8')
  t.equal(r.stdout, text, 'the console shows what the boot partition holds')
  const field = k => new RegExp(`^${k}: (.*)$`, 'm').exec(text)?.[1]
  t.equal(field('gateway-id'), 'gw-bench-7')
  const wg = run(process.execPath, [BUNDLE, '--config', cfg, 'wg', 'pubkey'], { env }).stdout.trim()
  t.match(wg, /^[A-Za-z0-9+/]{43}=$/, 'a WireGuard public key')
  t.equal(field('wireguard-public-key'), wg)
  const openssl = which('openssl')
  if (openssl) {
    const fp = run(openssl, ['x509', '-noout', '-fingerprint', '-sha256', '-in', join(data, 'pki', 'ca.crt')]).stdout.trim().split('=')[1]
    t.equal(field('ca-sha256'), fp, 'the CA fingerprint as openssl computes it')
  } else {
    t.match(field('ca-sha256'), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/, 'a SHA-256 fingerprint')
  }
  t.equal(readFileSync(join(dir, 'run', 'identity.txt'), 'utf8'), text, '/run copy')
  const direct = run(process.execPath, [BUNDLE, '--config', cfg, 'identity'], { env })
  t.equal(direct.stdout, `gateway-id: gw-bench-7\nwireguard-public-key: ${wg}\nca-sha256: ${field('ca-sha256')}\n`, 'one process: `iot-gateway identity` prints those lines')
  const before = statSync(file)
  const again = identity()
  t.equal(again.status, 0, again.stderr)
  const after = statSync(file)
  t.same([after.ino, after.mtimeMs], [before.ino, before.mtimeMs], 'a second boot does not rewrite an unchanged file')
  // A configuration that does not load: the unit still writes what it knows, and says what it does not.
  writeFileSync(cfg, '{ not json')
  const broken = identity()
  t.equal(broken.status, 0, 'the boot goes on')
  t.match(broken.stdout, /^gateway-id: unavailable$/m)
  t.match(broken.stdout, /^ca-sha256: unavailable \(the configuration does not load\)$/m)
  t.match(broken.stdout, /^machine-id: /m)
  t.end()
})

const ip = which('ip')
const nft = which('nft')
t.test('firewall counters: the shell unit writes what `iot-gateway firewall stats` writes', {
  skip: !isRoot ? 'network namespaces need root' : !ip || !nft ? 'ip and nft are needed' : !existsSync(BUNDLE) && 'app/dist/gateway.cjs is not built'
}, t => {
  const ns = `iotgw-stats-${process.pid}`
  run(ip, ['netns', 'del', ns])
  const add = run(ip, ['netns', 'add', ns])
  if (add.status !== 0) return t.skip(`cannot create a network namespace: ${add.stderr.trim()}`)
  t.teardown(() => run(ip, ['netns', 'del', ns]))
  const dir = scratch(t, 'iotgw-stats-')
  const inNs = (cmd, args, opts) => run(ip, ['netns', 'exec', ns, cmd, ...args], { env: { ...process.env, PATH: SBIN_PATH }, ...opts })
  const script = join(GW, 'iot-gateway-firewall-stats.sh')
  // no table: an empty file, as the CLI writes it
  let r = inNs('sh', [script, dir])
  t.equal(r.status, 0, r.stderr)
  t.equal(readFileSync(join(dir, 'nft.json'), 'utf8'), '', 'no table: empty nft.json')
  const table = `table inet iot_gateway {
  counter closed_wan { packets 7 bytes 420 }
  counter scan_lan { packets 3 bytes 180 }
  set blocklist4 { type ipv4_addr; flags timeout; timeout 1h; elements = { 192.0.2.7 timeout 1h } }
  chain input { type filter hook input priority filter; policy accept; }
}
`
  r = inNs(nft, ['-f', '-'], { input: table })
  t.equal(r.status, 0, r.stderr)
  r = inNs('sh', [script, dir])
  t.equal(r.status, 0, r.stderr)
  const shell = readFileSync(join(dir, 'nft.json'), 'utf8')
  t.equal(statSync(join(dir, 'nft.json')).mode & 0o777, 0o644, 'readable by the daemon')
  const cfg = join(dir, 'gateway.json')
  writeFileSync(cfg, JSON.stringify({ version: 1 }))
  const cli = inNs(process.execPath, [BUNDLE, '--config', cfg, 'firewall', 'stats', '--stdout'], { env: { ...process.env, PATH: SBIN_PATH, GATEWAY_CONFIG: '' } })
  t.equal(cli.status, 0, cli.stderr)
  // a set element's "expires" counts down between the two listings; everything else is equal
  const steady = text => JSON.parse(text, (k, v) => k === 'expires' ? 'counting' : v)
  t.same(steady(shell), steady(cli.stdout), 'the same document as the Node command')
  const counters = JSON.parse(shell).nftables.filter(i => i.counter).map(i => [i.counter.name, i.counter.packets])
  t.same(counters.sort(), [['closed_wan', 7], ['scan_lan', 3]], 'the counters the daemon turns into metrics')
  t.notOk(existsSync(join(dir, `nft.json.${process.pid}.tmp`)), 'no temporary file left')
  const unit = readFileSync(join(GW, 'iot-gateway-firewall-stats.service'), 'utf8')
  t.match(unit, /^ExecStart=\/usr\/libexec\/iot-gateway-firewall-stats /m, 'the unit runs the script')
  t.notMatch(unit, /ExecStart=\/usr\/bin\/iot-gateway/, 'no Node.js start every 15 s')
  t.end()
})
