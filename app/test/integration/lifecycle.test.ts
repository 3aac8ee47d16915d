import t from 'tap'
import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { startStack, tempDir } from '../helpers/env.js'
import { bundlePath, GatewayProcess, requireBundle } from '../helpers/gateway-process.js'
import { LoadGenerator } from '../helpers/load.js'
import { NotifySocket } from '../helpers/notify-socket.js'
import { waitFor } from '../helpers/ports.js'

const exec = promisify(execFile)

/** Runs the bundled CLI; resolves with code, stdout and stderr (never rejects on a non-zero exit). */
async function cli (args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number, stdout: string, stderr: string }> {
  try {
    const r = await exec(process.execPath, [requireBundle(), ...args], { env: { ...process.env, ...env }, timeout: 30000 })
    return { code: 0, stdout: r.stdout, stderr: r.stderr }
  } catch (err) {
    const e = err as { code: number, stdout: string, stderr: string }
    return { code: e.code, stdout: e.stdout, stderr: e.stderr }
  }
}

t.test('every configuration error: a clear error with its code, exit code 2, nothing touched', async t => {
  const dir = tempDir(t)
  const data = join(dir, 'data')
  const uplink = { url: 'https://x.example/in' }
  const cases: Array<[string, RegExp]> = [
    [JSON.stringify({ gateway: { dataDir: data }, uplink: { ...uplink, batchMaxMessages: -1 } }), /configuration: uplink\.batchMaxMessages: must be >= 1, got -1 \(GW_ERR_CONFIG_INVALID\)/],
    [JSON.stringify({ gateway: { dataDir: data }, limits: { maxPayloadByte: 5 } }), /configuration: limits\.maxPayloadByte: unknown field \(GW_ERR_CONFIG_INVALID\)/],
    [JSON.stringify({ gateway: { dataDir: data }, uplink, mqtt: { reconnectMinMs: 5000, reconnectMaxMs: 1000 } }), /configuration: mqtt\.reconnectMaxMs: must be >= mqtt\.reconnectMinMs \(GW_ERR_CONFIG_INVALID\)/],
    ['{"gateway": {"dataDir": ', /configuration: .*gateway\.json: is not valid JSON.*\(GW_ERR_CONFIG_INVALID\)/],
    // The one field `run` needs that other commands do not: it used to exit 1.
    [JSON.stringify({ gateway: { dataDir: data } }), /configuration: uplink\.url: is not set: the gateway has nowhere to deliver .*\(GW_ERR_CONFIG_MISSING\)/]
  ]
  for (const [text, re] of cases) {
    const file = join(dir, 'gateway.json')
    writeFileSync(file, text)
    const r = await cli(['run', '-c', file])
    t.equal(r.code, 2, `exit code 2 for ${text.slice(0, 60)}`)
    t.match(r.stderr, re)
    t.notOk(existsSync(data), 'the data directory was not created')
  }
  const missing = await cli(['run', '-c', join(dir, 'nope.json')])
  t.equal(missing.code, 2)
  t.match(missing.stderr, /cannot read configuration file \(ENOENT\) \(GW_ERR_CONFIG_INVALID\)/)
  const noUplink = join(dir, 'no-uplink.json')
  writeFileSync(noUplink, JSON.stringify({ gateway: { dataDir: data } }))
  const env = await cli(['run', '-c', noUplink], { GATEWAY_API_PORT: 'eighty' })
  t.equal(env.code, 2)
  t.match(env.stderr, /api\.port \(from GATEWAY_API_PORT\): environment value "eighty" is not a number \(GW_ERR_CONFIG_INVALID\)/)
  const wg = await cli(['wg', 'render', '-c', noUplink])
  t.equal(wg.code, 2, 'wg render without wireguard.address: exit 2')
  t.match(wg.stderr, /configuration: wireguard\.address: is not set .*\(GW_ERR_CONFIG_MISSING\)/)
  t.notOk(existsSync(data), 'the data directory was not created')
})

t.test('every command answers --help; usage errors exit 2', async t => {
  for (const args of [[], ['run'], ['status'], ['outbox'], ['outbox', 'stats'], ['outbox', 'dead-letters'], ['outbox', 'retry'], ['pki', 'init'], ['render', 'mosquitto']]) {
    const r = await cli([...args, '--help'])
    t.equal(r.code, 0, `${args.join(' ') || '(top)'} --help`)
    t.match(r.stdout, /Usage: iot-gateway/)
  }
  const bad = await cli(['no-such-command'])
  t.equal(bad.code, 2)
  t.match(bad.stderr, /unknown command/)
  const retry = await cli(['outbox', 'retry', '-c', '/dev/null'])
  t.equal(retry.code, 2)
})

