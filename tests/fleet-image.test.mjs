// One image, a fleet: the image built with no per-gateway knob (no tunnel address, no gateway id),
// installed by the recipes' own do_install (scripts/standin-layer.py, as the stand-in does), then
// its first boot with a provisioning file, run with the image's own files: the layer's root is an
// overlay over this machine's (its binaries: Node, dropbear, hostapd) in a private mount namespace,
// with /data and /boot as folders of this test. In it: tmpfiles.d, the first-boot import script
// (reading /boot as on the board), the Wi-Fi unit's script and hostapd's parser, the tunnel's
// rendering, and dropbear serving SSH from the socket: the provisioned key logs in, another does not.
// Run again with a bad file: the error names the field, and only the way in (the tunnel and the
// SSH keys) is imported, so the operators log in through the tunnel to fix it.
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, LAYER, run, which, isRoot, freePort, listening } from './helpers.mjs'

const BUNDLE = join(REPO, 'app', 'dist', 'gateway.cjs')
const missing = ['python3', 'unshare', 'systemd-tmpfiles', 'systemd-socket-activate', 'dropbear', 'ssh', 'ssh-keygen', 'hostapd', 'wg'].filter(c => which(c) === null)
const skip = !isRoot
  ? 'needs root (mount and network namespaces)'
  : missing.length > 0
    ? `not installed: ${missing.join(', ')} (scripts/install-deps.sh installs them)`
    : !existsSync(BUNDLE)
        ? 'app/dist/gateway.cjs is not built (npm run build in app/)'
        : !readFileSync('/proc/filesystems', 'utf8').includes('overlay') ? 'no overlayfs' : false

