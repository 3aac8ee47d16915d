import { X509Certificate } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { PkiError } from '../lib/errors.js'
import type { Logger } from '../lib/logger.js'
import { parseCrl } from '../pki/x509.js'
import { writeFileAtomic } from '../lib/atomic-file.js'

/**
 * The clock of a board without an RTC (a Pi 3). After a reboot it starts where the boot put it
 * (the latest known time, see the iot-gateway-time recipe) and is behind until NTP syncs. The gateway
 * keeps a "latest known time" on the data partition, refuses to issue certificates or CRLs while the
 * clock is unsynchronised and earlier than that time, and reports the clock's state for /health.
 */

/** systemd-timesyncd creates this file once it has synchronised the clock (and the kernel's NTP status says so). */
export const DEFAULT_SYNC_FLAG = '/run/systemd/timesync/synchronized'

export interface ClockOptions {
  /** The file whose existence means "the clock is synchronised". Default: $GATEWAY_TIMESYNC_FLAG, else DEFAULT_SYNC_FLAG. */
  syncFlag?: string
  /** The clock (ms since the epoch); tests pass their own. */
  now?: () => number
}

const syncFlagOf = (o: ClockOptions): string => o.syncFlag ?? (process.env.GATEWAY_TIMESYNC_FLAG !== undefined && process.env.GATEWAY_TIMESYNC_FLAG !== '' ? process.env.GATEWAY_TIMESYNC_FLAG : DEFAULT_SYNC_FLAG)
const nowOf = (o: ClockOptions): number => (o.now ?? Date.now)()
const iso = (ms: number): string => new Date(ms).toISOString()

/** `<dataDir>/clock/latest-known`: one line, whole seconds since the epoch (the boot script reads it with sh). */
export const latestKnownFile = (dataDir: string): string => join(dataDir, 'clock', 'latest-known')

export const isSynchronised = (o: ClockOptions = {}): boolean => existsSync(syncFlagOf(o))

/** The saved latest known time in ms, or null when there is none (or it is unreadable: it is then rewritten). */
export function readLatestKnown (dataDir: string): number | null {
  let text: string
  try { text = readFileSync(latestKnownFile(dataDir), 'utf8') } catch { return null }
  const m = /^(\d{9,12})\s*$/.exec(text)
  return m ? Number(m[1]) * 1000 : null
}

/**
 * Saves the clock as the latest known time when it is later than the saved one, or when the clock is
 * synchronised (then it is right, even if earlier: a clock that ran ahead must not be carried forward
 * at every boot). Returns the saved time afterwards.
 */
export function recordLatestKnown (dataDir: string, o: ClockOptions = {}): { written: boolean, latestKnown: number } {
  const now = nowOf(o)
  const saved = readLatestKnown(dataDir)
  const secs = Math.floor(now / 1000)
  if (saved !== null && (isSynchronised(o) ? secs * 1000 === saved : now <= saved)) return { written: false, latestKnown: saved }
  mkdirSync(dirname(latestKnownFile(dataDir)), { recursive: true, mode: 0o755 })
  writeFileAtomic(latestKnownFile(dataDir), `${secs}\n`, 0o644)
  return { written: true, latestKnown: secs * 1000 }
}

/**
 * The latest instant from which everything in the PKI directory is valid: the newest notBefore of
 * its certificates and thisUpdate of its CRL. A broker whose clock is earlier refuses them.
 */
export function pkiValidFrom (pkiDir: string): number | null {
  let newest: number | null = null
  let names: string[]
  try { names = readdirSync(pkiDir) } catch { return null }
  for (const name of names) {
    try {
      let t: number | undefined
      if (name.endsWith('.crt')) t = Date.parse(new X509Certificate(readFileSync(join(pkiDir, name))).validFrom)
      else if (name === 'crl.pem') t = parseCrl(readFileSync(join(pkiDir, name), 'utf8')).thisUpdate
      if (t !== undefined && !Number.isNaN(t) && (newest === null || t > newest)) newest = t
    } catch { /* not ours to judge here: the broker reports a broken file */ }
  }
  return newest
}

