// Provisioning at flash time, on an image file with the card's layout (an MBR, a FAT boot
// partition, a data partition): `scripts/provision.sh write` (what `flash.sh --provision` runs after
// bmaptool) puts the file on the FAT partition with mtools, without mounting; the first-boot import
// script (recipes-core/iot-gateway-provision) reads it from the same partition, imports it into a
// /data tree (the one tmpfiles.d makes on the board) with mode 0600, and deletes it. A bad file is
// rejected with a clear error, deleted from the FAT partition all the same, and kept on /data for a fix.
import { chmodSync, chownSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { t, REPO, LAYER, run, which, isRoot } from './helpers.mjs'

const BUNDLE = join(REPO, 'app', 'dist', 'gateway.cjs')
const PROVISION = join(REPO, 'scripts', 'provision.sh')
const IMPORT = join(LAYER, 'recipes-core', 'iot-gateway-provision', 'files', 'iot-gateway-provision.sh')
const skip = !existsSync(BUNDLE)
  ? 'app/dist/gateway.cjs is not built (npm run build in app/)'
  : !which('mcopy') ? 'mtools is not installed' : !which('sfdisk') ? 'sfdisk is not installed' : false

const HUB_KEY = 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg='
const SSH_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEu0m2bHbVq5oW2j3b8x0H0CqzK7fQdY3cZ1l3oFvXyZ op@laptop'

/** A card image: 1 MiB gap, 32 MiB FAT boot partition (as wic's bootimg-partition), a data partition. */
function cardImage (dir) {
  const img = join(dir, 'card.img')
  run('truncate', ['-s', '64M', img])
  const r = run('sfdisk', ['--quiet', img], { input: 'label: dos\nstart=2048, size=65536, type=c, bootable\nstart=67584, type=83\n' })
  if (r.status !== 0) throw new Error('sfdisk: ' + r.stderr)
  const off = 2048 * 512
  const f = run('mformat', ['-i', `${img}@@${off}`, '-T', '65536', '-h', '64', '-s', '32', '-v', 'boot', '::'])
  if (f.status !== 0) throw new Error('mformat: ' + f.stderr)
  return { img, spec: `${img}@@${off}` }
}

/** What the image and tmpfiles.d give a board before the first boot: gateway.json, /data's directories. */
function board (dir) {
  const data = join(dir, 'data')
  mkdirSync(join(data, 'iot-gateway', 'pki'), { recursive: true })
  mkdirSync(join(data, 'iot-gateway', 'mosquitto'), { recursive: true })
  mkdirSync(join(data, 'wireguard'), { recursive: true })
  chmodSync(join(data, 'iot-gateway'), 0o710)
  chmodSync(join(data, 'iot-gateway', 'pki'), 0o2750)
  chmodSync(join(data, 'wireguard'), 0o700)
  writeFileSync(join(data, 'iot-gateway', 'uplink.token'), '', { mode: 0o600 })
  // the recipe's gateway.json with this test's /data (write_gateway_json's fields)
  const conf = join(dir, 'etc-gateway.json')
  writeFileSync(conf, JSON.stringify({
    version: 1,
    gateway: { overrideFile: join(data, 'iot-gateway.json'), dataDir: join(data, 'iot-gateway') },
    uplink: { url: 'https://telemetry.example.com/v1/ingest', tokenFile: join(data, 'iot-gateway', 'uplink.token') },
    broker: { addresses: ['192.168.100.1', '127.0.0.1'] },
    api: { host: '0.0.0.0' },
    wireguard: { privateKeyFile: join(data, 'wireguard', 'private.key'), listenPort: 51820 }
  }))
  // The unit runs /usr/bin/iot-gateway: the bundle under this test's node.
  const bin = join(dir, 'iot-gateway')
  writeFileSync(bin, `#!/bin/sh\nexec "${process.execPath}" "${BUNDLE}" "$@"\n`, { mode: 0o755 })
  return { data, conf, bin }
}

const tree = root => {
  const out = {}
  const walk = d => {
    for (const n of readdirSync(d).sort()) {
      const f = join(d, n)
      const st = statSync(f)
      if (st.isDirectory()) walk(f)
      else out[relative(root, f)] = { mode: (st.mode & 0o7777).toString(8), uid: st.uid }
    }
  }
  walk(root)
  return out
}

t.test('flash --provision writes the FAT partition; first boot imports into /data 0600 and deletes it', { skip, timeout: 120000 }, t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-prov-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const { img, spec } = cardImage(dir)
  const { data, conf, bin } = board(dir)
  // As root the import hands the gateway's files to the owner of its data directory (iot-gateway on a board).
  const owner = isRoot ? 4242 : process.getuid()
  if (isRoot) chownSync(join(data, 'iot-gateway'), owner, -1)

  // a PKI backup of an old card, restored through provisioning
  const old = join(dir, 'old')
  mkdirSync(old)
  const oldConf = join(dir, 'old.json')
  writeFileSync(oldConf, JSON.stringify({ version: 1, gateway: { id: 'gw-0001', dataDir: old } }))
  t.equal(run(process.execPath, [BUNDLE, 'pki', 'init', '-c', oldConf]).status, 0, 'old card: pki init')
  writeFileSync(join(dir, 'pass'), 'a long enough passphrase\n')
  const ex = run(process.execPath, [BUNDLE, 'pki', 'export', '--out', join(dir, 'old.backup'), '--passphrase-file', join(dir, 'pass'), '-c', oldConf])
  t.equal(ex.status, 0, 'old card: pki export ' + ex.stderr)

  const prov = join(dir, 'gw-0001.json')
  writeFileSync(prov, JSON.stringify({
    version: 1,
    config: { gateway: { id: 'gw-0001' }, uplink: { url: 'https://cloud.example.net/ingest' }, wireguard: { address: '10.200.0.11/24', hubEndpoint: 'hub.example.net:51820', hubPublicKey: HUB_KEY } },
    uplinkToken: 'tok-0001-SECRET',
    wireguardPrivateKey: 'YNqHbfBQKaGvzefSSuufuUqdUvuS1g48CtY5n1mH5ks=',
    wifi: { ssid: 'plant-floor', passphrase: 'wifi-SECRET-pass', country: 'DE' },
    sshAuthorizedKeys: [SSH_KEY],
    pkiBackup: { backup: readFileSync(join(dir, 'old.backup'), 'utf8'), passphrase: 'a long enough passphrase' }
  }))
  const w = run('sh', [PROVISION, 'write', img, prov])
  t.equal(w.status, 0, 'provision.sh write: ' + w.stderr)
  t.match(w.stdout, /boot partition at byte 1048576/)
  t.equal(run('mtype', ['-i', spec, '::iot-gateway-provision.json']).stdout, readFileSync(prov, 'utf8'), 'the file is on the FAT partition, byte for byte')

  const env = { ...process.env, IOT_GATEWAY_BIN: bin, IOT_GATEWAY_CONFIG: conf, IOT_GATEWAY_PROVISION_REJECTED: join(data, 'rejected.json'), IOT_GATEWAY_NODE: process.execPath, TMPDIR: dir, GATEWAY_CONFIG: '' }
  const r = run('sh', [IMPORT, spec], { env })
  t.equal(r.status, 0, 'first-boot import: ' + r.stdout + r.stderr)
  t.match(r.stdout, /provisioned gw-0001:/, 'logs what it took')
  t.match(r.stdout, /cloud token -> .*uplink\.token/)
  t.match(r.stdout, /1 SSH key/)
  t.match(r.stdout, /PKI backup of gw-0001/)
  t.notMatch(r.stdout + r.stderr, /SECRET/, 'never logs a secret')
  t.not(run('mdir', ['-i', spec, '::iot-gateway-provision.json']).status, 0, 'deleted from the FAT partition')
  // A deleted FAT file keeps its bytes in its clusters: the card itself must not hold them any more.
  t.notOk(readFileSync(img).includes('SECRET'), 'no secret left anywhere on the card (overwritten before the delete)')

  const got = tree(data)
  const want = {
    'iot-gateway.json': { mode: '644', uid: process.getuid() },
    'iot-gateway/uplink.token': { mode: '600', uid: owner },
    'iot-gateway/pki/ca.key': { mode: '600', uid: owner },
    'iot-gateway/pki/crl.pem': { mode: '644', uid: owner },
    'wireguard/private.key': { mode: '600', uid: process.getuid() },
    'ssh/authorized_keys': { mode: '600', uid: process.getuid() },
    'wifi/iot-gateway-lan.conf': { mode: '600', uid: process.getuid() }
  }
  for (const [f, v] of Object.entries(want)) t.same(got[f], v, `/data/${f}: mode ${v.mode}, owner ${v.uid}`)
  t.ok(got['iot-gateway/gateway.db'], 'the registry database restored')
  t.equal(readFileSync(join(data, 'iot-gateway', 'uplink.token'), 'utf8'), 'tok-0001-SECRET\n')
  t.equal(readFileSync(join(data, 'ssh', 'authorized_keys'), 'utf8'), SSH_KEY + '\n')
  t.match(readFileSync(join(data, 'wifi', 'iot-gateway-lan.conf'), 'utf8'), /^ssid=plant-floor\ncountry_code=DE\nwpa_passphrase=wifi-SECRET-pass\n/m, 'hostapd lines for iot-gateway-wifi.service (tests/wifi.test.mjs)')
  t.equal(readFileSync(join(data, 'iot-gateway', 'pki', 'ca.crt'), 'utf8'), readFileSync(join(old, 'pki', 'ca.crt'), 'utf8'), 'the old card\'s CA')
  const show = JSON.parse(run(process.execPath, [BUNDLE, 'config', 'show', '--json', '-c', conf], { env: { ...process.env, GATEWAY_CONFIG: '' } }).stdout)
  t.equal(show.config.gateway.id, 'gw-0001')
  t.same(show.sources['gateway.id'].source, 'override')
  t.equal(show.config.wireguard.address, '10.200.0.11/24')
  t.equal(show.config.uplink.url, 'https://cloud.example.net/ingest')
  t.equal(show.config.uplink.tokenFile, join(data, 'iot-gateway', 'uplink.token'), 'the image\'s token file')

  // A second card's bad file: rejected, nothing imported, still deleted, kept for a fix.
  const before = readFileSync(join(data, 'iot-gateway.json'), 'utf8')
  const bad = join(dir, 'bad.json')
  writeFileSync(bad, JSON.stringify({ version: 1, config: { gateway: { id: 'gw/0002' } }, uplinkToken: 'tok-SECRET', wifi: { ssid: 'x', passphrase: 'short', country: 'DE' } }))
  t.equal(run('sh', [PROVISION, 'write', img, bad]).status, 0)
  const b = run('sh', [IMPORT, spec], { env })
  t.equal(b.status, 1, 'the unit fails (visible in systemctl --failed); nothing waits on it')
  t.match(b.stdout, /wifi\.passphrase: must be 8 to 63 printable ASCII characters/, 'a clear error naming the field')
  t.match(b.stdout, /REJECTED \(nothing imported\)/)
  t.not(run('mdir', ['-i', spec, '::iot-gateway-provision.json']).status, 0, 'deleted from the FAT partition all the same')
  t.notOk(readFileSync(img).includes('SECRET'), 'and its secrets overwritten on the card')
  t.equal(statSync(join(data, 'rejected.json')).mode & 0o777, 0o600, 'kept on /data, 0600, for a fix')
  t.equal(readFileSync(join(data, 'iot-gateway.json'), 'utf8'), before, 'the override is unchanged')
  t.equal(readFileSync(join(data, 'iot-gateway', 'uplink.token'), 'utf8'), 'tok-0001-SECRET\n', 'the token is unchanged')

  // A bad file whose way in (tunnel, SSH keys) is bad too: nothing at all is imported.
  const keysBefore = readFileSync(join(data, 'ssh', 'authorized_keys'), 'utf8')
  writeFileSync(bad, JSON.stringify({ version: 1, wireguardPrivateKey: 'not-a-key-SECRET', sshAuthorizedKeys: ['ssh-ed25519 AAAAC3Nza other@x'], wifi: { ssid: 'x', passphrase: 'short', country: 'DE' } }))
  t.equal(run('sh', [PROVISION, 'write', img, bad]).status, 0)
  const c = run('sh', [IMPORT, spec], { env })
  t.equal(c.status, 1)
  t.match(c.stdout, /REJECTED \(nothing imported\)/, 'a bad tunnel key: not even the way in')
  t.equal(readFileSync(join(data, 'ssh', 'authorized_keys'), 'utf8'), keysBefore, 'the SSH keys are unchanged')
  t.notMatch(c.stdout + c.stderr, /SECRET/)

  const none = run('sh', [IMPORT, spec], { env })
  t.equal(none.status, 0, 'no file: nothing to do')
  t.end()
})

