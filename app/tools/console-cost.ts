// What an open console costs the gateway, as a module: `npm run bench` prints it (tools/bench.ts),
// and `node tools/run.mjs console-cost [seconds] [devices] [rate per device]` prints the same row as JSON.
// A real stack (Mosquitto, the HTTPS cloud, the gateway bundle) with devices publishing (default 10
// devices x 100 msg/s = 1,000 msg/s); the gateway's CPU time (/proc/<pid>/stat) and RSS over the
// same number of seconds, first without a browser, then with headless Chromium showing the console
// (logged in, polling), then without again. Needs /usr/bin/chromium and dist/gateway.cjs.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startStack } from '../test/helpers/env.js'
import { LoadGenerator } from '../test/helpers/load.js'

export interface ConsolePhase { cpuPercent: number, rssMiB: number, msgPerSecond: number }
export type ConsoleCostRow = {
  seconds: number,
  devices: number,
  ratePerDevice: number
  without: ConsolePhase,
  withConsole: ConsolePhase,
  afterClosing: ConsolePhase
  /** The gateway's CPU and peak RSS with the console open, against the phases without (the mean of before and after). */
  cpuRatio: number,
  rssRatio: number
  consolePolls: number,
  stateResponseBytes: number
  /** The gateway's CPU per state request, against its CPU per 1,000 messages at the same load. */
  cpuMsPerPoll: number,
  cpuMsPer1000Messages: number
  pollEverySeconds: number
} | { skipped: string }

const CHROMIUM = '/usr/bin/chromium'
const TICK = 100 // USER_HZ: /proc/<pid>/stat counts in clock ticks, 100 per second on Linux
const cpu = (pid: number): number => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(f[11]) + Number(f[12])) / TICK
}
const rss = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024
const round = (n: number, d: number): number => Math.round(n * 10 ** d) / 10 ** d

