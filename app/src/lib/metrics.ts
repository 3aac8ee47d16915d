/** A small Prometheus text-format registry: counters with labels, and gauges read at scrape time. */
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
  get (labels: Labels = {}): number { return this.values.get(labelText(labels))?.value ?? 0 }
  total (): number { let n = 0; for (const v of this.values.values()) n += v.value; return n }
  render (): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`]
    for (const { labels, value } of this.values.values()) lines.push(`${this.name}${labelText(labels)} ${value}`)
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
  private readonly metrics = new Map<string, Counter | Gauge>()
  counter (name: string, help: string): Counter {
    const existing = this.metrics.get(name)
    if (existing instanceof Counter) return existing
    const c = new Counter(name, help)
    this.metrics.set(name, c)
    return c
  }
  gauge (name: string, help: string, read: () => number | Array<[Labels, number]>, type: 'gauge' | 'counter' = 'gauge'): Gauge {
    const g = new Gauge(name, help, read, type)
    this.metrics.set(name, g)
    return g
  }
  render (): string { return [...this.metrics.values()].map(m => m.render()).join('\n') + '\n' }
}