export interface ClockState {
  synchronised: boolean
  /** The clock is earlier than a certificate's notBefore or the CRL's thisUpdate: the broker refuses devices. */
  behindPki: boolean
  /** The clock is earlier than the latest time this gateway has seen: nothing is issued while also unsynchronised. */
  behindLatestKnown: boolean
  latestKnown: string | null
  pkiValidFrom: string | null
  now: string
  /** For /health and alerts: "clock not synchronised", "clock earlier than the PKI", "clock earlier than the latest known time". */
  problems: string[]
}

/** The clock's state, for /health and the alerts. `dataDir` holds `pki/` and `clock/`. */
export function clockState (dataDir: string, o: ClockOptions = {}): ClockState {
  const now = nowOf(o)
  const synchronised = isSynchronised(o)
  const latest = readLatestKnown(dataDir)
  const valid = pkiValidFrom(join(dataDir, 'pki'))
  const behindPki = valid !== null && now < valid
  const behindLatestKnown = latest !== null && now < latest
  const problems: string[] = []
  if (!synchronised) problems.push('clock not synchronised')
  if (behindPki) problems.push('clock earlier than the PKI')
  if (behindLatestKnown) problems.push('clock earlier than the latest known time')
  return { synchronised, behindPki, behindLatestKnown, latestKnown: latest === null ? null : iso(latest), pkiValidFrom: valid === null ? null : iso(valid), now: iso(now), problems }
}

/**
 * Throws GW_ERR_PKI_CLOCK_BEHIND when the clock is unsynchronised and earlier than the latest known
 * time (or than the PKI): whatever were issued now would carry a date in the past, and would be
 * refused or misordered once the clock is right. A synchronised clock is trusted, whatever it says.
 */
export function assertMayIssue (dataDir: string, what: string, o: ClockOptions = {}): number {
  const now = nowOf(o)
  if (isSynchronised(o)) return now
  const latest = Math.max(readLatestKnown(dataDir) ?? 0, pkiValidFrom(join(dataDir, 'pki')) ?? 0)
  if (now < latest) {
    throw new PkiError('GW_ERR_PKI_CLOCK_BEHIND', `not issuing ${what}: the clock (${iso(now)}) is not synchronised and is earlier than ` +
      `the latest time this gateway has seen (${iso(latest)}), so it would be dated wrongly. Wait for the time sync ` +
      '(timedatectl timesync-status; see docs/time.md), or set the clock, and try again. Nothing was changed.')
  }
  return now
}

/**
 * Issues something dated by the clock: checks the clock, passes the time to `issue`, then saves that
 * time as the latest known one (so a reboot does not start before it).
 */
export function issueAt<T> (dataDir: string, what: string, issue: (now: number) => T, o: ClockOptions = {}): T {
  const now = assertMayIssue(dataDir, what, o)
  const out = issue(now)
  recordLatestKnown(dataDir, { ...o, now: () => now })
  return out
}

/**
 * The time to date a CRL with: the clock, or the latest known time when the clock is unsynchronised
 * and earlier. A revocation is never refused for the clock's sake (that would keep a stolen device
 * in); dated no earlier than a time already seen, the CRL is valid for a broker whose clock is at
 * least that time minus BACKDATE_DAYS, which the boot guarantees. The time is saved afterwards.
 */
export function crlAt<T> (dataDir: string, issue: (now: number) => T, o: ClockOptions = {}): T {
  let now = nowOf(o)
  if (!isSynchronised(o)) now = Math.max(now, readLatestKnown(dataDir) ?? 0)
  const out = issue(now)
  recordLatestKnown(dataDir, { ...o, now: () => now })
  return out
}

/** The daemon's side: saves the latest known time at start, every `everyMs`, and at stop. */
export class ClockKeeper {
  private timer?: NodeJS.Timeout
  constructor (readonly dataDir: string, readonly log: Logger, readonly everyMs = 15 * 60_000, readonly o: ClockOptions = {}) {}

  start (): void {
    this.tick()
    this.timer = setInterval(() => this.tick(), this.everyMs).unref()
  }

  stop (): void {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    this.tick()
  }

  state (): ClockState { return clockState(this.dataDir, this.o) }
  /** Only the sync flag (one stat): what the monitor samples every few seconds. */
  synchronised (): boolean { return isSynchronised(this.o) }

  private tick (): void {
    try {
      recordLatestKnown(this.dataDir, this.o)
    } catch (err) {
      this.log.warn('cannot save the latest known time', { err, file: latestKnownFile(this.dataDir) })
    }
  }
}
