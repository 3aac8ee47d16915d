// SSH of the image (recipes-core/iot-gateway-ssh), run as itself: the host-key script makes the
// keys; the exact dropbear command line of the drop-in serves connections through a socket in
// inetd mode (what dropbear.socket + dropbear@.service do), with Debian's dropbear and a real
// OpenSSH client. Root's home is a tmpfs in a private mount namespace holding the image's keys (what
// its authorized_keys link leads to before provisioning); /data/ssh in the command line points at
// the test's folder. The last test lays the recipe's files out as it installs them (the link, the
// tmpfiles.d line) and provisions the gateway's own keys.
import { spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, LAYER, isRoot, run, which, freePort, listening } from './helpers.mjs'

const FILES = join(LAYER, 'recipes-core', 'iot-gateway-ssh', 'files')
const dropIn = readFileSync(join(FILES, 'dropbear-service-iot-gateway.conf'), 'utf8')
const hostkeysScript = join(FILES, 'iot-gateway-ssh-hostkeys.sh')

/** The last ExecStart= of a unit file's text, split into words, with systemd's "-" prefix removed. */
function execStart (text) {
  const lines = text.split('\n').filter(l => /^ExecStart=./.test(l))
  if (lines.length === 0) throw new Error('no ExecStart= with a command')
  return lines[lines.length - 1].slice('ExecStart='.length).replace(/^-/, '').trim().split(/\s+/)
}

// The recipe's `python iot_gateway_ssh_prepare()` (a prefunc of do_install), run with a stand-in for
// BitBake's datastore: which keys it accepts.
const RECIPE = join(LAYER, 'recipes-core', 'iot-gateway-ssh', 'iot-gateway-ssh_1.0.bb')
const RUN_PREPARE = String.raw`
import json, os, re, sys
text = open(sys.argv[1]).read()
vals = dict(re.findall(r'^([A-Z_]+) \?= "([^"]*)"', text, re.M))
vals.update(json.loads(sys.argv[2]))
helper = re.search(r'^def iot_gateway_ssh_keys_path\(d\):\n(?:    .*\n)+', text, re.M).group(0)
body = re.search(r'^python iot_gateway_ssh_prepare\(\) \{\n(.*?)^\}', text, re.M | re.S).group(1)
anon = re.search(r'^python __anonymous\(\) \{\n(.*?)^\}', text, re.M | re.S).group(1)
class D:
    def getVar(self, k):
        return vals.get(k, '')
class SkipRecipe(Exception):
    pass
class Parse:
    SkipRecipe = SkipRecipe
class BB:
    parse = Parse
    def warn(self, msg): print('WARNING: ' + msg, file=sys.stderr)
    def fatal(self, msg): raise SystemExit('fatal: ' + msg)
ns = {'os': os}
exec(helper + 'def anonymous(d, bb):\n' + anon + 'def prepare(d, bb):\n' + body, ns)
try:
    ns['anonymous'](D(), BB())    # at parse time
except SkipRecipe as e:
    print('skipped: %s' % e, file=sys.stderr)
    sys.exit(3)
ns['prepare'](D(), BB())          # do_install
`

/** Runs the recipe's prepare step in `dir` with the key file text and knobs; returns what it wrote. */
function recipePrepare (dir, keysText, knobs = {}) {
  const unpack = join(dir, 'unpack')
  mkdirSync(unpack, { recursive: true })
  const work = mkdtempSync(join(dir, 'work-'))
  if (keysText !== null) writeFileSync(join(dir, 'keys'), keysText)
  const r = run('python3', ['-c', RUN_PREPARE, RECIPE, JSON.stringify({
    TOPDIR: dir, WORKDIR: work, UNPACKDIR: unpack, IOT_GATEWAY_SSH_AUTHORIZED_KEYS: 'keys', ...knobs
  })])
  const read = f => { try { return readFileSync(join(work, f), 'utf8') } catch { return null } }
  return { ...r, work, keys: read('authorized_keys') }
}

const missing = ['dropbear', 'dropbearkey', 'ssh', 'ssh-keygen', 'systemd-socket-activate', 'unshare'].filter(c => which(c) === null)
const skip = !isRoot
  ? 'needs root (a mount namespace with its own home for root)'
  : which('python3') === null
    ? 'python3 is not installed'
    : missing.length > 0 ? `not installed: ${missing.join(', ')} (scripts/install-deps.sh installs them)` : false

