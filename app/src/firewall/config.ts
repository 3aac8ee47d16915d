import { defineSection } from '../config/define.js'
import { ConfigError } from '../lib/errors.js'
import { parseCidr } from './net.js'

/** Zone names become nft chain and counter names (`zone_lan`, `closed_lan`): short, no underscore. */
export const ZONE_NAME = /^[a-z][a-z0-9]{0,11}$/
/** Linux interface names (IFNAMSIZ 16 with the NUL). */
export const IFACE_NAME = /^[A-Za-z0-9_.-]{1,15}$/
/** Names reserved for the catch-all counters (`closed_other`, `forward_other`). */
export const RESERVED_ZONES = ['other'] as const

export interface ZoneSpec {
  /** wan, lan, wg, ... */
  readonly name: string
  /** Interfaces that belong to the zone. */
  readonly interfaces: readonly string[]
  /** Source networks of the zone. Empty: any source (the WAN). Otherwise traffic on these interfaces must come from them, and their addresses are refused on every other interface. */
  readonly networks: readonly string[]
  /** Put sources that probe many closed ports into the blocklist (off for the operator's tunnel). */
  readonly detectScans: boolean
  /** Answer ICMP echo (rate-limited). */
  readonly ping: boolean
}

export type Protocol = 'tcp' | 'udp'

export interface ServiceSpec {
  readonly name: string
  readonly zone: string
  readonly protocol: Protocol
  /** A port number, or a reference to an integer field of the configuration ("api.port"). */
  readonly port: number | string
}

const PORT_REF = /^[a-z][A-Za-z]*\.[a-z][A-Za-z]*$/

function obj (value: unknown, path: string, keys: string[]): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(path, 'must be an object')
  for (const k of Object.keys(value)) if (!keys.includes(k) && k !== '$comment') throw new ConfigError(`${path}.${k}`, `unknown field (known: ${keys.join(', ')})`)
  return value as Record<string, unknown>
}

function strings (value: unknown, path: string, check: (s: string, p: string) => void): string[] {
  if (!Array.isArray(value)) throw new ConfigError(path, 'must be an array of strings')
  return value.map((v, i) => {
    if (typeof v !== 'string') throw new ConfigError(`${path}[${i}]`, 'must be a string')
    check(v, `${path}[${i}]`)
    return v
  })
}

function bool (value: unknown, path: string, dflt: boolean): boolean {
  if (value === undefined) return dflt
  if (typeof value !== 'boolean') throw new ConfigError(path, 'must be true or false')
  return value
}

export function checkZone (value: unknown, path: string): ZoneSpec {
  const o = obj(value, path, ['name', 'interfaces', 'networks', 'detectScans', 'ping'])
  const name = o.name
  if (typeof name !== 'string' || !ZONE_NAME.test(name)) throw new ConfigError(`${path}.name`, `must match ${ZONE_NAME} (got ${JSON.stringify(name)})`)
  if ((RESERVED_ZONES as readonly string[]).includes(name)) throw new ConfigError(`${path}.name`, `"${name}" is reserved`)
  const interfaces = strings(o.interfaces ?? [], `${path}.interfaces`, (s, p) => {
    if (!IFACE_NAME.test(s)) throw new ConfigError(p, `"${s}" is not an interface name`)
  })
  if (interfaces.length === 0) throw new ConfigError(`${path}.interfaces`, 'a zone needs at least one interface')
  const networks = strings(o.networks ?? [], `${path}.networks`, (s, p) => {
    if (parseCidr(s) === null) throw new ConfigError(p, `"${s}" is not a network (CIDR such as 192.168.100.0/24)`)
  })
  return { name, interfaces, networks, detectScans: bool(o.detectScans, `${path}.detectScans`, true), ping: bool(o.ping, `${path}.ping`, false) }
}

