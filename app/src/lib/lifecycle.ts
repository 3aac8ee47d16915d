import type { Logger } from './logger.js'

/**
 * A part of the daemon with a start and a stop (zigbee2mqtt's extensions, in spirit). Its object is
 * made beforehand (constructors do no I/O); start() opens, binds, arms its timers; stop() undoes
 * that and may take up to `graceMs` to finish work in flight.
 */
export interface Capability {
  readonly name: string
  start: () => void | Promise<void>
  stop: (graceMs: number) => void | Promise<void>
}

/**
 * Starts an ordered list of capabilities one after the other and stops them in the reverse order,
 * each step logged with its duration. When a start fails, that capability (it may have half
 * started: a client reconnecting, a timer) and what already started are stopped (reverse order, no
 * grace), and the error is passed on: a half-started daemon leaves nothing running. A stop that
 * fails is logged and the others still stop. A stop that comes while the list is starting (SIGTERM
 * during the wait for the broker) stops what started, and the start goes no further.
 */
export class Lifecycle {
  private readonly running: Capability[] = []
  private halted = false

  constructor (private readonly log: Logger, private readonly now: () => number = () => performance.now()) {}

  /** The names of the capabilities started and not yet stopped, in start order. */
  get started (): string[] { return this.running.map(c => c.name) }

  /** Resolves true once all started, false when a stop came meanwhile (then nothing is left running). */
  async start (capabilities: readonly Capability[]): Promise<boolean> {
    for (const cap of capabilities) {
      if (this.halted) return false
      const t0 = this.now()
      try {
        await cap.start()
      } catch (err) {
        this.log.error('start failed; stopping what started', { step: cap.name, ms: this.ms(t0), err })
        this.running.push(cap)
        await this.stop(0)
        throw err
      }
      this.running.push(cap)
      this.log.info('started', { step: cap.name, ms: this.ms(t0) })
      // Stopped while this one was starting: the stop has run already, so this one is stopped here.
      if (this.halted) { await this.stop(0); return false }
    }
    return true
  }

  /** Stops what is running, last started first. Idempotent: a second call finds nothing to stop. */
  async stop (graceMs: number): Promise<void> {
    this.halted = true
    for (let cap = this.running.pop(); cap !== undefined; cap = this.running.pop()) {
      const t0 = this.now()
      try {
        await cap.stop(graceMs)
        this.log.info('stopped', { step: cap.name, ms: this.ms(t0) })
      } catch (err) {
        this.log.warn('stop failed', { step: cap.name, ms: this.ms(t0), err })
      }
    }
  }

  private ms (t0: number): number { return Math.round((this.now() - t0) * 10) / 10 }
}