t.test('host keys: made once on /data, kept afterwards', { skip }, t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-ssh-keys-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const keys = join(dir, 'data', 'ssh')
  const first = run('sh', [hostkeysScript, keys])
  t.equal(first.status, 0, first.stderr)
  t.match(first.stdout, /made the ed25519 host key: SHA256:/)
  t.match(first.stdout, /made the ecdsa host key: SHA256:/)
  const before = ['ed25519', 'ecdsa'].map(k => readFileSync(join(keys, `dropbear_${k}_host_key`)))
  t.equal(run('stat', ['-c', '%a', keys]).stdout.trim(), '700', 'the key folder is root\'s alone')
  for (const k of ['ed25519', 'ecdsa']) t.equal(run('stat', ['-c', '%a', join(keys, `dropbear_${k}_host_key`)]).stdout.trim(), '600')
  const again = run('sh', [hostkeysScript, keys])
  t.equal(again.status, 0)
  t.equal(again.stdout, '', 'a second run makes nothing')
  t.same(['ed25519', 'ecdsa'].map(k => readFileSync(join(keys, `dropbear_${k}_host_key`))), before, 'the keys are unchanged')
  // a key lost (say, half-written before a power cut left only the .tmp) is made again, the other kept
  rmSync(join(keys, 'dropbear_ecdsa_host_key'))
  writeFileSync(join(keys, 'dropbear_ecdsa_host_key.tmp'), 'partial')
  const repair = run('sh', [hostkeysScript, keys])
  t.equal(repair.status, 0, repair.stderr)
  t.match(repair.stdout, /ecdsa/)
  t.notMatch(repair.stdout, /ed25519/)
  t.same(readFileSync(join(keys, 'dropbear_ed25519_host_key')), before[0])
  t.ok(run('dropbearkey', ['-y', '-f', join(keys, 'dropbear_ecdsa_host_key')]).status === 0, 'the new ecdsa key is a valid key')
  t.end()
})

