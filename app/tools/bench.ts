/**
 * The write path on an SD card (app/docs/write-path.md), and Gateway vs Node-RED, one run each.
 *
 * Default: this tree's bundle (dist/gateway.cjs) and the previous release's (commit 5b12154, built
 * from a `git worktree` under a temp dir), each as the unit runs it, behind a real Mosquitto with
 * TLS devices and an HTTPS sink. Phases on one process: idle (no devices, cloud up), then 10, 100,
 * 1,000 msg/s and saturation. Per phase: bytes written per delivered message (/proc/<pid>/io
 * write_bytes of the gateway and, separately, of Mosquitto), fsync-type calls per second (the
 * gateway runs under `strace -f --seccomp-bpf -e trace=fsync,fdatasync,msync`, which stops the
 * process only at those calls; every call is counted by its timestamp), CPU seconds per 10,000
 * messages, p50/p99 publish-to-sink, peak RSS, and messages acknowledged to a device but lost.
 * Then the same phases for the reference (tools/bench-reference.ts): a bare Node doing the same I/O,
 * so that CPU and RSS are also given against what any Node process pays on this machine.
 *
 * Usage: npm run bench [-- --seconds 20 --idle 30 --devices 50 --rates 10,100,1000 --only gateway|previous|reference
 *   --previous <commit> --node-red --denials on|off --linger <ms> --fsync-delay <ms> --keep --no-ops --console-seconds 20]
 *  --node-red: also the old comparison with Node-RED (saturation and --rate latency).
 *  --denials off: the broker without debug logging and the gateway without its ACL-denial follower.
 *  --no-ops: without the monitor's and the console's cost (tools/monitor-cost.ts, console-cost.ts).
 *  --linger: the gateway's uplink.lingerMs (default: the shipped one, 50 ms; 20 measures latency first).
 *  --fsync-delay <ms>: an SD card's fsync latency in the systems under test (tools/slow-fsync.c).
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { promisify } from 'node:util'
import { createServer } from 'node:https'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import mqtt from 'mqtt'
import { buildConfig } from '../src/config/load.js'
import { createCertificate, keyToPem, newKeyPair } from '../src/pki/x509.js'
import { Mosquitto, mosquittoLogFile } from '../test/helpers/mosquitto.js'
import { testConfig } from '../test/helpers/env.js'
import { GatewayProcess } from '../test/helpers/gateway-process.js'
import { deviceCreds, type DeviceCreds } from '../test/helpers/devices.js'
import { freePort, waitFor } from '../test/helpers/ports.js'
import { monitorCost } from './monitor-cost.js'
import { consoleCost, printOpsRows } from './console-cost.js'
import { reference } from './bench-reference.js'
import { wakeCost } from './wake-cost.js'

const NODE_RED_VERSION = '5.0.7'
const execFileAsync = promisify(execFile)
/** The V8 flags the image's unit gives the gateway (meta-iot-gateway iot-gateway.service). */
// The image's unit's V8 flags, read from the unit file so the bench runs the gateway as the image does.
// From the working directory (app/, where tools/run.mjs runs the bundled bench): import.meta.dirname
// is the bundle's cache directory.
const UNIT_NODE_OPTIONS = /^Environment="NODE_OPTIONS=([^"]+)"$/m.exec(readFileSync(join(process.cwd(), '..', 'meta-iot-gateway', 'recipes-gateway', 'iot-gateway', 'files', 'iot-gateway.service'), 'utf8'))?.[1] ?? ''
const GATEWAY_NODE_FLAGS = (process.env.IOTGW_GATEWAY_NODE_FLAGS ?? UNIT_NODE_OPTIONS).split(' ').filter(Boolean)
/**
 * --fsync-delay <ms>: every fsync of the system under test waits that long first, as on an SD card
 * (tools/slow-fsync.c, built with cc once per run and preloaded into that process only).
 */
