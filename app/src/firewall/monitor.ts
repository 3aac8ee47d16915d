import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { SecurityEvent } from '../audit/audit.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'
import type { DB } from '../store/db.js'
import { counterLabels } from './ruleset.js'
import { stateFiles, type FirewallEvent, type Pending } from './safe-apply.js'

export interface SetEntry { address: string, expiresSeconds: number, timeoutSeconds: number }
export interface FirewallSnapshot {
  /** When nft listed the table (the file's mtime). */
  at: number
  counters: Array<{ name: string, packets: number, bytes: number }>
  blocklist: SetEntry[]
  rateLimited: SetEntry[]
}

type NftItem = Record<string, Record<string, unknown>>

/** Parses `nft -j list table inet iot_gateway` (what the privileged stats timer writes). Pure. */
export function parseNftJson (text: string, at: number): FirewallSnapshot | null {
  let doc: { nftables?: NftItem[] }
  try { doc = JSON.parse(text) } catch { return null }
  if (!Array.isArray(doc.nftables)) return null
  const snap: FirewallSnapshot = { at, counters: [], blocklist: [], rateLimited: [] }
  let table = false
  for (const item of doc.nftables) {
    if (item.table !== undefined) table = true
    const c = item.counter
    if (c !== undefined) snap.counters.push({ name: String(c.name), packets: Number(c.packets ?? 0), bytes: Number(c.bytes ?? 0) })
    const s = item.set
    if (s !== undefined && /^(blocklist|ratelimited)[46]$/.test(String(s.name))) {
      const timeout = Number(s.timeout ?? 0)
      const list = String(s.name).startsWith('blocklist') ? snap.blocklist : snap.rateLimited
      for (const e of (s.elem as unknown[] | undefined) ?? []) {
        const el = (typeof e === 'object' && e !== null && 'elem' in e) ? (e as { elem: Record<string, unknown> }).elem : { val: e }
        list.push({ address: String(el.val), expiresSeconds: Number(el.expires ?? timeout), timeoutSeconds: Number(el.timeout ?? timeout) })
      }
    }
  }
  return table ? snap : null
}

/** When an entry went into its set: the snapshot time minus how long it has been there. */
export const addedAt = (snap: FirewallSnapshot, e: SetEntry): number => snap.at - (e.timeoutSeconds - e.expiresSeconds) * 1000

const SAME_ENTRY_MS = 5000
/** Where the daemon asks for a firewall confirmation (the image's iot-gateway-firewall-confirm.path watches it). */
export const confirmRequestDir = (dataDir: string): string => join(dataDir, 'firewall-requests')

const SEED_TYPES = ['port_scan_detected', 'rate_limit_applied', 'firewall_applied', 'firewall_confirmed', 'firewall_rolled_back']

/**
 * The daemon's view of the firewall. The daemon holds no capabilities, so it never runs nft: a
 * privileged timer writes `nft -j list table` to <stateDir>/nft.json and the firewall command
 * appends to events.jsonl; this reads both, serves /metrics, and turns new blocklist entries
 * (port_scan_detected), rate-limited sources (rate_limit_applied) and apply/confirm/rollback into
 * audit records, each once, also across daemon restarts (the audit log itself is the memory).
 */
export class FirewallMonitor {
  snapshot: FirewallSnapshot | null = null
  private readonly files
  private statsMtime = -1
  private eventsSize = -1
  private timer?: NodeJS.Timeout
  private readonly seenKeys = new Set<string>()
  /** "set address" -> times it was added (ms), for entries already reported. */
  private readonly seenEntries = new Map<string, number[]>()

  constructor (
    readonly stateDir: string,
    private readonly pollSeconds: number,
    private readonly metrics: Registry,
    private readonly audit: { record: (e: SecurityEvent) => void, flush?: () => void },
    private readonly log: Logger,
    private readonly db?: DB
  ) {
    this.files = stateFiles(stateDir)
  }

  start (): void {
    this.seed()
    this.register()
    this.refresh()
    this.timer = setInterval(() => this.refresh(), this.pollSeconds * 1000).unref()
  }

  /** Stops polling and writes buffered audit records (before the daemon closes the database). */
  stop (): void {
    if (this.timer) clearInterval(this.timer)
    this.audit.flush?.()
  }

  private seed (): void {
    if (!this.db) return
    try {
      const rows = this.db.prepare(`SELECT type, source, detail FROM audit_log WHERE type IN (${SEED_TYPES.map(() => '?').join(',')}) AND at > ? ORDER BY id DESC LIMIT 20000`)
        .all(...SEED_TYPES, Date.now() - 8 * 86400_000) as Array<{ type: string, source: string | null, detail: string }>
      for (const r of rows) {
        const d = JSON.parse(r.detail) as { key?: string, set?: string, addedAt?: number }
        if (typeof d.key === 'string') this.seenKeys.add(d.key)
        if (typeof d.set === 'string' && typeof d.addedAt === 'number' && r.source !== null) this.remember(`${d.set} ${r.source}`, d.addedAt)
      }
    } catch (err) {
      this.log.warn('could not read earlier firewall events from the audit log', { err })
    }
  }

  private remember (key: string, at: number): void {
    const list = this.seenEntries.get(key) ?? []
    list.push(at)
    this.seenEntries.set(key, list.slice(-8))
  }

