// What an open console costs the gateway: `node tools/console-cost.mjs [seconds] [devices] [rate per device]`.
// A real stack (Mosquitto, the HTTPS cloud, the gateway bundle) with devices publishing (default 10
// devices x 100 msg/s = 1,000 msg/s); the gateway's CPU time (/proc/<pid>/stat) and RSS over the
// same number of seconds, first without a browser, then with headless Chromium showing the console
// (logged in, polling). Prints one JSON line. Needs /usr/bin/chromium and dist/gateway.cjs.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startStack } from '../test/helpers/env.js'
import { LoadGenerator } from '../test/helpers/load.js'

const seconds = Number(process.argv[2] ?? 20)
const devices = Number(process.argv[3] ?? 10)
const rate = Number(process.argv[4] ?? 100)
const teardowns: Array<() => Promise<void> | void> = []
const tick = 100 // USER_HZ: /proc/<pid>/stat counts in clock ticks, 100 per second on Linux

const cpu = (pid: number): number => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(f[11]) + Number(f[12])) / tick
}
const rss = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024
const delivered = async (s: { gateway: { metric: (n: string) => Promise<number> } }): Promise<number> => await s.gateway.metric('gateway_uplink_messages_delivered_total')

async function phase (pid: number, s: Parameters<typeof delivered>[0]): Promise<{ cpuPercent: number, rssMiB: number, msgPerSecond: number }> {
  const c0 = cpu(pid); const d0 = await delivered(s); const t0 = Date.now()
  let peak = 0
  while (Date.now() - t0 < seconds * 1000) { peak = Math.max(peak, rss(pid)); await new Promise(resolve => setTimeout(resolve, 500)) }
  const dt = (Date.now() - t0) / 1000
  return { cpuPercent: Math.round((cpu(pid) - c0) / dt * 1000) / 10, rssMiB: Math.round(peak / 1048576 * 10) / 10, msgPerSecond: Math.round((await delivered(s) - d0) / dt) }
}

try {
  // The bundled tool's import.meta.url is not the app's: name the gateway bundle (cwd is app/).
  const s = await startStack({ teardown: fn => { teardowns.push(fn) } }, {}, { command: { bin: process.execPath, args: [join(process.cwd(), 'dist', 'gateway.cjs')] } })
  const pid = s.gateway.proc!.pid!
  const load = new LoadGenerator(s.config, Array.from({ length: devices }, (_, i) => `dev${i}`))
  await load.connect()
  load.start(Infinity, rate)
  await new Promise(resolve => setTimeout(resolve, 3000)) // warm-up
  const without = await phase(pid, s)
  const { chromium } = await import('playwright-core')
  const { mkdtempSync } = await import('node:fs')
  const { tmpdir } = await import('node:os')
  const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'iotgw-chromium-')), {
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']
  })
  teardowns.unshift(async () => { await context.close().catch(() => {}) })
  const page = context.pages()[0] ?? await context.newPage()
  let stateBytes = 0; let polls = 0
  page.on('response', r => { if (r.url().endsWith('/console/api/state')) { polls++; void r.body().then(b => { stateBytes = b.length }, () => {}) } })
  await page.goto(`http://127.0.0.1:${s.config.api.port}/console`)
  await page.fill('#token', readFileSync(join(s.config.gateway.dataDir, 'api-token'), 'utf8').trim())
  await page.click('#login button')
  await page.waitForSelector('#health')
  const withConsole = await phase(pid, s)
  const pollsOpen = polls
  await context.close()
  // Once more without: RSS that stays after the page is closed is the heap settling, not the console.
  const afterClosing = await phase(pid, s)
  // The cost of one poll, in isolation from the load's noise: N state requests back to back.
  const { request } = await import('undici')
  const token = readFileSync(join(s.config.gateway.dataDir, 'api-token'), 'utf8').trim()
  const n = 200
  const c0 = cpu(pid)
  for (let i = 0; i < n; i++) await (await request(`http://127.0.0.1:${s.config.api.port}/console/api/state`, { headers: { authorization: `Bearer ${token}` } })).body.dump()
  const cpuMsPerPoll = Math.round((cpu(pid) - c0) / n * 1000 * 100) / 100
  await load.close()
  console.log(JSON.stringify({ seconds, devices, ratePerDevice: rate, without, withConsole, afterClosing, consolePolls: pollsOpen, stateResponseBytes: stateBytes, cpuMsPerPoll, pollEverySeconds: 2 }))
} finally {
  for (const fn of teardowns.reverse()) await fn()
}
