// The WireGuard peer's last handshake, for real: a wireguard-go tunnel between two network
// namespaces, the layer's privileged stats script run in the gateway's namespace (as root, as its
// unit runs it), and an unprivileged gateway daemon that reads what the script wrote into /metrics
// and the console.
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { startStack, tempDir } from '../helpers/env.js'
import { appDir } from '../helpers/gateway-process.js'
import { Lab, netnsUnavailable } from '../helpers/netns.js'
import { waitFor } from '../helpers/ports.js'
import { parseWgStats, WireguardStats } from '../../src/wireguard/stats.js'

const SCRIPT = join(appDir, '..', 'meta-iot-gateway', 'recipes-gateway', 'iot-gateway', 'files', 'iot-gateway-firewall-stats.sh')

t.test('parseWgStats: the seven fields, "(none)", a never-handshaken peer, malformed lines skipped', async t => {
  const key = 'x'.repeat(43) + '='
  const s = parseWgStats(`wg0\t${key}\t203.0.113.5:51820\t10.200.0.0/24,fd00::/64\t1700000000\t1200\t3400\nwg0\t${key}\t(none)\t(none)\t0\t0\t0\nwg0\tshort\t(none)\t(none)\t0\t0\t0\ngarbage\n`, 5)
  t.same(s, {
    at: 5,
    peers: [
      { interface: 'wg0', publicKey: key, endpoint: '203.0.113.5:51820', allowedIps: ['10.200.0.0/24', 'fd00::/64'], latestHandshake: 1700000000000, rxBytes: 1200, txBytes: 3400 },
      { interface: 'wg0', publicKey: key, endpoint: null, allowedIps: [], latestHandshake: null, rxBytes: 0, txBytes: 0 }
    ]
  })
})

const why = process.getuid?.() === 0 ? netnsUnavailable() : 'needs root'
t.test('the stats unit\'s script writes the tunnel\'s handshake; the daemon reads it (a 0644 file: no capability)', { skip: why === 'needs root' ? why : false }, async t => {
  if (why !== null) throw new Error(`network namespace tests cannot run: ${why}`)
  const lab = new Lab()
  t.teardown(() => lab.destroy())
  const dir = tempDir(t, 'iotgw-wgstats-')
  const stateDir = join(dir, 'fw')
  mkdirSync(stateDir)
  await lab.build()
  const { gw, hub } = lab.ns
  const A = lab.addr
  const key = async (): Promise<[string, string, string]> => {
    const priv = (await lab.must(null, ['wg', 'genkey'])).trim()
    const file = join(dir, `k${Math.random().toString(36).slice(2)}`)
    writeFileSync(file, priv + '\n', { mode: 0o600 })
    return [priv, file, (await lab.must(null, ['wg', 'pubkey'], { input: priv + '\n' })).trim()]
  }
  const [gwPriv, gwKeyFile, gwPub] = await key()
  const [hubPriv, hubKeyFile, hubPub] = await key()
  const psk = (await lab.must(null, ['wg', 'genpsk'])).trim()
  const pskFile = join(dir, 'psk')
  writeFileSync(pskFile, psk + '\n', { mode: 0o600 })

  // No tunnel yet: the script writes an empty peer file, and the daemon says there is nothing to show.
  await lab.wireguardGo(gw, lab.wg.gw, join(dir, 'wg-gw.log'))
  const s = await startStack(t, { firewall: { stateDir, statsPollSeconds: 1 }, wireguard: { interface: lab.wg.gw } })
  const metrics = async (): Promise<string> => (await s.gateway.get('/metrics')).text
  const handshakeLine = (text: string): string | undefined => text.split('\n').find(l => l.startsWith('gateway_wireguard_last_handshake_timestamp_seconds{'))
  t.equal(handshakeLine(await metrics()), undefined, 'no stats file: no handshake series (no sentinel)')
  t.match(JSON.parse((await s.gateway.get('/console/api/state')).text).wireguard, { available: false, why: /no WireGuard figures/ })

  // The tunnel, with a preshared key (a secret the script must not copy).
  await lab.wireguardGo(hub, lab.wg.hub, join(dir, 'wg-hub.log'))
  await lab.must(hub, ['wg', 'set', lab.wg.hub, 'private-key', hubKeyFile, 'listen-port', '51821', 'peer', gwPub, 'preshared-key', pskFile, 'allowed-ips', `${A.gwTun}/32`])
  await lab.must(hub, ['ip', 'addr', 'add', `${A.hubTun}/24`, 'dev', lab.wg.hub])
  await lab.must(hub, ['ip', 'link', 'set', lab.wg.hub, 'up'])
  await lab.must(gw, ['wg', 'set', lab.wg.gw, 'private-key', gwKeyFile, 'listen-port', '51820', 'peer', hubPub, 'preshared-key', pskFile, 'endpoint', `${A.hub}:51821`, 'allowed-ips', '10.200.0.0/24', 'persistent-keepalive', '1'])
  await lab.must(gw, ['ip', 'addr', 'add', `${A.gwTun}/24`, 'dev', lab.wg.gw])
  await lab.must(gw, ['ip', 'link', 'set', lab.wg.gw, 'up'])
  const before = Math.floor(Date.now() / 1000)
  await waitFor(async () => Number((await lab.must(gw, ['wg', 'show', lab.wg.gw, 'latest-handshakes'])).trim().split(/\s+/)[1] ?? 0) > 0, 'a handshake', 15000, 200)

  // The unit's script, as root in the gateway's namespace.
  const r = await lab.exec(gw, ['sh', SCRIPT, stateDir])
  t.equal(r.code, 0, `the script: ${r.stderr}`)
  const file = join(stateDir, 'wg.tsv')
  const text = readFileSync(file, 'utf8')
  t.equal(statSync(file).mode & 0o777, 0o644, 'readable by the daemon')
  for (const [name, secret] of [['private key', gwPriv], ['hub private key', hubPriv], ['preshared key', psk]]) t.notOk(text.includes(secret!), `no ${name} in the file`)
  const mine = parseWgStats(text, 0).peers.filter(p => p.interface === lab.wg.gw)
  t.equal(mine.length, 1, 'one peer on the gateway\'s interface')
  t.equal(mine[0]!.publicKey, hubPub)
  t.equal(mine[0]!.endpoint, `${A.hub}:51821`)
  t.ok(mine[0]!.latestHandshake! >= before * 1000 - 1000 && mine[0]!.latestHandshake! <= Date.now(), 'the handshake time')
  t.ok(mine[0]!.rxBytes > 0 && mine[0]!.txBytes > 0, 'bytes both ways')

  // The daemon (no capabilities needed: it reads a file) in /metrics and the console.
  const line = await waitFor(async () => handshakeLine(await metrics()), 'the handshake series')
  t.match(line, `interface="${lab.wg.gw}"`)
  t.match(line, `peer="${hubPub}"`)
  const ts = Number(line.split(' ').pop())
  t.equal(ts * 1000, mine[0]!.latestHandshake, 'the handshake as a Unix time in seconds')
  t.match(await metrics(), new RegExp(`^gateway_wireguard_received_bytes_total\\{interface="${lab.wg.gw}",peer="[^"]+"\\} [1-9]`, 'm'))
  const view = JSON.parse((await s.gateway.get('/console/api/state')).text).wireguard
  t.match(view, { available: true, peers: [{ publicKey: hubPub, latestHandshake: mine[0]!.latestHandshake }] }, 'the console shows the peer\'s last handshake')

  // In-process too: another interface's peers are not the gateway's.
  t.match(new WireguardStats(stateDir, 'wg-none').view(), { available: false, why: /no peer on wg-none/ })
})
