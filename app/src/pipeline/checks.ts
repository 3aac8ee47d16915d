/**
 * The checks every message passes before the outbox, in order: size, JSON shape, sequence (replay),
 * rate. Pure functions and small state holders; the pipeline wires them to the store.
 */
export type RejectReason =
  | 'oversize' | 'bad_json' | 'bad_schema' | 'bad_device_id' | 'unknown_stream'
  | 'replay' | 'duplicate' | 'rate_limited' | 'device_blocked' | 'outbox_full'
  | 'bad_signature' | 'unknown_device'
  /** A broker's resend (MQTT DUP) of a message the gateway already committed: benign, not a replay. */
  | 'redelivered'

export interface Parsed { epoch: number, seq: number, payload: string }

export type CheckResult<T> = { ok: true, value: T } | { ok: false, reason: RejectReason, detail: string }

const MAX_SAFE = Number.MAX_SAFE_INTEGER

/**
 * A device message is a JSON object with an integer `seq` (>= 0) that grows with every message, and
 * optionally an integer `epoch` (>= 0, default 0) that a device without persistent storage raises at
 * boot (a boot counter or the boot time). (epoch, seq) must grow strictly.
 */
export function parseMessage (raw: Buffer | string, maxBytes: number): CheckResult<Parsed> {
  const size = typeof raw === 'string' ? Buffer.byteLength(raw) : raw.length
  if (size > maxBytes) return { ok: false, reason: 'oversize', detail: `${size} bytes > ${maxBytes}` }
  const text = typeof raw === 'string' ? raw : raw.toString('utf8')
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    return { ok: false, reason: 'bad_json', detail: (err as Error).message.slice(0, 200) }
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { ok: false, reason: 'bad_schema', detail: 'payload must be a JSON object' }
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