t.test('status and outbox stats from the CLI; status says when the gateway is not running', async t => {
  const s = await startStack(t)
  const st = await cli(['status', '--json', '-c', s.configFile])
  t.equal(st.code, 0, st.stderr)
  const body = JSON.parse(st.stdout)
  t.match(body, { gateway: 'gw-test', ready: true, broker: { connected: true }, outbox: { depth: 0 } })
  const text = await cli(['status', '-c', s.configFile])
  t.match(text.stdout, /^gateway\s+gw-test .*ready/m)
  const stats = await cli(['outbox', 'stats', '--json', '-c', s.configFile])
  t.same(JSON.parse(stats.stdout), { depth: 0, bytes: 0, oldestReceivedAt: null, deadLetters: 0 })
  await s.gateway.stop()
  const down = await cli(['status', '-c', s.configFile])
  t.equal(down.code, 3, 'exit 3: not reachable')
  t.match(down.stderr, /gateway not reachable/)
})

t.test('SIGTERM: ingress stops, the outbox is kept, exit 0; the next start delivers it', async t => {
  const s = await startStack(t)
  s.cloud.respond = () => ({ status: 503, headers: { 'retry-after': '1' } })
  const load = new LoadGenerator(s.config, ['t1'], 5)
  await load.connect()
  load.start(100)
  await load.finished()
  await load.close()
  await waitFor(async () => (await s.gateway.health()).body.outbox.depth === 100, 'all 100 in the outbox')
  // Within its bound: past --stop-timeout the daemon logs "stop timed out" and exits 1 (wall-clock
  // time here would measure the machine's load, not the gateway).
  t.equal(await s.gateway.stop('SIGTERM'), 0, 'exit code 0')
  const log = readFileSync(s.gateway.logFile, 'utf8')
  t.notMatch(log, /stop timed out/, 'stopped within its bound although the cloud refuses')
  t.match(log, /"msg":"gateway stopped","outboxLeft":100/)
  // Each capability logged its start and its stop with the time it took; the stop in reverse order:
  // the API and the ingress first, the database last.
  const steps = log.split('\n').filter(l => l.includes('"cap":"lifecycle"')).map(l => JSON.parse(l) as { msg: string, step: string, ms: unknown })
  const started = steps.filter(x => x.msg === 'started').map(x => x.step)
  const stopped = steps.filter(x => x.msg === 'stopped').map(x => x.step)
  t.equal(started[0], 'database', 'the database first')
  t.equal(started.at(-1), 'api', 'the API last')
  t.ok(started.indexOf('uplink') < started.indexOf('pipeline') && started.indexOf('pipeline') < started.indexOf('mqtt'), 'egress, then the pipeline, then the ingress')
  t.same(stopped, [...started].reverse(), 'stopped in reverse order')
  t.ok(steps.every(x => typeof x.ms === 'number'), 'each step with its duration')
  s.cloud.respond = () => undefined
  await s.gateway.start()
  await waitFor(() => s.cloud.unique().size === 100, 'the kept outbox delivered after the restart')
})

t.test('under systemd: READY=1 once serving, WATCHDOG=1 pings, STOPPING=1 on SIGTERM', async t => {
  const s = await startStack(t, {}, { startGateway: false })
  const sock = new NotifySocket(join(s.dir, 'notify.sock'))
  await sock.start()
  t.teardown(() => sock.stop())
  const gw = new GatewayProcess(s.configFile, s.config.api.port, join(s.dir, 'notify-gateway.log'),
    { bin: process.execPath, args: [bundlePath], env: { NOTIFY_SOCKET: sock.path, WATCHDOG_USEC: '2000000' } })
  await gw.start()
  await waitFor(() => sock.messages.some(m => /^READY=1/m.test(m)), 'READY=1')
  await waitFor(() => sock.messages.filter(m => m === 'WATCHDOG=1').length >= 2, 'two watchdog pings (every 1 s for WATCHDOG_USEC=2 s)', 10000)
  t.equal(await gw.stop('SIGTERM'), 0)
  t.ok(sock.messages.includes('STOPPING=1'), 'STOPPING=1 sent')
  const ready = sock.messages.findIndex(m => /^READY=1/m.test(m))
  t.ok(ready >= 0 && ready < sock.messages.indexOf('STOPPING=1'))
})

t.test('the bundle is reproducible: built twice, byte-identical', async t => {
  const dir = tempDir(t)
  // Same file name in two folders: the bundle names its LEGAL.txt file.
  const outs = [join(dir, 'a', 'gateway.cjs'), join(dir, 'b', 'gateway.cjs')]
  for (const out of outs) {
    await exec(process.execPath, ['esbuild.config.mjs'], { cwd: join(bundlePath, '..', '..'), env: { ...process.env, IOTGW_BUNDLE_OUT: out } })
  }
  const [a, b] = outs.map(f => readFileSync(f))
  t.ok(a!.length > 100000, `a real bundle (${a!.length} bytes)`)
  t.ok(a!.equals(b!), 'identical bytes')
  t.ok(a!.equals(readFileSync(bundlePath)), 'identical to dist/gateway.cjs')
  t.notMatch(a!.toString(), /\/(work|home|root|tmp)\//, 'no absolute build paths inside')
  t.same(readdirSync(join(dir, 'a')).sort(), ['gateway.cjs', 'gateway.cjs.LEGAL.txt'])
})
