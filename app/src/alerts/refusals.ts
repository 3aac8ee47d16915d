import type { Logger } from '../lib/logger.js'
import type { RejectionEvent } from '../pipeline/pipeline.js'
import type { AlertStore } from './store.js'

const LOG_EVERY_MS = 60_000
const MAX_DEVICES = 10_000

interface Entry { count: number, delta: number, lastAt: number, lastDetail: string, loggedAt: number, suppressed: number }

/**
 * Why a device's messages are refused, for the device's owner: counts by reason and the last
 * refusal, per device. Kept in memory and written in bulk (flush(), once a minute), never per
 * message. The log gets one line per device per reason per minute, with how many were folded in.
 * Benign reasons (a broker's resend, a full outbox) are not the device's fault and are not listed.
 */
export class RefusalBook {
  private readonly devices = new Map<string, Map<string, Entry>>()
  /** The reason of each device's most recent refusal (times can tie within a millisecond). */
  private readonly lastReason = new Map<string, string>()
  constructor (private readonly store: AlertStore, private readonly log: Logger) {}

  load (): void {
    for (const r of this.store.refusals()) {
      const e = this.entry(r.device, r.reason, true)
      if (e) { e.count = r.count; e.lastAt = r.lastAt; e.lastDetail = r.lastDetail }
    }
  }

  private entry (device: string, reason: string, create: boolean): Entry | undefined {
    let d = this.devices.get(device)
    if (!d) {
      if (!create || this.devices.size >= MAX_DEVICES) return undefined
      d = new Map()
      this.devices.set(device, d)
    }
    let e = d.get(reason)
    if (!e && create) { e = { count: 0, delta: 0, lastAt: 0, lastDetail: '', loggedAt: 0, suppressed: 0 }; d.set(reason, e) }
    return e
  }

  record (ev: RejectionEvent, now = Date.now()): void {
    if (ev.device === null || ev.reason === 'redelivered' || ev.reason === 'outbox_full') return
    const e = this.entry(ev.device, ev.reason, true)
    if (!e) return
    e.count++
    e.delta++
    e.lastAt = now
    e.lastDetail = ev.detail.slice(0, 300)
    this.lastReason.set(ev.device, ev.reason)
    if (now - e.loggedAt >= LOG_EVERY_MS) {
      this.log.warn('message refused', { device: ev.device, reason: ev.reason, detail: e.lastDetail, transport: ev.transport, stream: ev.stream, ...(e.suppressed > 0 ? { moreSinceLastLine: e.suppressed } : {}) })
      e.loggedAt = now
      e.suppressed = 0
    } else e.suppressed++
  }

  /** Writes the counts that changed since the last flush, in one transaction. */
  flush (): void {
    const rows: Array<{ device: string, reason: string, delta: number, lastAt: number, lastDetail: string }> = []
    for (const [device, d] of this.devices) for (const [reason, e] of d) if (e.delta > 0) rows.push({ device, reason, delta: e.delta, lastAt: e.lastAt, lastDetail: e.lastDetail })
    if (rows.length === 0) return
    try {
      this.store.saveRefusals(rows)
      for (const r of rows) this.devices.get(r.device)!.get(r.reason)!.delta -= r.delta
    } catch (err) {
      this.log.error('cannot save refusal counts', { err })
    }
  }

  /** Per device: the last refusal and the counts by reason; most recent first. */
  summary (limit = 100): Record<string, { last: { reason: string, at: string, detail: string }, byReason: Record<string, number> }> {
    const list = [...this.devices].map(([device, d]) => {
      let last: [string, Entry] | undefined
      const known = this.lastReason.get(device)
      if (known !== undefined && d.has(known)) last = [known, d.get(known)!]
      else for (const x of d) if (!last || x[1].lastAt > last[1].lastAt) last = x
      return { device, d, last: last! }
    }).filter(x => x.last !== undefined).sort((a, b) => b.last[1].lastAt - a.last[1].lastAt).slice(0, limit)
    const out: Record<string, { last: { reason: string, at: string, detail: string }, byReason: Record<string, number> }> = {}
    for (const x of list) out[x.device] = { last: { reason: x.last[0], at: new Date(x.last[1].lastAt).toISOString(), detail: x.last[1].lastDetail }, byReason: Object.fromEntries([...x.d].map(([r, e]) => [r, e.count])) }
    return out
  }
}
