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
 * Where the next batch comes from. One batch at a time, oldest first, keeps each device's order.
 * From memory when every committed, undelivered row is also in memory (kept since its commit), and
 * then admitted-but-uncommitted messages after them, so the uplink waits neither for the SD card's
 * fsync nor reads the outbox back. From the outbox when it holds rows memory does not (after a
 * restart, a long outage past the memory bound, rows added by the CLI).
 */
export function batchSource (i: { committedUndelivered: number, committedInMemory: number, unsentInMemory: () => number }): 'outbox' | 'memory' | 'none' {
  if (i.committedUndelivered > i.committedInMemory) return 'outbox'
  // Asked only now: what memory can send (not what waits for a commit after a 2xx already).
  return i.unsentInMemory() > 0 ? 'memory' : 'none'
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
