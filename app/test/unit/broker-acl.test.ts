import t from 'tap'
import { renderAcl } from '../../src/broker/mosquitto-conf.js'

t.test('the ACL without revocations is unchanged; revoked devices get a deny block', async t => {
  const base = renderAcl({ gatewayId: 'gw', streams: ['telemetry'] })
  t.equal(base, [
    '# Mosquitto ACL for meta-iot-gateway (rendered by the gateway; do not edit).',
    'user gw', 'topic read devices/+/telemetry', 'topic write devices/+/commands', 'topic read $SYS/broker/publish/messages/dropped', '',
    '# Every device, by the CN of its certificate (%u):', 'pattern write devices/%u/telemetry', 'pattern read devices/%u/commands', ''
  ].join('\n'))
  t.equal(renderAcl({ gatewayId: 'gw', streams: ['telemetry'], revoked: [] }), base)
  const r = renderAcl({ gatewayId: 'gw', streams: ['telemetry'], revoked: ['b-2', 'a-1', 'b-2', 'gw'] })
  t.ok(r.startsWith(base))
  t.match(r, /user a-1\ntopic deny #\n\nuser b-2\ntopic deny #\n$/, 'sorted, once each')
  t.notMatch(r.slice(base.length), /user gw/, 'the gateway is never denied')
})
