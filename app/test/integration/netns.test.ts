// The firewall and the WireGuard tunnel, for real: nftables in a gateway network namespace with
// veth links to a WAN and a LAN namespace, and a wireguard-go tunnel to a hub namespace. The
// gateway daemon, the privileged firewall/wg commands and the probes all run inside the namespaces.
import Database from 'better-sqlite3'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { verifyAudit } from '../../src/audit/audit.js'
import { buildConfig, paths } from '../../src/config/load.js'
import { sections as allSections } from '../../src/config/schema.js'
import { firewallPolicy, isOpen } from '../../src/firewall/policy.js'
import type { DB } from '../../src/store/db.js'
import { tempDir, type Sections } from '../helpers/env.js'
import { requireBundle } from '../helpers/gateway-process.js'
import { agentPath, Lab, netnsUnavailable } from '../helpers/netns.js'
import { waitFor } from '../helpers/ports.js'

type Tap = Test
interface FirewallEventLine { at: number, type: string, detail: { id: string } & Record<string, unknown> }

const why = process.getuid?.() === 0 ? netnsUnavailable() : 'needs root'
if (why === 'needs root') {
  t.plan(0, `network namespace tests: ${why}`)
} else {
  if (why !== null) throw new Error(`network namespace tests cannot run: ${why}`)
  // Some forty processes (the CLI, probes, listeners) start one after the other in the namespaces: on
  // a loaded 2-core CI machine the file takes minutes. This bounds a hang; no result depends on it.
  t.setTimeout(10 * 60_000)
  // One parent test owns the lab: its teardown removes it however the test ends.
  await t.test('gateway, WAN, LAN and hub namespaces', main)
}

