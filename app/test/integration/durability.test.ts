import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startStack } from '../helpers/env.js'
import { LoadGenerator } from '../helpers/load.js'
import { waitFor } from '../helpers/ports.js'
import type { CloudMessage } from '../helpers/cloud.js'
import { tempDir } from '../helpers/temp.js'

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
  const before = s.cloud.accepted.length
  await s.cloud.start()
  // The load runs on until the cloud takes deliveries again (an event, not a delay).
  await waitFor(() => s.cloud.accepted.length > before, 'deliveries after the cloud is back', 60000)
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
  t.equal(await s.gateway.metric('gateway_messages_rejected_total', '{reason="outbox_full",transport="mqtt"}', { absentIs: 0 }), 0, 'nothing refused: held back instead')
  s.cloud.respond = () => undefined
  await waitFor(() => s.cloud.unique().size >= 300, 'all 300 delivered once the cloud is back', 60000)
  checkDelivery(t, load.acked, s.cloud.accepted)
})

t.test('when Mosquitto\'s queue for the gateway overflows, the loss is visible in /metrics', async t => {
  const s = await startStack(t, { broker: { maxQueuedMessages: 100, sysIntervalSeconds: 1 } })
  t.equal(await s.gateway.metric('gateway_broker_messages_dropped_total'), 0)
  await s.gateway.stop('SIGTERM')
  const load = new LoadGenerator(s.config, ['q1'], 5)
  await load.connect()
  load.start(400)
  await load.finished()
  await load.close()
  t.equal(load.acked.length, 400, 'the broker acknowledged all 400 to the device')
  await s.gateway.start()
  const dropped = await waitFor(async () => await s.gateway.metric('gateway_broker_messages_dropped_total'), 'the broker\'s dropped count', 15000)
  // All of the broker's queue, not its first group: a group is committed and delivered while the rest
  // is still being read. A loss shows as this wait timing out.
  await waitFor(async () => (await s.gateway.health()).body.outbox.depth === 0 && s.cloud.unique().size + dropped >= 400, 'what was queued delivered')
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

t.test('a full data disk is a state: no crash, nothing acknowledged is lost, acks kept in memory, resumes by itself', async t => {
  if (process.getuid?.() !== 0) { t.plan(0, 'needs root (mounts a small tmpfs)'); return }
  // The gateway's data directory (database, PKI, the broker's files, as on the image's /data) on an
  // 8 MB tmpfs this test mounts, with 5 MB of ballast that the test removes later to "free space".
  const root = mkdtempSync(join(tmpdir(), 'iotgw-full-'))
  const small = join(root, 'small')
  mkdirSync(small)
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m,mode=0755', 'tmpfs', small])
  t.teardown(() => { try { execFileSync('umount', ['-l', small]) } catch {} rmSync(root, { recursive: true, force: true }) })
  const ballast = join(small, 'ballast')
  writeFileSync(ballast, Buffer.alloc(5 * 1048576, 1))
  // minFreeBytes 0: the disk really fills, so SQLITE_FULL itself is met (the floor is the same state, earlier).
  const s = await startStack(t, { gateway: { dataDir: join(small, 'data') }, outbox: { minFreeBytes: 0 }, broker: { denialLogCommand: [] } })
  await s.cloud.stop()
  const load = new LoadGenerator(s.config, ['f1', 'f2', 'f3'], 10)
  await load.connect()
  t.teardown(() => load.close())
  // Paced, so that little waits in the broker (whose queue shares the disk) once the gateway stops.
  load.start(Infinity, 200, 1000)
  await waitFor(async () => await s.gateway.metric('gateway_disk_full') === 1, 'the gateway to see the disk full', 60000, 50)
  await load.stop()
  const ackedWhileFull = load.acked.length
  t.equal(s.gateway.proc!.exitCode, null, 'still running')
  t.ok([200, 503].includes((await s.gateway.health()).status), 'and answering /health (503 once it reports disk_full)')
  t.equal(await s.gateway.metric('gateway_outbox_full'), 1, 'backpressure: it holds the broker back')
  // The cloud comes back while the disk is still full: what is committed is delivered; the
  // acknowledgements cannot be written, so they are kept in memory and nothing is sent twice.
  await s.cloud.start()
  await waitFor(async () => (await s.gateway.health()).body.outbox.depth === 0, 'the committed messages to be delivered', 60000)
  t.equal(await s.gateway.metric('gateway_disk_full'), 1, 'still full')
  t.equal(s.cloud.accepted.length, s.cloud.unique().size, 'no batch sent twice while its delete could not be written')
  // Space returns.
  rmSync(ballast)
  await waitFor(async () => await s.gateway.metric('gateway_disk_full') === 0, 'the gateway to resume by itself', 60000)
  await waitFor(() => s.cloud.unique().size >= ackedWhileFull, () => `everything acknowledged delivered (${s.cloud.unique().size} of ${ackedWhileFull})`, 120000)
  checkDelivery(t, load.acked, s.cloud.accepted)
  t.equal(s.cloud.accepted.length, s.cloud.unique().size, 'no duplicates (no crash, so none are expected)')
  t.equal(s.gateway.proc!.exitCode, null, 'never crashed')
  const log = readFileSync(s.gateway.logFile, 'utf8')
  t.equal(log.split('data disk full').length - 1, 1, 'said once in the log')
  t.match(log, /data disk has room again/)
})

t.test('cloud 401: the uplink pauses (no dead letters) until the token file is rotated, then delivers everything', async t => {
  const dir = tempDir(t, 'iotgw-token-')
  const tokenFile = join(dir, 'token')
  writeFileSync(tokenFile, 'expired-token\n')
  const s = await startStack(t, { uplink: { tokenFile, backoffBaseMs: 100, backoffMaxMs: 2000 } })
  s.cloud.respond = b => b.authorization === 'Bearer fresh-token' ? undefined : { status: 401, body: 'token expired' }
  const load = new LoadGenerator(s.config, ['a1', 'a2'], 5)
  await load.connect()
  t.teardown(() => load.close())
  load.start(50, 100)
  await load.finished()
  await waitFor(async () => (await s.gateway.health()).body.uplink === 'auth_failed', 'the uplink to pause on 401')
  t.equal(await s.gateway.metric('gateway_uplink_auth_failed'), 1)
  const refused = s.cloud.requests
  await waitFor(() => s.cloud.requests >= refused + 2, 'retries while refused')
  t.equal(await s.gateway.metric('gateway_uplink_dead_letters_total', '', { absentIs: 0 }), 0, 'nothing dead-lettered')
  t.equal(s.cloud.accepted.length, 0)
  // Rotation: a new file renamed over the old one, as an operator or an agent does it. No restart.
  writeFileSync(`${tokenFile}.new`, 'fresh-token\n')
  renameSync(`${tokenFile}.new`, tokenFile)
  await waitFor(() => s.cloud.unique().size >= load.acked.length, 'everything delivered with the new token', 30000)
  checkDelivery(t, load.acked, s.cloud.accepted)
  t.equal(await s.gateway.metric('gateway_uplink_auth_failed'), 0)
  t.equal(await s.gateway.metric('gateway_uplink_dead_letters_total', '', { absentIs: 0 }), 0, 'still no dead letters')
  t.match(readFileSync(s.gateway.logFile, 'utf8'), /uplink token file changed/)
})
