import type { Config } from '../config/schema.js'
import { ConfigError } from '../lib/errors.js'
import type { Protocol, ServiceSpec, ZoneSpec } from './config.js'
import { networkOf, overlaps, parseCidr, type Cidr } from './net.js'

/** What the renderer needs, resolved and checked: no references, no unknown names. */
export interface FirewallPolicy {
  readonly zones: readonly PolicyZone[]
  /** The devices' zone (forwarding from it is counted as forward_<lan>), or null. */
  readonly lanZone: string | null
  readonly newConnRate: number
  readonly newConnBurst: number
  readonly scanPorts: number
  readonly scanWindowSeconds: number
  readonly blocklistSeconds: number
}

export interface PolicyZone {
  readonly name: string
  readonly interfaces: readonly string[]
  readonly nets4: readonly string[]
  readonly nets6: readonly string[]
  readonly detectScans: boolean
  readonly ping: boolean
  readonly tcp: readonly number[]
  readonly udp: readonly number[]
  /** Service names by "proto/port", for comments and reports. */
  readonly services: ReadonlyArray<{ name: string, protocol: Protocol, port: number }>
}

type FirewallSection = Config['firewall']

function lookupPort (c: Config, ref: string, path: string, strict: boolean): number {
  const [section, field] = ref.split('.') as [string, string]
  const s = (c as unknown as Record<string, Record<string, unknown> | undefined>)[section]
  const v = s?.[field]
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new ConfigError(path, `"${ref}" is not an integer field of the configuration`)
  if (strict && (v < 1 || v > 65535)) throw new ConfigError(path, `port out of range (1-65535): ${ref} is ${v}`)
  return v
}

/**
 * Checks the firewall section against itself and the rest of the configuration and resolves it
 * into a policy. `strict: false` (the configuration loader's cross check) leaves out the range of
 * referenced ports, so tests that let the API pick a free port (api.port 0) still load.
 * Throws ConfigError naming the field: unknown zone, duplicate zone, interface in two zones,
 * overlapping networks, port out of range.
 */
export function firewallPolicy (c: Config, strict = true): FirewallPolicy {
  const fw: FirewallSection = c.firewall
  const zones = fw.zones as readonly ZoneSpec[]
  const services = [
    ...(fw.services as readonly ServiceSpec[]).map((s, i) => ({ s, path: `firewall.services[${i}]` })),
    ...(fw.extraServices as readonly ServiceSpec[]).map((s, i) => ({ s, path: `firewall.extraServices[${i}]` }))
  ]
  const byName = new Map<string, number>()
  const ifaceOwner = new Map<string, string>()
  const nets: Array<{ cidr: Cidr, zone: string, path: string }> = []
  zones.forEach((z, i) => {
    const path = `firewall.zones[${i}]`
    if (byName.has(z.name)) throw new ConfigError(`${path}.name`, `zone "${z.name}" is defined twice`)
    byName.set(z.name, i)
    z.interfaces.forEach((iface, j) => {
      const other = ifaceOwner.get(iface)
      if (other !== undefined) throw new ConfigError(`${path}.interfaces[${j}]`, `interface "${iface}" is already in zone "${other}"`)
      ifaceOwner.set(iface, z.name)
    })
    z.networks.forEach((n, j) => {
      const cidr = parseCidr(n)!
      const p = `${path}.networks[${j}]`
      for (const o of nets) {
        if (overlaps(o.cidr, cidr)) throw new ConfigError(p, `network ${n} overlaps ${o.cidr.text} (${o.path}, zone "${o.zone}")`)
      }
      nets.push({ cidr, zone: z.name, path: p })
    })
  })
  const known = (): string => [...byName.keys()].join(', ')
  const resolved = services.map(({ s, path }) => {
    if (!byName.has(s.zone)) throw new ConfigError(`${path}.zone`, `unknown zone "${s.zone}" (zones: ${known()})`)
    const port = typeof s.port === 'number' ? s.port : lookupPort(c, s.port, `${path}.port`, strict)
    return { ...s, port }
  })
  if (fw.lanZone !== '' && !byName.has(fw.lanZone)) throw new ConfigError('firewall.lanZone', `unknown zone "${fw.lanZone}" (zones: ${known()})`)

  const sorted = (xs: number[]): number[] => [...new Set(xs)].sort((a, b) => a - b)
  return {
    zones: zones.map(z => {
      const mine = resolved.filter(s => s.zone === z.name)
      const cidrs = z.networks.map(n => parseCidr(n)!)
      return {
        name: z.name,
        interfaces: z.interfaces,
        nets4: cidrs.filter(x => x.family === 4).map(networkOf),
        nets6: cidrs.filter(x => x.family === 6).map(networkOf),
        detectScans: z.detectScans,
        ping: z.ping,
        tcp: sorted(mine.filter(s => s.protocol === 'tcp').map(s => s.port)),
        udp: sorted(mine.filter(s => s.protocol === 'udp').map(s => s.port)),
        services: mine.map(s => ({ name: s.name, protocol: s.protocol, port: s.port }))
      }
    }),
    lanZone: fw.lanZone === '' ? null : fw.lanZone,
    newConnRate: fw.newConnRate,
    newConnBurst: fw.newConnBurst,
    scanPorts: fw.scanPorts,
    scanWindowSeconds: fw.scanWindowSeconds,
    blocklistSeconds: fw.blocklistSeconds
  }
}

/** The policy as a matrix: is `protocol/port` open from `zone`? (What the namespace test compares against.) */
export function isOpen (p: FirewallPolicy, zone: string, protocol: Protocol, port: number): boolean {
  const z = p.zones.find(x => x.name === zone)
  return z !== undefined && (protocol === 'tcp' ? z.tcp : z.udp).includes(port)
}
