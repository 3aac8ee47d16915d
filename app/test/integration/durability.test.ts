import t from 'tap'
import { readFileSync } from 'node:fs'
import { startStack } from '../helpers/env.js'
import { LoadGenerator } from '../helpers/load.js'
import { waitFor } from '../helpers/ports.js'
import type { CloudMessage } from '../helpers/cloud.js'

/** Every acknowledged (device, seq) is at the cloud; per device the first arrivals are in order. */
function checkDelivery (t: any, acked: Array<{ device: string, seq: number }>, accepted: CloudMessage[]): void {
  const seen = new Set(accepted.map(m => `${m.device}/${m.seq}`))
  const missing = acked.filter(a => !seen.has(`${a.device}/${a.seq}`))
  t.equal(missing.length, 0, `all ${acked.length} acknowledged messages delivered (missing: ${missing.slice(0, 5).map(m => `${m.device}/${m.seq}`).join(' ')})`)
  const byId = new Map<string, string>()
  let conflicting = 0
  for (const m of accepted) {
    const key = `${m.device}/${m.seq}`
    const prev = byId.get(m.id)
    if (prev !== undefined && prev !== key) conflicting++
    byId.set(m.id, key)
  }
  t.equal(conflicting, 0, 'a duplicate always carries the same message id')
  let outOfOrder = 0
  const order = new Map<string, number[]>()
  for (const m of new Map(accepted.map(m => [m.id, m])).values()) {
    const list = order.get(m.device) ?? []
    list.push(m.seq)
    order.set(m.device, list)
  }
  for (const [device, seqs] of order) {
    const sorted = [...seqs].sort((a, b) => a - b)
    if (seqs.join() !== sorted.join()) outOfOrder++
    void device
  }
  t.equal(outOfOrder, 0, 'per device, messages arrive in order')
}

t.test('cloud down for 30 s, then back: everything delivered, in order per device', async t => {
  const s = await startStack(t)
  const load = new LoadGenerator(s.config, ['d1', 'd2', 'd3'], 5)
  await load.connect()
  t.teardown(() => load.close())
  load.start(Infinity, 50)
  await waitFor(() => s.cloud.accepted.length > 50, 'first deliveries')
  await s.cloud.stop()
  const downAt = Date.now()
  await waitFor(async () => (await s.gateway.health()).body.uplink === 'backoff', 'gateway to notice the outage')
  await new Promise(resolve => setTimeout(resolve, Number(process.env.IOTGW_OUTAGE_MS ?? 30000) - (Date.now() - downAt)))
  const queued = (await s.gateway.health()).body.outbox.depth
  t.ok(queued > 0, `messages wait in the outbox during the outage (${queued})`)
  await s.cloud.start()
  await new Promise(resolve => setTimeout(resolve, 1000))
  await load.stop()
  await waitFor(async () => (await s.gateway.health()).body.outbox.depth === 0 && s.cloud.unique().size >= load.acked.length, async () => `outbox drained after the outage (health ${JSON.stringify((await s.gateway.health()).body)}, cloud ${s.cloud.unique().size}, acked ${load.acked.length})`, 60000)
  checkDelivery(t, load.acked, s.cloud.accepted)
})

t.test('SIGKILL mid-stream under QoS 1 load: every acknowledged message reaches the cloud', async t => {
  const s = await startStack(t, { uplink: { lingerMs: 200 } })
  const load = new LoadGenerator(s.config, ['k1', 'k2', 'k3', 'k4'], 20)
  await load.connect()
  t.teardown(() => load.close())
  load.start(Infinity)
  await waitFor(() => load.acked.length > 2000, 'load running')
  t.equal(await s.gateway.stop('SIGKILL'), null, 'killed')
  const atKill = load.acked.length
  await waitFor(() => load.acked.length > atKill + 500, 'devices keep publishing to the broker while the gateway is dead')
  await s.gateway.start()
  await waitFor(() => load.acked.length > atKill + 1500, 'more load after the restart')
  await load.stop()
  await waitFor(async () => (await s.gateway.health()).body.outbox.depth === 0 && s.cloud.unique().size >= load.acked.length, 'everything delivered', 60000)
  t.ok(load.acked.length > 3000, `${load.acked.length} messages acknowledged in all`)
  checkDelivery(t, load.acked, s.cloud.accepted)
})

