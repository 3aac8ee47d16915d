import type { AuditLog } from '../audit/audit.js'
import { paths } from '../config/load.js'
import type { Config } from '../config/schema.js'
import { DEVICE_ID_PATTERN } from './device-id.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'
import { coapDeviceKey, readCoapMaster } from '../pki/device-certs.js'
import type { Pipeline, RejectionEvent, Submission } from '../pipeline/pipeline.js'
import type { InboundMessage } from '../store/store.js'
import { syncBrokerFiles } from './operations.js'
import type { DeviceRegistry, DeviceStatus, HeldMessage } from './registry.js'
import { eventFor, TRUST_EVENTS, TrustScores, type TrustEvent } from './trust.js'

/** Audit rows for floods of the same event are coalesced: one row per device and type per window, with a count. */
const AUDIT_WINDOW_MS = 10_000

/**
 * The identity layer inside the daemon. It keeps the registry's device states in memory for the
 * pipeline's gate (revoked: refused; quarantined: held back), notices changes made by the CLI (a
 * version counter polled every `devices.registryPollMs`, and at once when the CLI calls
 * POST /registry/reload), turns refusals into trust penalties and audit rows, quarantines devices
 * whose score falls below the floor, and gives the CoAP ingress each device's key.
 */
export class DeviceGuard {
  readonly registry: DeviceRegistry
  readonly audit: AuditLog
  readonly trust: TrustScores
  private states = new Map<string, { status: DeviceStatus, certSerial: string | null }>()
  private known = -1
  private poll?: NodeJS.Timeout
  private saver?: NodeJS.Timeout
  private maintenance?: NodeJS.Timeout
  private dirty = new Set<string>()
  private holdBuffer: Array<Omit<HeldMessage, 'id'>> = []
  private holdWaiters: Array<{ resolve: () => void, reject: (e: Error) => void }> = []
  private holdScheduled = false
  private readonly auditSeen = new Map<string, { at: number, suppressed: number }>()
  private readonly keys = new Map<string, Buffer>()
  private master?: Buffer
  private readonly securityEvents
  private readonly quarantines
  private readonly heldDropped
  private readonly heldTotal
  private readonly unauthenticatedTotal
  private readonly unauthenticatedSources = new Map<string, number>()
  /** Per device: when its last CoAP replay was charged (at most one penalty per trust.replayPenaltyWindowSeconds). */
  private readonly replayCharged = new Map<string, number>()

  /**
   * The registry and the audit log are the daemon's (gateway.ts makes one of each); the pipeline
   * only takes back released held messages. gateway.ts plugs gate(), onRejected() and onCommitted()
   * into the pipeline.
   */
  constructor (private readonly config: Config, deps: { registry: DeviceRegistry, audit: AuditLog }, private readonly pipeline: Pick<Pipeline, 'submit'>, metrics: Registry, private readonly log: Logger) {
    this.registry = deps.registry
    this.audit = deps.audit
    this.trust = new TrustScores(config.trust)
    this.securityEvents = metrics.counter('gateway_security_events_total', 'Security events by type (each lowers the device\'s trust score).').init(...TRUST_EVENTS.map(type => ({ type })))
    this.quarantines = metrics.counter('gateway_device_quarantines_total', 'Devices put in quarantine because their trust score fell below the floor.').init()
    this.heldDropped = metrics.counter('gateway_quarantine_dropped_total', 'Messages of quarantined devices dropped because the hold was full.').init()
    this.heldTotal = metrics.counter('gateway_quarantine_held_total', 'Messages of quarantined devices held back for the operator.').init()
    this.unauthenticatedTotal = metrics.counter('gateway_unauthenticated_requests_total', 'Requests that failed authentication (CoAP wrong or missing MAC, unknown or revoked device id), by reason. Never charged to the id they claim.').init(...['bad_signature', 'unknown_device'].map(reason => ({ reason })))
    metrics.gauge('gateway_unauthenticated_by_source', 'Unauthenticated requests per source address since start (the 256 busiest addresses first seen; later ones count as "other").', () =>
      [...this.unauthenticatedSources].map(([source, n]) => [{ source }, n]))
    metrics.gauge('gateway_device_trust_score', 'Trust score per device (devices whose score is not the initial one, and quarantined ones).', () => {
      const out: Array<[Record<string, string>, number]> = []
      for (const [id, s] of this.trust.entries()) out.push([{ device: id }, Math.round(s.score * 100) / 100])
      return out
    })
    metrics.gauge('gateway_devices', 'Devices in the registry by status.', () => {
      const n: Record<DeviceStatus, number> = { active: 0, revoked: 0, quarantined: 0 }
      for (const s of this.states.values()) n[s.status]++
      return Object.entries(n).map(([status, v]) => [{ status }, v])
    })
  }