export function checkService (value: unknown, path: string): ServiceSpec {
  const o = obj(value, path, ['name', 'zone', 'protocol', 'port'])
  if (typeof o.name !== 'string' || !/^[a-z][a-z0-9-]{0,31}$/.test(o.name)) throw new ConfigError(`${path}.name`, 'must be a short lower-case name')
  if (typeof o.zone !== 'string' || o.zone === '') throw new ConfigError(`${path}.zone`, 'must name a zone')
  if (o.protocol !== 'tcp' && o.protocol !== 'udp') throw new ConfigError(`${path}.protocol`, `must be "tcp" or "udp" (got ${JSON.stringify(o.protocol)})`)
  const port = o.port
  if (typeof port === 'number') {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`${path}.port`, `port out of range (1-65535): ${port}`)
  } else if (typeof port !== 'string' || !PORT_REF.test(port)) {
    throw new ConfigError(`${path}.port`, 'must be a port number (1-65535) or a configuration field such as "api.port"')
  }
  return { name: o.name, zone: o.zone, protocol: o.protocol, port }
}

export const DEFAULT_ZONES: readonly ZoneSpec[] = [
  { name: 'wan', interfaces: ['eth0'], networks: [], detectScans: true, ping: false },
  { name: 'lan', interfaces: ['wlan0'], networks: ['192.168.100.0/24'], detectScans: true, ping: true },
  { name: 'wg', interfaces: ['wg0'], networks: [], detectScans: false, ping: true }
]

export const DEFAULT_SERVICES: readonly ServiceSpec[] = [
  { name: 'mqtt-tls', zone: 'lan', protocol: 'tcp', port: 'broker.lanPort' },
  { name: 'coap', zone: 'lan', protocol: 'udp', port: 5683 },
  { name: 'dhcp', zone: 'lan', protocol: 'udp', port: 67 },
  { name: 'dns', zone: 'lan', protocol: 'udp', port: 53 },
  { name: 'dns', zone: 'lan', protocol: 'tcp', port: 53 },
  { name: 'wireguard', zone: 'wan', protocol: 'udp', port: 'wireguard.listenPort' },
  { name: 'api', zone: 'wg', protocol: 'tcp', port: 'api.port' },
  { name: 'ssh', zone: 'wg', protocol: 'tcp', port: 22 }
]

export const firewall = defineSection({
  zones: { type: 'object[]', default: DEFAULT_ZONES, item: checkZone, description: 'Firewall zones: {name, interfaces, networks, detectScans, ping}. Input from an interface of no zone is dropped. Networks may not overlap between zones.' },
  services: { type: 'object[]', default: DEFAULT_SERVICES, item: checkService, description: 'What each zone may reach on the gateway: {name, zone, protocol tcp|udp, port}. port is a number or a configuration field ("api.port"). Everything else is dropped.' },
  extraServices: { type: 'object[]', default: [], item: checkService, description: 'Services admitted in addition to `services` (same form), so a build can open one more port without repeating the defaults: the layer\'s debug and QEMU test images add SSH from the WAN here.' },
  lanZone: { type: 'string', default: 'lan', description: 'The devices\' zone: forwarding from it is dropped and counted on its own.' },
  newConnRate: { type: 'integer', default: 50, min: 1, max: 1000000, description: 'New connections per second allowed per source address (nft dynamic set with a limit); more are dropped and the source is reported (rate_limit_applied).' },
  newConnBurst: { type: 'integer', default: 100, min: 1, max: 1000000, description: 'Burst of new connections allowed per source before the rate applies.' },
  scanPorts: { type: 'integer', default: 12, min: 2, max: 65535, description: 'Distinct closed ports a source may probe per scanWindowSeconds before it is blocklisted (zones with detectScans).' },
  scanWindowSeconds: { type: 'integer', default: 60, min: 1, max: 3600, description: 'Window over which closed-port probes are counted.' },
  blocklistSeconds: { type: 'integer', default: 900, min: 1, max: 604800, description: 'How long a port-scanning source stays in the blocklist set.' },
  confirmTimeoutSeconds: { type: 'integer', default: 120, min: 5, max: 86400, description: '`firewall apply` rolls back by itself unless `firewall confirm` comes within this time.' },
  stateDir: { type: 'string', default: '/run/iot-gateway-firewall', description: 'Root-owned state of the privileged firewall command: previous ruleset, pending confirmation, counter snapshot (nft.json), events. The daemon only reads it.' },
  statsPollSeconds: { type: 'integer', default: 5, min: 1, max: 3600, description: 'How often the daemon reads the counter snapshot written by the privileged timer.' }
})
