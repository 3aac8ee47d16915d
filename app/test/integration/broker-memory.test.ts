// Mosquitto's backlog for the gateway is bounded in RAM (broker.memoryLimitBytes -> memory_limit).
// With the gateway down, a device publishes until the broker refuses; measured with Mosquitto
// 2.0.11: the device is disconnected without a PUBACK for the message the broker cannot hold (it
// keeps it and retries), and every message the broker did acknowledge reaches the cloud once the
// gateway is back; nothing is dropped.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { MqttClient } from 'mqtt'
import t from 'tap'
import { mqttDevice } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { enrollDevice } from '../helpers/identity.js'
import { waitFor } from '../helpers/ports.js'

/** One QoS 1 publish: 'acked' on PUBACK, 'refused' when the connection closes first (or no PUBACK in 10 s). */
async function publish (c: MqttClient, topic: string, payload: string): Promise<'acked' | 'refused'> {
  if (!c.connected) return 'refused'
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      c.publishAsync(topic, payload, { qos: 1 }).then(() => 'acked' as const, () => 'refused' as const),
      new Promise<'refused'>(resolve => c.once('close', () => resolve('refused'))),
      new Promise<'refused'>(resolve => { timer = setTimeout(() => resolve('refused'), 10000) })
    ])
  } finally { clearTimeout(timer) }
}

t.test('the broker\'s RAM bound refuses devices (no PUBACK) instead of growing or dropping', async t => {
  const limit = 6 * 1024 * 1024
  const s = await startStack(t, { broker: { memoryLimitBytes: limit } })
  const dev = await enrollDevice(s.configFile, join(s.dir, 'm'), 'sensor-m')
  t.equal(await s.gateway.stop('SIGTERM'), 0, 'the gateway is down; its persistent session queues in the broker')

  const pad = 'x'.repeat(4000)
  let client = await mqttDevice(s.broker.lanPort, dev)
  let acked = 0
  let refusedAt = 0
  // At most 5 times the limit in payload: without a bound the broker would take it all.
  for (let seq = 1; seq <= Math.ceil(5 * limit / 4000); seq++) {
    if (await publish(client, 'devices/sensor-m/telemetry', JSON.stringify({ seq, pad })) === 'acked') { acked = seq; continue }
    refusedAt = seq
    break
  }
  client.end(true)
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${s.broker.proc!.pid}/status`, 'utf8'))?.[1] ?? 0)
  t.comment(`broker resident at the limit: ${rss} kB for memory_limit ${limit / 1024} kB`)
  t.ok(refusedAt > 0, `the broker refused a publish once its heap reached the limit (after ${acked} messages of 4 KB acknowledged)`)
  const log = readFileSync(s.broker.logFile, 'utf8')
  t.match(log, /disconnected due to out of memory/, 'Mosquitto says why in its log')
  t.ok(acked * 4000 < limit, 'the acknowledged backlog stayed under the limit')

  await s.gateway.start()
  const seqs = (): number[] => [...s.cloud.unique().values()].filter(m => m.device === 'sensor-m').map(m => m.seq).sort((a, b) => a - b)
  await waitFor(() => seqs().length >= acked, () => `the ${acked} acknowledged messages at the cloud (have ${seqs().length})`, 60000, 200)
  // The device retries what was refused: there is room again.
  client = await mqttDevice(s.broker.lanPort, dev)
  t.teardown(() => client.endAsync(true))
  t.equal(await publish(client, 'devices/sensor-m/telemetry', JSON.stringify({ seq: refusedAt, pad })), 'acked', 'the refused message is taken once the gateway has drained the backlog')
  await waitFor(() => seqs().length === refusedAt, 'the retried message at the cloud')
  t.same(seqs(), Array.from({ length: refusedAt }, (_, i) => i + 1), 'every acknowledged message delivered, none dropped, none twice')
  t.equal(await s.gateway.metric('gateway_broker_messages_dropped'), 0, 'the broker dropped nothing')
})