t.test('a broker restart loses nothing queued for the gateway', async t => {
  const s = await startStack(t)
  await s.gateway.stop('SIGTERM')
  const load = new LoadGenerator(s.config, ['b1', 'b2'], 5)
  await load.connect()
  load.start(200)
  await load.finished()
  await load.close()
  t.equal(load.acked.length, 400, 'the broker acknowledged 400 messages while the gateway was stopped')
  await s.broker.stop('SIGTERM')
  await s.broker.start()
  await s.gateway.start()
  await waitFor(() => s.cloud.unique().size >= 400, 'queued messages delivered after the broker restart', 30000)
  checkDelivery(t, load.acked, s.cloud.accepted)
})

t.test('outbox full: the gateway stops acknowledging and loses nothing', async t => {
  const s = await startStack(t, { outbox: { maxMessages: 50 } })
  s.cloud.respond = () => ({ status: 503 })
  const load = new LoadGenerator(s.config, ['f1', 'f2'], 5)
  await load.connect()
  t.teardown(() => load.close())
  load.start(150)
  await waitFor(async () => await s.gateway.metric('gateway_outbox_full') === 1, 'outbox full')
  await load.finished()
  const depth = (await s.gateway.health()).body.outbox.depth
  t.ok(depth <= 50, `the outbox holds at most its capacity (${depth})`)
  t.equal(await s.gateway.metric('gateway_messages_rejected_total', '{reason="outbox_full",transport="mqtt"}'), 0, 'nothing refused: held back instead')
  s.cloud.respond = () => undefined
  await waitFor(() => s.cloud.unique().size >= 300, 'all 300 delivered once the cloud is back', 60000)
  checkDelivery(t, load.acked, s.cloud.accepted)
})

t.test('when Mosquitto\'s queue for the gateway overflows, the loss is visible in /metrics', async t => {
  const s = await startStack(t, { broker: { maxQueuedMessages: 100, sysIntervalSeconds: 1 } })
  t.equal(await s.gateway.metric('gateway_broker_messages_dropped'), 0)
  await s.gateway.stop('SIGTERM')
  const load = new LoadGenerator(s.config, ['q1'], 5)
  await load.connect()
  load.start(400)
  await load.finished()
  await load.close()
  t.equal(load.acked.length, 400, 'the broker acknowledged all 400 to the device')
  await s.gateway.start()
  const dropped = await waitFor(async () => await s.gateway.metric('gateway_broker_messages_dropped'), 'the broker\'s dropped count', 15000)
  await waitFor(async () => (await s.gateway.health()).body.outbox.depth === 0 && s.cloud.unique().size > 0, 'what was queued delivered')
  t.ok(dropped >= 200, `dropped ${dropped} reported`)
  t.equal(s.cloud.unique().size + dropped, 400, 'delivered + reported dropped = acknowledged: nothing vanishes unseen')
  t.match(readFileSync(s.gateway.logFile, 'utf8'), /the broker dropped messages before they reached the gateway/)
})

t.test('4xx from the cloud: the batch goes to dead letters with the reason, and can be retried', async t => {
  const s = await startStack(t)
  let refused = false
  s.cloud.respond = b => {
    if (!refused && b.messages.some(m => m.device === 'poison')) { refused = true; return { status: 422, body: 'schema mismatch' } }
    return undefined
  }
  const load = new LoadGenerator(s.config, ['poison'], 1)
  await load.connect()
  load.start(3)
  await load.finished()
  await load.close()
  await waitFor(async () => (await s.gateway.health()).body.outbox.depth === 0 && refused, 'batch refused')
  const { run } = await import('../../src/cli/index.js')
  const out: string[] = []
  const io = { out: (x: string) => out.push(x), err: (x: string) => out.push(x), env: {} }
  t.equal(await run(['node', 'gw', '-c', s.configFile, 'outbox', 'dead-letters', '--json'], io), 0)
  const dead = JSON.parse(out.join('')) as Array<{ status: number, reason: string, device: string }>
  t.ok(dead.length >= 1 && dead.every(d => d.status === 422 && /schema mismatch/.test(d.reason) && d.device === 'poison'), 'dead letters carry status and reason')
  t.equal(await s.gateway.metric('gateway_uplink_dead_letters_total'), dead.length)
  out.length = 0
  t.equal(await run(['node', 'gw', '-c', s.configFile, 'outbox', 'retry', '--all', '--json'], io), 0)
  t.same(JSON.parse(out.join('')), { moved: dead.length })
  await waitFor(() => s.cloud.unique().size >= 3, 'retried messages delivered')
  t.same([...s.cloud.unique().values()].map(m => m.seq).sort(), [1, 2, 3])
})
