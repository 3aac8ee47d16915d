// "Confirm a pending firewall change" from the console, for real: the firewall is applied with
// commit-confirm by the CLI in a network namespace (nft, a process watchdog), the unprivileged
// gateway's console action writes its request, and the layer's root script (what
// iot-gateway-firewall-confirm.path starts) confirms exactly that apply with the real CLI.
import Database from 'better-sqlite3'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { startStack, tempDir } from '../helpers/env.js'
import { appDir, requireBundle } from '../helpers/gateway-process.js'
import { waitFor } from '../helpers/ports.js'

const SCRIPT = join(appDir, '..', 'meta-iot-gateway', 'recipes-gateway', 'iot-gateway', 'files', 'iot-gateway-firewall-confirm.sh')
const has = (bin: string): boolean => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0
const why = process.getuid?.() !== 0 ? 'needs root (network namespaces, nft)' : !has('ip') || !has('nft') ? 'ip and nft are needed' : null

t.test('the console asks, the root path unit\'s script confirms that apply and no other', { skip: why ?? false }, async t => {
  const bundle = requireBundle()
  const ns = `iotgw-fc-${process.pid}`
  spawnSync('ip', ['netns', 'del', ns])
  if (spawnSync('ip', ['netns', 'add', ns]).status !== 0) throw new Error('cannot create a network namespace')
  t.teardown(() => {
    // The detached rollback watchdogs the applies started live in the namespace.
    for (const pid of spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split('\n').filter(s => /^\d+$/.test(s))) { try { process.kill(Number(pid), 'SIGKILL') } catch {} }
    spawnSync('ip', ['netns', 'del', ns])
  })
  const stateDir = join(tempDir(t, 'iotgw-fc-'), 'fw')
  const s = await startStack(t, { firewall: { stateDir, statsPollSeconds: 1 } })
  const inNs = (argv: string[], env: Record<string, string> = {}) => spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', env: { ...process.env, ...env } })
  const cli = (...args: string[]) => inNs([process.execPath, bundle, '-c', s.configFile, ...args])
  const script = () => inNs(['sh', SCRIPT, requests], { IOT_GATEWAY_CLI: `${process.execPath} ${bundle} -c ${s.configFile} firewall confirm` })
  const requests = join(s.config.gateway.dataDir, 'firewall-requests')
  const token = readFileSync(join(s.config.gateway.dataDir, 'api-token'), 'utf8').trim()
  const confirmFromConsole = async (): Promise<{ status: number, body: any }> => {
    const r = await request(`http://127.0.0.1:${s.config.api.port}/console/api/firewall-confirm`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{}',
      // One connection per request: an apply between two requests can outlast the server's keep-alive, and a POST is not retried.
      reset: true
    })
    return { status: r.statusCode, body: await r.body.json() }
  }
  const events = (): Array<{ type: string, detail: { id?: string } }> => readFileSync(join(stateDir, 'events.jsonl'), 'utf8').trim().split('\n').map(l => JSON.parse(l))

  let r = cli('firewall', 'apply', '--boot')
  t.equal(r.status, 0, r.stderr)
  t.same(await confirmFromConsole(), { status: 409, body: { error: 'nothing to confirm: no firewall change is waiting (it may have been rolled back already)' } }, 'nothing pending: refused, nothing written')
  t.notOk(existsSync(requests) && readdirSync(requests).length > 0)

  // An apply waiting for confirmation (60 s: far beyond what the test needs).
  r = cli('firewall', 'apply', '--confirm-timeout', '60', '--watchdog', 'process', '--json')
  t.equal(r.status, 0, r.stderr)
  const first = JSON.parse(r.stdout).pending.id as string
  const asked = await confirmFromConsole()
  t.equal(asked.status, 202)
  t.equal(asked.body.requested, first, 'the request names the pending apply')
  t.same(readdirSync(requests), [`confirm-${first}`], 'one request file, named by the apply id')
  t.ok(JSON.parse(readFileSync(join(stateDir, 'pending.json'), 'utf8')).id === first, 'still pending: the daemon itself changes nothing')

  // What the path unit starts, as root in the namespace: confirmed, the request consumed.
  r = script()
  t.equal(r.status, 0, `the script: ${r.stdout}${r.stderr}`)
  t.match(r.stdout, `confirmed ruleset ${first}`)
  t.notOk(existsSync(join(stateDir, 'pending.json')), 'nothing pending any more')
  t.same(readdirSync(requests), [], 'the request directory is empty (the path unit does not start again)')
  t.ok(events().some(e => e.type === 'firewall_confirmed' && e.detail.id === first), 'the firewall\'s own event log has the confirmation')
  const audit = (): Array<{ type: string, source: string, detail: string }> => {
    const db = new Database(join(s.config.gateway.dataDir, 'gateway.db'), { readonly: true })
    try { return db.prepare('SELECT type, source, detail FROM audit_log ORDER BY id').all() as Array<{ type: string, source: string, detail: string }> } finally { db.close() }
  }
  await waitFor(() => audit().some(a => a.type === 'firewall_confirmed' && JSON.parse(a.detail).key?.includes(first)), 'the confirmation in the gateway\'s audit log (read from the event log)')
  t.ok(audit().some(a => a.type === 'firewall_confirm_requested' && a.source === 'api' && JSON.parse(a.detail).id === first), 'the request audited, with who asked')

  // A later apply is not confirmed by a request for an earlier one, and nothing in the directory is trusted.
  r = cli('firewall', 'apply', '--confirm-timeout', '60', '--watchdog', 'process', '--json')
  t.equal(r.status, 0, r.stderr)
  const second = JSON.parse(r.stdout).pending.id as string
  mkdirSync(requests, { recursive: true })
  const victim = join(s.dir, 'victim')
  writeFileSync(victim, 'keep me')
  writeFileSync(join(requests, `confirm-${first}`), '')
  writeFileSync(join(requests, 'confirm-x;touch'), '')
  writeFileSync(join(requests, '.hidden'), '')
  symlinkSync(victim, join(requests, 'confirm-link'))
  r = script()
  t.not(r.status, 0, 'a stale request fails the unit (journal), it does not confirm')
  t.match(r.stderr, `apply ${first} is no longer the pending one (${second} is); nothing confirmed`)
  t.match(r.stderr, /ignoring confirm-x;touch \(not an apply id\)/)
  t.equal(JSON.parse(readFileSync(join(stateDir, 'pending.json'), 'utf8')).id, second, 'the later apply is still pending')
  t.same(readdirSync(requests), [], 'every entry removed, hidden ones too')
  t.equal(readFileSync(victim, 'utf8'), 'keep me', 'a symlink is removed, its target untouched')

  // The console's request for the later one confirms it.
  t.equal((await confirmFromConsole()).body.requested, second)
  r = script()
  t.equal(r.status, 0, r.stderr)
  t.notOk(existsSync(join(stateDir, 'pending.json')))
  t.same(events().filter(e => e.type === 'firewall_rolled_back'), [], 'nothing was rolled back')
})
