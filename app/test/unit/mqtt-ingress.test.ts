import t from 'tap'
import type { Config } from '../../src/config/schema.js'
import { createLogger } from '../../src/lib/logger.js'
import { Registry } from '../../src/lib/metrics.js'
import { MqttIngress, parseTopic } from '../../src/mqtt-ingress/mqtt-ingress.js'
import { Pipeline } from '../../src/pipeline/pipeline.js'
import { openDatabase } from '../../src/store/db.js'
import { Store } from '../../src/store/store.js'
import { deviceCreds, mqttDevice } from '../helpers/devices.js'
import { testConfig, tempDir } from '../helpers/env.js'
import { Mosquitto } from '../helpers/mosquitto.js'
import { waitFor } from '../helpers/ports.js'
import type { InboundMessage } from '../../src/store/store.js'

t.test('topics: devices/<id>/<stream> and nothing else', async t => {
  t.same(parseTopic('devices/d1/telemetry'), { device: 'd1', stream: 'telemetry' })
  for (const bad of ['devices/d1', 'devices//telemetry', 'devices/d1/', 'other/d1/telemetry', 'devices/d1/telemetry/x', '']) t.equal(parseTopic(bad), undefined, bad)
})

/** The ingress on a real Mosquitto (TLS, the gateway's ACL), with a real pipeline and outbox. */
function ingress (t: any, config: Config, outbox: Record<string, number>): { i: MqttIngress, p: Pipeline, committed: InboundMessage[] } {
  const c = { ...config, outbox: { ...config.outbox, ...outbox } }
  const metrics = new Registry()
  const log = createLogger('silent')
  const p = new Pipeline(new Store(openDatabase(':memory:')), c, metrics, log)
  const committed: InboundMessage[] = []
  p.on('committed', (_n: number, ms: InboundMessage[]) => committed.push(...ms))
  const i = new MqttIngress(c, p, metrics, log)
  t.teardown(async () => { await i.stop(); p.close() })
  return { i, p, committed }
}

t.test('the PUBACK to the broker waits for the commit: a gateway gone before it gets the message again', async t => {
  const dir = tempDir(t)
  const { config } = await testConfig(dir)
  const broker = new Mosquitto(config)
  await broker.start()
  t.teardown(() => broker.stop())
  // First gateway: the commit lingers 5 s, so the message is read but not acknowledged.
  const one = ingress(t, config, { commitLingerMs: 5000, commitEarlyMessages: 1000 })
  await one.i.start()
  const device = await mqttDevice(config.broker.lanPort, deviceCreds(config, 'd1'))
  t.teardown(() => device.endAsync())
  await device.publishAsync('devices/d1/telemetry', JSON.stringify({ epoch: 1, seq: 1, v: 1 }), { qos: 1 })
  await waitFor(() => one.p.memory.uncommittedCount === 1, 'read by the gateway, waiting for its commit')
  await one.i.stop() // leaves without the PUBACK (its commit has not run)
  t.equal(one.committed.length, 0)
  // The next gateway on the same persistent session gets it again from the broker, as a resend.
  const two = ingress(t, config, { commitLingerMs: 0 })
  const dup: boolean[] = []
  const submit = two.p.submit.bind(two.p)
  two.p.submit = s => { dup.push(s.redelivery === true); return submit(s) }
  await two.i.start()
  await waitFor(() => two.committed.length === 1, 'the broker sent it again')
  t.match(two.committed[0], { device: 'd1', seq: 1 })
  t.same(dup, [true], 'marked as a redelivery (DUP)')
})

t.test('a committed message is acknowledged: the next gateway does not get it again', async t => {
  const dir = tempDir(t)
  const { config } = await testConfig(dir)
  const broker = new Mosquitto(config)
  await broker.start()
  t.teardown(() => broker.stop())
  const one = ingress(t, config, { commitLingerMs: 0 })
  await one.i.start()
  const device = await mqttDevice(config.broker.lanPort, deviceCreds(config, 'd2'))
  t.teardown(() => device.endAsync())
  for (let seq = 1; seq <= 3; seq++) await device.publishAsync('devices/d2/telemetry', JSON.stringify({ epoch: 1, seq }), { qos: 1 })
  await waitFor(() => one.committed.length === 3, 'three committed')
  await one.i.stop()
  const two = ingress(t, config, { commitLingerMs: 0 })
  await two.i.start()
  // A barrier message behind them: once it is committed, anything resent before it would be too.
  await device.publishAsync('devices/d2/telemetry', JSON.stringify({ epoch: 1, seq: 4 }), { qos: 1 })
  await waitFor(() => two.committed.length >= 1, 'the barrier')
  t.same(two.committed.map(m => m.seq), [4], 'only the new message: the three were acknowledged')
})
