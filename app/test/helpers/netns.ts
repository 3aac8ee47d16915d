import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { openSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { waitFor } from './ports.js'

export const agentPath = join(dirname(fileURLToPath(import.meta.url)), 'netns-agent.mjs')

export interface ExecResult { code: number, stdout: string, stderr: string }

/** Why namespace tests cannot run here, or null. They need root, iproute2, nft, wireguard-go, wg and mosquitto. */
export function netnsUnavailable (): string | null {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, nft)'
  for (const bin of ['ip', 'nft', 'wireguard-go', 'wg', 'mosquitto']) {
    if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) return `${bin} is not installed`
  }
  const name = `iotgw-probe-${process.pid}`
  const ok = spawnSync('ip', ['netns', 'add', name]).status === 0
  spawnSync('ip', ['netns', 'del', name])
  return ok ? null : 'cannot create network namespaces here'
}

/**
 * Four network namespaces, named uniquely per run and removed at teardown:
 *
 *   lan (192.168.100.10) --eth0/wlan0-- gw --eth0-- [br0 in wan: 10.99.0.2] --eth0-- hub (10.99.0.3)
 *                                     (10.99.0.1, 192.168.100.1)
 *                     gw wg… 10.200.0.2 <==== WireGuard (wireguard-go) ====> hub wh… 10.200.0.1
 *
 * The gateway's WAN and LAN interfaces carry the image's names (eth0, wlan0); the tunnel's name is
 * unique per run (see `wg`). Traffic never leaves these namespaces.
 */
export class Lab {
  readonly id = `iotgw${process.pid.toString(36)}${randomBytes(2).toString('hex')}`
  readonly ns = { gw: `${this.id}-gw`, wan: `${this.id}-wan`, lan: `${this.id}-lan`, hub: `${this.id}-hub` }
  /**
   * Tunnel interface names, unique per run: wireguard-go's control sockets live in
   * /var/run/wireguard/<name>.sock, which network namespaces do not separate.
   */
  readonly wg = { gw: `wg${this.id.slice(-8)}`, hub: `wh${this.id.slice(-8)}` }
  readonly addr = { gwWan: '10.99.0.1', wan: '10.99.0.2', hub: '10.99.0.3', gwLan: '192.168.100.1', lan: '192.168.100.10', gwTun: '10.200.0.2', hubTun: '10.200.0.1' }
  private readonly procs: ChildProcess[] = []
  private created: string[] = []

