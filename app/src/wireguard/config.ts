import { defineSection } from '../config/define.js'

/** A WireGuard key as wg prints it: 32 bytes in base64 (44 characters ending in "="). */
export const WG_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/
/** host:port, [v6]:port. */
export const ENDPOINT = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/

export const wireguard = defineSection({
  interface: { type: 'string', default: 'wg0', pattern: /^[A-Za-z0-9_.-]{1,15}$/, description: 'The tunnel interface (the firewall\'s wg zone names the same interface).' },
  listenPort: { type: 'integer', default: 51820, min: 1, max: 65535, description: 'UDP port WireGuard listens on; the only port open on the WAN.' },
  address: { type: 'string', default: '', description: 'The gateway\'s tunnel address with prefix, e.g. 10.200.0.2/24. Required by `wg setup`/`wg up`.' },
  privateKeyFile: { type: 'string', default: '', description: 'The gateway\'s private key (base64, mode 0600). Empty: <dataDir>/wireguard/private.key, made on first use.' },
  hubPublicKey: { type: 'string', default: '', pattern: WG_KEY, description: 'The operator hub\'s public key (base64, 44 characters).' },
  hubEndpoint: { type: 'string', default: '', pattern: ENDPOINT, description: 'Where the hub listens: host:port or [v6]:port.' },
  hubAllowedIps: { type: 'string[]', default: [], description: 'Networks routed to the hub through the tunnel (the management networks), e.g. 10.200.0.0/24.' },
  presharedKeyFile: { type: 'string', default: '', description: 'Optional pre-shared key with the hub (base64 file, mode 0600).' },
  persistentKeepaliveSeconds: { type: 'integer', default: 25, min: 0, max: 65535, description: 'Keepalive toward the hub so it can reach the gateway behind NAT (0: off).' },
  mtu: { type: 'integer', default: 0, min: 0, max: 9000, description: 'Tunnel MTU (0: the default, 1420).' }
})
