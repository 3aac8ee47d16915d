// Mosquitto's backlog for the gateway is bounded in RAM: broker.maxQueuedBytes (max_queued_bytes)
// for the gateway's queue, at most half of broker.memoryLimitBytes (memory_limit, the heap's
// backstop). With the gateway down, a device publishes 1.5 times the heap limit. Measured with
// Mosquitto 2.0.11: the device gets a PUBACK for every message, the broker keeps about
// max_queued_bytes for the gateway and drops the rest, and the gateway reports every drop; the
// gateway then drains the backlog (with memory_limit alone the broker disconnected the gateway
// "due to out of memory" at every attempt to send it the backlog: it could never drain).
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { mqttDevice } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { enrollDevice } from '../helpers/identity.js'
import { waitFor } from '../helpers/ports.js'

t.test('the broker\'s backlog for the gateway is bounded in bytes; drops are reported; the gateway drains it', async t => {
  const limit = 4 * 1024 * 1024
  const queued = 1024 * 1024
  const s = await startStack(t, { broker: { memoryLimitBytes: limit, maxQueuedBytes: queued, sysIntervalSeconds: 1 } })
  const dev = await enrollDevice(s.configFile, join(s.dir, 'm'), 'sensor-m')
  t.equal(await s.gateway.stop('SIGTERM'), 0, 'the gateway is down; its persistent session queues in the broker')

  const pad = 'x'.repeat(4000)
  const total = Math.ceil(1.5 * limit / 4000)
  const client = await mqttDevice(s.broker.lanPort, dev)
  let acked = 0
  for (let seq = 1; seq <= total; seq++) {
    await client.publishAsync('devices/sensor-m/telemetry', JSON.stringify({ seq, pad }), { qos: 1 })
    acked++
  }
  await client.endAsync()
  t.equal(acked, total, `the device got a PUBACK for each of its ${total} messages of 4 KB (${(total * 4000 / 1048576).toFixed(1)} MiB)`)
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${s.broker.proc!.pid}/status`, 'utf8'))?.[1] ?? 0)
  t.comment(`broker resident with the backlog: ${rss} kB (max_queued_bytes ${queued / 1024} kB, memory_limit ${limit / 1024} kB)`)
  t.match(readFileSync(s.broker.logFile, 'utf8'), /Outgoing messages are being dropped for client/, 'Mosquitto says it drops')

  await s.gateway.start()
  const delivered = (): number => [...s.cloud.unique().values()].filter(m => m.device === 'sensor-m').length
  const dropped = await waitFor(async () => await s.gateway.metric('gateway_broker_messages_dropped_total'), 'the broker\'s dropped count', 30000, 200)
  // The count also takes the few QoS 0 $SYS updates the broker could not queue for the offline
  // gateway, so it may exceed the device's lost messages by those.
  const missing = (): number => total - delivered()
  await waitFor(async () => dropped >= missing() && (await s.gateway.health()).body.outbox.depth === 0,
    async () => `every message delivered or counted as dropped (delivered ${delivered()}, dropped ${dropped}, sent ${total})`, 60000, 200)
  t.ok(delivered() * 4000 <= queued * 1.1, `the broker kept about max_queued_bytes for the gateway (${delivered()} messages)`)
  t.ok(delivered() >= 100, 'and the gateway drained it')
  t.ok(dropped >= missing() && dropped <= missing() + 5, `delivered ${delivered()} + reported dropped ${dropped} covers the ${total} acknowledged: nothing vanishes unseen`)
  const seqs = [...s.cloud.unique().values()].filter(m => m.device === 'sensor-m').map(m => m.seq)
  t.equal(new Set(seqs).size, seqs.length, 'none twice')
})

t.test('broker.maxQueuedBytes must leave the broker room to send the backlog', async t => {
  const { buildConfig } = await import('../../src/config/load.js')
  t.throws(() => buildConfig({ broker: { memoryLimitBytes: 4194304, maxQueuedBytes: 3000000 } }), /broker\.maxQueuedBytes: must be at most half of broker\.memoryLimitBytes/)
})
