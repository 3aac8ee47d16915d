import { DEVICE_ID_PATTERN } from '../devices/device-id.js'
import { parseMessage, sequenceVerdict, type RejectReason } from './checks.js'

/**
 * The pipeline's decisions, apart from its queues and I/O (issue #16): whether a message is
 * admitted, and when the pending group is due for its commit. Everything they depend on is passed
 * in, the clock included, so each is unit-tested on its own (app/test/unit/admission.test.ts).
 */

export interface Refusal {
  reason: RejectReason
  detail: string
  /** Counted in the traffic log (an outbox_full refusal is not: the device sends it again). */
  record: boolean
  /** Refused only once the pending group commits (the copy that set this sequence may be in it). */
  afterCommit: boolean
}

export type Verdict =
  | { admit: true, epoch: number, seq: number, payload: string }
  | ({ admit: false } & Refusal)

/** One message as it comes in. */
export interface AdmissionInput {
  device: string
  stream: string
  raw: Buffer | string
  /** The transport says this is a resend (MQTT DUP flag). */
  redelivery: boolean
  /** What the identity gate said (revoked, quarantined, unknown); undefined: let through. */
  gate?: { reason: RejectReason, detail: string } | undefined
  /** The outbox (committed + pending) is at capacity or the disk is full. */
  full: boolean
}

/** What the verdict looks up: the settings and the pipeline's state (made once, not per message). */
export interface AdmissionContext {
  streams: readonly string[]
  maxPayloadBytes: number
  /** The device's last accepted (epoch, seq): committed or pending. */
  last: (device: string) => { epoch: number, seq: number }
  /** Whether a message of this device waits for its commit. */
  pendingFrom: (device: string) => boolean
  /** Takes a token from the device's rate bucket; asked only for a message that passed every other check. */
  takeToken: (device: string) => boolean
  ratePerSecond: number
}

const refuse = (reason: RejectReason, detail: string, record = true, afterCommit = false): Verdict => ({ admit: false, reason, detail, record, afterCommit })

/** validate -> identity gate -> parse -> replay check -> rate limit -> room in the outbox, in that order. */
export function admissionVerdict (m: AdmissionInput, c: AdmissionContext): Verdict {
  if (!DEVICE_ID_PATTERN.test(m.device)) return refuse('bad_device_id', 'device id has characters outside [A-Za-z0-9_.-] or is too long')
  if (!c.streams.includes(m.stream)) return refuse('unknown_stream', `stream "${m.stream}" is not one of ${c.streams.join(', ')}`)
  if (m.gate) return refuse(m.gate.reason, m.gate.detail)
  const parsed = parseMessage(m.raw, c.maxPayloadBytes)
  if (!parsed.ok) return refuse(parsed.reason, parsed.detail)
  const { epoch, seq, payload } = parsed.value
  const last = c.last(m.device)
  const sv = sequenceVerdict(last, parsed.value)
  if (sv !== 'new') {
    // After a gateway crash the broker resends what the gateway had committed but not yet
    // acknowledged: those are dropped as 'redelivered' and do not count against the device. The copy
    // that set this sequence number may still wait for its commit (a broker reconnect during the
    // linger resends it): refusing this one is acknowledging it, so only after that commit.
    return refuse(m.redelivery ? 'redelivered' : sv, `(epoch ${epoch}, seq ${seq}) is not after (epoch ${last.epoch}, seq ${last.seq})`, true, c.pendingFrom(m.device))
  }
  if (!c.takeToken(m.device)) return refuse('rate_limited', `more than ${c.ratePerSecond}/s`)
  if (m.full) return refuse('outbox_full', 'outbox at capacity; retry later', false)
  return { admit: true, epoch, seq, payload }
}

export interface CommitPlanInput {
  now: number
  /** How many messages wait for their commit. */
  pending: number
  /** Arrival time of the oldest pending MQTT and CoAP message (undefined: none pending). */
  oldestMqtt?: number
  oldestCoap?: number
  /** A transport stopped reading until its pending messages commit. */
  urgent: boolean
  lastCommitAt: number
  /** When the armed commit timer fires, if one is armed. */
  timerAt?: number
  commitLingerMs: number
  coapCommitLingerMs: number
  commitEarlyMessages: number
  commitMinIntervalMs: number
  commitMaxMessages: number
}

/**
 * When the pending group is committed: 'now' (on the next tick), a time for the timer, or 'none'.
 * A message waits at most its transport's linger; a group is due early at commitEarlyMessages or
 * when a transport waits for it; commits are commitMinIntervalMs apart (from the end of one) unless
 * commitMaxMessages wait. A timer already overdue (the event loop busy with a burst of reads)
 * counts as due now.
 */
export function commitPlan (i: CommitPlanInput): 'now' | 'none' | { at: number } {
  if (i.pending === 0) return 'none'
  if (i.pending >= i.commitMaxMessages) return 'now'
  let due = i.now
  if (i.pending < i.commitEarlyMessages && !i.urgent) {
    due = Math.min(i.oldestMqtt === undefined ? Infinity : i.oldestMqtt + i.commitLingerMs,
      i.oldestCoap === undefined ? Infinity : i.oldestCoap + i.coapCommitLingerMs)
  }
  due = Math.max(due, i.lastCommitAt + i.commitMinIntervalMs)
  if (Math.min(due, i.timerAt ?? Infinity) <= i.now) return 'now'
  return { at: due }
}
