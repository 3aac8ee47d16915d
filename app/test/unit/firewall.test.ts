import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { buildConfig } from '../../src/config/load.js'
import { addedAt, FirewallMonitor, parseNftJson } from '../../src/firewall/monitor.js'
import { networkOf, overlaps, parseCidr } from '../../src/firewall/net.js'
import { Nft, type NftRunner } from '../../src/firewall/nft.js'
import { firewallPolicy, isOpen } from '../../src/firewall/policy.js'
import { counterLabels, renderRuleset, REPLACE_PREAMBLE } from '../../src/firewall/ruleset.js'
import { SafeApply, type WatchdogControl } from '../../src/firewall/safe-apply.js'
import { isConfigError, isFirewallError } from '../../src/lib/errors.js'
import { silentLogger } from '../../src/lib/logger.js'
import { Registry } from '../../src/lib/metrics.js'
import { tempDir } from '../helpers/temp.js'

const dir = (t: { teardown: (fn: () => void) => void }): string => {
  const d = tempDir(t, 'iotgw-fw-unit-')
  return d
}

t.test('CIDR parsing and overlap', async t => {
  t.equal(networkOf(parseCidr('192.168.100.1/24')!), '192.168.100.0/24')
  t.equal(networkOf(parseCidr('2001:db8::1/48')!), '2001:db8::/48')
  t.equal(networkOf(parseCidr('::ffff:10.0.0.1/128')!), '::ffff:a00:1/128')
  t.equal(parseCidr('10.0.0.0/33'), null)
  t.equal(parseCidr('10.0.0/8'), null)
  t.equal(parseCidr('fe80::1/129'), null)
  t.ok(overlaps(parseCidr('192.168.100.0/24')!, parseCidr('192.168.100.128/25')!))
  t.notOk(overlaps(parseCidr('192.168.100.0/25')!, parseCidr('192.168.100.128/25')!))
  t.notOk(overlaps(parseCidr('10.0.0.0/8')!, parseCidr('fd00::/8')!))
  t.ok(overlaps(parseCidr('fd00::/8')!, parseCidr('fd12:3456::/32')!))
})

t.test('the shipped policy is the one the design names', async t => {
  const p = firewallPolicy(buildConfig({}))
  t.same(p.zones.map(z => [z.name, z.interfaces, z.tcp, z.udp]), [
    ['wan', ['eth0'], [], [51820]],
    ['lan', ['wlan0'], [53, 8883], [53, 67, 5683]],
    ['wg', ['wg0'], [22, 8080], []]
  ])
  t.ok(isOpen(p, 'wg', 'tcp', 8080) && !isOpen(p, 'lan', 'tcp', 8080) && !isOpen(p, 'wan', 'tcp', 22))
  t.equal(p.lanZone, 'lan')
  // Ports follow the configuration they refer to.
  const moved = firewallPolicy(buildConfig({ api: { port: 9443 }, broker: { lanPort: 8884, gatewayPort: 8885 }, wireguard: { listenPort: 4500 } }))
  t.same(moved.zones.map(z => [z.tcp, z.udp]), [[[], [4500]], [[53, 8884], [53, 67, 5683]], [[22, 9443], []]])
  // extraServices adds to the defaults (what the layer's debug and QEMU test images write)
  const extra = firewallPolicy(buildConfig({ firewall: { extraServices: [{ name: 'ssh', zone: 'wan', protocol: 'tcp', port: 22 }] } }))
  t.same(extra.zones.map(z => [z.name, z.tcp, z.udp]), [['wan', [22], [51820]], ['lan', [53, 8883], [53, 67, 5683]], ['wg', [22, 8080], []]])
  t.ok(isOpen(extra, 'wan', 'tcp', 22) && !isOpen(p, 'wan', 'tcp', 22))
})