t.test('dropbear as the drop-in runs it: public keys only, the host keys from /data', { skip }, async t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-ssh-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const keys = join(dir, 'data-ssh')
  t.equal(run('sh', [hostkeysScript, keys]).status, 0)

  // the operator's key (in authorized_keys) and a stranger's
  for (const who of ['operator', 'stranger']) {
    const r = run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', who, '-f', join(dir, who)])
    t.equal(r.status, 0, r.stderr)
  }
  const home = join(dir, 'root-home')
  mkdirSync(join(home, '.ssh'), { recursive: true, mode: 0o700 })
  chmodSync(home, 0o700)
  // root's authorized_keys as the recipe makes it from IOT_GATEWAY_SSH_AUTHORIZED_KEYS
  const made = recipePrepare(dir, readFileSync(join(dir, 'operator.pub'), 'utf8'))
  t.equal(made.status, 0, made.stderr)
  writeFileSync(join(home, '.ssh', 'authorized_keys'), made.keys, { mode: 0o600 })

  const cmd = execStart(dropIn).map(w => w.replaceAll('/data/ssh', keys))
  t.equal(cmd[0], '/usr/sbin/dropbear')
  t.ok(cmd.includes('-s'), 'password logins disabled (-s)')
  t.ok(cmd.includes('-i'), 'inetd mode: one process per connection from the socket')

  const start = async () => {
    const port = await freePort()
    // a private mount namespace: root's home is a tmpfs holding the image's .ssh
    const script = 'set -e; h=$(getent passwd 0 | cut -d: -f6); mount -t tmpfs -o mode=0700 tmpfs "$h"; cp -a "$HOME_SRC/.ssh" "$h/.ssh"; ' +
      'exec systemd-socket-activate --inetd -a -l "127.0.0.1:$PORT" "$@"'
    const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', ...cmd], {
      env: { ...process.env, HOME_SRC: home, PORT: String(port) },
      stdio: ['ignore', 'ignore', 'pipe']
    })
    let log = ''
    child.stderr.on('data', d => { log += d })
    // listening when a TCP connect succeeds
    for (let i = 0; i < 100; i++) {
      if (await listening(port)) break
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the socket activator exited: ${log}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    const stop = () => new Promise(resolve => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve()
      child.once('exit', resolve)
      child.kill('SIGTERM')
    })
    t.teardown(stop)
    return { port, stop, log: () => log }
  }

  const knownHosts = join(dir, 'known_hosts')
  const ssh = (port, identity, extra, ...command) => run('ssh', [
    '-p', String(port), '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10', '-o', `UserKnownHostsFile=${knownHosts}`,
    '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'IdentitiesOnly=yes', '-F', '/dev/null',
    ...(identity ? ['-i', identity] : []), ...extra, 'root@127.0.0.1', ...command
  ], { timeout: 30_000 })

  const server = await start()
  // first contact: the host key is learnt, and it is the one made on /data
  const ok = ssh(server.port, join(dir, 'operator'), ['-o', 'StrictHostKeyChecking=accept-new'], 'echo', 'logged-in-as-$(id -un)')
  t.equal(ok.status, 0, `the operator's key logs in: ${ok.stderr}`)
  t.equal(ok.stdout.trim(), 'logged-in-as-root')
  const served = run('ssh-keygen', ['-F', '[127.0.0.1]:' + server.port, '-f', knownHosts]).stdout
  const ours = run('dropbearkey', ['-y', '-f', join(keys, 'dropbear_ed25519_host_key')]).stdout.match(/ssh-ed25519 (\S+)/)
  t.ok(ours, 'dropbearkey prints the public host key')
  t.ok(ours && served.includes(ours[1]), 'the served host key is the one on /data')

  const stranger = ssh(server.port, join(dir, 'stranger'), ['-o', 'StrictHostKeyChecking=yes'], 'true')
  t.not(stranger.status, 0, 'a key not in authorized_keys is refused')
  t.match(stranger.stderr, /Permission denied \(publickey\)/, 'and the server offers public keys only')

  const password = ssh(server.port, null, ['-o', 'StrictHostKeyChecking=yes', '-o', 'PubkeyAuthentication=no',
    '-o', 'PreferredAuthentications=password,keyboard-interactive'], 'true')
  t.not(password.status, 0, 'no password login')
  t.match(password.stderr, /Permission denied \(publickey\)/, 'password and keyboard-interactive are not even offered')

  const forward = ssh(server.port, join(dir, 'operator'), ['-o', 'StrictHostKeyChecking=yes', '-o', 'ExitOnForwardFailure=yes',
    '-R', '127.0.0.1:0:127.0.0.1:9'], 'true')
  t.not(forward.status, 0, 'remote port forwarding is refused (-k)')
  t.match(forward.stderr, /forward/i)

  // a restart (a reboot; or a reflash, which keeps /data) serves the same identity: strict checking passes
  await server.stop()
  const again = await start()
  const known = readFileSync(knownHosts, 'utf8').replaceAll(`[127.0.0.1]:${server.port}`, `[127.0.0.1]:${again.port}`)
  writeFileSync(knownHosts, known)
  const back = ssh(again.port, join(dir, 'operator'), ['-o', 'StrictHostKeyChecking=yes'], 'true')
  t.equal(back.status, 0, `same host key after a restart: ${back.stderr}`)
  // and the check can fail: new host keys would be refused by the operator's known_hosts
  await again.stop()
  rmSync(keys, { recursive: true })
  t.equal(run('sh', [hostkeysScript, keys]).status, 0)
  const changed = await start()
  writeFileSync(knownHosts, known.replaceAll(`[127.0.0.1]:${again.port}`, `[127.0.0.1]:${changed.port}`))
  const refused = ssh(changed.port, join(dir, 'operator'), ['-o', 'StrictHostKeyChecking=yes'], 'true')
  t.not(refused.status, 0, 'a new host identity is noticed by the client')
  t.match(refused.stderr, /HOST IDENTIFICATION HAS CHANGED|Host key verification failed/)
})

