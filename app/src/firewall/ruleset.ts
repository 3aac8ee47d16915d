import type { FirewallPolicy, PolicyZone } from './policy.js'

/** Our one table. Nothing else in the ruleset is ever touched. */
export const TABLE_FAMILY = 'inet'
export const TABLE_NAME = 'iot_gateway'
export const TABLE = `${TABLE_FAMILY} ${TABLE_NAME}`

/**
 * The first two lines of every file we load: declaring the table creates it if it is missing, so the
 * `delete` that follows never fails on a first apply; the whole file is one nft transaction, so the
 * old table is replaced atomically or, on any error, left exactly as it was.
 */
export const REPLACE_PREAMBLE = `table ${TABLE}\ndelete table ${TABLE}\n`

/** Seconds a source stays listed as rate-limited (also bounds rate_limit_applied events to one per source per period). */
export const RATE_LIMITED_SECONDS = 60
/** Seconds a per-source new-connection meter lives without traffic. */
const METER_SECONDS = 60

/** Drop reasons that are one counter each. Zone-scoped reasons are `<reason>_<zone>` (closed_wan, scan_wan, forward_lan). */
export const GLOBAL_COUNTERS = {
  invalid: 'packets that conntrack marks invalid',
  blocklisted: 'packets from a source in the port-scan blocklist',
  rate_limited: 'new connections over the per-source rate',
  spoofed: 'source address not allowed on the interface it arrived on'
} as const
export const ZONE_REASONS = {
  closed: 'new traffic to a port the zone may not reach',
  scan: 'the closed-port probe that put its source into the blocklist',
  forward: 'forwarding attempts (the gateway does not route)'
} as const
export type ZoneReason = keyof typeof ZONE_REASONS

/** Splits an nft counter name into the /metrics labels. */
export function counterLabels (name: string): { reason: string, zone: string } {
  const m = /^(closed|scan|forward)_([a-z0-9]+)$/.exec(name)
  return m ? { reason: m[1]!, zone: m[2]! } : { reason: name, zone: '' }
}

const q = (s: string): string => `"${s}"`
const set = (xs: readonly (string | number)[]): string => xs.length === 1 ? String(xs[0]) : `{ ${xs.join(', ')} }`
const ifaces = (z: PolicyZone): string => set(z.interfaces.map(q))

/** nft's limit units are second/minute/hour/day: `n` per `seconds`, rounded to the nearest unit that is exact enough. */
function rate (n: number, seconds: number): string {
  if (seconds === 1) return `${n}/second`
  if (seconds === 60) return `${n}/minute`
  if (seconds === 3600) return `${n}/hour`
  return `${Math.max(1, Math.round(n * 3600 / seconds))}/hour`
}

function zoneChain (p: FirewallPolicy, z: PolicyZone): string[] {
  const r: string[] = []
  r.push(`  chain zone_${z.name} {`)
  if (z.nets4.length > 0) {
    r.push('    # only the zone\'s own networks (and 0.0.0.0, a DHCP client without an address yet)')
    r.push(`    ip saddr != ${set([...z.nets4, '0.0.0.0'])} counter name "spoofed" drop`)
  }
  if (z.nets6.length > 0) r.push(`    ip6 saddr != ${set(['fe80::/10', '::', ...z.nets6])} counter name "spoofed" drop`)
  for (const s of z.services) r.push(`    # ${s.name}: ${s.protocol}/${s.port}`)
  if (z.tcp.length > 0) r.push(`    tcp dport ${set(z.tcp)} accept`)
  if (z.udp.length > 0) r.push(`    udp dport ${set(z.udp)} accept`)
  if (z.ping) {
    r.push('    icmp type echo-request limit rate 10/second burst 20 packets accept')
    r.push('    icmpv6 type echo-request limit rate 10/second burst 20 packets accept')
  }
  r.push(`    jump closed_${z.name}`)
  r.push('  }')
  r.push('')
  r.push(`  chain closed_${z.name} {`)
  if (z.detectScans) {
    r.push(`    # a source that probes more than ${p.scanPorts} distinct closed ports in ${p.scanWindowSeconds}s goes into the blocklist`)
    for (const v of ['4', '6'] as const) {
      const saddr = v === '4' ? 'ip saddr' : 'ip6 saddr'
      r.push(`    meta l4proto { tcp, udp } ${saddr} . meta l4proto . th dport @probed${v} counter name "closed_${z.name}" drop`)
      r.push(`    meta l4proto { tcp, udp } add @probed${v} { ${saddr} . meta l4proto . th dport }`)
      r.push(`    meta l4proto { tcp, udp } update @scan${v} { ${saddr} limit rate over ${rate(p.scanPorts, p.scanWindowSeconds)} burst ${p.scanPorts} packets } add @blocklist${v} { ${saddr} } counter name "scan_${z.name}" drop`)
    }
  }
  r.push(`    counter name "closed_${z.name}" drop`)
  r.push('  }')
  return r
}

/**
 * Renders the whole nft file for a policy: pure, deterministic, no I/O (balena-supervisor's
 * iptables shape: this builds the text, an adaptor applies it). Loaded with `nft -f`, it replaces
 * table inet iot_gateway in one transaction and touches nothing else.
 */
