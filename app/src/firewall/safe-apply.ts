import { randomBytes } from 'node:crypto'
import { appendFileSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { writeFileAtomic } from '../lib/atomic-file.js'
import { sleep } from '../lib/backoff.js'
import { FirewallError } from '../lib/errors.js'
import type { Nft } from './nft.js'
import { REPLACE_PREAMBLE } from './ruleset.js'

/** How a pending apply gets rolled back if nobody confirms it. */
export type WatchdogRef = { kind: 'process', pid: number } | { kind: 'systemd', unit: string } | { kind: 'none' }

export interface Pending {
  id: string
  appliedAt: number
  deadline: number
  timeoutSeconds: number
  watchdog: WatchdogRef
}

/** One line of events.jsonl: what the daemon turns into audit records (firewall_applied, ...). */
export interface FirewallEvent { key: string, at: number, type: 'firewall_applied' | 'firewall_confirmed' | 'firewall_rolled_back', detail: Record<string, unknown> }

export interface WatchdogControl {
  /** Starts something that calls `watch(id)` (or `rollback({ ifId: id })` at the deadline) outside this process. */
  start: (p: { id: string, deadline: number, stateDir: string }) => Promise<WatchdogRef>
  /** Best effort: the watchdog also exits by itself once the marker is gone. */
  stop: (ref: WatchdogRef) => Promise<void>
}

export const stateFiles = (dir: string) => ({
  pending: join(dir, 'pending.json'),
  previous: join(dir, 'previous.nft'),
  current: join(dir, 'current.nft'),
  events: join(dir, 'events.jsonl'),
  stats: join(dir, 'nft.json'),
  watchdogLog: join(dir, 'watchdog.log')
})

const EVENTS_MAX_BYTES = 256 * 1024

const writeAtomic = (file: string, text: string, mode: number): void => writeFileAtomic(file, text, mode)

function readJson<T> (file: string): T | null {
  try { return JSON.parse(readFileSync(file, 'utf8')) as T } catch { return null }
}

/**
 * Commit-confirm for the firewall, the way routers do it. `apply` keeps the last confirmed ruleset of
 * our table, loads the new one and leaves a pending marker plus a watchdog outside the CLI process;
 * unless `confirm` removes the marker in time, the watchdog loads the kept ruleset again.
 * Confirm and rollback each claim the marker with rename(2), so exactly one of them wins.
 * All files live in a root-owned state directory; the daemon only reads pending.json, events.jsonl
 * and nft.json.
 */
export class SafeApply {
  readonly files
  constructor (private readonly nft: Nft, readonly stateDir: string, private readonly watchdog: WatchdogControl, private readonly now: () => number = Date.now) {
    this.files = stateFiles(stateDir)
  }

  private ensureDir (): void {
    mkdirSync(this.stateDir, { recursive: true, mode: 0o755 })
  }

  pending (): Pending | null { return readJson<Pending>(this.files.pending) }

  event (type: FirewallEvent['type'], id: string, detail: Record<string, unknown>): void {
    this.ensureDir()
    const e: FirewallEvent = { key: `${type}:${id}`, at: this.now(), type, detail: { id, ...detail } }
    try {
      if (statSync(this.files.events).size > EVENTS_MAX_BYTES) {
        const lines = readFileSync(this.files.events, 'utf8').trimEnd().split('\n')
        writeAtomic(this.files.events, lines.slice(-Math.floor(lines.length / 2)).join('\n') + '\n', 0o644)
      }
    } catch {}
    appendFileSync(this.files.events, JSON.stringify(e) + '\n', { mode: 0o644 })
  }

  /**
   * Checks, then loads `ruleset`. With `confirmSeconds` null (boot) the result is final; otherwise
   * it is rolled back after that many seconds unless confirmed. Nothing changes if the check fails.
   */
  async apply (ruleset: string, confirmSeconds: number | null, detail: Record<string, unknown> = {}): Promise<{ id: string, pending: Pending | null }> {
    await this.nft.check(ruleset)
    this.ensureDir()
    const before = this.pending()
    if (before === null) {
      // The rollback target is the last confirmed state: only saved when nothing is pending, so a
      // second unconfirmed apply does not make the first one "previous".
      const current = await this.nft.listTable()
      writeAtomic(this.files.previous, REPLACE_PREAMBLE + (current ?? ''), 0o600)
    }
    await this.nft.load(ruleset)
    writeAtomic(this.files.current, ruleset, 0o644)
    const id = `${this.now().toString(36)}-${randomBytes(4).toString('hex')}`
    if (confirmSeconds === null) {
      if (before !== null) await this.watchdog.stop(before.watchdog).catch(() => {})
      rmSync(this.files.pending, { force: true })
      rmSync(this.files.previous, { force: true })
      this.event('firewall_applied', id, { ...detail, confirm: false })
      return { id, pending: null }
    }
    const deadline = this.now() + confirmSeconds * 1000
    const pending: Pending = { id, appliedAt: this.now(), deadline, timeoutSeconds: confirmSeconds, watchdog: { kind: 'none' } }
    writeAtomic(this.files.pending, JSON.stringify(pending), 0o644)
    if (before !== null) await this.watchdog.stop(before.watchdog).catch(() => {})
    try {
      pending.watchdog = await this.watchdog.start({ id, deadline, stateDir: this.stateDir })
    } catch (err) {
      // Without a watchdog nobody would roll back: undo now rather than risk a lock-out.
      await this.rollback({ ifId: id, reason: 'watchdog could not be started' })
      throw new FirewallError('GW_ERR_FIREWALL_WATCHDOG', `could not start the rollback watchdog (${(err as Error).message}); the previous ruleset is back`, { cause: err })
    }
    writeAtomic(this.files.pending, JSON.stringify(pending), 0o644)
    this.event('firewall_applied', id, { ...detail, confirm: true, timeoutSeconds: confirmSeconds })
    return { id, pending }
  }

  /** Takes the marker away from whoever else might want it (rename is atomic). */
  private claim (as: string): { file: string, p: Pending } | null {
    const file = `${this.files.pending}.${as}.${process.pid}`
    try { renameSync(this.files.pending, file) } catch { return null }
    const p = readJson<Pending>(file)
    if (p === null) { rmSync(file, { force: true }); return null }
    return { file, p }
  }

  /** With `ifId` (a confirmation the console requested), only if that apply is still the pending one. */
  async confirm (ifId?: string): Promise<Pending> {
    const c = this.claim('confirm')
    if (c === null) throw new FirewallError('GW_ERR_FIREWALL_NOT_PENDING', 'nothing to confirm: no apply is waiting (an unconfirmed apply may already have been rolled back; see `firewall status`)')
    if (ifId !== undefined && c.p.id !== ifId) {
      // A newer apply than the one the operator saw: that one is not confirmed by this request.
      renameSync(c.file, this.files.pending)
      throw new FirewallError('GW_ERR_FIREWALL_NOT_PENDING', `apply ${ifId} is no longer the pending one (${c.p.id} is); nothing confirmed`)
    }
    rmSync(this.files.previous, { force: true })
    rmSync(c.file, { force: true })
    await this.watchdog.stop(c.p.watchdog).catch(() => {})
    this.event('firewall_confirmed', c.p.id, { afterMs: this.now() - c.p.appliedAt })
    return c.p
  }

  /** Loads the kept ruleset again. With `ifId`, only if that apply is still the pending one. */
  async rollback (opts: { ifId?: string, reason: string }): Promise<{ rolledBack: boolean, id?: string }> {
    const seen = this.pending()
    if (seen === null || (opts.ifId !== undefined && seen.id !== opts.ifId)) return { rolledBack: false }
    const c = this.claim('rollback')
    if (c === null) return { rolledBack: false }
    if (opts.ifId !== undefined && c.p.id !== opts.ifId) {
      // A newer apply replaced the marker between our read and our rename: give it back.
      renameSync(c.file, this.files.pending)
      return { rolledBack: false }
    }
    let text: string
    try { text = readFileSync(this.files.previous, 'utf8') } catch (err) {
      renameSync(c.file, this.files.pending)
      throw new FirewallError('GW_ERR_FIREWALL_NO_PREVIOUS', `the previous ruleset (${this.files.previous}) is missing: ${(err as Error).message}`)
    }
    try {
      await this.nft.load(text)
    } catch (err) {
      renameSync(c.file, this.files.pending)
      throw err
    }
    rmSync(this.files.previous, { force: true })
    rmSync(c.file, { force: true })
    if (opts.ifId === undefined) await this.watchdog.stop(c.p.watchdog).catch(() => {})
    this.event('firewall_rolled_back', c.p.id, { reason: opts.reason, lateMs: Math.max(0, this.now() - c.p.deadline) })
    return { rolledBack: true, id: c.p.id }
  }

  /**
   * The watchdog's loop: returns when the apply `id` was confirmed or replaced, or rolls it back at
   * its deadline. Failed rollbacks are retried (nft may be briefly busy) until `giveUpMs` after it.
   */
  async watch (id: string, pollMs = 200, giveUpMs = 60_000): Promise<'confirmed' | 'rolled_back'> {
    for (;;) {
      const p = this.pending()
      if (p === null || p.id !== id) return 'confirmed'
      const left = p.deadline - this.now()
      if (left <= 0) {
        try {
          const r = await this.rollback({ ifId: id, reason: `not confirmed within ${p.timeoutSeconds}s` })
          return r.rolledBack ? 'rolled_back' : 'confirmed'
        } catch (err) {
          if (this.now() - p.deadline > giveUpMs) throw err
        }
      }
      await sleep(Math.max(10, Math.min(pollMs, left)))
    }
  }
}