async function firstBoot (t, { reject }) {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-fleet-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const who of ['imageop', 'fieldop', 'stranger']) {
    const r = run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', who, '-f', join(dir, who)])
    t.equal(r.status, 0, r.stderr)
  }

  // The image: only fleet-wide knobs.
  const image = join(dir, 'image')
  mkdirSync(join(image, 'etc', 'mosquitto'), { recursive: true }) // Debian's mosquitto package made it
  const built = run('python3', [join(REPO, 'scripts', 'standin-layer.py'), LAYER, REPO, image,
    'IOT_GATEWAY_CLOUD_URL=https://cloud.example.net/ingest', `IOT_GATEWAY_SSH_AUTHORIZED_KEYS=${join(dir, 'imageop.pub')}`])
  t.equal(built.status, 0, built.stderr)
  const manifest = JSON.parse(built.stdout)
  for (const u of ['iot-gateway-provision.service', 'iot-gateway-wireguard.service']) t.ok(manifest.enable.includes(u), `${u} is enabled without a build-time tunnel address`)
  const gatewayJson = JSON.parse(readFileSync(join(image, 'etc', 'iot-gateway', 'gateway.json'), 'utf8'))
  t.equal(gatewayJson.gateway.id, undefined, 'the image names no gateway')
  t.equal(gatewayJson.wireguard.address, undefined, 'and no tunnel address')

  // This gateway's provisioning file, as scripts/provision.sh make writes it.
  const wgKey = run('wg', ['genkey']).stdout.trim()
  const hubKey = run('wg', ['pubkey'], { input: run('wg', ['genkey']).stdout }).stdout.trim()
  const boot = join(dir, 'boot')
  const data = join(dir, 'data')
  mkdirSync(boot)
  mkdirSync(data)
  writeFileSync(join(boot, 'iot-gateway-provision.json'), JSON.stringify({
    version: 1,
    config: { gateway: { id: 'gw-0042' }, wireguard: { address: '10.200.0.42/24', hubEndpoint: 'hub.example.net:51820', hubPublicKey: hubKey, hubAllowedIps: ['10.200.0.0/24'] } },
    uplinkToken: 'tok-0042-SECRET',
    wireguardPrivateKey: wgKey,
    // a typo in the country rejects the whole file
    wifi: { ssid: 'plant-floor', passphrase: 'wifi-SECRET-0042', country: reject ? 'fr' : 'FR' },
    sshAuthorizedKeys: [readFileSync(join(dir, 'fieldop.pub'), 'utf8').trim()]
  }))

  const scratch = join(dir, 'scratch')
  mkdirSync(scratch)
  const log = join(dir, 'boot.log')
  const port = await freePort()
  const dropbearCmd = readFileSync(join(image, 'usr/lib/systemd/system/dropbear@.service.d/iot-gateway.conf'), 'utf8')
    .split('\n').filter(l => /^ExecStart=./.test(l)).pop().slice('ExecStart='.length).replace(/^-/, '')
  // Each step's output goes to the log, after a "== step" line, with its exit status.
  const script = `set -u
S=$SCRATCH; mount -t tmpfs tmpfs "$S" || exit 1; mkdir "$S/u" "$S/w" "$S/m"; M=$S/m
# overlayfs refuses a layer inside another layer (the image's folder is inside /): a copy on tmpfs
cp -a "$IMAGE" "$S/image" || exit 1
mount -t overlay overlay -o lowerdir="$S/image":/,upperdir="$S/u",workdir="$S/w" "$M" || exit 1
mkdir -p "$M/data" "$M/boot" "$M/run/iot-gateway-wifi"
mount --bind "$DATA" "$M/data"; mount --bind "$BOOT" "$M/boot"
mount --rbind /dev "$M/dev"; mount -t proc proc "$M/proc"
step() { name=$1; shift; echo "== $name" >> "$LOG"; chroot "$M" "$@" >> "$LOG" 2>&1; echo "== $name exit $?" >> "$LOG"; }
# tmpfiles.d of the root-owned parts (the gateway's users are not in this machine's passwd: their
# folders are made by the test below as root)
step tmpfiles systemd-tmpfiles --create /usr/lib/tmpfiles.d/iot-gateway-ssh.conf /usr/lib/tmpfiles.d/iot-gateway-system.conf
mkdir -p -m 0710 "$DATA/iot-gateway"; mkdir -p -m 0700 "$DATA/wireguard"
step provision /usr/libexec/iot-gateway-provision /boot
step wifi /usr/libexec/iot-gateway-wifi /etc/hostapd/iot-gateway-lan.conf /data/wifi/iot-gateway-lan.conf /run/iot-gateway-wifi/hostapd.conf
step hostapd unshare --net /usr/sbin/hostapd -d /run/iot-gateway-wifi/hostapd.conf
step wg iot-gateway wg render --config /etc/iot-gateway/gateway.json
step id iot-gateway config show --json --config /etc/iot-gateway/gateway.json
step hostkeys /usr/libexec/iot-gateway-ssh-hostkeys /data/ssh
echo "== serving" >> "$LOG"
exec chroot "$M" systemd-socket-activate --inetd -a -l "127.0.0.1:$PORT" $DROPBEAR`
  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], {
    env: { ...process.env, SCRATCH: scratch, IMAGE: image, DATA: data, BOOT: boot, LOG: log, PORT: String(port), DROPBEAR: dropbearCmd, GATEWAY_CONFIG: '' },
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let err = ''
  child.stderr.on('data', d => { err += d })
  t.teardown(() => new Promise(resolve => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    child.once('exit', resolve)
    child.kill('SIGTERM')
  }))
  for (let i = 0; i < 600 && !(await listening(port)); i++) {
    if (child.exitCode !== null || child.signalCode !== null) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const text = existsSync(log) ? readFileSync(log, 'utf8') : ''
  const out = name => {
    const m = new RegExp(`^== ${name}\\n([\\s\\S]*?)^== ${name} exit (\\d+)$`, 'm').exec(text)
    return m ? { text: m[1], status: Number(m[2]) } : { text: '', status: null }
  }
  t.match(text, /^== serving$/m, `every step ran: ${err}`)

  const prov = out('provision')
  t.notMatch(text, /SECRET/, 'no secret in any step\'s output')
  t.notOk(existsSync(join(boot, 'iot-gateway-provision.json')), 'deleted from the boot partition')
  const ssh = who => run('ssh', ['-p', String(port), '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10',
    '-o', `UserKnownHostsFile=${join(dir, 'known_hosts')}`, '-o', 'GlobalKnownHostsFile=/dev/null', '-o', 'StrictHostKeyChecking=accept-new',
    '-o', 'IdentitiesOnly=yes', '-F', '/dev/null', '-i', join(dir, who), 'root@127.0.0.1', 'echo', 'in'], { timeout: 30_000 })

  if (reject) {
    // A bad file: a clear error (the unit's output goes to the console and the journal), and the
    // way in alone taken from it (the tunnel and the SSH keys), so the box can be reached for a fix.
    t.equal(prov.status, 1, 'the unit fails')
    t.match(prov.text, /wifi\.country: must be an ISO 3166 country code/, `the field and the reason: ${prov.text}`)
    t.match(prov.text, /REJECTED: only its tunnel and SSH keys \(above\) were imported/)
    t.match(prov.text, /Fix it over SSH: edit \/data\/iot-gateway-provision\.rejected\.json/)
    t.notOk(existsSync(join(data, 'wifi', 'iot-gateway-lan.conf')), 'no Wi-Fi imported')
    t.notOk(existsSync(join(data, 'iot-gateway', 'uplink.token')), 'no token imported')
    t.match(out('wifi').text, /no Wi-Fi passphrase/, 'the access point stays off (the image has no passphrase)')
    t.match(out('wg').text, /^Address=10\.200\.0\.42\/24$/m, 'the tunnel has the rejected file\'s address: the way in')
    t.equal(JSON.parse(out('id').text).config.gateway.id, 'iot-gateway', 'the id (like every other setting) is not taken')
    const field = ssh('fieldop')
    t.equal(field.status, 0, `the file's operators log in, to fix it: ${field.stderr}`)
    t.not(ssh('stranger').status, 0, 'a stranger is refused')
    return
  }
  t.equal(prov.status, 0, `the first-boot import: ${prov.text}`)
  t.match(prov.text, /provisioned gw-0042:/)

  const wifi = out('wifi')
  t.equal(wifi.status, 0, wifi.text)
  t.match(wifi.text, /access point "plant-floor", country FR/)
  const hostapd = out('hostapd').text
  t.match(hostapd, /Configuration file: \/run\/iot-gateway-wifi\/hostapd\.conf/)
  t.notMatch(hostapd, /errors? found in configuration file|Failed to set up interface with/, `hostapd reads it: ${hostapd}`)
  t.match(hostapd, /nl80211/, 'and goes on to the driver (none here)')

  const wg = out('wg')
  t.equal(wg.status, 0, wg.text)
  t.match(wg.text, /^Address=10\.200\.0\.42\/24$/m, 'the tunnel gets the provisioned address')
  t.match(wg.text, new RegExp(`^PublicKey=${hubKey.replace(/[+/=]/g, c => '\\' + c)}$`, 'm'), 'and the provisioned hub')
  const show = JSON.parse(out('id').text)
  t.equal(show.config.gateway.id, 'gw-0042', 'the gateway\'s id from the override on /data')
  t.equal(show.sources['gateway.id'].source, 'override')

  // SSH as the image serves it: the provisioned key, not the image's, not a stranger's.
  const field = ssh('fieldop')
  t.equal(field.status, 0, `the provisioned operator logs in: ${field.stderr}`)
  t.equal(field.stdout.trim(), 'in')
  t.not(ssh('imageop').status, 0, 'the image\'s key gives way to the provisioned list')
  t.not(ssh('stranger').status, 0, 'a stranger is refused')
}