let slowFsync: NodeJS.ProcessEnv | undefined
function slowFsyncEnv (): NodeJS.ProcessEnv | undefined {
  const ms = arg('fsync-delay', '')
  if (ms === '' || slowFsync !== undefined) return slowFsync
  const lib = join(process.cwd(), 'node_modules', '.cache', 'iot-gateway-tools', 'slow-fsync.so')
  execFileSync('cc', ['-shared', '-fPIC', '-O2', '-o', lib, join(process.cwd(), 'tools', 'slow-fsync.c'), '-ldl'])
  slowFsync = { LD_PRELOAD: lib, IOTGW_FSYNC_DELAY_MS: String(Number(ms)) }
  return slowFsync
}
const arg = (name: string, def: string): string => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1]! : def }
/** The broker's debug log and the gateway's follower of it (ACL denials) are on by default, as on the image. */
const denialSections: Record<string, unknown> = arg('denials', 'on') === 'off' ? { denialLogCommand: [] } : {}
/** uplink.lingerMs of the gateways under test: the shipped default (the tests' helper uses 20) unless --linger sets one. */
const UPLINK_LINGER = { lingerMs: arg('linger', '') === '' ? buildConfig({ version: 1 }).uplink.lingerMs : Number(arg('linger', '')) }

// ---------------------------------------------------------------- load worker (a child process)
async function worker (): Promise<void> {
  const [port, seconds, rate, ...credFiles] = process.argv.slice(3)
  const creds = credFiles.map(f => JSON.parse(readFileSync(f, 'utf8')) as DeviceCreds)
  const perDeviceRate = Number(rate) / creds.length // 0 = as fast as acknowledged
  const until = Date.now() + Number(seconds) * 1000
  // Each run of the worker is a new "boot" of the devices: a new epoch, so seq may start at 1 again.
  const epoch = Date.now()
  let acked = 0
  let sent = 0
  await Promise.all(creds.map(async c => {
    const client = await mqtt.connectAsync(`mqtts://localhost:${port}`, {
      clientId: `${c.id}-bench`, ca: readFileSync(c.caFile), cert: readFileSync(c.certFile), key: readFileSync(c.keyFile), reconnectPeriod: 0, clean: true
    })
    let seq = 0
    const inflight = new Set<Promise<void>>()
    const t0 = Date.now()
    while (Date.now() < until) {
      if (perDeviceRate > 0) {
        const due = t0 + seq * 1000 / perDeviceRate - Date.now()
        if (due > 0) await new Promise(resolve => setTimeout(resolve, due))
      }
      const s = ++seq
      sent++
      const p: Promise<void> = client.publishAsync(`devices/${c.id}/telemetry`, JSON.stringify({ epoch, seq: s, d: c.id, t: Date.now(), temp: 21.5 }), { qos: 1 })
        .then(() => { acked++ }, () => {}).finally(() => inflight.delete(p))
      inflight.add(p)
      if (inflight.size >= 20) await Promise.race(inflight)
    }
    await Promise.all(inflight)
    await client.endAsync()
  }))
  process.stdout.write(JSON.stringify({ sent, acked }) + '\n')
}

