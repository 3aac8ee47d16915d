import type { Config } from '../config/schema.js'
import type { SystemSample } from '../monitor/system.js'
import type { RuleName } from './config.js'

/**
 * Alert evaluation, pure: the caller passes what it observed and the time; evaluate() returns the
 * next states and the transitions (fired, resolved). Nothing here reads a clock, a file or a
 * database, so the state machine is tested with a fake clock.
 *
 * One alert per key (a rule, or a rule and a device/field). States: absent -> pending (condition
 * holds, waiting for the rule's duration) -> firing -> (condition cleared past the hysteresis)
 * resolved, i.e. absent again. A firing alert is reported once and its resolution once.
 */

export type Severity = 'critical' | 'warning'
export const SEVERITY: Record<RuleName, Severity> = {
  cpu_high: 'warning',
  memory_high: 'warning',
  temperature_high: 'critical',
  throttled: 'warning',
  disk_low: 'critical',
  outbox_stale: 'warning',
  uplink_failing: 'warning',
  cloud_auth_refused: 'critical',
  broker_unreachable: 'critical',
  clock_unsynchronised: 'warning',
  clock_behind_pki: 'critical',
  device_quarantined: 'warning',
  device_silent: 'warning',
  device_anomaly: 'warning'
}

export interface Observation {
  key: string
  rule: RuleName
  labels: Record<string, string>
  /** The measured value (in the rule's unit), null where none applies. */
  value: number | null
  threshold: number | null
  /** The condition holds. */
  breach: boolean
  /** The condition is clear by the hysteresis margin: a firing alert resolves. */
  clear: boolean
  summary: string
}

export interface AlertState {
  key: string
  rule: RuleName
  labels: Record<string, string>
  state: 'pending' | 'firing'
  /** When the condition started to hold. */
  since: number
  firedAt: number | null
  value: number | null
  threshold: number | null
  summary: string
}

export interface Transition { to: 'firing' | 'resolved', at: number, alert: AlertState }

/**
 * Keys without an observation keep their state: no data is not good news (a silent device whose
 * learned interval was lost in a restart stays firing until it speaks again).
 */
export function evaluate (prev: ReadonlyMap<string, AlertState>, obs: readonly Observation[], forMs: (rule: RuleName) => number, now: number):
{ next: Map<string, AlertState>, transitions: Transition[] } {
  const next = new Map(prev)
  const transitions: Transition[] = []
  for (const o of obs) {
    const cur = next.get(o.key)
    const base = { key: o.key, rule: o.rule, labels: o.labels, value: o.value, threshold: o.threshold, summary: o.summary }
    if (cur === undefined) {
      if (!o.breach) continue
      const a: AlertState = { ...base, state: 'pending', since: now, firedAt: null }
      if (forMs(o.rule) <= 0) { a.state = 'firing'; a.firedAt = now; transitions.push({ to: 'firing', at: now, alert: a }) }
      next.set(o.key, a)
    } else if (cur.state === 'pending') {
      if (!o.breach) { next.delete(o.key); continue }
      const a: AlertState = { ...cur, ...base }
      if (now - cur.since >= forMs(o.rule)) { a.state = 'firing'; a.firedAt = now; transitions.push({ to: 'firing', at: now, alert: a }) }
      next.set(o.key, a)
    } else {
      if (o.clear && !o.breach) {
        next.delete(o.key)
        transitions.push({ to: 'resolved', at: now, alert: { ...cur, ...base } })
      } else {
        // Still firing: the value is refreshed for /status, the summary kept from the firing moment.
        next.set(o.key, { ...cur, value: o.value })
      }
    }
  }
  return { next, transitions }
}

