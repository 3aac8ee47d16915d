import { join } from 'node:path'
import t from 'tap'
import { mosquittoPub, mqttDevice } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { cli, coapSend, enrollDevice } from '../helpers/identity.js'
import { freeUdpPort, sleep, waitFor } from '../helpers/ports.js'

t.test('revoke mid-stream: cut off at once, nothing sent after the revocation reaches the cloud', async t => {
  const s = await startStack(t, { coap: { enabled: true, bind: '127.0.0.1', port: await freeUdpPort() } })
  const dev = await enrollDevice(s.configFile, join(s.dir, 'r'), 'sensor-r')
  const other = await enrollDevice(s.configFile, join(s.dir, 'o'), 'sensor-o')
  const client = await mqttDevice(s.broker.lanPort, dev)
  t.teardown(() => client.endAsync(true))
  let seq = 0
  let running = true
  const stream = (async () => {
    while (running) {
      const n = ++seq
      try { await client.publishAsync('devices/sensor-r/telemetry', JSON.stringify({ seq: n }), { qos: 1 }) } catch { return }
      await sleep(10)
    }
  })()
  await waitFor(() => s.cloud.accepted.filter(m => m.device === 'sensor-r').length >= 20, 'the stream flowing')

  const r = await cli(s.configFile, ['device', 'revoke', 'sensor-r', '--reason', 'stolen', '--json'])
  const boundary = seq // everything the device sends from here on was sent after `device revoke` returned
  t.equal(r.code, 0, r.err)
  const out = JSON.parse(r.out) as { serials: string[], daemonNotified: boolean, crlNumber: number }
  t.equal(out.serials.length, 1, 'its certificate is on the CRL')
  t.ok(out.daemonNotified, 'the running gateway was told at once')
  // The broker has not reloaded yet: the device is still connected and publishing; the gateway drops it.
  await waitFor(() => seq > boundary + 20, 'the device to keep publishing before the broker reload')
  s.broker.reload() // on the image: the path unit watching the CRL runs `systemctl reload mosquitto`
  running = false
  await stream
  const sent = seq

  // The barrier before "nothing arrived": another device's message, published after the revoked one's
  // last, reaches the cloud only after the gateway has taken in (and dropped or sent) everything before it.
  const ok = await mosquittoPub(s.broker.lanPort, other, 'devices/sensor-o/telemetry', [JSON.stringify({ seq: 1, v: 'still here' })])
  t.equal(ok.code, 0, 'other devices are untouched')
  await waitFor(() => s.cloud.accepted.some(m => m.payload.v === 'still here'), 'other device delivered')
  const mine = s.cloud.accepted.filter(m => m.device === 'sensor-r').map(m => m.seq)
  t.ok(mine.length >= 20, `${mine.length} messages from before the revocation delivered`)
  t.same(mine.filter(n => n > boundary), [], `nothing sent after the revocation reached the cloud (${sent - boundary} sent)`)
  t.ok(await s.gateway.metric('gateway_messages_rejected_total', '{reason="device_blocked",transport="mqtt"}') > 0, 'the gateway dropped its messages before the broker reloaded')

  const again = await mosquittoPub(s.broker.lanPort, dev, 'devices/sensor-r/telemetry', [JSON.stringify({ seq: seq + 1000 })])
  t.not(again.code, 0, `its next connection is refused: ${again.output.trim()}`)
  const coap = await coapSend(s.config.coap.port, dev, 'telemetry', JSON.stringify({ seq: seq + 2000 }))
  t.equal(coap.code, '4.01', 'its CoAP key no longer works')

  const show = JSON.parse((await cli(s.configFile, ['device', 'show', 'sensor-r', '--json'])).out) as { status: string, certificates: Array<{ revokedAt: number | null }> }
  t.equal(show.status, 'revoked')
  t.ok(show.certificates.every(c => c.revokedAt !== null))
  const audit = await cli(s.configFile, ['audit', 'list', '--device', 'sensor-r', '--json'])
  t.ok((JSON.parse(audit.out) as Array<{ type: string }>).some(e => e.type === 'device_revoked'), 'the revocation is in the audit log')
  const twice = await cli(s.configFile, ['device', 'revoke', 'sensor-r'])
  t.not(twice.code, 0, 'revoking twice is refused')
})
