import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statfsSync } from 'node:fs'
import { join } from 'node:path'

/**
 * System health read from the kernel: /proc and /sys files, fs.statfs and (every 30 s) one
 * `systemctl show`. Every reader takes a root directory so tests can point it at a fake tree; every
 * figure is optional: what the kernel does not offer (no thermal zone, not a Raspberry Pi, no
 * systemd) is reported as absent, never as a made-up number.
 */

export interface CpuTimes { busy: number, total: number }

/** /proc/stat: "cpu" (all) and "cpuN" lines; busy = total - idle - iowait. */
export function parseProcStat (text: string): Map<string, CpuTimes> {
  const out = new Map<string, CpuTimes>()
  for (const line of text.split('\n')) {
    if (!line.startsWith('cpu')) continue
    const [name, ...f] = line.trim().split(/\s+/)
    // user nice system idle iowait irq softirq steal (guest and guest_nice are already in user/nice).
    const n = f.slice(0, 8).map(Number)
    if (n.length < 4 || n.some(x => !Number.isFinite(x))) continue
    const total = n.reduce((a, b) => a + b, 0)
    const idle = n[3]! + (n[4] ?? 0)
    out.set(name === 'cpu' ? 'total' : name!.slice(3), { busy: total - idle, total })
  }
  return out
}

/** Busy fraction (0..1) per CPU between two /proc/stat readings. */
export function cpuUsage (prev: Map<string, CpuTimes>, cur: Map<string, CpuTimes>): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [k, c] of cur) {
    const p = prev.get(k)
    if (!p) continue
    const dt = c.total - p.total
    out[k] = dt > 0 ? Math.min(1, Math.max(0, (c.busy - p.busy) / dt)) : 0
  }
  return out
}

export function parseLoadavg (text: string): [number, number, number] | null {
  const f = text.trim().split(/\s+/).slice(0, 3).map(Number)
  return f.length === 3 && f.every(Number.isFinite) ? [f[0]!, f[1]!, f[2]!] : null
}

/** /proc/meminfo values are in kB (KiB). */
export function parseMeminfo (text: string): { totalBytes: number, availableBytes: number } | null {
  const get = (k: string): number | undefined => {
    const m = new RegExp(`^${k}:\\s+(\\d+)\\s*kB`, 'm').exec(text)
    return m ? Number(m[1]) * 1024 : undefined
  }
  const total = get('MemTotal')
  const avail = get('MemAvailable')
  return total !== undefined && avail !== undefined ? { totalBytes: total, availableBytes: avail } : null
}

/** /proc/<pid>/status: Name and VmRSS (kB). */
export function parseStatus (text: string): { name: string, rssBytes: number | null } {
  const name = /^Name:\s*(.*)$/m.exec(text)?.[1]?.trim() ?? ''
  const rss = /^VmRSS:\s+(\d+)\s*kB/m.exec(text)
  return { name, rssBytes: rss ? Number(rss[1]) * 1024 : null }
}

/**
 * The Raspberry Pi firmware's throttling word (mailbox tag GET_THROTTLED), as the Raspberry Pi
 * kernel's firmware driver exposes it in /sys/devices/platform/soc/soc:firmware/get_throttled (hex).
 * Bits 0-3: now; bits 16-19: since boot.
 */
export const THROTTLE_FLAGS = ['under_voltage', 'frequency_capped', 'throttled', 'soft_temperature_limit'] as const
export type ThrottleFlag = typeof THROTTLE_FLAGS[number]
export function parseThrottled (text: string): { now: Record<ThrottleFlag, boolean>, sinceBoot: Record<ThrottleFlag, boolean> } | null {
  const t = text.trim()
  if (!/^(0x)?[0-9a-f]+$/i.test(t)) return null
  const v = parseInt(t.replace(/^0x/i, ''), 16)
  const now = {} as Record<ThrottleFlag, boolean>
  const sinceBoot = {} as Record<ThrottleFlag, boolean>
  THROTTLE_FLAGS.forEach((f, i) => { now[f] = (v & (1 << i)) !== 0; sinceBoot[f] = (v & (1 << (16 + i))) !== 0 })
  return { now, sinceBoot }
}

export interface UnitState { active: string, sub: string, memoryBytes: number | null }