// ---------------------------------------------------------------- the HTTPS sink
class Sink {
  delivered = new Set<string>()
  latencies: number[] = []
  requests = 0
  firstAt = 0
  lastAt = 0
  url = ''
  caFile = ''
  private server?: ReturnType<typeof createServer>
  async start (dir: string): Promise<void> {
    const ca = newKeyPair()
    const caCert = createCertificate({ subject: { CN: 'bench sink CA' }, publicKey: ca.publicKey, selfKey: ca.privateKey, days: 2, ca: true })
    const k = newKeyPair()
    const cert = createCertificate({ subject: { CN: 'localhost' }, publicKey: k.publicKey, issuer: { cert: caCert, key: ca.privateKey }, days: 2, serverNames: { dns: ['localhost'], ip: ['127.0.0.1'] } })
    this.caFile = join(dir, 'sink-ca.crt')
    writeFileSync(this.caFile, caCert)
    this.server = createServer({ key: keyToPem(k.privateKey), cert, keepAliveTimeout: 60000 }, (req, res) => {
      const chunks: Buffer[] = []
      req.on('data', c => chunks.push(c))
      req.on('end', () => {
        const now = Date.now()
        this.requests++
        let raw = Buffer.concat(chunks)
        if (req.headers['content-encoding'] === 'gzip') raw = gunzipSync(raw)
        const body = JSON.parse(raw.toString('utf8'))
        const msgs: Array<{ seq: number, d: string, t: number }> = Array.isArray(body.messages) ? body.messages.map((m: { payload: unknown }) => m.payload) : [body]
        for (const m of msgs) {
          const key = `${m.d}/${m.seq}`
          if (!this.delivered.has(key)) { this.delivered.add(key); this.latencies.push(now - m.t) }
        }
        if (this.firstAt === 0) this.firstAt = now
        this.lastAt = now
        res.writeHead(200).end()
      })
    })
    await new Promise<void>(resolve => this.server!.listen(0, '127.0.0.1', resolve))
    this.url = `https://localhost:${(this.server.address() as { port: number }).port}/ingest`
  }

  reset (): void { this.delivered.clear(); this.latencies = []; this.requests = 0; this.firstAt = 0; this.lastAt = 0 }
  async stop (): Promise<void> { this.server?.closeAllConnections(); await new Promise(resolve => this.server?.close(resolve)) }
}

// ---------------------------------------------------------------- process sampling
function cpuSeconds (pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(f[11]) + Number(f[12])) / 100 // utime + stime, in clock ticks (USER_HZ = 100)
}
const peakRssBytes = (pid: number): number => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024

const percentile = (xs: number[], p: number): number => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]!
}

interface Result { name: string, msgPerSec: number, p50: number, p99: number, peakRssMB: number, cpuPer10k: number, lost: number, acked: number, delivered: number }

// ---------------------------------------------------------------- systems under test
interface System { name: string, pid: () => number, stop: () => Promise<void> }

async function startGateway (dir: string, sink: Sink, brokerSections: Record<string, unknown>): Promise<{ sys: System, config: Awaited<ReturnType<typeof testConfig>>['config'] }> {
  // The gateway follows the broker's debug log for ACL denials as on the image (there: journalctl on
  // the broker's journal namespace; here: the helper's log file), so that cost is in the numbers.
  const dataDir = join(dir, 'data')
  const broker = { denialLogCommand: ['tail', '-F', '-n', '+1', mosquittoLogFile(dataDir)], ...brokerSections }
  const { config, file } = await testConfig(dir, { gateway: { logLevel: 'warn', dataDir }, uplink: { url: sink.url, caFile: sink.caFile, ...UPLINK_LINGER }, broker, limits: { ratePerSecond: 100000, rateBurst: 100000 } })
  const gw = new GatewayProcess(file, config.api.port, join(dir, 'gateway.log'), { bin: process.execPath, args: [...GATEWAY_NODE_FLAGS, join(process.cwd(), 'dist', 'gateway.cjs')] })
  return { config, sys: { name: 'gateway', pid: () => gw.proc!.pid!, stop: async () => { await gw.stop('SIGTERM') }, start: () => gw.start() } as System & { start: () => Promise<void> } }
}

function nodeRedDir (): string {
  const dir = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'iot-gateway', `node-red-${NODE_RED_VERSION}`)
  if (!existsSync(join(dir, 'node_modules', 'node-red', 'red.js'))) {
    process.stderr.write(`installing node-red@${NODE_RED_VERSION} from the npm registry into ${dir}\n`)
    mkdirSync(dir, { recursive: true })
    execFileSync('npm', ['install', '--prefix', dir, '--no-audit', '--no-fund', '--loglevel=error', `node-red@${NODE_RED_VERSION}`], { stdio: 'inherit' })
  }
  return dir
}

