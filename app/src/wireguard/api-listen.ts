import { isIP } from 'node:net'
import type { Config } from '../config/schema.js'

/**
 * Where iot-gateway-api@.socket listens for the hub (the tunnel's address, api.port) and where its
 * proxy forwards (the daemon's own loopback listener).
 */
export interface ApiTunnelListen { address: string, listen: string, target: string }

const hostPort = (host: string, port: number): string => `${isIP(host) === 6 ? `[${host}]` : host}:${port}`
const isLoopback = (host: string): boolean => host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))

/**
 * The management API on the tunnel's address, from the merged configuration (the image's defaults
 * and this gateway's override on /data), because a fleet image carries no tunnel address of its
 * own. null: no tunnel address, or the daemon does not listen on loopback (api.host set to an
 * address of its own: a socket on the same port would take it away from the daemon, and an
 * unspecified address already covers the tunnel).
 */
export function apiTunnelListen (c: Config): ApiTunnelListen | null {
  if (c.wireguard.address === '' || !isLoopback(c.api.host)) return null
  // the schema's check has accepted "ADDRESS/PREFIX"
  const address = c.wireguard.address.split('/')[0] ?? ''
  if (isIP(address) === 0) return null
  return { address, listen: hostPort(address, c.api.port), target: hostPort(c.api.host === 'localhost' ? '127.0.0.1' : c.api.host, c.api.port) }
}