t.test('bad firewall configurations are refused with the field and the reason', async t => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['unknown zone', { services: [{ name: 'x', zone: 'dmz', protocol: 'tcp', port: 1 }] }, /^firewall\.services\[0\]\.zone: unknown zone "dmz" \(zones: wan, lan, wg\)/],
    ['port out of range', { services: [{ name: 'x', zone: 'lan', protocol: 'tcp', port: 65536 }] }, /^firewall\.services\[0\]\.port: port out of range/],
    ['port zero', { services: [{ name: 'x', zone: 'lan', protocol: 'udp', port: 0 }] }, /port out of range/],
    ['bad protocol', { services: [{ name: 'x', zone: 'lan', protocol: 'sctp', port: 1 }] }, /protocol: must be "tcp" or "udp"/],
    ['unknown reference', { services: [{ name: 'x', zone: 'lan', protocol: 'tcp', port: 'nope.port' }] }, /"nope\.port" is not an integer field/],
    ['overlapping networks', { zones: [{ name: 'lan', interfaces: ['wlan0'], networks: ['10.0.0.0/8'] }, { name: 'wg', interfaces: ['wg0'], networks: ['10.200.0.0/24'] }], services: [], lanZone: 'lan' }, /^firewall\.zones\[1\]\.networks\[0\]: network 10\.200\.0\.0\/24 overlaps 10\.0\.0\.0\/8 \(firewall\.zones\[0\]\.networks\[0\], zone "lan"\)/],
    ['interface in two zones', { zones: [{ name: 'a', interfaces: ['eth0'] }, { name: 'b', interfaces: ['eth0'] }], services: [], lanZone: '' }, /interface "eth0" is already in zone "a"/],
    ['duplicate zone', { zones: [{ name: 'a', interfaces: ['eth0'] }, { name: 'a', interfaces: ['eth1'] }], services: [], lanZone: '' }, /zone "a" is defined twice/],
    ['bad network', { zones: [{ name: 'a', interfaces: ['eth0'], networks: ['10.0.0.300/24'] }], services: [], lanZone: '' }, /is not a network/],
    ['reserved zone name', { zones: [{ name: 'other', interfaces: ['eth0'] }], services: [], lanZone: '' }, /reserved/],
    ['unknown lan zone', { lanZone: 'devices' }, /firewall\.lanZone: unknown zone "devices"/],
    ['extra service in an unknown zone', { extraServices: [{ name: 'ssh', zone: 'dmz', protocol: 'tcp', port: 22 }] }, /^firewall\.extraServices\[0\]\.zone: unknown zone "dmz"/],
    ['extra service with a bad port', { extraServices: [{ name: 'ssh', zone: 'wan', protocol: 'tcp', port: 70000 }] }, /^firewall\.extraServices\[0\]\.port: port out of range/]
  ]
  for (const [what, firewall, reason] of cases) {
    t.throws(() => firewallPolicy(buildConfig({ firewall })), reason, what)
    try { buildConfig({ firewall }); firewallPolicy(buildConfig({ firewall })) } catch (err) { t.ok(isConfigError(err), `${what}: a ConfigError`) }
  }
  // The loader's check does not hold a test's api.port 0 against the firewall; the firewall command does.
  const c = buildConfig({ api: { port: 0 } })
  t.throws(() => firewallPolicy(c), /api\.port is 0/)
})