/** Node-RED gets what the gateway gets: the broker's loopback listener and the gateway's identity. */
async function startNodeRed (dir: string, sink: Sink, brokerPort: number, creds: DeviceCreds): Promise<System> {
  const userDir = join(dir, 'node-red')
  mkdirSync(userDir, { recursive: true })
  const port = await freePort()
  // The flow a Pi user would build: mqtt in (QoS 1, TLS client certificate) -> http request (POST).
  const flows = [
    { id: 'tab', type: 'tab', label: 'bench' },
    { id: 'tlsb', type: 'tls-config', cert: creds.certFile, key: creds.keyFile, ca: creds.caFile, verifyservercert: true, servername: 'localhost' },
    { id: 'tlss', type: 'tls-config', ca: sink.caFile, verifyservercert: true },
    { id: 'broker', type: 'mqtt-broker', broker: 'localhost', port: String(brokerPort), usetls: true, tls: 'tlsb', clientid: creds.id, protocolVersion: '4', keepalive: '60', cleansession: false, autoConnect: true },
    { id: 'in', type: 'mqtt in', z: 'tab', topic: 'devices/+/telemetry', qos: '1', datatype: 'utf8', broker: 'broker', wires: [['post']] },
    { id: 'post', type: 'http request', z: 'tab', method: 'POST', ret: 'txt', url: sink.url, tls: 'tlss', persist: true, wires: [[]] }
  ]
  writeFileSync(join(userDir, 'flows.json'), JSON.stringify(flows))
  writeFileSync(join(userDir, 'settings.js'), `module.exports = { uiPort: ${port}, uiHost: '127.0.0.1', flowFile: 'flows.json', disableEditor: true, httpAdminRoot: false, credentialSecret: false, logging: { console: { level: 'warn' } }, telemetry: { enabled: false } }\n`)
  const red = join(nodeRedDir(), 'node_modules', 'node-red', 'red.js')
  const proc: ChildProcess = spawn(process.execPath, [red, '--userDir', userDir, '--settings', join(userDir, 'settings.js')], { stdio: ['ignore', 'inherit', 'inherit'] })
  return { name: 'node-red', pid: () => proc.pid!, stop: async () => { proc.kill('SIGTERM'); await new Promise(resolve => proc.once('exit', resolve)) } }
}

// ---------------------------------------------------------------- one run
/** The devices run in a child process (asynchronously: the sink in this process must keep answering). */
async function load (brokerPort: number, credFiles: string[], seconds: number, rate: number): Promise<{ sent: number, acked: number }> {
  const { stdout } = await execFileAsync(process.execPath, [process.argv[1]!, 'worker', String(brokerPort), String(seconds), String(rate), ...credFiles], { encoding: 'utf8', maxBuffer: 1 << 20 })
  return JSON.parse(stdout.trim().split('\n').pop()!)
}

