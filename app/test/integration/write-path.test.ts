import t from 'tap'
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startStack, tempDir } from '../helpers/env.js'
import { requireBundle } from '../helpers/gateway-process.js'
import { LoadGenerator } from '../helpers/load.js'
import { waitFor } from '../helpers/ports.js'

/**
 * The SD card's budget as COUNTS (app/docs/write-path.md): for N messages at a fixed rate, the
 * gateway's group commits, fsync-type calls (strace, filtered by seccomp so only those calls stop
 * the process) and bytes written (/proc/<pid>/io) stay under bounds the previous release exceeded
 * by one to two orders of magnitude (a commit and about 25-47 KB per message at this rate).
 */
const N = 600
const DEVICES = 5
const RATE_PER_DEVICE = 40 // 200 msg/s in all

const writeBytes = (pid: number): number => Number(/write_bytes:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))![1])
function tracedChild (stracePid: number): number {
  for (const task of readdirSync(`/proc/${stracePid}/task`)) {
    const kids = readFileSync(`/proc/${stracePid}/task/${task}/children`, 'utf8').trim()
    if (kids !== '') return Number(kids.split(' ')[0])
  }
  throw new Error('strace has no child yet')
}

t.test(`${N} messages at ${DEVICES * RATE_PER_DEVICE} msg/s: commits, fsyncs and bytes written stay within the budget`, async t => {
  if (spawnSync('strace', ['-V']).status !== 0) { t.fail('strace is not installed (scripts/install-deps.sh installs it)'); return }
  const straceLog = join(tempDir(t), 'strace.log')
  const s = await startStack(t, {}, {
    command: { bin: 'strace', args: ['-f', '-qq', '--seccomp-bpf', '-e', 'trace=fsync,fdatasync,msync', '-o', straceLog, process.execPath, requireBundle()] }
  })
  const pid = await waitFor(() => { try { return tracedChild(s.gateway.proc!.pid!) } catch { return undefined } }, 'the traced gateway')
  // Stopping strace does not stop its child: the teardown stops the gateway itself, by its pid.
  t.teardown(() => { try { process.kill(pid, 'SIGKILL') } catch {} })
  const load = new LoadGenerator(s.config, Array.from({ length: DEVICES }, (_, i) => `w${i}`), 10)
  await load.connect()
  t.teardown(() => load.close())
  // Settle: what start-up wrote (migrations, PKI, the broker's first session) is not counted.
  // strace -f starts each line with the calling thread's id: the gateway's pid is its main thread.
  const syncLines = (): string[] => readFileSync(straceLog, 'utf8').split('\n').filter(l => /\b(fsync|fdatasync|msync)\(/.test(l))
  const syncs = (): number => syncLines().length
  const commits0 = await s.gateway.metric('gateway_outbox_commits_total', '', { absentIs: 0 })
  const meta0 = await s.gateway.metric('gateway_outbox_meta_writes_total')
  const syncs0 = syncs()
  const bytes0 = writeBytes(pid)
  load.start(N / DEVICES, RATE_PER_DEVICE)
  await load.finished()
  t.equal(load.acked.length, N, 'every message acknowledged')
  await waitFor(() => s.cloud.unique().size >= N, 'all delivered', 60000)
  // The bulk delete of what was delivered happens within about a second: wait for it, by count.
  await waitFor(async () => await s.gateway.metric('gateway_outbox_messages') === 0, 'outbox empty')
  const commits = await s.gateway.metric('gateway_outbox_commits_total') - commits0
  const fsyncs = syncs() - syncs0
  const onMain = syncLines().slice(syncs0).filter(l => l.startsWith(`${pid} `)).length
  // Batches go from memory: no batch-id write per request; the delivered watermark and the bulk
  // delete at most once a second (or inside a group commit). One per batch before (30 or more here).
  const meta = await s.gateway.metric('gateway_outbox_meta_writes_total') - meta0
  const batches = await s.gateway.metric('gateway_uplink_batches_total', '{result="ok"}')
  const perMessage = (writeBytes(pid) - bytes0) / N
  t.comment(`${N} messages: ${commits} group commits, ${fsyncs} fsync-type calls (${onMain} on the main thread), ${meta} bookkeeping writes for ${batches} batches, ${Math.round(perMessage)} bytes written per message`)
  t.ok(meta <= 12, `bookkeeping writes: ${meta} <= 12 (not one per batch: ${batches} batches)`)
  t.ok(commits <= N / 15, `group commits: ${commits} <= ${N / 15} (several messages per commit)`)
  t.ok(fsyncs <= N / 10, `fsync-type calls: ${fsyncs} <= ${N / 10}`)
  // The group commits are synced on the thread pool (store/wal-sync.ts): the event loop does not
  // wait for the card. Each commit has its sync there; the main thread keeps only SQLite's own
  // (checkpoints, the FULL commits of the audit log and the registry).
  t.ok(fsyncs - onMain >= commits, `syncs off the main thread: ${fsyncs - onMain} >= ${commits} group commits`)
  t.ok(onMain < commits / 2, `syncs on the main thread: ${onMain} < ${commits / 2}`)
  t.ok(perMessage <= 4096, `bytes written per message: ${Math.round(perMessage)} <= 4096`)
})