  start (): void {
    this.master = readCoapMaster(paths(this.config).pkiDir)
    if (!this.master) this.log.warn('no CoAP master secret (run `iot-gateway pki init`): CoAP requests are refused')
    this.reload()
    this.poll = setInterval(() => this.check(), this.config.devices.registryPollMs).unref()
    this.saver = setInterval(() => this.saveScores(), 1000).unref()
    this.maintain()
    this.maintenance = setInterval(() => this.maintain(), 12 * 3600_000).unref()
  }

  stop (): void {
    for (const t of [this.poll, this.saver, this.maintenance]) if (t) clearInterval(t)
    this.flushHold()
    this.saveScores()
    this.audit.flush()
  }

  /** Keeps the CRL fresh (OpenSSL refuses an expired one) and in line with the registry after a crash mid-revocation. */
  private maintain (): void {
    try {
      const r = syncBrokerFiles({ config: this.config, registry: this.registry, audit: this.audit })
      if (r.crl || r.acl) this.log.info('broker files updated', { crl: r.crl, acl: r.acl, crlNumber: r.crlNumber })
    } catch (err) {
      this.log.error('cannot update the CRL/ACL', { err })
    }
  }

  /** Polled: reloads when the registry changed. */
  check (): void {
    try {
      if (this.registry.version() !== this.known) this.reload()
    } catch (err) {
      this.log.error('registry check failed', { err })
    }
  }

  /** Reads every device's state; re-submits the held messages of devices an operator released. */
  reload (): number {
    const version = this.registry.version()
    const next = this.registry.states()
    const released: string[] = []
    const fresh = new Map<string, { status: DeviceStatus, certSerial: string | null }>()
    for (const [id, s] of next) {
      const before = this.states.get(id)
      if (before?.status === 'quarantined' && s.status === 'active') released.push(id)
      if (before === undefined || before.status !== s.status || before.certSerial !== s.certSerial) {
        // New to us, or the CLI changed it (enrolled, released, revoked): the registry's score counts.
        // Otherwise the score in memory is the fresher one (it is saved every second).
        this.trust.set(id, s.trustScore, s.trustEvents)
        this.dirty.delete(id)
        this.keys.delete(id)
      }
      fresh.set(id, { status: s.status, certSerial: s.certSerial })
    }
    this.states = fresh
    this.known = version
    for (const id of released) this.resubmitHeld(id)
    return version
  }

  private resubmitHeld (id: string): void {
    const held = this.registry.held(id)
    if (held.length === 0) return
    this.log.info('device released: its held messages go through the checks again', { device: id, messages: held.length })
    const last = held[held.length - 1]!.id
    const all = held.map(h => this.pipeline.submit({ device: h.device, transport: h.transport, stream: h.stream, raw: h.payload }))
    void Promise.allSettled(all).then(() => { try { this.registry.dropHeld(id, last) } catch (err) { this.log.error('cannot clear held messages', { err }) } })
  }

  status (id: string): DeviceStatus | undefined { return this.states.get(id)?.status }

