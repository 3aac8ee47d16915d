import type { Config } from '../config/schema.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'
import { SystemReader, THROTTLE_FLAGS, type SystemSample } from './system.js'

/**
 * Samples the system every monitor.intervalSeconds and exposes the latest sample to /metrics,
 * /status and the alert rules. Gauges read the last sample (a scrape reads no file).
 */
export class SystemMonitor {
  readonly reader: SystemReader
  last: SystemSample | null = null
  private timer?: NodeJS.Timeout
  private listeners: Array<(s: SystemSample) => void> = []
  private readonly samples

  constructor (private readonly config: Config, metrics: Registry, private readonly log: Logger, opts: { clockSynchronized?: () => boolean | null } = {}) {
    const m = config.monitor
    this.reader = new SystemReader({ root: m.root, dataDir: config.gateway.dataDir, mosquittoProcess: m.mosquittoProcess, units: m.units, unitsIntervalMs: m.unitsIntervalSeconds * 1000, ...(opts.clockSynchronized ? { clockSynchronized: opts.clockSynchronized } : {}) })
    this.samples = metrics.counter('gateway_monitor_samples_total', 'System samples taken (each is followed by an alert evaluation).').init()
    const s = (): SystemSample | null => this.last
    const list = <T>(f: (x: SystemSample) => Array<[Record<string, string>, T]>): () => Array<[Record<string, string>, number]> =>
      () => { const x = s(); return x ? f(x) as Array<[Record<string, string>, number]> : [] }
    metrics.gauge('gateway_system_cpu_usage_ratio', 'CPU busy fraction (0-1) over the last monitor interval: cpu="total" and one per core.', list(x => Object.entries(x.cpu).map(([cpu, v]) => [{ cpu }, Math.round(v * 10000) / 10000])))
    metrics.gauge('gateway_system_load_average', 'Load average over 1, 5 and 15 minutes (/proc/loadavg).', list(x => x.load ? [[{ period: '1m' }, x.load[0]], [{ period: '5m' }, x.load[1]], [{ period: '15m' }, x.load[2]]] : []))
    metrics.gauge('gateway_system_memory_available_bytes', 'MemAvailable from /proc/meminfo.', list(x => x.memory ? [[{}, x.memory.availableBytes]] : []))
    metrics.gauge('gateway_system_memory_total_bytes', 'MemTotal from /proc/meminfo.', list(x => x.memory ? [[{}, x.memory.totalBytes]] : []))
    metrics.gauge('gateway_process_resident_memory_bytes', 'Resident set size of the gateway and of Mosquitto (/proc/<pid>/status VmRSS).', list(x => [
      ...(x.gatewayRssBytes !== null ? [[{ process: 'gateway' }, x.gatewayRssBytes] as [Record<string, string>, number]] : []),
      ...(x.mosquitto?.rssBytes != null ? [[{ process: 'mosquitto' }, x.mosquitto.rssBytes] as [Record<string, string>, number]] : [])
    ]))
    metrics.gauge('gateway_system_temperature_celsius', 'Temperature per thermal zone (/sys/class/thermal).', list(x => Object.entries(x.temperatures).map(([zone, v]) => [{ zone }, v])))
    metrics.gauge('gateway_system_throttled', 'Raspberry Pi firmware flags (get_throttled): 1 when set, now or since boot. Absent where the kernel has no interface.', list(x => {
      const t = x.throttling
      if (!t) return []
      const out: Array<[Record<string, string>, number]> = []
      for (const f of THROTTLE_FLAGS) {
        if (t.now[f] !== undefined) out.push([{ flag: f, when: 'now' }, t.now[f] ? 1 : 0])
        if (t.sinceBoot[f] !== undefined) out.push([{ flag: f, when: 'since_boot' }, t.sinceBoot[f] ? 1 : 0])
      }
      return out
    }))
    metrics.gauge('gateway_data_filesystem_avail_bytes', 'Space available to the gateway on the data directory\'s file system.', list(x => x.disk ? [[{ path: x.disk.path }, x.disk.availBytes]] : []))
    metrics.gauge('gateway_data_filesystem_size_bytes', 'Size of the data directory\'s file system.', list(x => x.disk ? [[{ path: x.disk.path }, x.disk.sizeBytes]] : []))
    metrics.gauge('gateway_data_filesystem_files_free', 'Free inodes on the data directory\'s file system.', list(x => x.disk ? [[{ path: x.disk.path }, x.disk.filesFree]] : []))
    metrics.gauge('gateway_data_filesystem_files', 'Inodes on the data directory\'s file system.', list(x => x.disk ? [[{ path: x.disk.path }, x.disk.files]] : []))
    metrics.gauge('gateway_clock_synchronized', '1 when the system clock is synchronised (systemd-timesyncd), 0 when not; absent where unknown.', list(x => x.clockSynchronized === null ? [] : [[{}, x.clockSynchronized ? 1 : 0]]))
    metrics.gauge('gateway_systemd_unit_memory_bytes', 'Memory of the unit\'s cgroup (systemd MemoryCurrent: RSS and page cache). On the image it is the way to see Mosquitto\'s memory, whose /proc entry the gateway\'s sandbox hides (ProtectProc=invisible).', list(x => x.units ? Object.entries(x.units).filter(([, u]) => u.memoryBytes !== null).map(([unit, u]) => [{ unit }, u.memoryBytes!]) : []))
    metrics.gauge('gateway_systemd_unit_active', '1 when the unit is active (`systemctl show`); absent without systemd.', list(x => x.units ? Object.entries(x.units).map(([unit, u]) => [{ unit, state: u.active }, u.active === 'active' ? 1 : 0]) : []))
  }

  onSample (fn: (s: SystemSample) => void): void { this.listeners.push(fn) }

  start (): void {
    this.tick()
    this.timer = setInterval(() => this.tick(), this.config.monitor.intervalSeconds * 1000).unref()
  }

  tick (): void {
    try {
      this.last = this.reader.sample()
      for (const l of this.listeners) l(this.last)
      this.samples.inc()
    } catch (err) {
      this.log.error('system sample failed', { err })
    }
  }

  stop (): void { if (this.timer) clearInterval(this.timer) }
}
