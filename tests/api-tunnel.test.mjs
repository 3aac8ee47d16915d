// The management API on a fleet gateway's tunnel address, for real. The image is built with no
// tunnel address (scripts/standin-layer.py runs the recipes' do_install); this gateway's address is
// set on /data as an operator does (`iot-gateway config set wireguard.address`). The image's own
// units run under a real systemd: a manager of root in user mode (PID 1 of the machine is not ours to
// use), in private mount, network and PID namespaces, chrooted into the image's root (an overlay over
// this machine's, as in tests/fleet-image.test.mjs), its /run a tmpfs of its own, so root's systemctl
// and RuntimeDirectory= land where they do on the board.
//
// iot-gateway-api-tunnel.service starts iot-gateway-api@ADDRESS:PORT.socket before the tunnel has
// its address (FreeBind=); WireGuard (wireguard-go) comes up after; the gateway daemon runs on
// loopback; curl from the hub (a network namespace of its own, joined over a veth pair and a real
// WireGuard handshake) to the tunnel's address reaches the API through the proxy and needs the token.
// Then `config set` of another address (already on wg0 this time) and the restarts it names: the
// socket follows, the old address is served no more. Never a listener on an unspecified address.
//
// What differs from the board, because a user-mode manager cannot do it (drop-ins of this test):
// the proxy runs without DynamicUser= and PrivateUsers=, and both units' output goes to a file
// (no journald here). Everything else of the units applies as installed.
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, LAYER, run, which, isRoot } from './helpers.mjs'
import { randomBytes } from 'node:crypto'

const BUNDLE = join(REPO, 'app', 'dist', 'gateway.cjs')
const SQLITE = join(REPO, 'app', 'node_modules', 'better-sqlite3')
const SYSTEMD = ['/usr/lib/systemd/systemd', '/lib/systemd/systemd'].find(p => existsSync(p))
const missing = ['python3', 'unshare', 'nsenter', 'chroot', 'curl', 'ss', 'ip', 'wireguard-go', 'wg', 'systemctl', 'systemd-escape'].filter(c => which(c) === null)
const skip = !isRoot
  ? 'needs root (mount, network and PID namespaces)'
  : missing.length > 0
    ? `not installed: ${missing.join(', ')} (scripts/install-deps.sh installs them)`
    : SYSTEMD === undefined
      ? 'no systemd binary'
      : !existsSync(BUNDLE)
          ? 'app/dist/gateway.cjs is not built (npm run build in app/)'
          : !existsSync(SQLITE)
              ? 'app/node_modules is not installed'
              : !readFileSync('/proc/filesystems', 'utf8').includes('overlay') ? 'no overlayfs' : false

const UNITS = ['iot-gateway-api-tunnel.service', 'iot-gateway-api@.socket', 'iot-gateway-api@.service']
// The board's processes (the manager, its units, the commands below) run without the test runner's
// NODE_OPTIONS: tap adds an --import of a module in this checkout to every child it spawns (an empty
// NODE_OPTIONS in the env is not enough), and a checkout under /tmp is hidden by the board's own /tmp.
const BOARD_ENV = ['env', '-u', 'NODE_OPTIONS']