  /** The pipeline's gate: a revoked device's messages are refused, a quarantined one's held. */
  gate (device: string, s: Submission): { reason: 'device_blocked', detail: string, held?: Promise<void> } | undefined {
    const st = this.states.get(device)
    if (!st || st.status === 'active') return undefined
    if (st.status === 'revoked') return { reason: 'device_blocked', detail: 'device revoked' }
    const held = this.hold({ device, transport: s.transport, stream: s.stream, receivedAt: Date.now(), payload: typeof s.raw === 'string' ? Buffer.from(s.raw) : s.raw })
    return { reason: 'device_blocked', detail: 'device quarantined: message held back for the operator', held }
  }

  /** Queues a held message; the promise settles once its transaction has committed (or failed). */
  private hold (m: Omit<HeldMessage, 'id'>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.holdBuffer.push(m)
      this.holdWaiters.push({ resolve, reject })
      if (this.holdScheduled) return
      this.holdScheduled = true
      setImmediate(() => this.flushHold())
    })
  }

  private flushHold (): void {
    this.holdScheduled = false
    if (this.holdBuffer.length === 0) return
    const batch = this.holdBuffer.splice(0)
    const waiters = this.holdWaiters.splice(0)
    try {
      const dropped = this.registry.hold(batch, this.config.devices.holdMaxPerDevice)
      this.heldTotal.inc({}, batch.length - dropped)
      if (dropped > 0) this.heldDropped.inc({}, dropped)
      for (const w of waiters) w.resolve()
    } catch (err) {
      this.log.error('cannot hold quarantined messages', { err, messages: batch.length })
      for (const w of waiters) w.reject(err instanceof Error ? err : new Error(String(err)))
    }
  }

  /** A refusal by the pipeline: a trust penalty and an audit row (coalesced). */
  onRejected (e: RejectionEvent): void {
    if (e.device === null) {
      this.recordAudit('malformed_input', null, { reason: e.reason, transport: e.transport, detail: e.detail })
      return
    }
    // Unauthenticated (a wrong MAC, an unknown id): the id is whatever the sender claimed, so it is
    // never charged; the transport reports the source address through unauthenticated().
    if (e.reason === 'unknown_device' || e.reason === 'bad_signature') return
    const ev = eventFor(e.reason)
    if (!ev) {
      if (e.reason === 'device_blocked' && this.states.get(e.device)?.status === 'revoked') this.recordAudit('revoked_device_traffic', e.device, { transport: e.transport })
      return
    }
    if (ev === 'replay' && e.transport === 'coap') {
      // A captured CoAP request can be sent again by anyone on the LAN (the MAC authenticates the
      // content, not the sender): refused and counted every time, charged at most once per window.
      const now = Date.now()
      const last = this.replayCharged.get(e.device)
      const charge = last === undefined || now - last >= this.config.trust.replayPenaltyWindowSeconds * 1000
      if (charge) {
        if (this.replayCharged.size > 100000) this.replayCharged.clear()
        this.replayCharged.set(e.device, now)
      }
      this.securityEvent(e.device, ev, { reason: e.reason, transport: e.transport, stream: e.stream, detail: e.detail }, charge)
      return
    }
    this.securityEvent(e.device, ev, { reason: e.reason, transport: e.transport, stream: e.stream, detail: e.detail })
  }

  /**
   * A request that failed authentication (CoAP: wrong or missing MAC, unknown or revoked id): counted
   * per reason and per source address, audited once per source and window with the id it claimed.
   * It moves no device's trust: anybody on the LAN can claim any id.
   */
  unauthenticated (source: string, reason: 'bad_signature' | 'unknown_device', claimed: string, transport: string): void {
    this.unauthenticatedTotal.inc({ reason })
    const key = this.unauthenticatedSources.has(source) || this.unauthenticatedSources.size < 256 ? source : 'other'
    this.unauthenticatedSources.set(key, (this.unauthenticatedSources.get(key) ?? 0) + 1)
    this.recordAudit('unauthenticated_request', null, { source, reason, claimed, transport }, source)
  }

  /**
   * An ACL denial the broker reported (read from its log by broker/denial-log.ts): for a device, the
   * same path as the pipeline's refusals (securityEvent: acl_denied); for a client whose device is not
   * known (its connection was not seen), an audit row without a device, coalesced by type only.
   */
  aclDenied (device: string | null, detail: Record<string, unknown>): void {
    const d = { reason: 'acl_denied', transport: 'mqtt', ...detail }
    if (device === null) { this.recordAudit('acl_denied', null, d); return }
    if (this.states.get(device)?.status === 'revoked') { this.recordAudit('revoked_device_traffic', device, d); return }
    this.securityEvent(device, 'acl_denied', d)
  }

  /** A security event for a device: audit row (coalesced), trust penalty, quarantine below the floor. */
  securityEvent (device: string, ev: TrustEvent, detail: Record<string, unknown>, charge = true): void {
    this.securityEvents.inc({ type: ev })
    this.recordAudit(ev, device, detail)
    if (!charge || !DEVICE_ID_PATTERN.test(device) || device === this.config.gateway.id) return
    const st = this.states.get(device)
    if (st && st.status !== 'active') return
    if (this.trust.penalty(ev) === 0) return
    const r = this.trust.lower(device, ev)
    this.dirty.add(device)
    if (this.trust.below(device)) this.quarantine(device, `trust score ${r.score.toFixed(1)} below ${this.config.trust.floor} after ${ev}`)
  }

  private quarantine (device: string, reason: string): void {
    const s = this.trust.get(device)
    try {
      if (!this.registry.quarantine(device, reason, s.score, s.events)) return
    } catch (err) {
      this.log.error('cannot quarantine device', { err, device })
      return
    }
    this.dirty.delete(device)
    this.quarantines.inc()
    this.states.set(device, { status: 'quarantined', certSerial: this.states.get(device)?.certSerial ?? null })
    // The alert: an error line for the journal and the operator's log shipping, a metric, an audit row.
    this.log.error('ALERT device quarantined', { device, reason, score: s.score, events: s.events })
    this.audit.record({ type: 'device_quarantined', device, source: 'trust', detail: { reason, score: s.score, events: s.events } })
    this.known = -1 // re-read the registry on the next check (our own change bumped its version)
    this.check()
  }

  /** Messages committed: a device that behaves earns its trust back. */
  onCommitted (msgs: readonly InboundMessage[]): void {
    const per = new Map<string, number>()
    for (const m of msgs) per.set(m.device, (per.get(m.device) ?? 0) + 1)
    for (const [id, n] of per) if (this.trust.restore(id, n)) this.dirty.add(id)
  }

  private saveScores (): void {
    this.flushHold()
    if (this.dirty.size === 0) return
    const scores = [...this.dirty].filter(id => this.states.get(id)?.status !== 'quarantined').map(id => ({ id, ...this.trust.get(id) }))
    try {
      if (this.registry.saveScores(this.known, scores)) this.dirty.clear()
      else this.reload()
    } catch (err) {
      this.log.error('cannot save trust scores', { err })
    }
  }

  private recordAudit (type: string, device: string | null, detail: Record<string, unknown>, coalesceBy = device ?? ''): void {
    const key = `${type}\0${coalesceBy}`
    const now = Date.now()
    const seen = this.auditSeen.get(key)
    if (seen && now - seen.at < AUDIT_WINDOW_MS) { seen.suppressed++; return }
    if (this.auditSeen.size > 10000) this.auditSeen.clear()
    this.auditSeen.set(key, { at: now, suppressed: 0 })
    this.audit.record({ type, device, source: String(detail.transport ?? 'gateway'), detail: { ...detail, ...(seen && seen.suppressed > 0 ? { similarEventsBefore: seen.suppressed } : {}) } })
  }

  /** The device's CoAP key, if it is enrolled and not revoked. */
  coapKey (id: string): Buffer | undefined {
    const st = this.states.get(id)
    if (!st || st.status === 'revoked' || st.certSerial === null || !this.master) return undefined
    let k = this.keys.get(id)
    if (!k) {
      k = coapDeviceKey(this.master, id, st.certSerial)
      if (this.keys.size > 100000) this.keys.clear()
      this.keys.set(id, k)
    }
    return k
  }
}