  /** Runs a command, in a namespace if `ns` is given. */
  exec (ns: string | null, argv: string[], opts: { input?: string, timeoutMs?: number, env?: NodeJS.ProcessEnv } = {}): Promise<ExecResult> {
    const full = ns === null ? argv : ['ip', 'netns', 'exec', ns, ...argv]
    return new Promise((resolve, reject) => {
      const p = spawn(full[0]!, full.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } })
      const out: Buffer[] = []
      const err: Buffer[] = []
      p.stdout.on('data', (b: Buffer) => out.push(b))
      p.stderr.on('data', (b: Buffer) => err.push(b))
      const t = setTimeout(() => p.kill('SIGKILL'), opts.timeoutMs ?? 30000)
      p.once('error', reject)
      p.once('close', code => { clearTimeout(t); resolve({ code: code ?? -1, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() }) })
      p.stdin.on('error', () => {})
      p.stdin.end(opts.input ?? '')
    })
  }

  /** Like exec, but a non-zero exit is an error. */
  async must (ns: string | null, argv: string[], opts: { input?: string, timeoutMs?: number } = {}): Promise<string> {
    const r = await this.exec(ns, argv, opts)
    if (r.code !== 0) throw new Error(`${argv.join(' ')} (in ${ns ?? 'root ns'}) failed with ${r.code}: ${r.stderr.trim()}`)
    return r.stdout
  }

  /** A long-running process in a namespace, killed at teardown. */
  spawnIn (ns: string, argv: string[], logFile: string, env: NodeJS.ProcessEnv = {}): ChildProcess {
    const log = openSync(logFile, 'a')
    const p = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', log, log], env: { ...process.env, ...env } })
    this.procs.push(p)
    return p
  }

  private ip (ns: string, ...args: string[]): Promise<string> { return this.must(null, ['ip', '-n', ns, ...args]) }

  async build (): Promise<void> {
    const { gw, wan, lan, hub } = this.ns
    for (const n of [gw, wan, lan, hub]) {
      await this.must(null, ['ip', 'netns', 'add', n])
      this.created.push(n)
      await this.ip(n, 'link', 'set', 'lo', 'up')
    }
    // WAN: a bridge in the wan namespace joins the gateway's eth0, the hub's eth0 and the wan host.
    await this.ip(wan, 'link', 'add', 'br0', 'type', 'bridge')
    await this.ip(gw, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'pgw', 'netns', wan)
    await this.ip(hub, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'phub', 'netns', wan)
    for (const port of ['pgw', 'phub']) await this.ip(wan, 'link', 'set', port, 'master', 'br0', 'up')
    await this.ip(wan, 'addr', 'add', `${this.addr.wan}/24`, 'dev', 'br0')
    await this.ip(wan, 'link', 'set', 'br0', 'up')
    await this.ip(gw, 'addr', 'add', `${this.addr.gwWan}/24`, 'dev', 'eth0')
    await this.ip(gw, 'link', 'set', 'eth0', 'up')
    await this.ip(hub, 'addr', 'add', `${this.addr.hub}/24`, 'dev', 'eth0')
    await this.ip(hub, 'link', 'set', 'eth0', 'up')
    // LAN: the devices' side, with the gateway as their default route.
    await this.ip(gw, 'link', 'add', 'wlan0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', lan)
    await this.ip(gw, 'addr', 'add', `${this.addr.gwLan}/24`, 'dev', 'wlan0')
    await this.ip(gw, 'link', 'set', 'wlan0', 'up')
    await this.ip(lan, 'addr', 'add', `${this.addr.lan}/24`, 'dev', 'eth0')
    await this.ip(lan, 'link', 'set', 'eth0', 'up')
    await this.ip(lan, 'route', 'add', 'default', 'via', this.addr.gwLan)
    await this.ip(wan, 'route', 'add', '192.168.100.0/24', 'via', this.addr.gwWan)
    // Routing on, so that only the firewall stands between the LAN and the WAN.
    await this.must(gw, ['sysctl', '-qw', 'net.ipv4.ip_forward=1'])
  }

  /** wireguard-go in the foreground inside `ns` (the tun device is made there); returns once the link exists. */
  async wireguardGo (ns: string, iface: string, logFile: string): Promise<void> {
    const p = this.spawnIn(ns, ['wireguard-go', '-f', iface], logFile, { WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: 'error' })
    let exited = false
    p.once('exit', () => { exited = true })
    await waitFor(async () => {
      if (exited) throw new Error(`wireguard-go exited in ${ns}; see ${logFile}`)
      return (await this.exec(null, ['ip', '-n', ns, 'link', 'show', 'dev', iface])).code === 0
    }, `${iface} in ${ns}`, 10000, 50)
  }

  /** The listener/probe agent (test/helpers/netns-agent.mjs) run by node in a namespace. */
  async probe (ns: string, host: string, tcp: number[], udp: number[], timeoutMs = 800): Promise<{ tcp: Record<string, string>, udp: Record<string, string> }> {
    const out = await this.must(ns, [process.execPath, agentPath, 'probe', JSON.stringify({ host, tcp, udp, timeoutMs })], { timeoutMs: timeoutMs + 10000 })
    return JSON.parse(out)
  }

  async http (ns: string, url: string, timeoutMs = 2000): Promise<{ status?: number, body?: string, error?: string }> {
    return JSON.parse(await this.must(ns, [process.execPath, agentPath, 'http', JSON.stringify({ url, timeoutMs })], { timeoutMs: timeoutMs + 10000 }))
  }

  /** Listeners inside `ns`; resolves once all are bound. */
  async listen (ns: string, tcp: number[], udp: number[], logFile: string): Promise<ChildProcess> {
    const p = spawn('ip', ['netns', 'exec', ns, process.execPath, agentPath, 'listen', JSON.stringify({ tcp, udp })], { stdio: ['ignore', 'pipe', openSync(logFile, 'a')] })
    this.procs.push(p)
    await new Promise<void>((resolve, reject) => {
      let buf = ''
      p.stdout!.on('data', (b: Buffer) => { buf += b.toString(); if (buf.includes('ready')) resolve() })
      p.once('exit', code => reject(new Error(`listeners in ${ns} exited with ${code}; see ${logFile}`)))
    })
    return p
  }

  /**
   * Kills what the test started (tracked children, then anything still running inside our own
   * namespaces, such as a detached rollback watchdog) and deletes the namespaces. Never throws.
   */
  async destroy (): Promise<void> {
    for (const p of this.procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL')
    for (const n of this.created) {
      const pids = spawnSync('ip', ['netns', 'pids', n], { encoding: 'utf8' }).stdout?.split('\n').filter(s => /^\d+$/.test(s)) ?? []
      for (const pid of pids) { try { process.kill(Number(pid), 'SIGKILL') } catch {} }
    }
    await new Promise(resolve => setTimeout(resolve, 100))
    for (const n of this.created.splice(0)) spawnSync('ip', ['netns', 'del', n])
    for (const iface of Object.values(this.wg)) rmSync(`/var/run/wireguard/${iface}.sock`, { force: true })
  }
}