export function renderRuleset (p: FirewallPolicy, opts: { header?: string } = {}): string {
  const L: string[] = []
  L.push('#!/usr/sbin/nft -f')
  L.push(`# ${opts.header ?? 'Rendered by iot-gateway from its configuration; edit the configuration, not this file.'}`)
  L.push('# Replaces only our table, atomically (one nft transaction).')
  L.push(REPLACE_PREAMBLE.trimEnd())
  L.push(`table ${TABLE} {`)

  for (const [name, comment] of Object.entries(GLOBAL_COUNTERS)) L.push(`  counter ${name} { comment ${q(comment)} }`)
  for (const z of p.zones) {
    for (const reason of ['closed', 'scan', 'forward'] as const) {
      if (reason === 'scan' && !z.detectScans) continue
      L.push(`  counter ${reason}_${z.name} { comment ${q(`zone ${z.name}: ${ZONE_REASONS[reason]}`)} }`)
    }
  }
  L.push(`  counter closed_other { comment ${q('input on an interface of no zone')} }`)
  L.push(`  counter forward_other { comment ${q('forwarding from an interface of no zone')} }`)
  L.push('')

  for (const v of ['4', '6'] as const) {
    const t = v === '4' ? 'ipv4_addr' : 'ipv6_addr'
    L.push(`  set blocklist${v} { type ${t}; flags dynamic, timeout; timeout ${p.blocklistSeconds}s; size 65536; comment "port-scan sources"; }`)
    L.push(`  set ratelimited${v} { type ${t}; flags dynamic, timeout; timeout ${RATE_LIMITED_SECONDS}s; size 65536; comment "sources over the new-connection rate"; }`)
    L.push(`  set conn${v} { type ${t}; flags dynamic, timeout; timeout ${METER_SECONDS}s; size 65536; comment "per-source new-connection meter"; }`)
    L.push(`  set probed${v} { type ${t} . inet_proto . inet_service; flags dynamic, timeout; timeout ${p.scanWindowSeconds}s; size 65536; comment "closed ports probed per source"; }`)
    L.push(`  set scan${v} { type ${t}; flags dynamic, timeout; timeout ${p.scanWindowSeconds}s; size 65536; comment "per-source closed-port meter"; }`)
  }
  L.push('')

  L.push('  chain input {')
  L.push('    type filter hook input priority filter; policy drop;')
  L.push('    iif "lo" accept')
  L.push('    ip saddr @blocklist4 counter name "blocklisted" drop')
  L.push('    ip6 saddr @blocklist6 counter name "blocklisted" drop')
  L.push('    ct state invalid counter name "invalid" drop')
  L.push('    ct state established,related accept')
  L.push('    ip saddr 127.0.0.0/8 counter name "spoofed" drop')
  L.push('    ip6 saddr ::1 counter name "spoofed" drop')
  for (const z of p.zones) {
    if (z.nets4.length > 0) L.push(`    iifname != ${ifaces(z)} ip saddr ${set(z.nets4)} counter name "spoofed" drop`)
    if (z.nets6.length > 0) L.push(`    iifname != ${ifaces(z)} ip6 saddr ${set(z.nets6)} counter name "spoofed" drop`)
  }
  L.push('    # IPv6 neighbour discovery (hop limit 255: from the link itself) and MLD queries from link-local routers')
  L.push('    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } ip6 hoplimit 255 accept')
  L.push('    icmpv6 type mld-listener-query ip6 saddr fe80::/10 accept')
  L.push('    ct state new jump ratelimit')
  for (const z of p.zones) L.push(`    iifname ${ifaces(z)} jump zone_${z.name}`)
  L.push('    counter name "closed_other" drop')
  L.push('  }')
  L.push('')

  L.push('  chain ratelimit {')
  L.push(`    # more than ${p.newConnRate}/s new connections (burst ${p.newConnBurst}) from one source: drop, and list the source for the audit log`)
  L.push(`    update @conn4 { ip saddr limit rate over ${p.newConnRate}/second burst ${p.newConnBurst} packets } add @ratelimited4 { ip saddr } counter name "rate_limited" drop`)
  L.push(`    update @conn6 { ip6 saddr limit rate over ${p.newConnRate}/second burst ${p.newConnBurst} packets } add @ratelimited6 { ip6 saddr } counter name "rate_limited" drop`)
  L.push('  }')
  L.push('')

  for (const z of p.zones) { L.push(...zoneChain(p, z)); L.push('') }

  L.push('  chain forward {')
  L.push('    type filter hook forward priority filter; policy drop;')
  L.push('    # the gateway routes nothing: devices reach the cloud only through the gateway\'s own services')
  const lan = p.zones.find(z => z.name === p.lanZone)
  for (const z of lan ? [lan, ...p.zones.filter(x => x !== lan)] : p.zones) L.push(`    iifname ${ifaces(z)} counter name "forward_${z.name}" drop`)
  L.push('    counter name "forward_other" drop')
  L.push('  }')
  L.push('}')
  return L.join('\n') + '\n'
}
