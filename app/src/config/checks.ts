/**
 * The configuration checks that span fields or sections, run once by the loader (load.ts) after every
 * field passed its own check. Apart from schema.ts so that the schema imports only the sections'
 * specs: these checks need the whole Config type, the firewall's policy and the WireGuard rules, and
 * those import Config from the schema (schema.ts importing them back was an import cycle).
 */
import { firewallPolicy } from '../firewall/policy.js'
import { parseCidr } from '../firewall/net.js'
import { ConfigError } from '../lib/errors.js'
import { ENDPOINT } from '../wireguard/config.js'
import type { Config } from './schema.js'

/** Checks that span fields; throws a ConfigError naming the first field that is wrong. */
export function crossCheck (c: Config): void {
  if (c.mqtt.reconnectMaxMs < c.mqtt.reconnectMinMs) throw new ConfigError('mqtt.reconnectMaxMs', 'must be >= mqtt.reconnectMinMs')
  if (c.uplink.backoffMaxMs < c.uplink.backoffBaseMs) throw new ConfigError('uplink.backoffMaxMs', 'must be >= uplink.backoffBaseMs')
  if (c.mqtt.streams.length === 0) throw new ConfigError('mqtt.streams', 'must list at least one stream (with none the gateway would subscribe to nothing)')
  if (/^http:/i.test(c.uplink.url) && !c.uplink.allowInsecureHttp) throw new ConfigError('uplink.url', 'http:// sends the bearer token and the data in clear; use https:// (uplink.allowInsecureHttp true allows it, for tests)')
  if (c.mqtt.streams.includes('commands')) throw new ConfigError('mqtt.streams', '"commands" is the downlink topic and cannot be an uplink stream')
  if ((c.uplink.certFile === '') !== (c.uplink.keyFile === '')) throw new ConfigError('uplink.keyFile', 'certFile and keyFile go together')
  if (c.broker.maxQueuedBytes * 2 > c.broker.memoryLimitBytes) throw new ConfigError('broker.maxQueuedBytes', 'must be at most half of broker.memoryLimitBytes (the broker needs room to send the backlog to the gateway)')
  if (c.broker.lanPort === c.broker.gatewayPort) throw new ConfigError('broker.gatewayPort', 'must differ from broker.lanPort')
  if (c.trust.floor >= c.trust.initial) throw new ConfigError('trust.floor', 'must be below trust.initial')
  checkWireguard(c)
  firewallPolicy(c, false)
}

/** The WireGuard fields that go together. */
function checkWireguard (c: Config): void {
  const w = c.wireguard
  if (w.address !== '') {
    if (parseCidr(w.address) === null || !w.address.includes('/')) throw new ConfigError('wireguard.address', `"${w.address}" is not an address with a prefix (e.g. 10.200.0.2/24)`)
  }
  w.hubAllowedIps.forEach((n, i) => {
    if (parseCidr(n) === null) throw new ConfigError(`wireguard.hubAllowedIps[${i}]`, `"${n}" is not a network`)
  })
  const port = ENDPOINT.exec(w.hubEndpoint)?.[2]
  if (port !== undefined && (Number(port) < 1 || Number(port) > 65535)) throw new ConfigError('wireguard.hubEndpoint', `port out of range (1-65535): ${port}`)
  if ((w.hubPublicKey === '') !== (w.hubEndpoint === '')) throw new ConfigError(w.hubPublicKey === '' ? 'wireguard.hubPublicKey' : 'wireguard.hubEndpoint', 'hubPublicKey and hubEndpoint go together')
}