async function main (t: Tap): Promise<void> {
  const bundle = requireBundle()
  const lab = new Lab()
  t.teardown(() => lab.destroy())
  const dir = tempDir(t, 'iotgw-netns-')
  const stateDir = join(dir, 'fw')
  const log = (name: string): string => join(dir, `${name}.log`)
  const t0 = Date.now()
  await lab.build()
  const { gw, wan, lan, hub } = lab.ns
  const A = lab.addr

  // Fixed ports are safe here: they exist only inside this run's gateway namespace.
  const API_PORT = 9080
  const MQTT_PORT = 11883
  const WG_PORT = 51820
  const HUB_WG_PORT = 51821

  // The hub: an operator's WireGuard endpoint, keys from wireguard-tools.
  const hubKey = (await lab.must(null, ['wg', 'genkey'])).trim()
  const hubKeyFile = join(dir, 'hub.key')
  writeFileSync(hubKeyFile, hubKey + '\n', { mode: 0o600 })
  const hubPub = (await lab.must(null, ['wg', 'pubkey'], { input: hubKey + '\n' })).trim()

  // The shipped zones, with this run's tunnel interface name.
  const wgZones = buildConfig({}).firewall.zones.map(z => z.name === 'wg' ? { ...z, interfaces: [lab.wg.gw] } : z)
  const extra: Sections = 'coap' in allSections ? { coap: { enabled: false } } : {}
  const base = (fw: Record<string, unknown> = {}): Sections => ({
    gateway: { id: 'gw-netns', dataDir: join(dir, 'data'), logLevel: 'info' },
    mqtt: { url: `mqtt://127.0.0.1:${MQTT_PORT}`, reconnectMinMs: 200, reconnectMaxMs: 2000 },
    uplink: { url: 'https://127.0.0.1:1/ingest' },
    api: { host: '0.0.0.0', port: API_PORT },
    ...extra,
    firewall: { zones: wgZones, stateDir, statsPollSeconds: 1, newConnRate: 100000, newConnBurst: 100000, scanPorts: 1000, ...fw },
    wireguard: { interface: lab.wg.gw, address: `${A.gwTun}/24`, listenPort: WG_PORT, hubPublicKey: hubPub, hubEndpoint: `${A.hub}:${HUB_WG_PORT}`, hubAllowedIps: ['10.200.0.0/24'], persistentKeepaliveSeconds: 1 }
  })
  const writeConfig = (name: string, raw: Sections): string => {
    const file = join(dir, `${name}.json`)
    writeFileSync(file, JSON.stringify({ version: 1, ...raw }, null, 2))
    return file
  }
  const baseFile = writeConfig('base', base())
  const baseConfig = buildConfig(base())
  const cli = (file: string, ...args: string[]) => lab.exec(gw, [process.execPath, bundle, '-c', file, ...args])
  const status = async (): Promise<{ loaded: boolean, pending: unknown, counters: Array<{ name: string, packets: number }>, blocklist: Array<{ address: string }>, rateLimited: Array<{ address: string }> }> =>
    JSON.parse((await cli(baseFile, 'firewall', 'status', '--json')).stdout)
  const counter = (s: Awaited<ReturnType<typeof status>>, name: string): number => s.counters.find(c => c.name === name)?.packets ?? -1

  // The tunnel: wireguard-go makes the tun device inside each namespace; the hub is set up with wg
  // directly, the gateway with our own `wg up`.
  const gwPub = (await lab.must(gw, [process.execPath, bundle, '-c', baseFile, 'wg', 'pubkey'])).trim()
  await lab.wireguardGo(hub, lab.wg.hub, log('wg-hub'))
  await lab.must(hub, ['wg', 'set', lab.wg.hub, 'private-key', hubKeyFile, 'listen-port', String(HUB_WG_PORT), 'peer', gwPub, 'allowed-ips', `${A.gwTun}/32`, 'endpoint', `${A.gwWan}:${WG_PORT}`])
  await lab.must(hub, ['ip', 'addr', 'add', `${A.hubTun}/24`, 'dev', lab.wg.hub])
  await lab.must(hub, ['ip', 'link', 'set', lab.wg.hub, 'up'])
  await lab.wireguardGo(gw, lab.wg.gw, log('wg-gw'))
  const up = await cli(baseFile, 'wg', 'up')
  t.equal(up.code, 0, `wg up: ${up.stderr}`)
  t.notMatch(up.stdout + up.stderr, readFileSync(join(dir, 'data', 'wireguard', 'private.key'), 'utf8').trim(), 'the private key is never printed')
  await waitFor(async () => {
    const hs = await lab.must(gw, ['wg', 'show', lab.wg.gw, 'latest-handshakes'])
    return Number(hs.trim().split(/\s+/)[1] ?? 0) > 0
  }, 'a WireGuard handshake between gateway and hub', 15000, 200)
  t.comment(`namespaces and tunnel up in ${Date.now() - t0} ms`)

  // The daemon holds no capabilities (as in the image): it cannot run nft, and does not need to.
  // A plain loopback Mosquitto lets it start at once instead of waiting for a broker.
  lab.spawnIn(gw, ['mosquitto', '-p', String(MQTT_PORT)], log('mosquitto'))
  const noCaps = ['setpriv', '--bounding-set', '-all', '--inh-caps', '-all', '--no-new-privs']
  t.not((await lab.exec(gw, [...noCaps, 'nft', 'list', 'tables'])).code, 0, 'without CAP_NET_ADMIN nft is refused')
  const daemon = lab.spawnIn(gw, [...noCaps, process.execPath, bundle, 'run', '-c', baseFile], log('daemon'))
  let daemonExited = false
  daemon.once('exit', () => { daemonExited = true })
  await waitFor(async () => {
    if (daemonExited) throw new Error(`daemon exited; see ${log('daemon')}`)
    return (await lab.http(hub, `http://${A.gwTun}:${API_PORT}/health`, 1000)).status === 200
  }, 'the daemon\'s /health through the tunnel', 20000, 200)
  t.comment(`daemon answering after ${Date.now() - t0} ms`)
  t.match(readFileSync(`/proc/${daemon.pid}/status`, 'utf8'), /^CapEff:\s+0+$/m, 'the daemon runs with no effective capabilities')

  // Controls without a firewall, so that the checks below can fail: the API answers on the LAN,
  // and the LAN reaches the WAN through the gateway.
  t.equal((await lab.http(lan, `http://${A.gwLan}:${API_PORT}/health`)).status, 200, 'control: without the firewall the API answers on the LAN')
  await lab.listen(wan, [7000], [], log('listen-wan'))
  t.equal((await lab.probe(lan, A.wan, [7000], [])).tcp['7000'], 'open', 'control: without the firewall the LAN reaches the WAN (routing is on)')

  const boot = await cli(baseFile, 'firewall', 'apply', '--boot')
  t.equal(boot.code, 0, `firewall apply --boot: ${boot.stderr}`)
  t.ok((await status()).loaded, 'table inet iot_gateway is loaded')

  await t.test('the LAN cannot reach the WAN through the gateway', async t => {
    const before = counter(await status(), 'forward_lan')
    t.equal((await lab.probe(lan, A.wan, [7000], [])).tcp['7000'], 'filtered')
    t.ok(counter(await status(), 'forward_lan') > before, 'counted as forward_lan')
  })

  // Every port the policy names, and a sample of the rest, over TCP and UDP, from each zone.
  const policy = firewallPolicy(baseConfig)
  const named = { tcp: [8883, 53, 22, API_PORT], udp: [5683, 67, 53] }
  const sample = { tcp: [21, 23, 80, 443, 1883, 5683, 8080, 8884, 3000, 10000 + Math.floor(Math.random() * 50000)], udp: [22, 68, 123, 161, 1900, 5353, 8883, 10000 + Math.floor(Math.random() * 50000)] }
  const tcpPorts = [...new Set([...named.tcp, ...sample.tcp])]
  const udpPorts = [...new Set([...named.udp, ...sample.udp])]
  // The daemon answers the API port; the WireGuard port belongs to wireguard-go (proven open by the tunnel).
  await lab.listen(gw, tcpPorts.filter(p => p !== API_PORT), udpPorts, log('listen-gw'))

  await t.test('port matrix from every zone equals the policy', async t => {
    const zones = [['wan', wan, A.gwWan], ['lan', lan, A.gwLan], ['wg', hub, A.gwTun]] as const
    const results = await Promise.all(zones.map(([, ns, host]) => lab.probe(ns, host, tcpPorts, udpPorts)))
    for (const [i, [zone]] of zones.entries()) {
      const got = results[i]
      const want = {
        tcp: Object.fromEntries(tcpPorts.map(p => [String(p), isOpen(policy, zone, 'tcp', p) ? 'open' : 'filtered'])),
        udp: Object.fromEntries(udpPorts.map(p => [String(p), isOpen(policy, zone, 'udp', p) ? 'open' : 'filtered']))
      }
      t.same(got, want, `zone ${zone}: what answers is exactly what the policy opens`)
    }
    // The policy itself, as the issue states it.
    t.ok(isOpen(policy, 'wan', 'udp', WG_PORT) && !isOpen(policy, 'wan', 'tcp', 22) && isOpen(policy, 'wg', 'tcp', 22) && isOpen(policy, 'wg', 'tcp', API_PORT) && !isOpen(policy, 'lan', 'tcp', API_PORT))
  })

  await t.test('the management API answers through the tunnel and nowhere else', async t => {
    const viaTunnel = await lab.http(hub, `http://${A.gwTun}:${API_PORT}/health`)
    t.equal(viaTunnel.status, 200)
    t.match(JSON.parse(viaTunnel.body ?? '{}'), { live: true })
    const elsewhere = [[lan, `http://${A.gwLan}:${API_PORT}/health`], [wan, `http://${A.gwWan}:${API_PORT}/health`], [hub, `http://${A.gwWan}:${API_PORT}/health`]] as const
    const answers = await Promise.all(elsewhere.map(([ns, url]) => lab.http(ns, url, 1000)))
    elsewhere.forEach(([ns, url], i) => t.equal(answers[i]!.status, undefined, `${url} from ${ns.split('-').pop()} gets no answer`))
  })

  await t.test('a port scan from the WAN gets its source blocklisted, counted, audited and shown in /metrics', async t => {
    const scanFile = writeConfig('scan', base({ scanPorts: 8 }))
    t.equal((await cli(scanFile, 'firewall', 'apply', '--boot')).code, 0)
    const closed = Array.from({ length: 30 }, (_, i) => 20000 + i)
    const r = await lab.probe(wan, A.gwWan, closed, [], 500)
    t.ok(Object.values(r.tcp).every(v => v === 'filtered'), 'nothing answered the scan')
    let s = await status()
    t.ok(s.blocklist.some(b => b.address === A.wan), `${A.wan} is in the blocklist`)
    t.ok(counter(s, 'scan_wan') >= 1, 'scan_wan counted')
    t.ok(counter(s, 'closed_wan') >= 8, 'closed-port probes counted')
    // Once listed, even an open port is out of reach for the scanner; the hub on the same WAN is not affected.
    await lab.probe(wan, A.gwWan, [22], [5683], 400)
    s = await status()
    t.ok(counter(s, 'blocklisted') >= 1, 'later packets counted as blocklisted')
    t.equal((await lab.http(hub, `http://${A.gwTun}:${API_PORT}/health`)).status, 200, 'the tunnel still works')

    // The privileged stats job writes the snapshot; the unprivileged daemon reads it.
    t.equal((await cli(baseFile, 'firewall', 'stats')).code, 0)
    const metrics = await waitFor(async () => {
      const m = (await lab.http(hub, `http://${A.gwTun}:${API_PORT}/metrics`)).body ?? ''
      return /gateway_firewall_blocklist_entries 1/.test(m) ? m : null
    }, '/metrics to show the blocklist', 5000, 200)
    t.match(metrics, /gateway_firewall_dropped_packets_total\{reason="scan",zone="wan"\} [1-9]/)
    t.match(metrics, /gateway_firewall_dropped_packets_total\{reason="closed",zone="wan"\} [1-9]/)
    t.match(metrics, /# TYPE gateway_firewall_dropped_packets_total counter/)
  })

  await t.test('new connections are rate-limited per source, and the source is reported', async t => {
    const rateFile = writeConfig('rate', base({ newConnRate: 5, newConnBurst: 10 }))
    t.equal((await cli(rateFile, 'firewall', 'apply', '--boot')).code, 0)
    const tally = JSON.parse(await lab.must(lan, [process.execPath, agentPath, 'burst', JSON.stringify({ host: A.gwLan, port: 8883, count: 60, timeoutMs: 700 })])) as Record<string, number>
    t.ok((tally.open ?? 0) >= 5 && (tally.open ?? 0) <= 30, `some connections got through (${JSON.stringify(tally)})`)
    t.ok((tally.filtered ?? 0) >= 20, 'the rest were dropped')
    const s = await status()
    t.ok(counter(s, 'rate_limited') >= 20, 'rate_limited counted')
    t.ok(s.rateLimited.some(x => x.address === A.lan), `${A.lan} listed as rate-limited`)
    t.equal((await cli(baseFile, 'firewall', 'stats')).code, 0)
    await waitFor(async () => /gateway_firewall_rate_limited_sources 1/.test((await lab.http(hub, `http://${A.gwTun}:${API_PORT}/metrics`)).body ?? ''), '/metrics to show the rate-limited source', 5000, 200)
  })

  // A ruleset that also opens tcp/7001 on the LAN: easy to see whether it is in force.
  const openedFile = writeConfig('opened', { ...base(), firewall: { ...base().firewall as object, services: [...baseConfig.firewall.services, { name: 'probe', zone: 'lan', protocol: 'tcp', port: 7001 }] } })
  const lan7001 = async (): Promise<string | undefined> => (await lab.probe(lan, A.gwLan, [7001], [], 600)).tcp['7001']

  // The watchdog is a detached process; it is done (rolled back, or saw the confirm) once it has exited.
  // A zombie waiting for a reaper counts as exited.
  const exited = (pid: number): boolean => {
    try { return /^\d+ \(.*\) Z/s.test(readFileSync(`/proc/${pid}/stat`, 'utf8')) } catch { return true }
  }
  const events = (id: string): FirewallEventLine[] => readFileSync(join(stateDir, 'events.jsonl'), 'utf8').trim().split('\n')
    .map(l => JSON.parse(l) as FirewallEventLine).filter(e => e.detail.id === id)

  await t.test('an unconfirmed apply rolls back by itself', async t => {
    t.equal((await cli(baseFile, 'firewall', 'apply', '--boot')).code, 0)
    await lab.listen(gw, [7001], [], log('listen-7001'))
    t.equal(await lan7001(), 'filtered', 'closed before')
    const r = await cli(openedFile, 'firewall', 'apply', '--confirm-timeout', '4', '--watchdog', 'process', '--json')
    t.equal(r.code, 0, r.stderr)
    const { pending } = JSON.parse(r.stdout) as { pending: { id: string, deadline: number, watchdog: { kind: string, pid: number } } }
    t.equal(pending.watchdog.kind, 'process')
    // Hold the watchdog still while we look: under load, starting the probe can take longer than the
    // 4 s timeout, and the ruleset must be seen in force before the rollback, not raced against it.
    process.kill(pending.watchdog.pid, 'SIGSTOP')
    try {
      t.equal(await lan7001(), 'open', 'the new ruleset is in force while it waits')
      t.ok(existsSync(join(stateDir, 'pending.json')))
    } finally {
      process.kill(pending.watchdog.pid, 'SIGCONT')
    }
    await waitFor(() => exited(pending.watchdog.pid), 'the watchdog to roll back and exit', 30000, 100)
    t.notOk(existsSync(join(stateDir, 'pending.json')), 'the marker is gone')
    // When, by the watchdog's own clock: not before the deadline (how long after depends on the load).
    const rolled = events(pending.id).filter(e => e.type === 'firewall_rolled_back')
    t.equal(rolled.length, 1, 'one rollback event for the apply')
    t.ok(rolled[0]!.at >= pending.deadline, `rolled back at or after the deadline (${rolled[0]!.at - pending.deadline} ms after)`)
    t.match(rolled[0]!.detail, { reason: 'not confirmed within 4s' })
    t.equal(await lan7001(), 'filtered', 'the previous ruleset is back')
    const again = await cli(baseFile, 'firewall', 'confirm')
    t.equal(again.code, 1, `a late confirm is refused (${again.stdout}${again.stderr})`)
    t.match(again.stderr, /nothing to confirm/)
  })

  await t.test('a confirmed apply stays', async t => {
    const r = await cli(openedFile, 'firewall', 'apply', '--confirm-timeout', '4', '--watchdog', 'process', '--json')
    t.equal(r.code, 0, r.stderr)
    const { pending } = JSON.parse(r.stdout) as { pending: { id: string, watchdog: { pid: number } } }
    // Hold the watchdog still while the confirm starts (a node process that can take seconds under
    // load), so that the test confirms before the deadline rather than races it; let it go after:
    // by then the deadline may be past, and it must still leave the confirmed ruleset alone.
    process.kill(pending.watchdog.pid, 'SIGSTOP')
    let c
    try {
      c = await cli(baseFile, 'firewall', 'confirm')
    } finally {
      process.kill(pending.watchdog.pid, 'SIGCONT')
    }
    t.equal(c.code, 0, c.stderr)
    t.match(c.stdout, /confirmed/)
    // The barrier: the only process that could roll back has exited (it returns once it sees the
    // marker gone, or after rolling back at the deadline; either way nothing can change later).
    await waitFor(() => exited(pending.watchdog.pid), 'the watchdog to exit', 30000, 100)
    t.same(events(pending.id).map(e => e.type), ['firewall_applied', 'firewall_confirmed'], 'applied and confirmed, never rolled back')
    t.equal(await lan7001(), 'open', 'still in force after the watchdog is gone')
    t.notOk(existsSync(join(stateDir, 'previous.nft')), 'no rollback ruleset left behind')
  })

  await t.test('a bad configuration is refused with the reason and the running rules stay', async t => {
    const before = await lab.must(gw, ['nft', '-s', 'list', 'table', 'inet', 'iot_gateway'])
    const fw = base().firewall as Record<string, unknown>
    const bad: Array<[string, Sections, RegExp]> = [
      ['unknown zone', { ...base(), firewall: { ...fw, services: [{ name: 'x', zone: 'dmz', protocol: 'tcp', port: 1 }] } }, /firewall\.services\[0\]\.zone: unknown zone "dmz"/],
      ['port out of range', { ...base(), firewall: { ...fw, services: [{ name: 'x', zone: 'lan', protocol: 'udp', port: 70000 }] } }, /firewall\.services\[0\]\.port: port out of range/],
      ['overlapping networks', { ...base(), firewall: { ...fw, zones: [{ name: 'wan', interfaces: ['eth0'] }, { name: 'lan', interfaces: ['wlan0'], networks: ['192.168.100.0/24'] }, { name: 'wg', interfaces: [lab.wg.gw], networks: ['192.168.100.128/25'] }] } }, /firewall\.zones\[2\]\.networks\[0\]: network 192\.168\.100\.128\/25 overlaps 192\.168\.100\.0\/24/]
    ]
    await Promise.all(bad.map(async ([what, raw, reason]) => {
      const file = writeConfig(what.replace(/ /g, '-'), raw)
      const [r, check] = await Promise.all([cli(file, 'firewall', 'apply', '--confirm-timeout', '30'), cli(file, 'firewall', 'check')])
      t.equal(r.code, 2, `${what}: refused`)
      t.match(r.stderr, reason, `${what}: the reason is named`)
      t.equal(check.code, 2, `${what}: check refuses it too`)
    }))
    t.equal(await lab.must(gw, ['nft', '-s', 'list', 'table', 'inet', 'iot_gateway']), before, 'the running ruleset is unchanged')
    t.notOk(existsSync(join(stateDir, 'pending.json')), 'nothing pending')
    t.equal(await lan7001(), 'open', 'and still enforced')
  })

  await t.test('security events reach the hash-chained audit log', async t => {
    await lab.http(hub, `http://${A.gwTun}:${API_PORT}/metrics`)
    const db = new Database(paths(baseConfig).db, { readonly: true, fileMustExist: true }) as unknown as DB
    t.teardown(() => { db.close() })
    const rows = await waitFor(() => {
      const r = db.prepare('SELECT type, source, detail FROM audit_log ORDER BY id').all() as Array<{ type: string, source: string, detail: string }>
      return r.some(x => x.type === 'firewall_confirmed') ? r : null
    }, 'audit rows', 5000, 200)
    t.ok(rows.some(r => r.type === 'port_scan_detected' && r.source === A.wan), 'port_scan_detected for the scanner')
    t.ok(rows.some(r => r.type === 'rate_limit_applied' && r.source === A.lan), 'rate_limit_applied for the flooding device')
    t.ok(rows.some(r => r.type === 'firewall_applied'))
    t.ok(rows.some(r => r.type === 'firewall_rolled_back'))
    t.equal(rows.filter(r => r.type === 'port_scan_detected').length, 1, 'the same blocklist entry is reported once')
    t.match(verifyAudit(db), { ok: true })
  })

  t.test('the key files', async t => {
    const keyFile = join(dir, 'data', 'wireguard', 'private.key')
    t.equal(statSync(keyFile).mode & 0o777, 0o600)
    t.equal((await lab.must(null, ['wg', 'pubkey'], { input: readFileSync(keyFile, 'utf8') })).trim(), gwPub, '`wg pubkey` derives the key the gateway printed')
  })
}
