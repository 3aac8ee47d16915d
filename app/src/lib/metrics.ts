/**
 * A small Prometheus text-format registry: counters with labels, histograms, and gauges read at
 * scrape time. By the book: counters end in `_total`, values are in base units (seconds, bytes,
 * ratios 0..1), and series whose label sets are known in advance are initialised at zero with
 * init() so that rate() and absent() work from the first scrape.
 */
type Labels = Record<string, string>

function labelText (labels: Labels): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
  return parts.length > 0 ? `{${parts.join(',')}}` : ''
}

export class Counter {
  private readonly values = new Map<string, { labels: Labels, value: number }>()
  constructor (readonly name: string, readonly help: string) {}
  inc (labels: Labels = {}, by = 1): void {
    const key = labelText(labels)
    const cur = this.values.get(key)
    if (cur) cur.value += by
    else this.values.set(key, { labels, value: by })
  }

  /** Creates the series at 0 (a no-op for a series that exists). */
  init (...labelSets: Labels[]): this {
    for (const labels of labelSets.length > 0 ? labelSets : [{}]) if (!this.values.has(labelText(labels))) this.values.set(labelText(labels), { labels, value: 0 })
    return this
  }

  get (labels: Labels = {}): number { return this.values.get(labelText(labels))?.value ?? 0 }
  total (): number { let n = 0; for (const v of this.values.values()) n += v.value; return n }
  render (): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`]
    for (const { labels, value } of this.values.values()) lines.push(`${this.name}${labelText(labels)} ${value}`)
    return lines.join('\n')
  }
}

/** Default buckets for message latencies in seconds: from a group commit (ms) to a long outage (hours). */
export const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400]

/** A histogram without labels: cumulative buckets, _sum and _count, all present from the start. */
export class Histogram {
  private readonly counts: number[]
  private sum = 0
  private count = 0
  constructor (readonly name: string, readonly help: string, readonly buckets: readonly number[] = LATENCY_BUCKETS) {
    this.counts = new Array<number>(buckets.length).fill(0)
  }

  observe (v: number, n = 1): void {
    if (!Number.isFinite(v)) return
    // Non-cumulative here; cumulated at render time so that observe() stays O(buckets) with no allocation.
    const i = this.buckets.findIndex(b => v <= b)
    if (i >= 0) this.counts[i]! += n
    this.sum += v * n
    this.count += n
  }

  get observations (): number { return this.count }
  render (): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`]
    let acc = 0
    this.buckets.forEach((b, i) => { acc += this.counts[i]!; lines.push(`${this.name}_bucket{le="${b}"} ${acc}`) })
    lines.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${this.sum}`, `${this.name}_count ${this.count}`)
    return lines.join('\n')
  }
}

export class Gauge {
  /** type 'counter': a value read from elsewhere that only grows (until its source resets), e.g. nft counters. */
  constructor (readonly name: string, readonly help: string, private readonly read: () => number | Array<[Labels, number]>, readonly type: 'gauge' | 'counter' = 'gauge') {}
  render (): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`]
    const v = this.read()
    if (typeof v === 'number') lines.push(`${this.name} ${v}`)
    else for (const [labels, value] of v) lines.push(`${this.name}${labelText(labels)} ${value}`)
    return lines.join('\n')
  }
}

export class Registry {
  private readonly metrics = new Map<string, Counter | Gauge | Histogram>()
  counter (name: string, help: string): Counter {
    const existing = this.metrics.get(name)
    if (existing instanceof Counter) return existing
    const c = new Counter(name, help)
    this.metrics.set(name, c)
    return c
  }

  histogram (name: string, help: string, buckets?: readonly number[]): Histogram {
    const existing = this.metrics.get(name)
    if (existing instanceof Histogram) return existing
    const h = new Histogram(name, help, buckets)
    this.metrics.set(name, h)
    return h
  }

  gauge (name: string, help: string, read: () => number | Array<[Labels, number]>, type: 'gauge' | 'counter' = 'gauge'): Gauge {
    const g = new Gauge(name, help, read, type)
    this.metrics.set(name, g)
    return g
  }

  /** Metric families registered so far (for tests and the dashboard check). */
  names (): string[] { return [...this.metrics.keys()] }
  render (): string {
    // A gauge whose reader throws must not take the whole scrape down: the family is left out.
    const parts: string[] = []
    for (const m of this.metrics.values()) {
      try { parts.push(m.render()) } catch { /* skipped this scrape */ }
    }
    return parts.join('\n') + '\n'
  }
}
