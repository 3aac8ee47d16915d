import type { Config } from '../config/schema.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'
import type { SystemSample } from '../monitor/system.js'
import { RULES, type RuleName } from './config.js'
import { DeviceWatch } from './device-watch.js'
import type { AlertLane } from './lane.js'
import { evaluate, forMsOf, observe, SEVERITY, type AlertState, type Inputs, type Transition } from './rules.js'
import type { AlertStore } from './store.js'

/** What the manager asks the rest of the gateway at each evaluation (cheap, in-memory reads). */
export interface AlertSources {
  brokerConnected: () => boolean
  uplinkFailing: () => boolean
  /** Messages waiting for the cloud. */
  outboxDepth: () => number
  outboxOldestAt: () => number | null
  cloudAuthRefused: () => boolean
  /** The clock's state (null where unknown). */
  clock?: () => { synchronised: boolean, behindPki: boolean } | null
  /** Every device with whether it is quarantined. */
  quarantined: () => ReadonlyMap<string, boolean>
}

/** The delivery document for one transition (what the cloud and the webhook receive in "alerts"). */
export function alertRecord (gatewayId: string, instance: string, t: Transition): Record<string, unknown> {
  const a = t.alert
  return {
    id: `${gatewayId}:${instance}:alert:${a.key}:${a.firedAt ?? a.since}:${t.to}`,
    rule: a.rule,
    key: a.key,
    labels: a.labels,
    severity: SEVERITY[a.rule],
    state: t.to,
    value: a.value,
    threshold: a.threshold,
    summary: a.summary,
    since: a.since,
    firedAt: a.firedAt,
    at: t.at
  }
}

/**
 * Evaluates the rules at every monitor sample, persists transitions (only transitions), logs them
 * to the journal, queues them on the lanes and keeps the per-rule firing gauge.
 */
export class AlertManager {
  readonly watch: DeviceWatch
  private alerts = new Map<string, AlertState>()
  private brokerSince = Date.now()
  private brokerWas = false
  private failingSince: number | null = null
  private readonly forMs
  /** Transitions not yet written (the disk was full or the database busy): retried at every tick. */
  private readonly unsaved: { ops: Array<{ fire: AlertState } | { resolve: string }>, deliveries: Array<{ target: string, body: string }> } = { ops: [], deliveries: [] }
  private saveFailedAt = 0
  private readonly transitions

  constructor (private readonly config: Config, private readonly store: AlertStore, private readonly instance: string,
    private readonly sources: AlertSources, private readonly lanes: AlertLane[], metrics: Registry, private readonly log: Logger) {
    this.watch = new DeviceWatch(config.alerts)
    this.forMs = forMsOf(config.alerts)
    metrics.gauge('gateway_alerts_firing', 'Alerts firing now, per rule (0 when none).', () => {
      const n = Object.fromEntries(RULES.map(r => [r, 0])) as Record<RuleName, number>
      for (const a of this.alerts.values()) if (a.state === 'firing') n[a.rule]++
      return RULES.map(rule => [{ rule, severity: SEVERITY[rule] }, n[rule]])
    })
    this.transitions = metrics.counter('gateway_alert_transitions_total', 'Alerts that fired and resolved, per rule.')
    for (const rule of RULES) this.transitions.init({ rule, state: 'firing' }, { rule, state: 'resolved' })
  }

  /**
   * Writes the pending transitions and deliveries. When that fails (a full disk is one of the
   * things alerted on), the alerts still change state in memory, the journal and /metrics; the
   * writes are kept and tried again at the next tick, with one error line a minute.
   */
  private save (now: number): void {
    try {
      this.store.apply(this.unsaved.ops, this.unsaved.deliveries, now)
      this.unsaved.ops = []
      this.unsaved.deliveries = []
      for (const l of this.lanes) l.kick()
    } catch (err) {
      if (now - this.saveFailedAt >= 60_000) { this.saveFailedAt = now; this.log.error('cannot record alert transitions; kept in memory and retried', { err, pending: this.unsaved.ops.length }) }
    }
  }

  /** Loads the alerts that were firing before a restart: they are not reported again. */
  start (): void {
    this.alerts = this.store.firing()
    if (this.alerts.size > 0) this.log.info('alerts still firing from before the restart', { alerts: [...this.alerts.keys()] })
  }

  firing (): AlertState[] { return [...this.alerts.values()].filter(a => a.state === 'firing') }

  isFiring (key: string): boolean { return this.alerts.get(key)?.state === 'firing' }

  /** One evaluation: `now` is passed in (tests drive it); the system sample may be null. */
  tick (system: SystemSample | null, now = Date.now()): Transition[] {
    if (!this.config.alerts.enabled) return []
    const s = this.sources
    const connected = s.brokerConnected()
    if (connected !== this.brokerWas) { this.brokerWas = connected; this.brokerSince = now }
    const depth = s.outboxDepth()
    if (s.uplinkFailing() && depth > 0) this.failingSince ??= now
    else this.failingSince = null
    const firingAnomalies: Array<[string, string]> = []
    for (const a of this.alerts.values()) if (a.rule === 'device_anomaly') firingAnomalies.push([a.labels.device!, a.labels.field!])
    const inputs: Inputs = {
      now,
      system,
      broker: { connected, since: this.brokerSince },
      uplink: { failingSince: this.failingSince, waiting: depth },
      cloudAuthRefused: s.cloudAuthRefused(),
      clock: s.clock?.() ?? null,
      outboxOldestAt: s.outboxOldestAt(),
      quarantined: s.quarantined(),
      silent: this.watch.silence(now),
      anomalies: this.watch.anomalies(this.config.alerts.anomalyZ * (1 - this.config.alerts.hysteresisRatio), firingAnomalies)
    }
    const { next, transitions } = evaluate(this.alerts, observe(inputs, this.config.alerts), this.forMs, now)
    if (transitions.length === 0) {
      this.alerts = next
      if (this.unsaved.ops.length > 0) this.save(now)
      return []
    }
    for (const t of transitions) {
      this.unsaved.ops.push(t.to === 'firing' ? { fire: t.alert } : { resolve: t.alert.key })
      const body = JSON.stringify(alertRecord(this.config.gateway.id, this.instance, t))
      for (const l of this.lanes) this.unsaved.deliveries.push({ target: l.target.name, body })
    }
    this.save(now)
    this.alerts = next
    for (const t of transitions) {
      const a = t.alert
      this.transitions.inc({ rule: a.rule, state: t.to })
      const fields = { rule: a.rule, key: a.key, severity: SEVERITY[a.rule], ...a.labels, value: a.value, threshold: a.threshold, summary: a.summary }
      if (t.to === 'firing') this.log.error(`ALERT firing: ${a.summary}`, fields)
      else this.log.warn(`ALERT resolved: ${a.rule}${Object.keys(a.labels).length > 0 ? ` ${Object.values(a.labels).join(' ')}` : ''}`, { ...fields, firingForSeconds: Math.round((t.at - (a.firedAt ?? a.since)) / 1000) })
    }
    return transitions
  }
}