// On the board the script reads the mounted boot partition (/boot, vfat). The file is overwritten
// in place before it is deleted: a second name (a hard link, made before the import) for the same
// inode shows what is left in the file's own blocks afterwards.
t.test('the mounted boot partition: the file is zeroed in place, then deleted', { skip: existsSync(BUNDLE) ? false : 'app/dist/gateway.cjs is not built (npm run build in app/)' }, t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-prov-dir-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const { data, conf, bin } = board(dir)
  const boot = join(dir, 'boot')
  mkdirSync(boot)
  const env = { ...process.env, IOT_GATEWAY_BIN: bin, IOT_GATEWAY_CONFIG: conf, IOT_GATEWAY_PROVISION_REJECTED: join(data, 'rejected.json'), IOT_GATEWAY_NODE: process.execPath, TMPDIR: dir, GATEWAY_CONFIG: '' }
  for (const [what, body, status] of [
    ['accepted', { version: 1, config: { gateway: { id: 'gw-0003' } }, uplinkToken: 'tok-0003-SECRET' }, 0],
    ['rejected', { version: 1, uplinkToken: 'tok 0004 SECRET' }, 1]
  ]) {
    const file = join(boot, 'iot-gateway-provision.json')
    const text = JSON.stringify(body)
    writeFileSync(file, text)
    const peek = join(dir, `peek-${what}`)
    linkSync(file, peek)
    const r = run('sh', [IMPORT, boot], { env })
    t.equal(r.status, status, `${what}: ${r.stdout}${r.stderr}`)
    t.notOk(existsSync(file), `${what}: deleted`)
    const left = readFileSync(peek)
    t.equal(left.length, Buffer.byteLength(text), `${what}: overwritten in place, the same size`)
    t.ok(left.every(b => b === 0), `${what}: nothing but zeros left in its blocks`)
  }
  t.end()
})