export function forMsOf (a: Config['alerts']): (rule: RuleName) => number {
  const s: Record<RuleName, number> = {
    cpu_high: a.cpuForSeconds,
    memory_high: a.memoryForSeconds,
    temperature_high: a.temperatureForSeconds,
    throttled: a.throttledForSeconds,
    disk_low: a.diskForSeconds,
    outbox_stale: 0,
    uplink_failing: 0,
    cloud_auth_refused: a.cloudAuthForSeconds,
    broker_unreachable: 0,
    clock_unsynchronised: a.clockUnsynchronisedSeconds,
    clock_behind_pki: 0,
    device_quarantined: 0,
    device_silent: 0,
    device_anomaly: 0
  }
  return rule => s[rule] * 1000
}

/** What the gateway knows at one moment; assembled by the AlertManager, pure input here. */
export interface Inputs {
  now: number
  system: SystemSample | null
  broker: { connected: boolean, since: number }
  /** failingSince: the first failed attempt since the last success (null: not failing). */
  uplink: { failingSince: number | null, waiting: number }
  cloudAuthRefused: boolean
  /** The clock (app/src/clock); null where unknown. */
  clock: { synchronised: boolean, behindPki: boolean } | null
  outboxOldestAt: number | null
  quarantined: ReadonlyMap<string, boolean>
  silent: ReadonlyArray<{ device: string, silentMs: number, limitMs: number }>
  anomalies: ReadonlyArray<{ device: string, field: string, z: number, value: number, mean: number }>
}

const above = (rule: RuleName, key: string, labels: Record<string, string>, value: number, threshold: number, h: number, summary: string): Observation =>
  ({ key, rule, labels, value, threshold, breach: value > threshold, clear: value <= threshold * (1 - h), summary })
const flag = (rule: RuleName, key: string, labels: Record<string, string>, on: boolean, value: number | null, summary: string): Observation =>
  ({ key, rule, labels, value, threshold: null, breach: on, clear: !on, summary })