export async function consoleCost (seconds = 20, devices = 10, rate = 100): Promise<ConsoleCostRow> {
  if (!existsSync(CHROMIUM)) return { skipped: `${CHROMIUM} is not installed` }
  const teardowns: Array<() => Promise<void> | void> = []
  try {
    // The bundled tool's import.meta.url is not the app's: name the gateway bundle (cwd is app/).
    const s = await startStack({ teardown: fn => { teardowns.push(fn) } }, {}, { command: { bin: process.execPath, args: [join(process.cwd(), 'dist', 'gateway.cjs')] } })
    const pid = s.gateway.proc!.pid!
    const delivered = async (): Promise<number> => await s.gateway.metric('gateway_uplink_messages_delivered_total')
    const phase = async (): Promise<ConsolePhase> => {
      const c0 = cpu(pid); const d0 = await delivered(); const t0 = Date.now()
      let peak = 0
      while (Date.now() - t0 < seconds * 1000) { peak = Math.max(peak, rss(pid)); await new Promise(resolve => setTimeout(resolve, 500)) }
      const dt = (Date.now() - t0) / 1000
      return { cpuPercent: round((cpu(pid) - c0) / dt * 100, 1), rssMiB: round(peak / 1048576, 1), msgPerSecond: Math.round((await delivered() - d0) / dt) }
    }
    const load = new LoadGenerator(s.config, Array.from({ length: devices }, (_, i) => `dev${i}`))
    teardowns.push(() => load.close())
    await load.connect()
    load.start(Infinity, rate)
    await new Promise(resolve => setTimeout(resolve, 3000)) // warm-up
    const without = await phase()
    // A name in a variable: the bench's bundle leaves Chromium's driver to node_modules.
    const pw = 'playwright-core'
    const { chromium } = await import(pw) as typeof import('playwright-core')
    const profile = mkdtempSync(join(tmpdir(), 'iotgw-chromium-'))
    teardowns.push(() => rmSync(profile, { recursive: true, force: true }))
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
    })
    teardowns.unshift(async () => { await context.close().catch(() => {}) })
    const page = context.pages()[0] ?? await context.newPage()
    let stateBytes = 0; let polls = 0
    page.on('response', r => { if (r.url().endsWith('/console/api/state')) { polls++; void r.body().then(b => { stateBytes = b.length }, () => {}) } })
    const token = readFileSync(join(s.config.gateway.dataDir, 'api-token'), 'utf8').trim()
    await page.goto(`http://127.0.0.1:${s.config.api.port}/console`)
    await page.fill('#token', token)
    await page.click('#login button')
    await page.waitForSelector('#health')
    const withConsole = await phase()
    const pollsOpen = polls
    await context.close()
    // Once more without: RSS that stays after the page is closed is the heap settling, not the console.
    const afterClosing = await phase()
    // The cost of one poll, apart from the load's noise: N state requests back to back, against
    // the CPU the same gateway spends per 1,000 messages in the phases without the console.
    const { request } = await import('undici')
    const n = 200
    const c0 = cpu(pid)
    for (let i = 0; i < n; i++) await (await request(`http://127.0.0.1:${s.config.api.port}/console/api/state`, { headers: { authorization: `Bearer ${token}` } })).body.dump()
    const cpuMsPerPoll = round((cpu(pid) - c0) / n * 1000, 2)
    const base = { cpu: (without.cpuPercent + afterClosing.cpuPercent) / 2, rss: (without.rssMiB + afterClosing.rssMiB) / 2, rate: (without.msgPerSecond + afterClosing.msgPerSecond) / 2 }
    return {
      seconds,
      devices,
      ratePerDevice: rate,
      without,
      withConsole,
      afterClosing,
      cpuRatio: round(withConsole.cpuPercent / base.cpu, 2),
      rssRatio: round(withConsole.rssMiB / base.rss, 2),
      consolePolls: pollsOpen,
      stateResponseBytes: stateBytes,
      cpuMsPerPoll,
      cpuMsPer1000Messages: round(base.cpu * 10 / base.rate * 1000, 2),
      pollEverySeconds: 2
    }
  } finally {
    for (const fn of teardowns.reverse()) await fn()
  }
}

/** The bench's rows for the operations work (app/docs/operations.md, console.md). */
export function printOpsRows (m: { shareOfOneCorePercent: number, cpuMsPerSample: number, cpuSecondsPerMinute: number, intervalSeconds: number, underBudgetRatio: number }, c: ConsoleCostRow): void {
  const row = (area: string, what: string, figure: string): void => console.log(`${area.padEnd(9)} ${what.padEnd(40)} ${figure}`)
  console.log('')
  row('area', 'what', 'figure')
  row('monitor', 'CPU per sample and alert evaluation', `${m.cpuMsPerSample} ms (100 devices known)`)
  row('monitor', `idle CPU per minute, ${m.intervalSeconds} s interval`, `${m.cpuSecondsPerMinute} s = ${m.shareOfOneCorePercent} % of one core (x${m.underBudgetRatio} under the 1 % budget)`)
  if ('skipped' in c) { row('console', 'skipped', c.skipped); return }
  const p = (x: ConsolePhase): string => `CPU ${x.cpuPercent} % of a core, peak RSS ${x.rssMiB} MiB, ${x.msgPerSecond} msg/s delivered`
  row('console', `closed (${c.devices} devices x ${c.ratePerDevice} msg/s)`, p(c.without))
  row('console', `open, polling every ${c.pollEverySeconds} s`, p(c.withConsole))
  row('console', 'closed again', p(c.afterClosing))
  row('console', 'ratio open / closed', `CPU x${c.cpuRatio}, RSS x${c.rssRatio}`)
  row('console', `one poll (${c.stateResponseBytes} B of state)`, `${c.cpuMsPerPoll} ms CPU = x${round(c.cpuMsPerPoll / c.cpuMsPer1000Messages, 2)} the CPU of 1,000 messages (${c.cpuMsPer1000Messages} ms)`)
}
