import type { Config } from '../config/schema.js'
import { contains, networkOf, parseCidr } from '../firewall/net.js'
import { ConfigError } from '../lib/errors.js'
import { defaultKeyFile } from './keys.js'

/** The tunnel as the renderers and `wg up` need it, resolved from the configuration. */
export interface TunnelSpec {
  interface: string
  listenPort: number
  /** The gateway's address with prefix (10.200.0.2/24). */
  address: string
  privateKeyFile: string
  presharedKeyFile: string
  mtu: number
  hub: { publicKey: string, endpoint: string, allowedIps: string[], keepalive: number } | null
}

export function tunnelSpec (c: Config, overrides: { interface?: string } = {}): TunnelSpec {
  const w = c.wireguard
  if (w.address === '') throw new ConfigError('wireguard.address', 'is not set (the gateway\'s tunnel address, e.g. 10.200.0.2/24)', 'GW_ERR_CONFIG_MISSING')
  return {
    interface: overrides.interface ?? w.interface,
    listenPort: w.listenPort,
    address: w.address,
    privateKeyFile: w.privateKeyFile !== '' ? w.privateKeyFile : defaultKeyFile(c.gateway.dataDir),
    presharedKeyFile: w.presharedKeyFile,
    mtu: w.mtu,
    hub: w.hubPublicKey === '' ? null : { publicKey: w.hubPublicKey, endpoint: w.hubEndpoint, allowedIps: [...w.hubAllowedIps], keepalive: w.persistentKeepaliveSeconds }
  }
}

/** Allowed networks that the interface address does not already cover: they need a route. */
export function extraRoutes (t: TunnelSpec): string[] {
  const own = parseCidr(t.address)!
  return (t.hub?.allowedIps ?? []).map(n => parseCidr(n)!).filter(n => !contains(own, n)).map(networkOf)
}

/** Credential names that systemd-networkd imports by itself (ImportCredential=network.wireguard.*). */
export const keyCredential = (iface: string): string => `network.wireguard.private.${iface}`
export const pskCredential = (iface: string): string => `network.wireguard.psk.${iface}`

export type KeyMode = 'credential' | 'file'

export const unitBaseName = (iface: string): string => `50-iot-gateway-${iface}`

/**
 * systemd-networkd .netdev for the tunnel. Pure. With keyMode 'credential' (default) the key is
 * referenced as `@network.wireguard.private.<if>`, which networkd (systemd >= 256) imports from
 * /run/credstore, so the key file stays 0600 root; 'file' points PrivateKeyFile= at the key
 * (then it must be readable by systemd-network: root:systemd-network 0640).
 */
export function renderNetdev (t: TunnelSpec, keyMode: KeyMode = 'credential'): string {
  const L = [
    '# Rendered by iot-gateway (`iot-gateway wg setup`); edit the gateway configuration instead.',
    '[NetDev]',
    `Name=${t.interface}`,
    'Kind=wireguard',
    'Description=iot-gateway management tunnel to the operator hub'
  ]
  if (t.mtu > 0) L.push(`MTUBytes=${t.mtu}`)
  L.push('', '[WireGuard]')
  L.push(keyMode === 'credential' ? `PrivateKey=@${keyCredential(t.interface)}` : `PrivateKeyFile=${t.privateKeyFile}`)
  L.push(`ListenPort=${t.listenPort}`)
  if (t.hub !== null) {
    L.push('', '[WireGuardPeer]', `PublicKey=${t.hub.publicKey}`)
    if (t.presharedKeyFile !== '') L.push(keyMode === 'credential' ? `PresharedKey=@${pskCredential(t.interface)}` : `PresharedKeyFile=${t.presharedKeyFile}`)
    L.push(`Endpoint=${t.hub.endpoint}`)
    if (t.hub.allowedIps.length > 0) L.push(`AllowedIPs=${t.hub.allowedIps.join(',')}`)
    if (t.hub.keepalive > 0) L.push(`PersistentKeepalive=${t.hub.keepalive}`)
  }
  return L.join('\n') + '\n'
}

/** systemd-networkd .network for the tunnel: the gateway's address and routes to the hub's networks. Pure. */
export function renderNetwork (t: TunnelSpec): string {
  const L = [
    '# Rendered by iot-gateway (`iot-gateway wg setup`); edit the gateway configuration instead.',
    '[Match]',
    `Name=${t.interface}`,
    '',
    '[Network]',
    `Address=${t.address}`,
    // The tunnel never carries a default route or DNS: it is for management only.
    'DHCP=no',
    'IPv6AcceptRA=no',
    'LinkLocalAddressing=no'
  ]
  for (const r of extraRoutes(t)) L.push('', '[Route]', `Destination=${r}`)
  return L.join('\n') + '\n'
}
