import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startStack } from '../helpers/env.js'
import { appDir } from '../helpers/gateway-process.js'

/** Series names a scrape offers: every family's name, and a histogram's _bucket/_sum/_count. */
function seriesNames (text: string): Set<string> {
  const names = new Set<string>()
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    names.add(m[1]!)
    if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(m[1]! + s)
  }
  return names
}

/** Metric names in PromQL text: the gateway's own (gateway_*, process_*). */
const namesIn = (expr: string): string[] => [...expr.matchAll(/\b((?:gateway|process)_[a-zA-Z0-9_]+)\b/g)].map(m => m[1]!)

t.test('every expression of the example rules and the dashboard names a series a running gateway exports', async t => {
  const s = await startStack(t, {})
  const scrape = (await s.gateway.get('/metrics')).text
  const have = seriesNames(scrape)
  t.ok(have.has('gateway_build_info') && have.has('gateway_alerts_firing'), 'the scrape has the families')
  t.match(scrape, /gateway_build_info\{version="[^"]+",node="v22[^"]*"\} 1/)
  t.match(scrape, /gateway_message_commit_latency_seconds_bucket\{le="\+Inf"\} 0/, 'histograms exist at zero from the start')
  const rules = readFileSync(join(appDir, 'docs', 'monitoring', 'prometheus-rules.yml'), 'utf8')
  const exprs = [...rules.matchAll(/^\s+expr: (.+)$/gm)].map(m => m[1]!)
  t.ok(exprs.length >= 10, `${exprs.length} rule expressions`)
  const dash = JSON.parse(readFileSync(join(appDir, 'docs', 'monitoring', 'grafana-dashboard.json'), 'utf8')) as { panels: Array<{ title: string, targets: Array<{ expr: string }> }>, templating: { list: Array<{ query?: string }> } }
  const dashExprs = [...dash.panels.flatMap(p => p.targets.map(x => x.expr)), ...dash.templating.list.map(v => v.query ?? '')]
  t.ok(dashExprs.length >= 10, `${dashExprs.length} dashboard expressions`)
  const missing: string[] = []
  let checked = 0
  for (const e of [...exprs, ...dashExprs]) {
    for (const n of namesIn(e)) { checked++; if (!have.has(n)) missing.push(`${n} (in ${e})`) }
  }
  t.ok(checked >= 30, `${checked} metric references checked`)
  t.same(missing, [], 'no expression names a series the gateway does not export')
  // The check can fail: a misspelt name is caught.
  t.notOk(have.has('gateway_alert_firing'), 'a near miss is not in the scrape')
})
