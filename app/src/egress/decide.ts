import { backoffDelay } from '../lib/backoff.js'

/**
 * The egress's decisions, apart from its queues and I/O (issue #16): how long a partial batch
 * lingers, where the next batch comes from, and what to do after the cloud answered. The clock and
 * the randomness are passed in; app/test/unit/egress-decide.test.ts tests each.
 */

/** What a request came to: 2xx, final refusal, retry (408, 429, 5xx, network), or credentials refused. */
export type SendResult =
  | { kind: 'ok' }
  | { kind: 'retry' | 'auth', status: number | null, reason: string, retryAfterMs?: number }
  | { kind: 'dead', status: number, reason: string }

/**
 * Sorts an HTTP outcome: 2xx done; 408, 429 and 5xx retried; 401 and 403 pause the uplink (the
 * gateway's credentials are refused: no message is at fault, so none is dead-lettered); any other
 * status is final for the batch.
 */
export function classify (status: number): 'ok' | 'retry' | 'auth' | 'dead' {
  if (status >= 200 && status < 300) return 'ok'
  if (status === 401 || status === 403) return 'auth'
  if (status === 408 || status === 429 || status >= 500) return 'retry'
  return 'dead'
}

export interface LingerInput {
  now: number
  /** Arrival of the oldest message not yet delivered (committed or not); undefined: none. */
  oldestAt: number | undefined
  /** Messages and payload bytes waiting (committed and not). */
  messages: number
  bytes: number
  lingerMs: number
  /** Stopping: no linger, send what there is. */
  draining: boolean
  batchMaxMessages: number
  batchMaxBytes: number
}

/**
 * How long a partial batch waits for more: 0 to send now, Infinity when there is nothing to send.
 * The wait counts from the oldest message, which has already waited for nothing else.
 */
export function lingerWait (i: LingerInput): number {
  if (i.messages === 0 || i.oldestAt === undefined) return Infinity
  if (i.draining || i.messages >= i.batchMaxMessages || i.bytes >= i.batchMaxBytes) return 0
  return Math.max(0, i.oldestAt + i.lingerMs - i.now)
}

/**
 * Where the next batch comes from. The outbox's committed rows come first, always: they are older
 * than anything pending, and one batch at a time in that order keeps each device's order. Only
 * when every committed row is delivered do admitted-but-uncommitted messages go from memory, so
 * the uplink does not wait for the SD card's fsync.
 */
export function batchSource (committedUndelivered: number, uncommitted: number): 'outbox' | 'memory' | 'none' {
  if (committedUndelivered > 0) return 'outbox'
  if (uncommitted > 0) return 'memory'
  return 'none'
}

export type Step =
  /** Record the delivery (2xx). */
  | { do: 'ack' }
  /** Move the batch to the dead letters (a final refusal of committed rows). */
  | { do: 'dead_letter' }
  /**
   * A final refusal of messages sent from memory: they are not in the outbox yet, so wait for their
   * commit, then move their rows to the dead letters (they are the head of the outbox by then).
   */
  | { do: 'dead_letter_after_commit' }
  /** Wait, then send again (a 408, 429, 5xx or a network error); 'auth': the credentials were refused. */
  | { do: 'retry' | 'auth', delayMs: number }

/**
 * What to do after the cloud answered a batch. `attempt` counts failures in a row (0 after a
 * success); the delay is exponential with jitter (`random` in [0, 1)) and never shorter than the
 * cloud's Retry-After.
 */
export function afterResponse (r: SendResult, o: { fromMemory: boolean, attempt: number, backoffBaseMs: number, backoffMaxMs: number, random: () => number }): Step {
  if (r.kind === 'ok') return { do: 'ack' }
  if (r.kind === 'dead') return { do: o.fromMemory ? 'dead_letter_after_commit' : 'dead_letter' }
  return { do: r.kind, delayMs: Math.max(r.retryAfterMs ?? 0, backoffDelay(o.attempt, o.backoffBaseMs, o.backoffMaxMs, o.random)) }
}
