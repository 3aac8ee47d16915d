import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { startStack } from '../helpers/env.js'
import { appDir } from '../helpers/gateway-process.js'
import { deviceCreds, mqttDevice } from '../helpers/devices.js'
import { waitFor } from '../helpers/ports.js'

/** The sample lines of one family (name, then `{` or a space). */
const samples = (text: string, name: string): string[] => text.split('\n').filter(l => l.startsWith(name + ' ') || l.startsWith(name + '{'))

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

t.test('by the book: counters end in _total and exist at zero; no sentinel values', async t => {
  const s = await startStack(t, {})
  const scrape = (await s.gateway.get('/metrics')).text
  const types = [...scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map(m => [m[1]!, m[2]!] as const)
  const counters = types.filter(([, type]) => type === 'counter').map(([n]) => n)
  t.ok(counters.length >= 20, `${counters.length} counter families`)
  t.same(counters.filter(n => !n.endsWith('_total')), [], 'every counter ends in _total')
  t.same(types.filter(([n, type]) => n.endsWith('_total') && type !== 'counter').map(([n]) => n), [], 'nothing else does')
  // Series initialised at zero: every counter family has its series before anything happened. The
  // exceptions have no value to give yet: CoAP response codes are open-ended, and the firewall's
  // and WireGuard counters come from the privileged stats unit's files, which this stack has none of.
  const open = new Set(['gateway_coap_requests_total', 'gateway_firewall_dropped_packets_total', 'gateway_firewall_dropped_bytes_total',
    'gateway_wireguard_received_bytes_total', 'gateway_wireguard_sent_bytes_total'])
  t.same(counters.filter(n => !open.has(n) && samples(scrape, n).length === 0), [], 'every counter family has series from the start')
  for (const line of ['gateway_messages_rejected_total{reason="bad_schema",transport="mqtt"} 0', 'gateway_uplink_batches_total{result="dead"} 0',
    'gateway_uplink_dead_letters_total 0', 'gateway_security_events_total{type="replay"} 0', 'gateway_api_refused_total{status="401"} 0',
    'gateway_broker_messages_dropped_total 0']) t.ok(scrape.split('\n').includes(line), line)
  // No sentinels: a value that does not exist is an absent series, not 0 or -1.
  for (const name of ['gateway_outbox_oldest_message_timestamp_seconds', 'gateway_firewall_snapshot_timestamp_seconds']) {
    t.match(scrape, new RegExp(`^# TYPE ${name} gauge$`, 'm'), `${name} is declared`)
    t.same(samples(scrape, name), [], `${name} has no sample while there is no value`)
  }
  // With a message waiting (the cloud away), the oldest message's receipt time appears.
  await s.cloud.stop()
  const dev = await mqttDevice(s.broker.lanPort, deviceCreds(s.config, 'book-1'))
  t.teardown(() => dev.endAsync())
  const before = Date.now() / 1000
  await dev.publishAsync('devices/book-1/telemetry', JSON.stringify({ seq: 1, v: 1 }), { qos: 1 })
  const line = await waitFor(async () => samples((await s.gateway.get('/metrics')).text, 'gateway_outbox_oldest_message_timestamp_seconds')[0], 'the oldest message series')
  const ts = Number(line.split(' ')[1])
  t.ok(ts >= before - 1 && ts <= Date.now() / 1000, `a Unix time in seconds (${ts}), not an age`)
  await s.cloud.start()
  await waitFor(async () => samples((await s.gateway.get('/metrics')).text, 'gateway_outbox_oldest_message_timestamp_seconds').length === 0, 'the series gone once the outbox is empty')
})