t.test('the recipe accepts public keys only; SSH listens where a per-gateway tunnel address reaches it', { skip: which('python3') ? false : 'python3 is not installed' }, t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-ssh-recipe-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const ED = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ0aQ0n7Q0W4H0mC9yQZcW3o3vSg4h0gq4m8T5d9XkqB'
  const prepare = (keysText, knobs) => recipePrepare(dir, keysText, knobs)

  const ok = prepare(`# operators\n\n${ED} alice@laptop\nno-port-forwarding ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= bob\n`)
  t.equal(ok.status, 0, ok.stderr)
  t.equal(ok.keys, `# The operators of this gateway (IOT_GATEWAY_SSH_AUTHORIZED_KEYS at build time).\n${ED} alice@laptop\nno-port-forwarding ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY= bob\n`)
  t.notMatch(ok.stderr, /WARNING/)
  // The tunnel's address is each gateway's own (provisioning), so the shared image cannot name it:
  // the socket takes port 22 and the firewall (and its fallback ruleset) admits it on wg0 only.
  const socket = readFileSync(join(FILES, 'dropbear-socket-iot-gateway.conf'), 'utf8')
  t.same(socket.match(/^ListenStream=.*$/gm), ['ListenStream=', 'ListenStream=22'], 'the stock socket\'s port, whatever the tunnel\'s address')
  const fallback = readFileSync(join(LAYER, 'recipes-gateway', 'iot-gateway', 'files', 'fallback.nft'), 'utf8')
  t.match(fallback, /^\s*iifname "wg0" tcp dport \{ 22, 8080 \}/m, 'the fail-closed ruleset admits SSH on wg0 only')
  t.notMatch(fallback.replace(/^\s*iifname "wg0" tcp dport \{ 22, 8080 \}.*$/m, ''), /dport[^\n]*\b22\b/, 'and nowhere else')
  const wan = prepare(`${ED}\n`, { IOT_GATEWAY_SSH_FROM_WAN: '1' })
  t.equal(wan.status, 0, wan.stderr)
  t.match(wan.stderr, /WARNING: IOT_GATEWAY_SSH_FROM_WAN/)

  const refusals = [
    ['a private key', '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----\n', {}, /keys:1 is a PRIVATE key/],
    ['a line that is no key', `${ED}\nhello world\n`, {}, /keys:2 is not an OpenSSH public key line/],
    ['no key at all', '# nobody\n', {}, /holds no public key/],
    ['a missing file', null, { IOT_GATEWAY_SSH_AUTHORIZED_KEYS: 'no-such-file' }, /no-such-file is not a file/]
  ]
  for (const [what, text, knobs, reason] of refusals) {
    const r = prepare(text, knobs)
    t.not(r.status, 0, `${what}: the build stops`)
    t.match(r.stderr, reason, `${what}: the reason`)
    t.equal(r.keys, null, `${what}: nothing written`)
  }
  // unconfigured, the recipe skips itself at parse time (bitbake world goes on), with the reason
  const unset = prepare(`${ED}\n`, { IOT_GATEWAY_SSH_AUTHORIZED_KEYS: '' })
  t.equal(unset.status, 3, 'the knob unset: SkipRecipe, not a build failure')
  t.match(unset.stderr, /skipped: IOT_GATEWAY_SSH_AUTHORIZED_KEYS is not set/, 'the knob unset: the reason')
  t.notMatch(unset.stderr, /fatal:/, 'the knob unset: no bb.fatal')
  t.equal(unset.keys, null, 'the knob unset: nothing written')
  t.end()
})

