import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, openSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { request } from 'undici'
import { waitFor } from './ports.js'

export const appDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const bundlePath = join(appDir, 'dist', 'gateway.cjs')

export function requireBundle (): string {
  if (!existsSync(bundlePath)) throw new Error(`${bundlePath} is missing: run "npm run build" in app/ first (the test script does)`)
  return bundlePath
}

/**
 * The gateway as the unit runs it: the bundle in its own process (`node gateway.cjs run -c FILE`),
 * so tests can SIGKILL it. `node` and extra args can be replaced (the ARM test runs it under QEMU).
 */
export class GatewayProcess {
  proc?: ChildProcess
  exit?: Promise<number | null>
  constructor (readonly configFile: string, readonly apiPort: number, readonly logFile: string,
    readonly command: { bin: string, args: string[], env?: NodeJS.ProcessEnv } = { bin: process.execPath, args: [requireBundle()] }) {}

  async start (timeoutMs = 20000): Promise<void> {
    const log = openSync(this.logFile, 'a')
    const proc = spawn(this.command.bin, [...this.command.args, 'run', '-c', this.configFile], {
      stdio: ['ignore', log, log],
      env: { ...process.env, NOTIFY_SOCKET: '', ...this.command.env }
    })
    this.proc = proc
    this.exit = new Promise(resolve => proc.once('exit', code => resolve(code)))
    let exited = false
    void this.exit.then(() => { exited = true })
    await waitFor(async () => {
      if (exited) throw new Error(`gateway exited during start; see ${this.logFile}`)
      return (await this.health()).status === 200
    }, 'gateway /health', timeoutMs, 100)
  }

  async health (): Promise<{ status: number, body: any }> {
    const r = await request(`http://127.0.0.1:${this.apiPort}/health`, { signal: AbortSignal.timeout(5000) })
    return { status: r.statusCode, body: await r.body.json() }
  }

  /**
   * The management API's bearer token, as the CLI reads it (`<dataDir>/api-token`, made by the
   * daemon at start); undefined before the daemon has made it.
   */
  apiToken (): string | undefined {
    const dataDir = (JSON.parse(readFileSync(this.configFile, 'utf8')) as { gateway?: { dataDir?: string } }).gateway?.dataDir
    const file = dataDir === undefined ? undefined : join(dataDir, 'api-token')
    return file !== undefined && existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined
  }

  /** GET on the management API, with the token (everything but /health and /metrics needs it). */
  async get (path: string): Promise<{ status: number, text: string }> {
    const token = this.apiToken()
    const r = await request(`http://127.0.0.1:${this.apiPort}${path}`, { signal: AbortSignal.timeout(5000), ...(token !== undefined ? { headers: { authorization: `Bearer ${token}` } } : {}) })
    return { status: r.statusCode, text: await r.body.text() }
  }

  /**
   * One series from /metrics. A missing series is an error (a renamed metric must fail the test, not
   * read as 0); `absentIs` accepts a labelled series that was never created (a counter nobody has
   * incremented yet), but only while its family (`# TYPE name`) is there.
   */
  async metric (name: string, labels = '', opts: { absentIs?: number } = {}): Promise<number> {
    return parseMetric((await this.get('/metrics')).text, name, labels, opts)
  }

  /** Sends the signal and waits for the exit code. */
  async stop (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const p = this.proc
    if (!p || p.exitCode !== null || p.signalCode !== null) return p?.exitCode ?? null
    p.kill(signal)
    return await this.exit!
  }
}

/** See {@link GatewayProcess.metric}. */
export function parseMetric (text: string, name: string, labels = '', opts: { absentIs?: number } = {}): number {
  const lines = text.split('\n')
  const line = lines.find(l => l.startsWith(`${name}${labels} `))
  if (line !== undefined) return Number(line.slice(line.lastIndexOf(' ') + 1))
  const family = lines.some(l => l.startsWith(`# TYPE ${name} `))
  if (family && opts.absentIs !== undefined) return opts.absentIs
  throw new Error(family ? `metric ${name}${labels}: no such series in /metrics` : `metric ${name}: not in /metrics (renamed?)`)
}
