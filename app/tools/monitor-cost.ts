// The monitor's own cost, as a module: `npm run bench` prints it (tools/bench.ts), and
// `node tools/run.mjs monitor-cost [samples]` prints the same row as JSON. Takes real samples of this
// machine (/proc, /sys, statfs; the same SystemReader the gateway runs), each followed by an alert
// evaluation with 100 devices known, and reports the CPU time per sample and what it costs at the
// default interval, as a share of one core. Counts CPU time (process.cpuUsage), not wall time.
import { buildConfig } from '../src/config/load.js'
import { AlertManager } from '../src/alerts/manager.js'
import { AlertStore } from '../src/alerts/store.js'
import { openDatabase } from '../src/store/db.js'
import { Registry } from '../src/lib/metrics.js'
import { silentLogger } from '../src/lib/logger.js'
import { SystemMonitor } from '../src/monitor/monitor.js'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface MonitorCostRow {
  samples: number
  cpuMsPerSample: number
  wallMsPerSample: number
  intervalSeconds: number
  /** CPU seconds the monitor spends per minute at the default interval. */
  cpuSecondsPerMinute: number
  shareOfOneCorePercent: number
  /** How many times the monitor fits in the budget of 1 % of one core (above 1: under budget). */
  underBudgetRatio: number
  metricsScrapeBytes: number
}

const round = (n: number, d: number): number => Math.round(n * 10 ** d) / 10 ** d

export function monitorCost (n = 2000): MonitorCostRow {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-moncost-'))
  try {
    const config = buildConfig({ gateway: { dataDir: dir } })
    const db = openDatabase(join(dir, 'gateway.db'))
    const metrics = new Registry()
    const monitor = new SystemMonitor(config, metrics, silentLogger)
    const devices = new Map(Array.from({ length: 100 }, (_, i) => [`dev-${i}`, false] as [string, boolean]))
    const alerts = new AlertManager(config, new AlertStore(db), 'x', {
      brokerConnected: () => true, uplinkFailing: () => false, outboxDepth: () => 0, outboxOldestAt: () => null, cloudAuthRefused: () => false, quarantined: () => devices
    }, [], metrics, silentLogger)
    alerts.start()
    for (let d = 0; d < 100; d++) for (let i = 0; i < 40; i++) alerts.watch.observe(`dev-${d}`, 'telemetry', Date.now() - (40 - i) * 10_000, `{"seq":${i},"temp":${20 + Math.random()},"hum":${50 + Math.random()}}`)
    monitor.onSample(s => alerts.tick(s))
    for (let i = 0; i < 20; i++) monitor.tick() // warm-up (JIT)
    const before = process.cpuUsage()
    const wall = process.hrtime.bigint()
    for (let i = 0; i < n; i++) monitor.tick()
    const used = process.cpuUsage(before)
    const perSampleMs = (used.user + used.system) / 1000 / n
    const interval = config.monitor.intervalSeconds
    const share = perSampleMs / (interval * 1000) * 100
    const row: MonitorCostRow = {
      samples: n,
      cpuMsPerSample: round(perSampleMs, 3),
      wallMsPerSample: round(Number(process.hrtime.bigint() - wall) / 1e6 / n, 3),
      intervalSeconds: interval,
      cpuSecondsPerMinute: round(perSampleMs / 1000 * (60 / interval), 4),
      shareOfOneCorePercent: round(share, 4),
      underBudgetRatio: round(1 / share, 0),
      metricsScrapeBytes: metrics.render().length
    }
    db.close()
    return row
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