t.test('the rendered ruleset', async t => {
  const p = firewallPolicy(buildConfig({}))
  const text = renderRuleset(p)
  t.equal(renderRuleset(p), text, 'deterministic')
  t.ok(text.includes(REPLACE_PREAMBLE), 'replaces only our table, in one transaction')
  t.notMatch(text, /flush ruleset/, 'never touches other tables')
  t.match(text, /type filter hook input priority filter; policy drop;/)
  t.match(text, /type filter hook forward priority filter; policy drop;/)
  t.match(text, /iif "lo" accept/)
  t.match(text, /ct state established,related accept/)
  t.match(text, /chain zone_wan \{\n(.*\n)*? {4}udp dport 51820 accept\n {4}jump closed_wan/)
  t.match(text, /chain zone_wg \{\n(.*\n)*? {4}tcp dport \{ 22, 8080 \} accept/)
  t.match(text, /ip saddr != \{ 192\.168\.100\.0\/24, 0\.0\.0\.0 \} counter name "spoofed" drop/)
  t.match(text, /iifname "wlan0" counter name "forward_lan" drop/)
  t.match(text, /update @conn4 \{ ip saddr limit rate over 50\/second burst 100 packets \} add @ratelimited4 \{ ip saddr \} counter name "rate_limited" drop/)
  t.match(text, /add @blocklist4 \{ ip saddr \} counter name "scan_wan" drop/)
  t.notMatch(text, /scan_wg/, 'no scan detection on the operator\'s tunnel')
  t.match(text, /set blocklist4 \{ type ipv4_addr; flags dynamic, timeout; timeout 900s;/)
  // Every counter a rule names is declared.
  const declared = new Set([...text.matchAll(/^ {2}counter (\S+) \{/gm)].map(m => m[1]))
  for (const m of text.matchAll(/counter name "([^"]+)"/g)) t.ok(declared.has(m[1]), `counter ${m[1]} declared`)
  t.same(counterLabels('closed_wan'), { reason: 'closed', zone: 'wan' })
  t.same(counterLabels('rate_limited'), { reason: 'rate_limited', zone: '' })
})

/** A fake nft: keeps "the kernel's" table as text; `fail` makes the next load fail. */
function fakeNft (): { nft: Nft, state: { table: string | null, loads: string[], failCheck: boolean } } {
  const state = { table: null as string | null, loads: [] as string[], failCheck: false }
  const run: NftRunner = async (args, input) => {
    if (args[0] === '-c') return state.failCheck ? { code: 1, stdout: '', stderr: 'Error: syntax error' } : { code: 0, stdout: '', stderr: '' }
    if (args[0] === '-f') {
      state.loads.push(input!)
      const body = input!.startsWith(REPLACE_PREAMBLE) ? input!.slice(REPLACE_PREAMBLE.length) : input!
      state.table = body.trim() === '' ? null : body.replace(/^#.*\n/gm, '').replace(REPLACE_PREAMBLE, '')
      return { code: 0, stdout: '', stderr: '' }
    }
    if (args[0] === 'list') return state.table === null ? { code: 1, stdout: '', stderr: 'Error: No such file or directory' } : { code: 0, stdout: state.table, stderr: '' }
    return { code: 1, stdout: '', stderr: 'unexpected' }
  }
  return { nft: new Nft(run), state }
}

/** The watchdog runs in-process here; the namespace test runs the real detached one. */
function inProcessWatchdog (): WatchdogControl & { started: string[] } {
  const started: string[] = []
  return {
    started,
    async start ({ id }) { started.push(id); return { kind: 'process', pid: process.pid } },
    async stop () {}
  }
}

t.test('commit-confirm: apply, rollback at the deadline, confirm', async t => {
  const d = dir(t)
  let now = 1_000_000
  const { nft, state } = fakeNft()
  const wd = inProcessWatchdog()
  const m = new SafeApply(nft, d, wd, () => now)
  const v1 = 'table inet iot_gateway {\n  # v1\n}\n'
  const v2 = 'table inet iot_gateway {\n  # v2\n}\n'

  // First apply on a machine without our table: the rollback target deletes the table.
  await m.apply(REPLACE_PREAMBLE + v1, null)
  t.equal(state.table, v1)
  t.equal(m.pending(), null)
  const r = await m.apply(REPLACE_PREAMBLE + v2, 30)
  t.equal(state.table, v2)
  t.equal(m.pending()?.id, r.id)
  t.equal(m.pending()?.deadline, now + 30_000)
  t.same(wd.started, [r.id])
  t.equal(readFileSync(join(d, 'previous.nft'), 'utf8'), REPLACE_PREAMBLE + v1)

  // Before the deadline nothing happens; after it the watchdog restores v1.
  const watching = m.watch(r.id, 5)
  now += 29_000
  await new Promise(resolve => setTimeout(resolve, 30))
  t.equal(state.table, v2, 'still v2 before the deadline')
  now += 2_000
  t.equal(await watching, 'rolled_back')
  t.equal(state.table, v1, 'v1 is back')
  t.equal(m.pending(), null)
  t.notOk(existsSync(join(d, 'previous.nft')))
  await t.rejects(m.confirm(), /nothing to confirm/)

  // Confirmed in time: stays, and the watchdog ends quietly.
  const r2 = await m.apply(REPLACE_PREAMBLE + v2, 30)
  const w2 = m.watch(r2.id, 5)
  const confirmed = await m.confirm()
  t.equal(confirmed.id, r2.id)
  now += 60_000
  t.equal(await w2, 'confirmed')
  t.equal(state.table, v2)

  const events = readFileSync(join(d, 'events.jsonl'), 'utf8').trim().split('\n').map(l => JSON.parse(l) as { type: string })
  t.same(events.map(e => e.type), ['firewall_applied', 'firewall_applied', 'firewall_rolled_back', 'firewall_applied', 'firewall_confirmed'])
})

t.test('commit-confirm: the rollback target is the last confirmed ruleset, and a table that did not exist is removed again', async t => {
  const d = dir(t)
  const { nft, state } = fakeNft()
  const m = new SafeApply(nft, d, inProcessWatchdog())
  await m.apply(REPLACE_PREAMBLE + 'table inet iot_gateway { # a\n}\n', 60)
  await m.apply(REPLACE_PREAMBLE + 'table inet iot_gateway { # b\n}\n', 60)
  const r = await m.rollback({ reason: 'test' })
  t.ok(r.rolledBack)
  t.equal(state.table, null, 'two unconfirmed applies roll back to "no table", not to the first of them')
  t.equal(state.loads.at(-1), REPLACE_PREAMBLE)
  // A stale watchdog of a replaced apply does nothing.
  const r3 = await m.apply(REPLACE_PREAMBLE + 'table inet iot_gateway { # c\n}\n', 60)
  t.same(await m.rollback({ ifId: 'some-older-id', reason: 'late' }), { rolledBack: false })
  t.equal(m.pending()?.id, r3.id)
})

t.test('commit-confirm: a ruleset nft rejects changes nothing', async t => {
  const d = dir(t)
  const { nft, state } = fakeNft()
  const m = new SafeApply(nft, d, inProcessWatchdog())
  await m.apply(REPLACE_PREAMBLE + 'table inet iot_gateway { # a\n}\n', null)
  state.failCheck = true
  const err = await m.apply(REPLACE_PREAMBLE + 'garbage', 60).catch(e => e)
  t.ok(isFirewallError(err))
  t.match(err.message, /nft rejected the ruleset: Error: syntax error/)
  t.equal(state.loads.length, 1)
  t.equal(m.pending(), null)
})

t.test('commit-confirm: no watchdog, no change', async t => {
  const d = dir(t)
  const { nft, state } = fakeNft()
  const m = new SafeApply(nft, d, { start: async () => { throw new Error('no fork today') }, stop: async () => {} })
  await t.rejects(m.apply(REPLACE_PREAMBLE + 'table inet iot_gateway { # a\n}\n', 60), /could not start the rollback watchdog/)
  t.equal(state.table, null, 'rolled back at once')
  t.equal(m.pending(), null)
})

const nftJson = (elems: Array<{ val: string, expires: number }>, rl: Array<{ val: string, expires: number }> = [], closed = 7): string => JSON.stringify({
  nftables: [
    { metainfo: { version: '1.0.6' } },
    { table: { family: 'inet', name: 'iot_gateway' } },
    { counter: { family: 'inet', name: 'closed_wan', table: 'iot_gateway', packets: closed, bytes: closed * 60 } },
    { counter: { family: 'inet', name: 'rate_limited', table: 'iot_gateway', packets: 3, bytes: 180 } },
    { set: { family: 'inet', name: 'blocklist4', table: 'iot_gateway', type: 'ipv4_addr', timeout: 900, ...(elems.length > 0 ? { elem: elems.map(e => ({ elem: e })) } : {}) } },
    { set: { family: 'inet', name: 'ratelimited4', table: 'iot_gateway', type: 'ipv4_addr', timeout: 60, ...(rl.length > 0 ? { elem: rl.map(e => ({ elem: e })) } : {}) } }
  ]
})

t.test('nft JSON snapshot', async t => {
  const s = parseNftJson(nftJson([{ val: '203.0.113.9', expires: 890 }]), 100_000)!
  t.same(s.counters, [{ name: 'closed_wan', packets: 7, bytes: 420 }, { name: 'rate_limited', packets: 3, bytes: 180 }])
  t.same(s.blocklist, [{ address: '203.0.113.9', expiresSeconds: 890, timeoutSeconds: 900 }])
  t.equal(addedAt(s, s.blocklist[0]!), 90_000)
  t.equal(parseNftJson('', 0), null)
  t.equal(parseNftJson('{"nftables":[{"metainfo":{}}]}', 0), null, 'no table')
})

t.test('the daemon side: /metrics and one audit record per blocklist entry', async t => {
  const d = dir(t)
  const events: Array<{ type: string, source?: string | null }> = []
  const metrics = new Registry()
  const mon = new FirewallMonitor(d, 3600, metrics, { record: e => events.push(e) }, silentLogger)
  mon.start()
  t.teardown(() => mon.stop())
  t.notMatch(metrics.render(), /^gateway_firewall_(loaded|blocklist_entries|rate_limited_sources|snapshot_timestamp_seconds) /m, 'no snapshot: those series are absent, not 0 or -1')
  t.match(metrics.render(), /^# TYPE gateway_firewall_loaded gauge$/m, 'the family is declared')
  writeFileSync(join(d, 'nft.json'), '')
  t.match(metrics.render(), /^gateway_firewall_loaded 0$/m, 'a snapshot of no table: 0')
  writeFileSync(join(d, 'nft.json'), nftJson([{ val: '203.0.113.9', expires: 899 }], [{ val: '192.168.100.20', expires: 59 }]))
  const text = metrics.render()
  t.match(text, /# TYPE gateway_firewall_dropped_packets_total counter/)
  t.match(text, /gateway_firewall_dropped_packets_total\{reason="closed",zone="wan"\} 7/)
  t.match(text, /gateway_firewall_dropped_packets_total\{reason="rate_limited",zone=""\} 3/)
  t.match(text, /gateway_firewall_blocklist_entries 1/)
  t.match(text, /gateway_firewall_rate_limited_sources 1/)
  t.match(text, /^gateway_firewall_snapshot_timestamp_seconds \d{10}(\.\d+)?$/m, 'the snapshot\'s time in Unix seconds')
  t.same(events.map(e => [e.type, e.source]), [['port_scan_detected', '203.0.113.9'], ['rate_limit_applied', '192.168.100.20']])
  // The same entry seen again in a later snapshot is not a new event; a new entry is.
  await new Promise(resolve => setTimeout(resolve, 20))
  writeFileSync(join(d, 'nft.json'), nftJson([{ val: '203.0.113.9', expires: 898 }, { val: '198.51.100.7', expires: 900 }], [], 9))
  mon.refresh()
  t.same(events.map(e => e.source), ['203.0.113.9', '192.168.100.20', '198.51.100.7'])
  // apply/confirm/rollback events from the privileged command, each once.
  writeFileSync(join(d, 'events.jsonl'), JSON.stringify({ key: 'firewall_rolled_back:x1', at: 5, type: 'firewall_rolled_back', detail: { id: 'x1' } }) + '\n')
  mon.refresh()
  mon.refresh()
  t.equal(events.filter(e => e.type === 'firewall_rolled_back').length, 1)
})