async function measure (name: string, seconds: number, devices: number, rate: number): Promise<Result> {
  const dir = mkdtempSync(join(tmpdir(), `bench-${name}-`))
  try {
    const sink = new Sink()
    await sink.start(dir)
    let sys: System
    let config
    if (name === 'gateway') {
      const g = await startGateway(dir, sink, denialSections)
      config = g.config
      sys = g.sys
    } else {
      config = (await testConfig(dir, { broker: denialSections })).config
    }
    const b = new Mosquitto(config)
    await b.start()
    const credFiles = Array.from({ length: devices }, (_, i) => {
      const c = deviceCreds(config, `dev${i}`, dir)
      const f = join(dir, `dev${i}.json`)
      writeFileSync(f, JSON.stringify(c))
      return f
    })
    if (name === 'gateway') await (sys! as System & { start: () => Promise<void> }).start()
    else {
      const pki = join(config.gateway.dataDir, 'pki')
      sys = await startNodeRed(dir, sink, config.broker.gatewayPort, { id: config.gateway.id, certFile: join(pki, 'gateway.crt'), keyFile: join(pki, 'gateway.key'), caFile: join(pki, 'ca.crt') })
      await new Promise(resolve => setTimeout(resolve, 4000)) // flows start, the subscription is made
    }
    // Saturation.
    const pid = sys!.pid()
    const cpu0 = cpuSeconds(pid)
    const t0 = Date.now()
    const sat = await load(b.lanPort, credFiles, seconds, 0)
    await waitFor(() => sink.delivered.size >= sat.acked, 'delivery', 120000, 200).catch(() => {})
    const elapsed = (sink.lastAt - t0) / 1000
    const delivered = sink.delivered.size
    const cpu = cpuSeconds(pid) - cpu0
    const msgPerSec = delivered / elapsed
    // Latency at a fixed rate.
    sink.reset()
    const fixed = await load(b.lanPort, credFiles, Math.min(10, seconds), rate)
    await waitFor(() => sink.delivered.size >= fixed.acked, 'delivery', 60000, 200).catch(() => {})
    const result: Result = {
      name,
      msgPerSec,
      p50: percentile(sink.latencies, 50),
      p99: percentile(sink.latencies, 99),
      peakRssMB: peakRssBytes(pid) / 1048576,
      cpuPer10k: cpu / delivered * 10000,
      lost: sat.acked - delivered + Math.max(0, fixed.acked - sink.delivered.size),
      acked: sat.acked + fixed.acked,
      delivered: delivered + sink.delivered.size
    }
    await sys!.stop()
    await b.stop()
    await sink.stop()
    return result
  } finally {
    if (process.argv.includes('--keep')) process.stderr.write(`kept ${dir}\n`)
    else rmSync(dir, { recursive: true, force: true })
  }
}

// ---------------------------------------------------------------- the write path, phase by phase
/** /proc/<pid>/io write_bytes: what the process made the kernel write to storage (page cache included). */
const writeBytes = (pid: number): number => Number(/write_bytes:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))![1])

/** The previous release's bundle, built from a git worktree under `tmp` (removed with it). */
function buildPrevious (commit: string, tmp: string): string {
  const repo = execFileSync('git', ['rev-parse', '--show-toplevel'], { encoding: 'utf8' }).trim()
  const tree = join(tmp, 'previous')
  process.stderr.write(`building the previous release (${commit}) in a git worktree\n`)
  execFileSync('git', ['-C', repo, 'worktree', 'add', '--detach', tree, commit], { stdio: 'ignore' })
  symlinkSync(join(process.cwd(), 'node_modules'), join(tree, 'app', 'node_modules'))
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: join(tree, 'app'), stdio: 'inherit' })
  return join(tree, 'app', 'dist', 'gateway.cjs')
}

function removeWorktree (tmp: string): void {
  const tree = join(tmp, 'previous')
  if (!existsSync(tree)) return
  try { execFileSync('git', ['worktree', 'remove', '--force', tree], { stdio: 'ignore' }) } catch {}
}

/** The node process under strace (strace's only child). */
function tracedPid (stracePid: number): number {
  for (let i = 0; i < 100; i++) {
    for (const task of readdirSync(`/proc/${stracePid}/task`)) {
      const kids = readFileSync(`/proc/${stracePid}/task/${task}/children`, 'utf8').trim()
      if (kids !== '') return Number(kids.split(' ')[0])
    }
  }
  throw new Error('no traced child')
}

