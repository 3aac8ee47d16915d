import type { Config } from '../config/schema.js'
import type { RejectReason } from '../pipeline/checks.js'

/** Security event types that lower trust, and the audit log's names for them. */
export type TrustEvent = 'replay' | 'malformed_input' | 'rate_limit_applied' | 'acl_denied'
/** Every trust event (tsc fails here when one is added to TrustEvent only): their series start at 0. */
export const TRUST_EVENTS = Object.keys({ replay: true, malformed_input: true, rate_limit_applied: true, acl_denied: true } satisfies Record<TrustEvent, true>) as TrustEvent[]

/**
 * Which refusals are security events of the device (and which are not: a full outbox is the
 * gateway's problem, a blocked device is already handled, and a failed authentication (bad MAC,
 * unknown id) is not the claimed device's doing: counted per source address instead).
 */
export function eventFor (reason: RejectReason | string): TrustEvent | undefined {
  switch (reason) {
    case 'replay':
    case 'duplicate': return 'replay'
    case 'bad_json':
    case 'invalid_utf8':
    case 'duplicate_key':
    case 'bad_schema':
    case 'oversize':
    case 'unknown_stream': return 'malformed_input'
    case 'rate_limited': return 'rate_limit_applied'
    case 'acl_denied': return 'acl_denied'
    default: return undefined
  }
}

export interface Score { score: number, events: Record<string, number> }

/**
 * Trust scores, pure: start at `initial`, each security event subtracts its penalty, each accepted
 * message adds `recoverPerMessage` back (never above `initial`). A score below `floor` means quarantine.
 */
export class TrustScores {
  private readonly scores = new Map<string, Score>()
  constructor (private readonly t: Config['trust']) {}

  penalty (e: TrustEvent): number {
    switch (e) {
      case 'replay': return this.t.penaltyReplay
      case 'malformed_input': return this.t.penaltyMalformed
      case 'rate_limit_applied': return this.t.penaltyRateLimited
      case 'acl_denied': return this.t.penaltyAclDenied
    }
  }

  get (id: string): Score { return this.scores.get(id) ?? { score: this.t.initial, events: {} } }

  /** Sets a device's state as the registry has it (null score: initial). */
  set (id: string, score: number | null, events: Record<string, number> = {}): void {
    if (score === null || score >= this.t.initial) { if (Object.keys(events).length === 0) { this.scores.delete(id); return } }
    this.scores.set(id, { score: score ?? this.t.initial, events: { ...events } })
  }

  /** Applies an event; returns the new score and whether it fell below the floor with this event. */
  lower (id: string, e: TrustEvent): { score: number, crossed: boolean } {
    const s = this.get(id)
    const before = s.score
    const score = Math.max(0, before - this.penalty(e))
    this.scores.set(id, { score, events: { ...s.events, [e]: (s.events[e] ?? 0) + 1 } })
    return { score, crossed: before >= this.t.floor && score < this.t.floor }
  }

  /** Good traffic: returns true if the score changed. */
  restore (id: string, messages = 1): boolean {
    const s = this.scores.get(id)
    if (!s || s.score >= this.t.initial) return false
    s.score = Math.min(this.t.initial, s.score + messages * this.t.recoverPerMessage)
    return true
  }

  below (id: string): boolean { return this.get(id).score < this.t.floor }

  /** Devices whose score is not the initial one. */
  entries (): IterableIterator<[string, Score]> { return this.scores.entries() }

  forget (id: string): void { this.scores.delete(id) }
}