t.test('a fleet image: the first boot takes the gateway\'s id, tunnel address, SSH keys and Wi-Fi from provisioning', { skip, timeout: 120000 }, t => firstBoot(t, { reject: false }))
t.test('a fleet image with a bad provisioning file: a clear error, only the way in imported, reachable over SSH for a fix', { skip, timeout: 120000 }, t => firstBoot(t, { reject: true }))

// Nothing waits for the import: a rejected file must not keep anything from starting.
t.test('no unit of the layer requires the provisioning unit; its outcome goes to the console', t => {
  const unitFiles = run('find', [LAYER, '-name', '*.service', '-o', '-name', '*.socket', '-o', '-name', '*.conf', '-path', '*files*', '-o', '-name', '*.in', '-path', '*files*']).stdout.trim().split('\n')
  t.ok(unitFiles.length > 10, `${unitFiles.length} unit files and drop-ins`)
  for (const f of unitFiles) {
    t.notMatch(readFileSync(f, 'utf8'), /^(Requires|Requisite|BindsTo|PartOf|Upholds)=.*iot-gateway-provision/m, `${f.slice(LAYER.length + 1)}: no hard dependency on the import`)
  }
  const unit = readFileSync(join(LAYER, 'recipes-core', 'iot-gateway-provision', 'files', 'iot-gateway-provision.service'), 'utf8')
  t.match(unit, /^StandardOutput=journal\+console$/m)
  t.match(unit, /^StandardError=journal\+console$/m)
  t.end()
})