/** Turns inputs into observations, one per rule (and per device/field for device rules). */
export function observe (i: Inputs, a: Config['alerts']): Observation[] {
  const h = a.hysteresisRatio
  const out: Observation[] = []
  const s = i.system
  const r1 = (n: number): number => Math.round(n * 10) / 10
  if (s) {
    const cpu = s.cpu.total
    if (cpu !== undefined) out.push(above('cpu_high', 'cpu_high', {}, r1(cpu * 100), a.cpuPercent, h, `CPU ${r1(cpu * 100)} % busy (threshold ${a.cpuPercent} %)`))
    if (s.memory) out.push(above('memory_high', 'memory_high', {}, r1(s.memory.usedRatio * 100), a.memoryPercent, h, `memory ${r1(s.memory.usedRatio * 100)} % in use, ${Math.round(s.memory.availableBytes / 1048576)} MiB available (threshold ${a.memoryPercent} %)`))
    if (s.temperatureMax !== null) out.push(above('temperature_high', 'temperature_high', {}, r1(s.temperatureMax), a.temperatureCelsius, h, `SoC at ${r1(s.temperatureMax)} °C (threshold ${a.temperatureCelsius} °C)`))
    if (s.throttling) {
      const on = Object.entries(s.throttling.now).filter(([, v]) => v).map(([k]) => k)
      out.push(flag('throttled', 'throttled', {}, on.length > 0, on.length, on.length > 0 ? `firmware reports ${on.join(', ')} (${s.throttling.source})` : 'no throttling'))
    }
    if (s.disk) {
      const d = s.disk
      const bytesLow = d.availBytes < a.diskFreeMinBytes
      const inodesLow = d.files > 0 && d.filesFree < a.diskFreeMinInodes
      out.push({
        key: 'disk_low',
        rule: 'disk_low',
        labels: { path: d.path },
        value: d.availBytes,
        threshold: a.diskFreeMinBytes,
        breach: bytesLow || inodesLow,
        clear: d.availBytes >= a.diskFreeMinBytes * (1 + h) && (d.files === 0 || d.filesFree >= a.diskFreeMinInodes * (1 + h)),
        summary: `${d.path}: ${Math.round(d.availBytes / 1048576)} MiB and ${d.filesFree} inodes free (floor ${Math.round(a.diskFreeMinBytes / 1048576)} MiB, ${a.diskFreeMinInodes} inodes)`
      })
    }
  }
  const oldest = i.outboxOldestAt === null ? 0 : Math.max(0, (i.now - i.outboxOldestAt) / 1000)
  out.push(above('outbox_stale', 'outbox_stale', {}, Math.round(oldest), a.outboxOldestSeconds, h, `oldest message in the outbox is ${Math.round(oldest)} s old (threshold ${a.outboxOldestSeconds} s)`))
  const failing = i.uplink.failingSince === null || i.uplink.waiting === 0 ? 0 : (i.now - i.uplink.failingSince) / 1000
  out.push({ key: 'uplink_failing', rule: 'uplink_failing', labels: {}, value: Math.round(failing), threshold: a.uplinkFailingSeconds, breach: i.uplink.failingSince !== null && i.uplink.waiting > 0 && failing >= a.uplinkFailingSeconds, clear: i.uplink.failingSince === null || i.uplink.waiting === 0, summary: `the cloud has accepted nothing for ${Math.round(failing)} s while ${i.uplink.waiting} messages wait` })
  out.push(flag('cloud_auth_refused', 'cloud_auth_refused', {}, i.cloudAuthRefused, null, i.cloudAuthRefused ? 'the cloud refuses the gateway\'s credentials (HTTP 401/403): check uplink.tokenFile' : 'the cloud accepts the credentials'))
  const down = i.broker.connected ? 0 : (i.now - i.broker.since) / 1000
  out.push({ key: 'broker_unreachable', rule: 'broker_unreachable', labels: {}, value: Math.round(down), threshold: a.brokerUnreachableSeconds, breach: !i.broker.connected && down >= a.brokerUnreachableSeconds, clear: i.broker.connected, summary: `no connection to the broker for ${Math.round(down)} s` })
  if (i.clock) {
    out.push(flag('clock_unsynchronised', 'clock_unsynchronised', {}, !i.clock.synchronised, null, i.clock.synchronised ? 'the clock is synchronised' : 'the clock is not synchronised (no NTP answer yet): certificates and the CRL are backdated, enrolment waits for a synchronised clock'))
    out.push(flag('clock_behind_pki', 'clock_behind_pki', {}, i.clock.behindPki, null, i.clock.behindPki ? 'the clock is earlier than the PKI\'s certificates or CRL: the broker refuses devices until it is set' : 'the clock is later than the PKI'))
  }
  for (const [device, q] of i.quarantined) out.push(flag('device_quarantined', `device_quarantined:${device}`, { device }, q, null, `device ${device} is quarantined (its messages are held back; \`iot-gateway device show ${device}\`)`))
  for (const d of i.silent) {
    out.push({ key: `device_silent:${d.device}`, rule: 'device_silent', labels: { device: d.device }, value: Math.round(d.silentMs / 1000), threshold: Math.round(d.limitMs / 1000), breach: d.silentMs > d.limitMs, clear: d.silentMs <= d.limitMs, summary: `device ${d.device} has sent nothing for ${Math.round(d.silentMs / 1000)} s (limit ${Math.round(d.limitMs / 1000)} s from its usual interval)` })
  }
  for (const x of i.anomalies) {
    out.push({ key: `device_anomaly:${x.device}:${x.field}`, rule: 'device_anomaly', labels: { device: x.device, field: x.field }, value: Math.round(x.z * 100) / 100, threshold: a.anomalyZ, breach: x.z > a.anomalyZ, clear: x.z <= a.anomalyZ * (1 - h), summary: `device ${x.device}: ${x.field} = ${x.value} is ${Math.round(x.z * 10) / 10} standard deviations from its mean ${Math.round(x.mean * 100) / 100}` })
  }
  const off = new Set(a.disabled)
  return out.filter(o => !off.has(o.rule))
}
