// A device must not be able to take over another client's MQTT session, the gateway's above all:
// Mosquitto binds every client id to the certificate's CN (use_username_as_clientid). A hostile
// device connects with the gateway's client id, with another device's, and with an empty one, while
// the gateway is down (its queue is in the broker) and while it runs; every message the broker
// acknowledged to a device reaches the cloud.
import { join } from 'node:path'
import { readFileSync } from 'node:fs'
import mqtt, { type MqttClient } from 'mqtt'
import t from 'tap'
import { mqttDevice } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { enrollDevice, type Enrolled } from '../helpers/identity.js'
import { waitFor } from '../helpers/ports.js'

/** A client with the attacker's certificate and a client id of its choosing. */
async function impostor (port: number, dev: Enrolled, clientId: string, clean: boolean): Promise<MqttClient | Error> {
  try {
    return await mqtt.connectAsync(`mqtts://localhost:${port}`, {
      clientId,
      clean,
      ca: readFileSync(dev.caFile),
      cert: readFileSync(dev.certFile),
      key: readFileSync(dev.keyFile),
      reconnectPeriod: 0,
      protocolVersion: 4,
      connectTimeout: 5000
    })
  } catch (err) { return err as Error }
}

/** A QoS 1 round trip on the impostor's own topic: once its PUBACK is back the broker has handled its CONNECT (and flushed any session it took over). */
async function roundTrip (c: MqttClient, topic: string, seq: number): Promise<void> {
  if (!c.connected) throw new Error('not connected')
  let timer: NodeJS.Timeout | undefined
  try {
    await Promise.race([
      c.publishAsync(topic, JSON.stringify({ seq }), { qos: 1 }),
      new Promise((_resolve, reject) => c.once('close', () => reject(new Error('connection closed')))),
      new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error('no PUBACK within 10 s')), 10000) })
    ])
  } finally { clearTimeout(timer) }
}

t.test('no device can take the gateway\'s or another device\'s MQTT session; nothing acknowledged is lost', async t => {
  const s = await startStack(t)
  const gwId = s.config.gateway.id
  const a = await enrollDevice(s.configFile, join(s.dir, 'a'), 'sensor-a')
  const b = await enrollDevice(s.configFile, join(s.dir, 'b'), 'sensor-b')
  const x = await enrollDevice(s.configFile, join(s.dir, 'x'), 'hostile-x')
  const devA = await mqttDevice(s.broker.lanPort, a)
  t.teardown(() => devA.endAsync(true))
  let seq = 0
  const send = async (n: number): Promise<void> => {
    for (let i = 0; i < n; i++) await devA.publishAsync('devices/sensor-a/telemetry', JSON.stringify({ seq: ++seq }), { qos: 1 })
  }
  await send(5)
  await waitFor(() => s.cloud.unique().size === 5, 'the first 5 messages at the cloud')

  // 1. The gateway is down: its persistent session holds what devices send. The impostor presents
  //    the gateway's client id (persistent session): on Mosquitto's default it inherits the queue,
  //    whose messages its read ACL then drops without a word.
  t.equal(await s.gateway.stop('SIGTERM'), 0, 'gateway stopped')
  await send(20) // acknowledged by the broker (PUBACK), queued for the gateway
  const asGw = await impostor(s.broker.lanPort, x, gwId, false)
  t.notOk(asGw instanceof Error, 'the impostor connects (with its own certificate)')
  if (!(asGw instanceof Error)) {
    await roundTrip(asGw, 'devices/hostile-x/telemetry', 1)
    await asGw.endAsync()
  }

  // 2. Another device's id: sensor-b is connected with a persistent session; the impostor uses its id.
  const devB = await mqtt.connectAsync(`mqtts://localhost:${s.broker.lanPort}`, {
    clientId: 'sensor-b', clean: false, ca: readFileSync(b.caFile), cert: readFileSync(b.certFile), key: readFileSync(b.keyFile), reconnectPeriod: 0, protocolVersion: 4
  })
  t.teardown(() => devB.endAsync(true))
  let bClosed = false
  devB.on('close', () => { bClosed = true })
  const asB = await impostor(s.broker.lanPort, x, 'sensor-b', false)
  if (!(asB instanceof Error)) { await roundTrip(asB, 'devices/hostile-x/telemetry', 2); await asB.endAsync() }
  await roundTrip(devB, 'devices/sensor-b/telemetry', 1).catch(() => undefined)
  t.notOk(bClosed, 'sensor-b keeps its connection')

  // 3. An empty client id (MQTT 3.1.1, clean session).
  const empty = await impostor(s.broker.lanPort, x, '', true)
  if (!(empty instanceof Error)) { await roundTrip(empty, 'devices/hostile-x/telemetry', 3).catch(() => undefined); await empty.endAsync(true) }

  // The gateway comes back and finds its queue intact.
  await s.gateway.start()
  await send(5)
  // While the gateway runs, the impostor tries again: the gateway keeps its session.
  const live = await impostor(s.broker.lanPort, x, gwId, false)
  await send(10)
  if (!(live instanceof Error)) { await roundTrip(live, 'devices/hostile-x/telemetry', 4).catch(() => undefined); await live.endAsync(true) }
  await send(10)
  const expected = 5 + 20 + 5 + 10 + 10
  const fromA = (): number[] => [...s.cloud.unique().values()].filter(m => m.device === 'sensor-a').map(m => m.seq).sort((p, q) => p - q)
  await waitFor(() => fromA().length >= expected, () => `all ${expected} sensor-a messages at the cloud (have ${fromA().length})`, 30000, 100)
    .catch(err => t.fail((err as Error).message))
  t.same(fromA(), Array.from({ length: expected }, (_, i) => i + 1), 'every message the broker acknowledged to sensor-a reached the cloud, once each')
  const log = readFileSync(s.broker.logFile, 'utf8')
  t.notMatch(log, new RegExp(`Client ${gwId} already connected`), 'the gateway\'s connection was never replaced')
  t.equal(await s.gateway.metric('gateway_broker_messages_dropped_total'), 0, 'the broker dropped nothing')
})