// Runs in the new namespaces: mounts the image's root, then becomes its PID 1 (so that systemctl
// does not see a chroot) and starts the manager on the image's units alone.
const SETUP = `set -eu
S=$SCRATCH; mount -t tmpfs tmpfs "$S"; mkdir "$S/u" "$S/w" "$S/m"; M=$S/m
# overlayfs refuses a layer inside another layer (the image's folder is inside /): a copy on tmpfs
cp -a "$IMAGE" "$S/image"
mount -t overlay overlay -o lowerdir="$S/image":/,upperdir="$S/u",workdir="$S/w" "$M"
mkdir -p "$M/data"; mount --bind "$DATA" "$M/data"
mount --rbind /dev "$M/dev"; mount --rbind /sys "$M/sys"; mount -t proc proc "$M/proc"
mount -t tmpfs tmpfs "$M/run"; mount -t tmpfs tmpfs "$M/tmp"
# the image's Node.js (22) and its better-sqlite3 (built by its own recipe) where the image has them
mount --bind "$NODE" "$M/usr/bin/node"
mkdir -p "$M/usr/lib/iot-gateway/node_modules/better-sqlite3"
mount --bind "$SQLITE" "$M/usr/lib/iot-gateway/node_modules/better-sqlite3"
exec chroot "$M" sh -c '
set -eu
ip link set lo up
mkdir -p /run/systemd/system /run/units
for u in $UNITS; do cp "/usr/lib/systemd/system/$u" /run/units/; done
for t in default basic sockets shutdown; do printf "[Unit]\\nDescription=%s\\n" "$t" > "/run/units/$t.target"; done
mkdir /run/units/iot-gateway-api-tunnel.service.d /run/units/iot-gateway-api@.service.d
printf "[Service]\\nStandardOutput=append:/run/tunnel.log\\nStandardError=append:/run/tunnel.log\\n" > /run/units/iot-gateway-api-tunnel.service.d/test.conf
printf "[Service]\\nDynamicUser=no\\nPrivateUsers=no\\nStandardOutput=append:/run/proxy.log\\nStandardError=append:/run/proxy.log\\n" > /run/units/iot-gateway-api@.service.d/test.conf
# XDG_RUNTIME_DIR=/run: its control socket is /run/systemd/private, where root'"'"'s systemctl looks
XDG_RUNTIME_DIR=/run SYSTEMD_UNIT_PATH=/run/units "$SYSTEMD" --user > /run/manager.log 2>&1 &
echo ready > /run/setup-done
exec sleep infinity'`

