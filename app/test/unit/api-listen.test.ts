import t from 'tap'
import { buildConfig } from '../../src/config/load.js'
import { apiTunnelListen } from '../../src/wireguard/api-listen.js'

// iot-gateway-api@.socket's address comes from the merged configuration at run time (a fleet image
// has no tunnel address of its own); never an unspecified address, never the daemon's own port
// taken away from it.
const cfg = (wireguard: Record<string, unknown>, api: Record<string, unknown> = {}) => buildConfig({ version: 1, wireguard, api })

t.test('the tunnel address and api.port, forwarded to the daemon on loopback', async t => {
  t.same(apiTunnelListen(cfg({ address: '10.200.0.42/24' })), { address: '10.200.0.42', listen: '10.200.0.42:8080', target: '127.0.0.1:8080' })
  t.same(apiTunnelListen(cfg({ address: 'fd00:200::42/64' }, { port: 9443 })), { address: 'fd00:200::42', listen: '[fd00:200::42]:9443', target: '127.0.0.1:9443' })
  t.same(apiTunnelListen(cfg({ address: '10.200.0.42/24' }, { host: '::1' })), { address: '10.200.0.42', listen: '10.200.0.42:8080', target: '[::1]:8080' })
})

t.test('no socket without a tunnel address, or when the daemon does not listen on loopback', async t => {
  t.equal(apiTunnelListen(cfg({})), null, 'no tunnel address yet')
  t.equal(apiTunnelListen(cfg({ address: '10.200.0.42/24' }, { host: '0.0.0.0' })), null, 'the daemon already listens everywhere')
  t.equal(apiTunnelListen(cfg({ address: '10.200.0.42/24' }, { host: '10.200.0.42' })), null, 'the daemon listens on the tunnel address itself')
})
