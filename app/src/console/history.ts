/**
 * The console's memory: an hour of samples in a fixed ring (no table, nothing written to the card),
 * the last payloads of each device, and a per-device message rate. Bounded: HISTORY_POINTS samples,
 * RECENT_PER_DEVICE payloads of at most PAYLOAD_CHARS for at most MAX_DEVICES devices.
 */
export const STEP_SECONDS = 5
export const HISTORY_POINTS = 3600 / STEP_SECONDS
export const RECENT_PER_DEVICE = 20
export const PAYLOAD_CHARS = 512
export const MAX_DEVICES = 2000

export interface Sample {
  at: number
  /** Messages per second received (all transports) and delivered to the cloud, over the step. */
  inRate: number
  outRate: number
  /** Refusals in the step, by reason. */
  refusals: Record<string, number>
  outboxDepth: number
  oldestAgeSeconds: number
}

export interface Counters { received: () => number, delivered: () => number, outboxDepth: () => number, oldestAt: () => number | null }

export class ConsoleHistory {
  private readonly ring: Array<Sample | undefined> = new Array(HISTORY_POINTS)
  private next = 0
  private last: { at: number, received: number, delivered: number } | null = null
  private refusals: Record<string, number> = {}
  private readonly recent = new Map<string, { messages: Array<{ at: number, stream: string, payload: string }>, refusals: Array<{ at: number, reason: string, detail: string }>, bucketAt: number, cur: number, prev: number }>()
  private timer?: NodeJS.Timeout

  constructor (private readonly counters: Counters) {}

  start (): void {
    this.sample()
    this.timer = setInterval(() => this.sample(), STEP_SECONDS * 1000).unref()
  }

  stop (): void { if (this.timer) clearInterval(this.timer) }

  sample (now = Date.now()): void {
    const received = this.counters.received()
    const delivered = this.counters.delivered()
    if (this.last) {
      const dt = Math.max(0.001, (now - this.last.at) / 1000)
      const oldest = this.counters.oldestAt()
      this.ring[this.next] = {
        at: now,
        inRate: Math.max(0, received - this.last.received) / dt,
        outRate: Math.max(0, delivered - this.last.delivered) / dt,
        refusals: this.refusals,
        outboxDepth: this.counters.outboxDepth(),
        oldestAgeSeconds: oldest === null ? 0 : Math.max(0, (now - oldest) / 1000)
      }
      this.next = (this.next + 1) % HISTORY_POINTS
      this.refusals = {}
    }
    this.last = { at: now, received, delivered }
  }

  /** Oldest first. */
  samples (): Sample[] {
    const out: Sample[] = []
    for (let i = 0; i < HISTORY_POINTS; i++) {
      const s = this.ring[(this.next + i) % HISTORY_POINTS]
      if (s) out.push(s)
    }
    return out
  }

  private entry (device: string, now: number): ReturnType<ConsoleHistory['recent']['get']> {
    let e = this.recent.get(device)
    if (!e) {
      if (this.recent.size >= MAX_DEVICES) return undefined
      e = { messages: [], refusals: [], bucketAt: now, cur: 0, prev: 0 }
      this.recent.set(device, e)
    }
    return e
  }

  message (device: string, stream: string, receivedAt: number, payload: string, now = Date.now()): void {
    const e = this.entry(device, now)
    if (!e) return
    e.messages.push({ at: receivedAt, stream, payload: payload.length > PAYLOAD_CHARS ? payload.slice(0, PAYLOAD_CHARS) + '…' : payload })
    if (e.messages.length > RECENT_PER_DEVICE) e.messages.shift()
    this.roll(e, now)
    e.cur++
  }

  refusal (device: string | null, reason: string, detail: string, now = Date.now()): void {
    this.refusals[reason] = (this.refusals[reason] ?? 0) + 1
    if (device === null) return
    const e = this.entry(device, now)
    if (!e) return
    e.refusals.push({ at: now, reason, detail: detail.slice(0, PAYLOAD_CHARS) })
    if (e.refusals.length > RECENT_PER_DEVICE) e.refusals.shift()
  }

  /** 30-second buckets: the rate is the last full bucket plus the current one. */
  private roll (e: { bucketAt: number, cur: number, prev: number }, now: number): void {
    const gone = Math.floor((now - e.bucketAt) / 30_000)
    if (gone >= 1) { e.prev = gone === 1 ? e.cur : 0; e.cur = 0; e.bucketAt += gone * 30_000 }
  }

  /** Messages per second over the last 30 to 60 seconds. */
  rate (device: string, now = Date.now()): number {
    const e = this.recent.get(device)
    if (!e) return 0
    this.roll(e, now)
    return (e.prev + e.cur) / (30 + (now - e.bucketAt) / 1000)
  }

  recentOf (device: string): { messages: Array<{ at: number, stream: string, payload: string }>, refusals: Array<{ at: number, reason: string, detail: string }> } {
    const e = this.recent.get(device)
    return { messages: [...(e?.messages ?? [])].reverse(), refusals: [...(e?.refusals ?? [])].reverse() }
  }
}