t.test('the API on the provisioned tunnel address of a fleet image, through the image\'s own units', { skip }, async t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-apitun-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))

  // The fleet image: no tunnel address of its own.
  const image = join(dir, 'image')
  mkdirSync(join(image, 'etc', 'mosquitto'), { recursive: true })
  const built = run('python3', [join(REPO, 'scripts', 'standin-layer.py'), LAYER, REPO, image, 'IOT_GATEWAY_CLOUD_URL=https://cloud.example.net/ingest'])
  t.equal(built.status, 0, built.stderr)
  t.ok(JSON.parse(built.stdout).enable.includes('iot-gateway-api-tunnel.service'), 'the tunnel\'s API unit is enabled without a build-time address')
  t.equal(JSON.parse(readFileSync(join(image, 'etc', 'iot-gateway', 'gateway.json'), 'utf8')).wireguard.address, undefined, 'the image has no tunnel address')
  for (const u of UNITS) t.ok(existsSync(join(image, 'usr/lib/systemd/system', u)), `${u} is installed`)

  const data = join(dir, 'data')
  const scratch = join(dir, 'scratch')
  mkdirSync(data)
  mkdirSync(scratch)
  const ns = spawn('unshare', ['--mount', '--propagation', 'private', '--net', '--pid', '--fork', ...BOARD_ENV, 'sh', '-c', SETUP], {
    env: { ...process.env, SCRATCH: scratch, IMAGE: image, DATA: data, NODE: process.execPath, SQLITE, SYSTEMD, UNITS: UNITS.join(' ') },
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let err = ''
  ns.stderr.on('data', d => { err += d })
  const exited = new Promise(resolve => ns.once('exit', resolve))
  // PID 1 of the namespace: its death ends every process in it (the manager, the daemon, the proxy)
  const pid1 = () => {
    try { return Number(readFileSync(`/proc/${ns.pid}/task/${ns.pid}/children`, 'utf8').trim().split(/\s+/)[0]) || null } catch { return null }
  }
  t.teardown(async () => {
    const p = pid1()
    if (p !== null) { try { process.kill(p, 'SIGKILL') } catch {} }
    if (ns.exitCode === null && ns.signalCode === null) await exited
  })

  // A command in the namespaces and the image's root, as root on the board.
  const sh = (script, timeout = 60_000) => {
    const p = pid1()
    return run('nsenter', ['-t', String(p), '-m', '-n', '-p', '-r', '-w', ...BOARD_ENV, 'sh', '-c', script], { timeout, env: { ...process.env, NODE_PATH: '' } })
  }
  const until = async (what, check, tries = 600) => {
    for (let i = 0; i < tries; i++) {
      if (ns.exitCode !== null || ns.signalCode !== null) throw new Error(`the namespace ended: ${err}`)
      if (await check()) return true
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    throw new Error(`timed out waiting for ${what}`)
  }
  await until('the manager', () => pid1() !== null && sh('test -S /run/systemd/private && test -f /run/setup-done && systemctl is-system-running').stdout.trim() === 'running')

  const listeners = () => sh('ss -Hltn').stdout.split('\n').filter(l => l.trim() !== '').map(l => l.trim().split(/\s+/)[3]).sort()
  // inside the gateway's namespace: the daemon's own loopback listener
  const curl = url => sh(`curl -s -o /dev/null -w '%{http_code}' --max-time 10 ${url}`).stdout
  const startDaemon = () => sh('iot-gateway run > /run/daemon.log 2>&1 & echo $! > /run/daemon.pid')

  // /data as tmpfiles.d leaves it on the board (the data directory, the empty token file), the
  // daemon's identity (iot-gateway-firstboot), and this gateway's address as the operator sets it.
  t.equal(sh('mkdir -p -m 0710 /data/iot-gateway && install -m 0600 /dev/null /data/iot-gateway/uplink.token && iot-gateway pki init').status, 0, 'first boot')
  const set = sh('iot-gateway config set wireguard.address 10.200.0.42/24')
  t.equal(set.status, 0, set.stderr)
  t.match(set.stdout, /systemctl restart .*iot-gateway-api-tunnel\.service/, '`config set wireguard.address` names the unit')

  // Before WireGuard: the socket binds the address no interface has yet.
  const started = sh('systemctl start iot-gateway-api-tunnel.service; echo "rc=$?"; cat /run/tunnel.log; cat /run/iot-gateway-api/target')
  t.match(started.stdout, /^rc=0$/m, `the unit starts: ${started.stdout}${started.stderr}`)
  t.match(started.stdout, /^IOT_GATEWAY_API_TARGET=127\.0\.0\.1:8080$/m, 'the proxy forwards to the daemon on loopback')
  t.notMatch(sh('ip -o addr').stdout, /10\.200\.0\.42/, 'no interface has the tunnel\'s address yet')
  t.same(listeners(), ['10.200.0.42:8080'], 'listening on the tunnel\'s address alone (FreeBind)')
  t.match(sh('systemctl is-active iot-gateway-api@10.200.0.42:8080.socket').stdout, /^active$/m)

  // Then the tunnel and the daemon.
  const wg = sh('wireguard-go wg0 && ip addr add 10.200.0.42/24 dev wg0 && ip link set wg0 up')
  t.equal(wg.status, 0, `wg0 comes up after the socket: ${wg.stderr}`)

  // The hub: its own network namespace, a veth pair to the gateway's (10.99.0.0/24), and WireGuard
  // (10.200.0.1) with the gateway as its peer. Names unique per run: wireguard-go's control sockets
  // are in this machine's /run/wireguard, which network namespaces do not separate.
  const id = randomBytes(3).toString('hex')
  const hub = `iotgw-hub-${id}`
  const link = { gw: `vg${id}`, hub: `vh${id}`, wg: `wh${id}` }
  t.equal(run('ip', ['netns', 'add', hub]).status, 0, 'the hub\'s namespace')
  t.teardown(() => { run('ip', ['netns', 'del', hub]) })
  const must = (cmd, args, input) => {
    const r = run(cmd, args, input === undefined ? {} : { input })
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`)
    return r.stdout.trim()
  }
  must('ip', ['link', 'add', link.gw, 'type', 'veth', 'peer', 'name', link.hub])
  must('ip', ['link', 'set', link.gw, 'netns', String(pid1())])
  must('ip', ['link', 'set', link.hub, 'netns', hub])
  const gwKey = must('wg', ['genkey'])
  const hubKey = must('wg', ['genkey'])
  const gwPub = must('wg', ['pubkey'], gwKey + '\n')
  const hubPub = must('wg', ['pubkey'], hubKey + '\n')
  const hubWg = spawn('ip', ['netns', 'exec', hub, 'wireguard-go', '-f', link.wg], { env: { ...process.env, WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: 'error' }, stdio: 'ignore' })
  const hubWgExit = new Promise(resolve => hubWg.once('exit', resolve))
  t.teardown(async () => { if (hubWg.exitCode === null && hubWg.signalCode === null) { hubWg.kill('SIGTERM'); await hubWgExit } })
  await until('the hub\'s WireGuard interface', () => run('ip', ['-n', hub, 'link', 'show', link.wg]).status === 0)
  const hubKeyFile = join(dir, 'hub.key')
  writeFileSync(hubKeyFile, hubKey + '\n', { mode: 0o600 })
  must('sh', ['-c', `set -e
ip -n ${hub} link set lo up
ip -n ${hub} addr add 10.99.0.3/24 dev ${link.hub}; ip -n ${hub} link set ${link.hub} up
ip netns exec ${hub} wg set ${link.wg} private-key ${hubKeyFile} listen-port 51821 peer ${gwPub} allowed-ips 10.200.0.0/24 endpoint 10.99.0.1:51820
ip -n ${hub} addr add 10.200.0.1/24 dev ${link.wg}; ip -n ${hub} link set ${link.wg} up`])
  const gwSide = sh(`set -e
ip addr add 10.99.0.1/24 dev ${link.gw}; ip link set ${link.gw} up
printf '%s\\n' '${gwKey}' > /run/wg.key
wg set wg0 private-key /run/wg.key listen-port 51820 peer ${hubPub} allowed-ips 10.200.0.1/32 endpoint 10.99.0.3:51821 persistent-keepalive 1`)
  t.equal(gwSide.status, 0, `the gateway's side of the tunnel: ${gwSide.stderr}`)
  const token = () => readFileSync(join(data, 'iot-gateway', 'api-token'), 'utf8').trim()
  const fromHub = (url, withToken = false) => run('ip', ['netns', 'exec', hub, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '10',
    ...(withToken ? ['-H', `Authorization: Bearer ${token()}`] : []), url]).stdout
  startDaemon()
  await until('the daemon\'s API on loopback', () => curl('http://127.0.0.1:8080/health') === '200')
  await until('the hub to reach /health through the tunnel (a handshake, then the proxy)', () => fromHub('http://10.200.0.42:8080/health') === '200')
  t.pass('the hub reaches /health at the tunnel\'s address')
  t.equal(fromHub('http://10.200.0.42:8080/status'), '401', '/status without the token: refused')
  t.equal(fromHub('http://10.200.0.42:8080/status', true), '200', '/status with the token')
  t.match(run('ip', ['netns', 'exec', hub, 'wg', 'show', link.wg, 'latest-handshakes']).stdout, /\t[1-9]\d*$/m, 'through a WireGuard handshake')
  t.match(sh('systemctl is-active iot-gateway-api@10.200.0.42:8080.service').stdout, /^active$/m, 'the proxy was started by the connection')
  t.same(listeners(), ['10.200.0.42:8080', '127.0.0.1:8080'], 'the daemon on loopback, the socket on the tunnel: no unspecified address')

  // Another address: this time wg0 has it before the socket does. The restarts `config set` names
  // that this test runs: the API's unit and the daemon (which accepts the address as Host).
  const again = sh('iot-gateway config set wireguard.address 10.200.0.43/24')
  t.equal(again.status, 0, again.stderr)
  t.equal(sh('ip addr add 10.200.0.43/24 dev wg0').status, 0)
  t.equal(sh('kill "$(cat /run/daemon.pid)"').status, 0)
  await until('the daemon to stop', () => curl('http://127.0.0.1:8080/health') !== '200')
  const restarted = sh('systemctl restart iot-gateway-api-tunnel.service; echo "rc=$?"')
  t.match(restarted.stdout, /^rc=0$/m, `the unit restarts: ${sh('cat /run/tunnel.log').stdout}`)
  startDaemon()
  await until('the daemon\'s API on loopback again', () => curl('http://127.0.0.1:8080/health') === '200')
  t.same(listeners(), ['10.200.0.43:8080', '127.0.0.1:8080'], 'the socket follows the configuration; the old address is not bound')
  t.equal(fromHub('http://10.200.0.43:8080/status', true), '200', 'the hub reaches the API at the new address')
  t.equal(fromHub('http://10.200.0.43:8080/status'), '401', 'with the token only')
  t.equal(fromHub('http://10.200.0.42:8080/health'), '000', 'the old address (still on wg0): nothing listens')
  t.match(sh('systemctl is-active iot-gateway-api@10.200.0.42:8080.socket').stdout, /^inactive$/m, 'the old instance is stopped')

  // No address at all (`config unset`): no socket, and the daemon stays on loopback.
  t.equal(sh('iot-gateway config unset wireguard.address').status, 0)
  t.match(sh('systemctl restart iot-gateway-api-tunnel.service; echo "rc=$?"').stdout, /^rc=0$/m)
  t.same(listeners(), ['127.0.0.1:8080'], 'without a tunnel address, loopback only')
  t.match(sh('cat /run/tunnel.log').stdout, /no tunnel address/, 'and the unit says why')
})
