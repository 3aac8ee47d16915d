import t from 'tap'
import { unitsToRestart } from '../../src/config/layers.js'
import { DEFAULT_SERVICES } from '../../src/firewall/config.js'

// `config set KEY` names (or runs) the restarts KEY needs. The firewall reads ports from other
// sections: a change to any of them must restart it, or the moved port stays closed (a moved
// wireguard.listenPort would cut the tunnel, the operator's way back in).
t.test('a port the firewall opens restarts the firewall', async t => {
  const refs = DEFAULT_SERVICES.map(s => s.port).filter((p): p is string => typeof p === 'string')
  t.ok(refs.length >= 3, `the firewall reads ports from the configuration: ${refs.join(', ')}`)
  for (const ref of refs) t.ok(unitsToRestart(ref).includes('iot-gateway-firewall.service'), `${ref}: ${unitsToRestart(ref).join(' ')}`)
})

t.test('each section restarts the units that read it', async t => {
  t.same(unitsToRestart('gateway.id'), ['iot-gateway.service'])
  t.ok(unitsToRestart('broker.names').includes('mosquitto.service'))
  t.ok(unitsToRestart('wireguard.address').includes('iot-gateway-wireguard.service'))
  // the API's socket on the tunnel follows the address and the port (iot-gateway-api-tunnel.service)
  t.ok(unitsToRestart('wireguard.address').includes('iot-gateway-api-tunnel.service'))
  t.ok(unitsToRestart('api.port').includes('iot-gateway-api-tunnel.service'))
  t.ok(unitsToRestart('firewall.zones').includes('iot-gateway-firewall.service'))
  t.same(unitsToRestart('uplink.url'), ['iot-gateway.service'], 'anything else: the gateway')
})
