import type { Config } from '../config/schema.js'

/** Gaps shorter than this are a burst, not an interval: they do not teach the device's rhythm. */
const BURST_MS = 1000
/** Weight of a new gap / sample in the moving averages (about the last 10-20 values count). */
const ALPHA_GAP = 0.2
const ALPHA_VALUE = 0.05
const MAX_DEVICES = 100_000

interface FieldStats { n: number, mean: number, variance: number, lastZ: number, lastValue: number, lastMean: number }
interface DeviceStats { lastSeen: number, interval: number, gaps: number, fields: Map<string, FieldStats> }

/**
 * Learns, per device, its usual interval between messages and, per numeric top-level field of its
 * telemetry, an exponentially weighted mean and variance. Fed with committed messages (in memory
 * only: nothing is written per message; after a restart the rhythm is learnt again). Pure apart
 * from the times passed in.
 */
export class DeviceWatch {
  private readonly devices = new Map<string, DeviceStats>()
  constructor (private readonly a: Config['alerts']) {}

  /** One committed message. `payload` is the device's JSON text (already validated as an object). */
  observe (device: string, stream: string, at: number, payload: string): void {
    let d = this.devices.get(device)
    if (!d) {
      if (this.devices.size >= MAX_DEVICES) return
      d = { lastSeen: at, interval: 0, gaps: 0, fields: new Map() }
      this.devices.set(device, d)
    } else {
      const gap = at - d.lastSeen
      if (gap >= BURST_MS) {
        d.interval = d.gaps === 0 ? gap : d.interval + ALPHA_GAP * (gap - d.interval)
        d.gaps++
      }
      if (at > d.lastSeen) d.lastSeen = at
    }
    if (stream !== 'telemetry' || this.a.anomalyMaxFields === 0 || this.a.disabled.includes('device_anomaly')) return
    let o: unknown
    try { o = JSON.parse(payload) } catch { return }
    if (o === null || typeof o !== 'object') return
    for (const [k, v] of Object.entries(o as Record<string, unknown>)) {
      // seq and epoch count up by design; they are not measurements.
      if (typeof v !== 'number' || !Number.isFinite(v) || k === 'seq' || k === 'epoch') continue
      let f = d.fields.get(k)
      if (!f) {
        if (d.fields.size >= this.a.anomalyMaxFields) continue
        f = { n: 0, mean: v, variance: 0, lastZ: 0, lastValue: v, lastMean: v }
        d.fields.set(k, f)
      }
      this.sample(f, v)
    }
  }

  /** z-score against the statistics before this value, then the value joins them (a lasting step is learnt). */
  private sample (f: FieldStats, v: number): void {
    const spread = Math.max(Math.sqrt(f.variance), this.a.anomalyMinSpread, Math.abs(f.mean) * 0.01)
    f.lastZ = f.n >= this.a.anomalyWarmup && spread > 0 ? Math.abs(v - f.mean) / spread : 0
    f.lastValue = v
    f.lastMean = f.mean
    f.n++
    if (f.n === 1) { f.mean = v; return }
    const diff = v - f.mean
    const alpha = Math.max(ALPHA_VALUE, 1 / f.n)
    f.mean += alpha * diff
    f.variance = (1 - alpha) * (f.variance + alpha * diff * diff)
  }

  /** Devices whose interval is learnt, with how long they have been quiet and their limit. */
  silence (now: number): Array<{ device: string, silentMs: number, limitMs: number }> {
    const out: Array<{ device: string, silentMs: number, limitMs: number }> = []
    for (const [device, d] of this.devices) {
      if (d.gaps < this.a.deviceSilentWarmup) continue
      out.push({ device, silentMs: Math.max(0, now - d.lastSeen), limitMs: Math.max(this.a.deviceSilentMinSeconds * 1000, this.a.deviceSilentFactor * d.interval) })
    }
    return out
  }

  /**
   * Fields whose last value is off by at least `minZ` standard deviations, plus the ones listed in
   * `also` (alerts currently firing, so that they can resolve).
   */
  anomalies (minZ: number, also: Iterable<[string, string]> = []): Array<{ device: string, field: string, z: number, value: number, mean: number }> {
    const out: Array<{ device: string, field: string, z: number, value: number, mean: number }> = []
    const seen = new Set<string>()
    for (const [device, d] of this.devices) {
      for (const [field, f] of d.fields) {
        if (f.lastZ >= minZ) { out.push({ device, field, z: f.lastZ, value: f.lastValue, mean: f.lastMean }); seen.add(`${device}\0${field}`) }
      }
    }
    for (const [device, field] of also) {
      if (seen.has(`${device}\0${field}`)) continue
      const f = this.devices.get(device)?.fields.get(field)
      if (f) out.push({ device, field, z: f.lastZ, value: f.lastValue, mean: f.lastMean })
    }
    return out
  }

  interval (device: string): number | null {
    const d = this.devices.get(device)
    return d && d.gaps > 0 ? d.interval : null
  }
}