// Where the keys come from, with the files laid out as the recipe installs them: the recipe's
// do_install and its tmpfiles.d run into an overlay of this machine's root in a private mount
// namespace (so /data, root's home and /usr/share are the image's paths, and nothing on the host
// changes), and Debian's dropbear serves from inside it. /data is a folder of this test, bind-mounted,
// so the real `iot-gateway provision import` writes into it from outside as the first boot would.
const BUNDLE = join(LAYER, '..', 'app', 'dist', 'gateway.cjs')
const recipeText = readFileSync(RECIPE, 'utf8')
const doInstall = recipeText.match(/^do_install\(\) \{\n(.*?)^\}/ms)[1]
t.test('dropbear reads /data/ssh/authorized_keys: the image\'s keys until provisioning writes the gateway\'s own', {
  skip: skip || (which('systemd-tmpfiles') === null
    ? 'systemd-tmpfiles is not installed'
    : readFileSync('/proc/filesystems', 'utf8').includes('overlay') ? (existsSync(BUNDLE) ? false : 'app/dist/gateway.cjs is not built (npm run build in app/)') : 'no overlayfs')
}, async t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-ssh-prov-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const who of ['imageop', 'fieldop', 'stranger']) {
    const r = run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', who, '-f', join(dir, who)])
    t.equal(r.status, 0, r.stderr)
  }
  const made = recipePrepare(dir, readFileSync(join(dir, 'imageop.pub'), 'utf8'))
  t.equal(made.status, 0, made.stderr)
  const work = made.work
  const data = join(dir, 'data')
  mkdirSync(data, { mode: 0o755 })
  const scratch = join(dir, 'scratch')
  mkdirSync(scratch)
  const port = await freePort()
  const cmd = execStart(dropIn)
  // Yocto's variables as on the board; ROOT_HOME is root's home in this machine's passwd (dropbear
  // looks it up there).
  const script = `set -e
S=$SCRATCH; mount -t tmpfs tmpfs "$S"; mkdir "$S/u" "$S/w" "$S/m"; M=$S/m
mount -t overlay overlay -o lowerdir=/,upperdir="$S/u",workdir="$S/w" "$M"
h=$(getent passwd 0 | cut -d: -f6)
mount -t tmpfs -o mode=0700 tmpfs "$M$h"
mkdir -p "$M/data"; mount --bind "$DATA" "$M/data"
mount --rbind /dev "$M/dev"; mount -t proc proc "$M/proc"
D=$M ROOT_HOME=$h WORKDIR=$WORK UNPACKDIR=$UNPACK datadir=/usr/share libexecdir=/usr/libexec \\
  nonarch_libdir=/usr/lib systemd_system_unitdir=/usr/lib/systemd/system sh -ec "$INSTALL"
chroot "$M" systemd-tmpfiles --create /usr/lib/tmpfiles.d/iot-gateway-ssh.conf
chroot "$M" /usr/libexec/iot-gateway-ssh-hostkeys /data/ssh >/dev/null
echo laid-out >&2
exec chroot "$M" systemd-socket-activate --inetd -a -l "127.0.0.1:$PORT" "$@"`
  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, 'sh', ...cmd], {
    env: { ...process.env, SCRATCH: scratch, DATA: data, WORK: work, UNPACK: FILES, INSTALL: doInstall, PORT: String(port) },
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let log = ''
  child.stderr.on('data', d => { log += d })
  t.teardown(() => new Promise(resolve => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once('exit', resolve)
    child.kill('SIGTERM')
  }))
  for (let i = 0; i < 200 && !(await listening(port)); i++) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`the layout or the socket activator failed: ${log}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.match(log, /laid-out/, 'the recipe\'s files are installed')

  const knownHosts = join(dir, 'known_hosts')
  const login = who => run('ssh', ['-p', String(port), '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10',
    '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'StrictHostKeyChecking=accept-new',
    '-o', 'IdentitiesOnly=yes', '-F', '/dev/null', '-i', join(dir, who), 'root@127.0.0.1', 'echo', 'in-as-$(id -un)'], { timeout: 30_000 })
  const keysOnData = join(data, 'ssh', 'authorized_keys')

  // A card flashed without provisioning: the link on /data leads to the image's keys.
  t.equal(run('readlink', [keysOnData]).stdout.trim(), '/usr/share/iot-gateway-ssh/authorized_keys', 'tmpfiles.d links /data/ssh/authorized_keys to the image\'s keys')
  let r = login('imageop')
  t.equal(r.status, 0, `unprovisioned: the image's key logs in: ${r.stderr} ${log}`)
  t.equal(r.stdout.trim(), 'in-as-root')
  t.not(login('fieldop').status, 0, 'unprovisioned: a key that is not in the image is refused')

  // First boot with a provisioning file: the real import writes the gateway's own list over the link.
  const conf = join(dir, 'gateway.json')
  writeFileSync(conf, JSON.stringify({ version: 1, gateway: { dataDir: join(data, 'iot-gateway'), overrideFile: join(data, 'iot-gateway.json') }, uplink: { tokenFile: '' } }))
  const prov = join(dir, 'prov.json')
  writeFileSync(prov, JSON.stringify({ version: 1, config: { gateway: { id: 'gw-ssh' } }, sshAuthorizedKeys: [readFileSync(join(dir, 'fieldop.pub'), 'utf8').trim()] }))
  const imp = run(process.execPath, [BUNDLE, 'provision', 'import', prov, '--config', conf])
  t.equal(imp.status, 0, imp.stderr)
  t.match(imp.stdout, /1 SSH key\(s\) -> .*\/ssh\/authorized_keys/)
  t.equal(run('stat', ['-c', '%F %a %U', keysOnData]).stdout.trim(), 'regular file 600 root', 'a file of root\'s, 0600, in place of the link')
  r = login('fieldop')
  t.equal(r.status, 0, `provisioned: the provisioned key logs in: ${r.stderr}`)
  t.equal(r.stdout.trim(), 'in-as-root')
  r = login('stranger')
  t.not(r.status, 0, 'provisioned: another key is refused')
  t.match(r.stderr, /Permission denied \(publickey\)/)
  t.not(login('imageop').status, 0, 'provisioned: the gateway\'s list replaces the image\'s keys')

  // dropbear's own checks apply to the file on /data: writable by others, it is not trusted.
  chmodSync(keysOnData, 0o622)
  t.not(login('fieldop').status, 0, 'a group/world-writable authorized_keys is refused by dropbear')
  chmodSync(keysOnData, 0o600)
  t.equal(login('fieldop').status, 0, 'and accepted again once it is 0600')
})