  private register (): void {
    const m = this.metrics
    const counters = (field: 'packets' | 'bytes') => (): Array<[Record<string, string>, number]> =>
      (this.refresh(), this.snapshot?.counters ?? []).map(c => [counterLabels(c.name), c[field]])
    m.gauge('gateway_firewall_dropped_packets_total', 'Packets dropped by the nftables firewall, by reason (closed, scan, forward, blocklisted, rate_limited, spoofed, invalid) and zone; from the privileged counter snapshot, reset when a ruleset is applied.', counters('packets'), 'counter')
    m.gauge('gateway_firewall_dropped_bytes_total', 'Bytes dropped by the nftables firewall, by reason and zone.', counters('bytes'), 'counter')
    // Absent without a snapshot (no table, or the stats unit has not run): unknown is not 0.
    m.gauge('gateway_firewall_blocklist_entries', 'Sources in the port-scan blocklist now; absent without a counter snapshot.', () => this.snapshot === null ? [] : [[{}, this.snapshot.blocklist.length]])
    m.gauge('gateway_firewall_rate_limited_sources', 'Sources that went over the new-connection rate in the last minute; absent without a counter snapshot.', () => this.snapshot === null ? [] : [[{}, this.snapshot.rateLimited.length]])
    // Absent without a snapshot file (the stats unit has not run: unknown); 0 when the snapshot
    // says nft found no table of ours.
    m.gauge('gateway_firewall_loaded', '1 if the last counter snapshot shows our nftables table, 0 if it shows none; absent without a snapshot.', () => this.snapshot !== null ? 1 : this.statsMtime >= 0 ? 0 : [])
    // A timestamp, absent while there is no snapshot (no -1 sentinel): `time() - x` is its age.
    m.gauge('gateway_firewall_snapshot_timestamp_seconds', 'When the privileged stats unit wrote the counter snapshot (Unix seconds); absent while there is none.', () => this.snapshot === null ? [] : [[{}, this.snapshot.at / 1000]])
    m.gauge('gateway_firewall_pending_confirm', '1 while an applied ruleset waits for `firewall confirm` (it rolls back by itself otherwise).', () => this.pending() !== null ? 1 : 0)
  }

  /**
   * Asks the privileged side to confirm the pending apply (the console's action; the daemon cannot
   * run nft). Writes `confirm-<id>` into `requestDir`, which the root iot-gateway-firewall-confirm.path
   * unit watches; its service runs `iot-gateway firewall confirm --id <id>`, so a request made for
   * one apply never confirms a later one. The file's content is for people: the root side reads
   * only the name, and deletes every entry it finds. Returns null when nothing is pending.
   */
  requestConfirm (requestDir: string, by: string): { id: string, file: string } | null {
    const p = this.pending()
    if (p === null || !/^[A-Za-z0-9_-]{1,64}$/.test(p.id)) return null
    mkdirSync(requestDir, { recursive: true, mode: 0o700 })
    const file = join(requestDir, `confirm-${p.id}`)
    writeFileSync(file, JSON.stringify({ id: p.id, at: Date.now(), by }) + '\n', { mode: 0o600 })
    this.audit.record({ type: 'firewall_confirm_requested', source: by, detail: { id: p.id, deadline: p.deadline } })
    return { id: p.id, file }
  }

  pending (): Pending | null {
    try { return JSON.parse(readFileSync(this.files.pending, 'utf8')) as Pending } catch { return null }
  }

  /** Cheap when nothing changed (two stat calls); called on every scrape and on a timer. */
  refresh (): void {
    this.readStats()
    this.readEvents()
  }

  private readStats (): void {
    let mtime: number
    try { mtime = statSync(this.files.stats).mtimeMs } catch { this.snapshot = null; this.statsMtime = -1; return }
    if (mtime === this.statsMtime) return
    let text: string
    try { text = readFileSync(this.files.stats, 'utf8') } catch { return }
    const snap = parseNftJson(text, Math.round(mtime))
    if (snap === null) {
      // An empty file means nft found no table; a half-written one is read again next time.
      if (text.trim() === '') { this.snapshot = null; this.statsMtime = mtime }
      return
    }
    this.statsMtime = mtime
    this.snapshot = snap
    this.report(snap, 'blocklist', snap.blocklist, 'port_scan_detected')
    this.report(snap, 'ratelimited', snap.rateLimited, 'rate_limit_applied')
  }

  private report (snap: FirewallSnapshot, set: string, entries: SetEntry[], type: 'port_scan_detected' | 'rate_limit_applied'): void {
    for (const e of entries) {
      const at = addedAt(snap, e)
      const key = `${set} ${e.address}`
      if ((this.seenEntries.get(key) ?? []).some(t => Math.abs(t - at) <= SAME_ENTRY_MS)) continue
      this.remember(key, at)
      const detail = type === 'port_scan_detected'
        ? { set, addedAt: at, blockedForSeconds: e.timeoutSeconds, action: 'blocklisted', scope: 'firewall' }
        : { set, addedAt: at, action: 'new connections dropped', scope: 'firewall' }
      this.audit.record({ type, source: e.address, detail })
      this.log.warn(type === 'port_scan_detected' ? 'port scan: source blocklisted' : 'source over the new-connection rate', { source: e.address })
    }
  }

  private readEvents (): void {
    let size: number
    try { size = statSync(this.files.events).size } catch { return }
    if (size === this.eventsSize) return
    this.eventsSize = size
    let text: string
    try { text = readFileSync(this.files.events, 'utf8') } catch { return }
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue
      let e: FirewallEvent
      try { e = JSON.parse(line) as FirewallEvent } catch { continue }
      if (typeof e.key !== 'string' || this.seenKeys.has(e.key)) continue
      this.seenKeys.add(e.key)
      this.audit.record({ type: e.type, source: 'firewall', detail: { key: e.key, ...e.detail }, at: e.at })
    }
  }
}