/**
 * `systemctl show --property=Id,ActiveState,SubState,MemoryCurrent u1 u2 …`: blocks separated by
 * blank lines. MemoryCurrent is the unit's cgroup memory ("[not set]" without memory accounting).
 */
export function parseSystemctlShow (text: string): Record<string, UnitState> {
  const out: Record<string, UnitState> = {}
  for (const block of text.split(/\n\s*\n/)) {
    const kv = Object.fromEntries(block.split('\n').filter(l => l.includes('=')).map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
    const mem = kv.MemoryCurrent !== undefined && /^\d+$/.test(kv.MemoryCurrent) && kv.MemoryCurrent !== '18446744073709551615' ? Number(kv.MemoryCurrent) : null
    if (kv.Id) out[kv.Id] = { active: kv.ActiveState ?? 'unknown', sub: kv.SubState ?? 'unknown', memoryBytes: mem }
  }
  return out
}

export interface SystemSample {
  at: number
  /** Busy fraction 0..1: "total" and one entry per core ("0", "1", …). Empty on the first sample. */
  cpu: Record<string, number>
  load: [number, number, number] | null
  memory: { totalBytes: number, availableBytes: number, usedRatio: number } | null
  gatewayRssBytes: number | null
  mosquitto: { pid: number, rssBytes: number | null } | null
  /** °C per thermal zone (zone name -> value); the highest is `temperatureMax`. */
  temperatures: Record<string, number>
  temperatureMax: number | null
  /** null: no interface (not a Raspberry Pi kernel). `source` names the file read. */
  throttling: { source: string, now: Partial<Record<ThrottleFlag, boolean>>, sinceBoot: Partial<Record<ThrottleFlag, boolean>> } | null
  disk: { path: string, sizeBytes: number, freeBytes: number, availBytes: number, files: number, filesFree: number } | null
  /** systemd-timesyncd's flag file; null where there is no way to tell. */
  clockSynchronized: boolean | null
  /** null: not sampled (no systemd). */
  units: Record<string, UnitState> | null
}

export interface SystemReaderOptions {
  root: string
  dataDir: string
  mosquittoProcess: string
  units: readonly string[]
  unitsIntervalMs: number
  /** The process whose RSS is the gateway's: 'self' on a real system. */
  selfPid?: string
  /** H5's clock module can replace the timesyncd flag file with a richer answer. */
  clockSynchronized?: () => boolean | null
}

const read = (p: string): string | null => { try { return readFileSync(p, 'utf8') } catch { return null } }

/** Reads the kernel's figures; holds the previous CPU reading (usage is a difference) and the cached pids. */
export class SystemReader {
  private prevCpu?: Map<string, CpuTimes>
  private mosquittoPid: number | null = null
  private pidScanAt = 0
  private units: Record<string, UnitState> | null = null
  private unitsAt = 0
  private unitsRunning = false
  private thermalZones?: string[]
  private throttleSource?: { kind: 'firmware' | 'hwmon', file: string } | null
  readonly systemd: boolean

  constructor (private readonly o: SystemReaderOptions) {
    this.systemd = o.units.length > 0 && existsSync(join(o.root, 'run/systemd/system'))
  }

  private p (...parts: string[]): string { return join(this.o.root, ...parts) }

  sample (now = Date.now()): SystemSample {
    const stat = read(this.p('proc/stat'))
    const cur = stat !== null ? parseProcStat(stat) : undefined
    const cpu = cur && this.prevCpu ? cpuUsage(this.prevCpu, cur) : {}
    if (cur) this.prevCpu = cur
    const loadText = read(this.p('proc/loadavg'))
    const memText = read(this.p('proc/meminfo'))
    const mem = memText !== null ? parseMeminfo(memText) : null
    const self = read(this.p('proc', this.o.selfPid ?? 'self', 'status'))
    const temperatures = this.temperatures()
    const temps = Object.values(temperatures)
    this.refreshUnits(now)
    return {
      at: now,
      cpu,
      load: loadText !== null ? parseLoadavg(loadText) : null,
      memory: mem ? { ...mem, usedRatio: mem.totalBytes > 0 ? 1 - mem.availableBytes / mem.totalBytes : 0 } : null,
      gatewayRssBytes: self !== null ? parseStatus(self).rssBytes : null,
      mosquitto: this.mosquitto(now),
      temperatures,
      temperatureMax: temps.length > 0 ? Math.max(...temps) : null,
      throttling: this.throttling(),
      disk: this.disk(),
      clockSynchronized: this.o.clockSynchronized?.() ?? this.timesync(),
      units: this.units
    }
  }

  private temperatures (): Record<string, number> {
    const base = this.p('sys/class/thermal')
    // The list of zones does not change at run time: listed once.
    this.thermalZones ??= (() => { try { return readdirSync(base).filter(d => d.startsWith('thermal_zone')) } catch { return [] } })()
    const out: Record<string, number> = {}
    for (const z of this.thermalZones) {
      const t = read(join(base, z, 'temp'))
      if (t === null || !/^-?\d+\s*$/.test(t)) continue
      const type = read(join(base, z, 'type'))?.trim()
      out[type !== undefined && type !== '' ? `${z}:${type}` : z] = Number(t) / 1000 // millidegrees Celsius
    }
    return out
  }

  private throttling (): SystemSample['throttling'] {
    if (this.throttleSource === undefined) {
      const fw = this.p('sys/devices/platform/soc/soc:firmware/get_throttled')
      if (existsSync(fw)) this.throttleSource = { kind: 'firmware', file: fw }
      else {
        // Mainline kernels: raspberrypi-hwmon ("rpi_volt") reports only under-voltage, as in0_lcrit_alarm.
        this.throttleSource = null
        try {
          for (const h of readdirSync(this.p('sys/class/hwmon'))) {
            if (read(this.p('sys/class/hwmon', h, 'name'))?.trim() === 'rpi_volt') { this.throttleSource = { kind: 'hwmon', file: this.p('sys/class/hwmon', h, 'in0_lcrit_alarm') }; break }
          }
        } catch {}
      }
    }
    const s = this.throttleSource
    if (!s) return null
    const text = read(s.file)
    if (text === null) return null
    const source = s.file.slice(this.o.root.replace(/\/$/, '').length)
    if (s.kind === 'hwmon') return { source, now: { under_voltage: text.trim() === '1' }, sinceBoot: {} }
    const t = parseThrottled(text)
    return t ? { source, ...t } : null
  }

  private disk (): SystemSample['disk'] {
    try {
      const s = statfsSync(this.o.dataDir)
      return { path: this.o.dataDir, sizeBytes: s.blocks * s.bsize, freeBytes: s.bfree * s.bsize, availBytes: s.bavail * s.bsize, files: s.files, filesFree: s.ffree }
    } catch { return null }
  }

  private timesync (): boolean | null {
    // systemd-timesyncd creates this file once it has synchronised the clock, and removes it at boot.
    if (existsSync(this.p('run/systemd/timesync/synchronized'))) return true
    return existsSync(this.p('run/systemd/timesync')) ? false : null
  }

  /** The cached pid is checked on every sample (one read); the whole of /proc is scanned at most once a minute. */
  private mosquitto (now: number): SystemSample['mosquitto'] {
    if (this.mosquittoPid !== null) {
      const st = read(this.p('proc', String(this.mosquittoPid), 'status'))
      const s = st !== null ? parseStatus(st) : null
      if (s && s.name === this.o.mosquittoProcess) return { pid: this.mosquittoPid, rssBytes: s.rssBytes }
      this.mosquittoPid = null
    }
    if (now - this.pidScanAt < 60_000 && this.pidScanAt !== 0) return null
    this.pidScanAt = now
    let dirs: string[] = []
    try { dirs = readdirSync(this.p('proc')).filter(d => /^\d+$/.test(d)) } catch {}
    for (const d of dirs) {
      if (read(this.p('proc', d, 'comm'))?.trim() !== this.o.mosquittoProcess) continue
      this.mosquittoPid = Number(d)
      const st = read(this.p('proc', d, 'status'))
      return { pid: this.mosquittoPid, rssBytes: st !== null ? parseStatus(st).rssBytes : null }
    }
    return null
  }

  private refreshUnits (now: number): void {
    if (!this.systemd || this.unitsRunning || now - this.unitsAt < this.o.unitsIntervalMs) return
    this.unitsAt = now
    this.unitsRunning = true
    execFile('systemctl', ['show', '--property=Id,ActiveState,SubState,MemoryCurrent', '--', ...this.o.units], { timeout: 5000 }, (err, stdout) => {
      this.unitsRunning = false
      this.units = err ? null : parseSystemctlShow(stdout)
    })
  }
}
