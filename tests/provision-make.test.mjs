// scripts/provision.sh make: one provisioning file per CSV line (WireGuard key pairs from wg genkey),
// each accepted by the gateway's own `provision import`, and the hub's peers from the same run.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, run, which } from './helpers.mjs'

const BUNDLE = join(REPO, 'app', 'dist', 'gateway.cjs')
const PROVISION = join(REPO, 'scripts', 'provision.sh')
const HUB_KEY = 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg='
const skip = !which('wg') ? 'wg (wireguard-tools) is not installed' : !which('python3') ? 'python3 is not installed' : false

t.test('a 3-line CSV makes 3 provisioning files the gateway accepts, and the hub peers', { skip }, t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-make-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const keys = join(dir, 'operators.pub')
  writeFileSync(keys, '# operators\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEu0m2bHbVq5oW2j3b8x0H0CqzK7fQdY3cZ1l3oFvXyZ alice@laptop\n')
  const csv = join(dir, 'fleet.csv')
  writeFileSync(csv, [
    'id,wg_address,uplink_url,token,wifi_ssid,wifi_passphrase,wifi_country,ssh_keys_file',
    `gw-0001,10.200.0.11/24,https://cloud.example.net/ingest,tok-1,plant-floor,"pass, with comma",DE,${keys}`,
    `gw-0002,10.200.0.12/24,https://cloud.example.net/ingest,tok-2,,,,${keys}`,
    'gw-0003,10.200.0.13/24,,tok-3,,,,'
  ].join('\n') + '\n')
  const out = join(dir, 'out')
  const env = { ...process.env, HUB_ENDPOINT: 'hub.example.net:51820', HUB_PUBLIC_KEY: HUB_KEY }
  const r = run('sh', [PROVISION, 'make', csv, out], { env })
  t.equal(r.status, 0, 'provision.sh make: ' + r.stderr)
  t.equal(statSync(out).mode & 0o777, 0o700, 'the output directory is 0700 (secrets)')
  const hub = readFileSync(join(out, 'hub-peers.conf'), 'utf8')
  const peers = [...hub.matchAll(/\[Peer\]\n# (\S+)\nPublicKey = (\S+)\nAllowedIPs = (\S+)\n/g)].map(m => ({ id: m[1], pub: m[2], ips: m[3] }))
  t.same(peers.map(p => [p.id, p.ips]), [['gw-0001', '10.200.0.11/32'], ['gw-0002', '10.200.0.12/32'], ['gw-0003', '10.200.0.13/32']], 'one hub peer per gateway, its tunnel address only')
  for (const [i, p] of peers.entries()) {
    const f = join(out, `${p.id}.json`)
    t.equal(statSync(f).mode & 0o777, 0o600, `${p.id}.json is 0600`)
    const doc = JSON.parse(readFileSync(f, 'utf8'))
    t.equal(run('wg', ['pubkey'], { input: doc.wireguardPrivateKey + '\n' }).stdout.trim(), p.pub, `${p.id}: the hub peer's key is the gateway's public key`)
    t.equal(doc.uplinkToken, `tok-${i + 1}`)
    t.same(doc.config.wireguard, { address: `10.200.0.1${i + 1}/24`, hubEndpoint: 'hub.example.net:51820', hubPublicKey: HUB_KEY, hubAllowedIps: ['10.200.0.0/24'] })
    // the gateway's own checker accepts it, on a fresh /data
    const data = join(dir, `data-${p.id}`)
    mkdirSync(join(data, 'iot-gateway'), { recursive: true })
    const conf = join(dir, `conf-${p.id}.json`)
    writeFileSync(conf, JSON.stringify({ version: 1, gateway: { dataDir: join(data, 'iot-gateway') }, uplink: { url: 'https://image.example/ingest' }, wireguard: { privateKeyFile: join(data, 'wireguard', 'private.key') } }))
    const im = run(process.execPath, [BUNDLE, 'provision', 'import', f, '-c', conf], { env: { ...process.env, GATEWAY_CONFIG: '' } })
    t.equal(im.status, 0, `${p.id}: provision import accepts it: ${im.stderr}`)
  }
  const one = JSON.parse(readFileSync(join(out, 'gw-0001.json'), 'utf8'))
  t.same(one.wifi, { ssid: 'plant-floor', passphrase: 'pass, with comma', country: 'DE' }, 'CSV quoting kept')
  t.equal(one.sshAuthorizedKeys.length, 1, 'comment lines of the keys file left out')
  t.notOk('wifi' in JSON.parse(readFileSync(join(out, 'gw-0003.json'), 'utf8')), 'empty fields are left out')

  writeFileSync(csv, 'id,wg_address\ngw-a,10.200.0.5/24\ngw-b,10.200.0.5/24\n')
  const dup = run('sh', [PROVISION, 'make', csv, join(dir, 'dup')], { env })
  t.not(dup.status, 0)
  t.match(dup.stderr, /fleet\.csv:3: wg_address 10\.200\.0\.5 appears twice/, 'a duplicate tunnel address is refused with its line')
  t.end()
})