/** fsync-type calls in the strace log between two times (seconds since the epoch, -ttt). */
function syncsBetween (log: string, from: number, to: number): number {
  let n = 0
  for (const line of readFileSync(log, 'utf8').split('\n')) {
    const m = /^\d+\s+(\d+\.\d+) (fsync|fdatasync|msync)\(/.exec(line)
    if (m && Number(m[1]) >= from && Number(m[1]) < to) n++
  }
  return n
}

interface PhaseRow { system: string, phase: string, rate: number, delivered: number, lost: number, gwBytesPerMsg: number, brokerBytesPerMsg: number, syncsPerSec: number, cpuPer10k: number, cpuPctOfCore: number, p50: number, p99: number, peakRssMB: number, seconds: number }

/** `script`: what node runs (the gateway's bundle, or this bench's with `reference`); `run -c <config>` follows. */
async function phases (system: string, script: string[], o: { seconds: number, idle: number, devices: number, rates: number[] }): Promise<PhaseRow[]> {
  const dir = mkdtempSync(join(tmpdir(), `bench-${system}-`))
  const rows: PhaseRow[] = []
  try {
    const sink = new Sink()
    await sink.start(dir)
    const dataDir = join(dir, 'data')
    const broker = { denialLogCommand: ['tail', '-F', '-n', '+1', mosquittoLogFile(dataDir)], ...denialSections }
    const { config, file } = await testConfig(dir, { gateway: { logLevel: 'warn', dataDir }, uplink: { url: sink.url, caFile: sink.caFile, ...UPLINK_LINGER }, broker, limits: { ratePerSecond: 100000, rateBurst: 100000 } })
    const b = new Mosquitto(config)
    await b.start()
    const credFiles = Array.from({ length: o.devices }, (_, i) => {
      const f = join(dir, `dev${i}.json`)
      writeFileSync(f, JSON.stringify(deviceCreds(config, `dev${i}`, dir)))
      return f
    })
    const straceLog = join(dir, 'strace.log')
    const gw = new GatewayProcess(file, config.api.port, join(dir, 'gateway.log'), {
      env: slowFsyncEnv(),
      bin: 'strace',
      args: ['-f', '-qq', '--seccomp-bpf', '-ttt', '-e', 'trace=fsync,fdatasync,msync', '-o', straceLog, process.execPath, ...GATEWAY_NODE_FLAGS, ...script]
    })
    const started = Date.now()
    await gw.start()
    const pid = tracedPid(gw.proc!.pid!)
    const bpid = b.proc!.pid!
    const phase = async (name: string, rate: number, run: () => Promise<number>): Promise<void> => {
      sink.reset()
      const w0 = writeBytes(pid); const bw0 = writeBytes(bpid); const c0 = cpuSeconds(pid); const t0 = Date.now()
      const acked = await run()
      if (acked > 0) await waitFor(() => sink.delivered.size >= acked, 'delivery', 120000, 100).catch(() => {})
      // What the delivery left to write (bulk deletes, a checkpoint) belongs to this phase.
      if (acked > 0) await new Promise(resolve => setTimeout(resolve, 2500))
      const t1 = Date.now()
      const delivered = sink.delivered.size
      const per = (x: number): number => delivered > 0 ? x / delivered : NaN
      const cpu = cpuSeconds(pid) - c0
      rows.push({
        system,
        phase: name,
        rate,
        delivered,
        lost: Math.max(0, acked - delivered),
        seconds: (t1 - t0) / 1000,
        gwBytesPerMsg: per(writeBytes(pid) - w0),
        brokerBytesPerMsg: per(writeBytes(bpid) - bw0),
        syncsPerSec: syncsBetween(straceLog, t0 / 1000, t1 / 1000) / ((t1 - t0) / 1000),
        cpuPer10k: per(cpu) * 10000,
        cpuPctOfCore: cpu / ((t1 - t0) / 1000) * 100,
        p50: percentile(sink.latencies, 50),
        p99: percentile(sink.latencies, 99),
        peakRssMB: peakRssBytes(pid) / 1048576
      })
      // The phase's window from the gateway's start: to cut a --cpu-prof profile (IOTGW_GATEWAY_NODE_FLAGS) by phase.
      process.stderr.write(`  ${system} ${name}: ${delivered} delivered (${((t0 - started) / 1000).toFixed(1)}-${((t1 - started) / 1000).toFixed(1)} s after the gateway started)\n`)
    }
    // Idle: connected, subscribed, cloud up, no devices.
    await phase('idle', 0, async () => { await new Promise(resolve => setTimeout(resolve, o.idle * 1000)); return 0 })
    for (const rate of o.rates) await phase(`${rate} msg/s`, rate, async () => (await load(b.lanPort, credFiles, o.seconds, rate)).acked)
    await phase('saturation', 0, async () => (await load(b.lanPort, credFiles, o.seconds, 0)).acked)
    const last = rows[rows.length - 1]!
    last.rate = last.delivered / last.seconds
    // The gateway itself, not strace: strace passes the signal on only for some signals.
    process.kill(pid, 'SIGTERM')
    await gw.stop('SIGTERM')
    await b.stop()
    await sink.stop()
    return rows
  } finally {
    if (process.argv.includes('--keep')) process.stderr.write(`kept ${dir}\n`)
    else rmSync(dir, { recursive: true, force: true })
  }
}

function printPhases (rows: PhaseRow[]): void {
  const f = (n: number, d = 0): string => Number.isFinite(n) ? n.toFixed(d) : '-'
  console.log('\nsystem    phase         msg/s  B written/msg (gw)  B/msg (broker)  fsync/s  CPU s/10k  CPU % core  p50 ms  p99 ms  peak RSS MB  lost / delivered')
  for (const r of rows) {
    console.log(`${r.system.padEnd(9)} ${r.phase.padEnd(12)} ${f(r.rate).padStart(6)} ${f(r.gwBytesPerMsg).padStart(19)} ${f(r.brokerBytesPerMsg).padStart(15)} ${f(r.syncsPerSec, 1).padStart(8)} ${f(r.cpuPer10k, 2).padStart(10)} ${f(r.cpuPctOfCore, 2).padStart(11)} ${f(r.p50).padStart(7)} ${f(r.p99).padStart(7)} ${f(r.peakRssMB, 1).padStart(12)}  ${r.lost} / ${r.delivered}`)
  }
  const g = rows.filter(r => r.system === 'gateway')
  const p = rows.filter(r => r.system === 'previous')
  if (g.length > 0 && p.length > 0) {
    console.log('\nratio previous/gateway (above 1: the gateway writes, syncs, spends or waits less; at saturation also messages per second gateway/previous):')
    for (const r of g) {
      const q = p.find(x => x.phase === r.phase)
      if (q && r.phase !== 'idle') {
        console.log(`  ${r.phase.padEnd(12)} bytes x${f(q.gwBytesPerMsg / r.gwBytesPerMsg, 1)}  fsyncs x${f(q.syncsPerSec / r.syncsPerSec, 1)}  CPU/msg x${f(q.cpuPer10k / r.cpuPer10k, 2)}  p99 x${f(q.p99 / r.p99, 2)}` +
          (r.phase === 'saturation' ? `  throughput x${f(r.rate / q.rate, 2)}` : ''))
      }
    }
  }
  const ref = rows.filter(r => r.system === 'reference')
  if (ref.length > 0 && g.length + p.length > 0) {
    console.log('\nagainst the reference, a bare Node doing the same I/O (CPU per message and peak RSS, system/reference):')
    for (const sys of [g, p]) {
      for (const r of sys) {
        const q = ref.find(x => x.phase === r.phase)
        if (q && r.phase !== 'idle') console.log(`  ${r.system.padEnd(9)} ${r.phase.padEnd(12)} CPU/msg x${f(r.cpuPer10k / q.cpuPer10k, 2)}  RSS x${f(r.peakRssMB / q.peakRssMB, 2)}`)
      }
    }
  }
  // The CPU target: per message at 1,000 msg/s no more than 1.5 times the saturation figure.
  for (const rows of [g, p, ref]) {
    const k = rows.find(r => r.phase === '1000 msg/s')
    const s = rows.find(r => r.phase === 'saturation')
    if (k && s) console.log(`${k.system}: CPU per message at 1000 msg/s is x${f(k.cpuPer10k / s.cpuPer10k, 2)} the saturation figure (target <= 1.5)`)
  }
  for (const r of g) {
    if (r.phase === '10 msg/s' || r.phase === '100 msg/s') console.log(`gateway at ${r.phase}: ${f(r.gwBytesPerMsg * r.rate * 86400 / 1e9, 2)} GB written per day by the gateway (+ ${f(r.brokerBytesPerMsg * r.rate * 86400 / 1e9, 2)} GB by Mosquitto)`)
  }
}

async function main (): Promise<void> {
  const seconds = Number(arg('seconds', '20'))
  const devices = Number(arg('devices', '50'))
  const only = arg('only', '')
  if (spawnSyncOk('strace') === false) throw new Error('strace is needed to count fsyncs (scripts/install-deps.sh installs it)')
  const o = { seconds, idle: Number(arg('idle', '30')), devices, rates: arg('rates', '10,100,1000').split(',').map(Number) }
  const tmp = mkdtempSync(join(tmpdir(), 'bench-'))
  const rows: PhaseRow[] = []
  try {
    if (only === '' || only === 'gateway') {
      process.stderr.write(`measuring gateway (${devices} devices; idle ${o.idle} s; ${o.rates.join(', ')} msg/s and saturation, ${seconds} s each)\n`)
      rows.push(...await phases('gateway', [join(process.cwd(), 'dist', 'gateway.cjs')], o))
    }
    if (only === '' || only === 'previous') {
      const bundle = buildPrevious(arg('previous', '5b12154'), tmp)
      process.stderr.write('measuring the previous release\n')
      rows.push(...await phases('previous', [bundle], o))
    }
    if (only === '' || only === 'reference') {
      process.stderr.write('measuring the reference (a bare Node doing the same I/O)\n')
      rows.push(...await phases('reference', [process.argv[1]!, 'reference'], { ...o, idle: Math.min(o.idle, 5) }))
    }
  } finally {
    removeWorktree(tmp)
    rmSync(tmp, { recursive: true, force: true })
  }
  printPhases(rows)
  const w = wakeCost()
  console.log(`this machine: a message's worth of work in Node costs ${w.burstUs.toFixed(1)} µs of CPU back to back and ${w.aloneUs.toFixed(1)} µs alone (once per 1 ms timer): a wake-up costs about ${w.wakeUs.toFixed(0)} µs (tools/wake-cost.ts)`)
  // Operations (app/docs/operations.md, console.md): the monitor's idle cost, and what an open
  // console costs the gateway at 1,000 msg/s (ratios against the same gateway without it).
  if (!process.argv.includes('--no-ops')) printOpsRows(monitorCost(), await consoleCost(Number(arg('console-seconds', '20'))))
  if (!process.argv.includes('--node-red')) return
  const rate = Number(arg('rate', '1000'))
  const results: Result[] = []
  for (const name of ['gateway', 'node-red']) {
    process.stderr.write(`measuring ${name} (${devices} devices, ${seconds} s saturation, ${rate} msg/s latency run)\n`)
    results.push(await measure(name, seconds, devices, rate))
  }
  const f = (n: number, d = 0): string => Number.isFinite(n) ? n.toFixed(d) : '-'
  console.log('\nsystem      msg/s   p50 ms  p99 ms  peak RSS MB  CPU s/10k msgs  lost / acked')
  for (const r of results) console.log(`${r.name.padEnd(10)} ${f(r.msgPerSec).padStart(6)} ${f(r.p50).padStart(8)} ${f(r.p99).padStart(7)} ${f(r.peakRssMB, 1).padStart(12)} ${f(r.cpuPer10k, 2).padStart(15)}  ${r.lost} / ${r.acked}`)
  const [g, n] = results
  if (g && n) {
    console.log(`\nratio gateway/node-red: throughput x${f(g.msgPerSec / n.msgPerSec, 1)}, p99 x${f(n.p99 / g.p99, 1)} lower, RSS x${f(n.peakRssMB / g.peakRssMB, 1)} lower, CPU per message x${f(n.cpuPer10k / g.cpuPer10k, 1)} lower`)
  }
}

function spawnSyncOk (bin: string): boolean {
  try { execFileSync(bin, ['-V'], { stdio: 'ignore' }); return true } catch { return false }
}

if (process.argv[2] === 'worker') void worker()
else if (process.argv[2] === 'reference') reference(process.argv[process.argv.indexOf('-c') + 1]!)
else main().catch(err => { console.error(err); process.exitCode = 1 })
