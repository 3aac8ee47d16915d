/**
 * The checks every message passes before the outbox, in order: size, JSON shape, sequence (replay),
 * rate. Pure functions and small state holders; the pipeline wires them to the store.
 */
export type RejectReason =
  | 'oversize' | 'bad_json' | 'bad_schema' | 'bad_device_id' | 'unknown_stream'
  /** Not valid UTF-8: refused rather than forwarded with U+FFFD in place of the bytes. */
  | 'invalid_utf8'
  /** The same member name twice in one object: receivers disagree on which one counts (even for seq). */
  | 'duplicate_key'
  | 'replay' | 'duplicate' | 'rate_limited' | 'device_blocked' | 'outbox_full'
  | 'bad_signature' | 'unknown_device'
  /** A broker's resend (MQTT DUP) of a message the gateway already committed: benign, not a replay. */
  | 'redelivered'

/**
 * Every refusal reason, as a record so that tsc fails here when a reason is added to RejectReason
 * and not to this list: the pipeline creates each reason's series at 0 (a series that appears only
 * at its first refusal makes rate() and increase() miss that refusal).
 */
const REJECT_REASON_SET: Record<RejectReason, true> = {
  oversize: true,
  bad_json: true,
  bad_schema: true,
  bad_device_id: true,
  unknown_stream: true,
  invalid_utf8: true,
  duplicate_key: true,
  replay: true,
  duplicate: true,
  rate_limited: true,
  device_blocked: true,
  outbox_full: true,
  bad_signature: true,
  unknown_device: true,
  redelivered: true
}
export const REJECT_REASONS = Object.keys(REJECT_REASON_SET) as RejectReason[]

export interface Parsed { epoch: number, seq: number, payload: string }

export type CheckResult<T> = { ok: true, value: T } | { ok: false, reason: RejectReason, detail: string }

const MAX_SAFE = Number.MAX_SAFE_INTEGER
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/**
 * The first member name that appears twice in one object of a JSON text that JSON.parse accepted,
 * or undefined. JSON.parse keeps the last one silently; the gateway checks `seq` on what it parsed
 * while the cloud's parser may take the first, so such a message is refused. Names are compared
 * after unescaping ("\u0073eq" is "seq").
 */
export function duplicateKey (text: string): string | undefined {
  const objects: Array<Set<string> | null> = [] // null: an array
  let expectName = false
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i)
    if (ch === 0x22) { // a string: skip to its closing quote
      let j = i + 1
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1
      const top = objects[objects.length - 1]
      if (top && expectName) {
        const name = JSON.parse(text.slice(i, j + 1)) as string
        if (top.has(name)) return name
        top.add(name)
        expectName = false
      }
      i = j
    } else if (ch === 0x7b) { // {
      objects.push(new Set())
      expectName = true
    } else if (ch === 0x5b) { // [
      objects.push(null)
      expectName = false
    } else if (ch === 0x7d || ch === 0x5d) { // } ]
      objects.pop()
      expectName = false
    } else if (ch === 0x2c) { // ,
      expectName = objects[objects.length - 1] != null
    }
  }
  return undefined
}

/**
 * A device message is a JSON object with an integer `seq` (>= 0) that grows with every message, and
 * optionally an integer `epoch` (>= 0, default 0) that a device without persistent storage raises at
 * boot (a boot counter or the boot time). (epoch, seq) must grow strictly.
 */
export function parseMessage (raw: Buffer | string, maxBytes: number): CheckResult<Parsed> {
  const size = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length
  if (size > maxBytes) return { ok: false, reason: 'oversize', detail: `${size} bytes > ${maxBytes}` }
  let text: string
  if (typeof raw === 'string') text = raw
  else {
    try { text = utf8.decode(raw) } catch { return { ok: false, reason: 'invalid_utf8', detail: 'payload is not valid UTF-8' } }
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    return { ok: false, reason: 'bad_json', detail: (err as Error).message.slice(0, 200) }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { ok: false, reason: 'bad_schema', detail: 'payload must be a JSON object' }
  const dup = duplicateKey(text)
  if (dup !== undefined) return { ok: false, reason: 'duplicate_key', detail: `member "${dup.slice(0, 64)}" appears twice in one object` }
  const o = value as Record<string, unknown>
  const seq = o.seq
  if (typeof seq !== 'number' || !Number.isInteger(seq) || seq < 0 || seq > MAX_SAFE) return { ok: false, reason: 'bad_schema', detail: '"seq" must be an integer >= 0' }
  const epoch = o.epoch ?? 0
  if (typeof epoch !== 'number' || !Number.isInteger(epoch) || epoch < 0 || epoch > MAX_SAFE) return { ok: false, reason: 'bad_schema', detail: '"epoch" must be an integer >= 0' }
  return { ok: true, value: { epoch, seq, payload: text } }
}

/** Compares (epoch, seq) with the last accepted pair. */
export function sequenceVerdict (last: { epoch: number, seq: number }, next: { epoch: number, seq: number }): 'new' | 'duplicate' | 'replay' {
  if (next.epoch > last.epoch || (next.epoch === last.epoch && next.seq > last.seq)) return 'new'
  if (next.epoch === last.epoch && next.seq === last.seq) return 'duplicate'
  return 'replay'
}

/** Per-device token buckets. Idle buckets are forgotten so a churn of ids cannot grow memory forever. */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number, at: number }>()
  constructor (private readonly ratePerSecond: number, private readonly burst: number, private readonly now: () => number = Date.now) {}

  take (key: string): boolean {
    const t = this.now()
    let b = this.buckets.get(key)
    if (!b) {
      if (this.buckets.size >= 100000) this.sweep(t)
      b = { tokens: this.burst, at: t }
      this.buckets.set(key, b)
    } else {
      b.tokens = Math.min(this.burst, b.tokens + (t - b.at) * this.ratePerSecond / 1000)
      b.at = t
    }
    if (b.tokens < 1) return false
    b.tokens -= 1
    return true
  }

  private sweep (t: number): void {
    const full = this.burst / this.ratePerSecond * 1000
    for (const [k, b] of this.buckets) if (t - b.at > full) this.buckets.delete(k)
  }
}
