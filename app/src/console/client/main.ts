// The console page: plain TypeScript and the DOM, no framework (see app/docs/console.md). It polls
// GET /console/api/state every POLL_MS and redraws; the charts are SVG polylines.
/// <reference lib="dom" />

const POLL_MS = 2000
const app = document.getElementById('app')!

type Json = any

function h (tag: string, attrs: Record<string, string> = {}, ...kids: Array<Node | string | null>): HTMLElement {
  const e = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v)
  for (const k of kids) if (k !== null) e.append(k)
  return e
}

async function call (method: string, path: string, body?: unknown): Promise<{ status: number, body: Json }> {
  const r = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: body === undefined ? { 'x-gateway-console': '1' } : { 'content-type': 'application/json', 'x-gateway-console': '1' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  let b: Json = null
  try { b = await r.json() } catch { b = null }
  return { status: r.status, body: b }
}

const ago = (at: number | null | undefined): string => {
  if (at === null || at === undefined) return 'never'
  const s = Math.max(0, Math.round((Date.now() - at) / 1000))
  return s < 60 ? `${s} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`
}

function chart (title: string, series: Array<{ name: string, values: number[], cls: string }>, unit: string): HTMLElement {
  const W = 300; const H = 80
  const max = Math.max(1e-9, ...series.flatMap(s => s.values))
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg')
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`)
  svg.setAttribute('preserveAspectRatio', 'none')
  for (const s of series) {
    const n = s.values.length
    const pts = s.values.map((v, i) => `${n <= 1 ? W : (i / (n - 1)) * W},${H - (v / max) * (H - 4) - 2}`).join(' ')
    const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline')
    line.setAttribute('points', pts)
    line.setAttribute('class', s.cls)
    svg.append(line)
  }
  const legend = series.map(s => `${s.name} ${fmt(s.values[s.values.length - 1] ?? 0)}`).join(' · ')
  const box = h('figure', { class: 'chart', 'data-chart': title }, h('figcaption', {}, `${title} (max ${fmt(max)} ${unit})`))
  box.append(svg, h('div', { class: 'legend' }, legend))
  return box
}
const fmt = (v: number): string => v >= 100 ? String(Math.round(v)) : String(Math.round(v * 10) / 10)

let state: Json = null
let selected: string | null = null
let detail: Json = null
let sortKey = 'id'
let sortDir = 1
let filter = ''
let notice = ''

function loginView (msg = ''): void {
  const input = h('input', { type: 'password', id: 'token', autocomplete: 'current-password', placeholder: 'API token' }) as HTMLInputElement
  const form = h('form', { id: 'login' }, h('h1', {}, 'iot-gateway console'),
    h('p', {}, 'Log in with the management API token (api.tokenFile, default <dataDir>/api-token).'), input, h('button', { type: 'submit' }, 'Log in'),
    msg !== '' ? h('p', { class: 'err' }, msg) : null)
  form.addEventListener('submit', ev => {
    ev.preventDefault()
    void call('POST', '/console/login', { token: input.value }).then(r => {
      if (r.status === 200) void poll()
      else loginView(r.body?.error ?? `login failed (${r.status})`)
    })
  })
  app.replaceChildren(form)
}

async function poll (): Promise<void> {
  const r = await call('GET', '/console/api/state').catch(() => null)
  if (r === null) { notice = 'gateway not reachable'; if (state !== null) render(); return }
  if (r.status === 401) { state = null; loginView(); return }
  state = r.body
  if (selected !== null) {
    const d = await call('GET', `/console/api/device?id=${encodeURIComponent(selected)}`).catch(() => null)
    detail = d?.status === 200 ? d.body : null
  }
  render()
}

async function act (what: string, body: unknown, confirmText: string): Promise<void> {
  if (!window.confirm(confirmText)) return
  const r = await call('POST', `/console/api/${what}`, body)
  notice = r.status < 300 ? `${what}: done ${JSON.stringify(r.body)}` : `${what} refused (${r.status}): ${r.body?.error ?? ''}`
  await poll()
}

function healthView (s: Json): HTMLElement {
  const hb = s.health
  const sys = s.system ?? {}
  const disk = sys.disk
  const cells: Array<[string, string, boolean]> = [
    ['broker', hb.broker, hb.broker === 'connected'],
    ['uplink', `${hb.uplink}${s.uplink?.lastError ? `: ${s.uplink.lastError}` : ''}`, s.uplink?.lastError == null],
    ['outbox', hb.outbox ? `${hb.outbox.depth} msgs, ${hb.outbox.bytes} B${hb.outbox.full ? ' FULL' : ''}` : '?', !(hb.outbox?.full)],
    ['disk', disk ? `${Math.round(disk.availBytes / 1048576)} MiB free` : 'n/a', !hb.reasons.some((x: string) => x.startsWith('disk'))],
    ['clock', hb.clock ? (hb.clock.synchronised ? 'synchronised' : 'not synchronised') : 'n/a', !hb.reasons.some((x: string) => x.startsWith('clock'))],
    ['temperature', sys.temperatureMax != null ? `${sys.temperatureMax} °C` : 'n/a', !(s.alerts.firing.some((a: Json) => a.rule === 'temperature_high'))]
  ]
  const grid = h('div', { class: 'tiles' })
  for (const [k, v, ok] of cells) grid.append(h('div', { class: `tile ${ok ? 'ok' : 'bad'}`, 'data-health': k }, h('b', {}, k), h('span', {}, v)))
  return h('section', { id: 'health' },
    h('h2', {}, `${s.gateway}: `, h('span', { class: hb.status === 'ok' ? 'ok' : 'bad', id: 'overall' }, hb.status)),
    grid,
    hb.reasons.length > 0 ? h('ul', { id: 'reasons', class: 'err' }, ...hb.reasons.map((x: string) => h('li', {}, x))) : null)
}

function chartsView (s: Json): HTMLElement {
  const hs = s.history as Json[]
  const reasons = [...new Set(hs.flatMap(x => Object.keys(x.refusals)))]
  const sec = h('section', { id: 'charts' }, h('h2', {}, 'Last hour'))
  sec.append(chart('messages/s', [{ name: 'in', values: hs.map(x => x.inRate), cls: 's0' }, { name: 'out', values: hs.map(x => x.outRate), cls: 's1' }], 'msg/s'))
  sec.append(chart('refusals', reasons.length > 0 ? reasons.map((r, i) => ({ name: r, values: hs.map(x => x.refusals[r] ?? 0), cls: `s${i % 4}` })) : [{ name: 'none', values: hs.map(() => 0), cls: 's0' }], 'per 5 s'))
  sec.append(chart('outbox depth', [{ name: 'depth', values: hs.map(x => x.outboxDepth), cls: 's2' }], 'msgs'))
  sec.append(chart('oldest age', [{ name: 'age', values: hs.map(x => x.oldestAgeSeconds), cls: 's3' }], 's'))
  return sec
}

function alertsView (s: Json): HTMLElement {
  const a = s.alerts
  return h('section', { id: 'alerts' }, h('h2', {}, `Alerts (${a.firing.length} firing)`),
    h('ul', { class: 'firing' }, ...a.firing.map((x: Json) => h('li', { class: 'bad', 'data-rule': x.rule }, `${x.rule}: ${x.summary} (since ${ago(x.firedAt)})`))),
    a.resolved.length > 0
      ? h('details', {}, h('summary', {}, `recently resolved (${a.resolved.length})`),
        h('ul', { class: 'resolved' }, ...a.resolved.map((x: Json) => h('li', { 'data-rule': x.rule }, `${x.rule}: resolved ${ago(x.resolvedAt)}`))))
      : null)
}

function devicesView (s: Json): HTMLElement {
  const cols: Array<[string, string]> = [['id', 'device'], ['status', 'status'], ['trust', 'trust'], ['lastSeen', 'last seen'], ['rate', 'msg/s'], ['lastRefusal', 'last refusal']]
  const rows = (s.devices as Json[])
    .filter(d => filter === '' || `${d.id} ${d.status} ${d.lastRefusal ?? ''}`.toLowerCase().includes(filter.toLowerCase()))
    .sort((a, b) => { const x = a[sortKey] ?? -Infinity; const y = b[sortKey] ?? -Infinity; return (x < y ? -1 : x > y ? 1 : 0) * sortDir })
  const head = h('tr', {}, ...cols.map(([k, label]) => {
    const th = h('th', { 'data-sort': k }, label + (sortKey === k ? (sortDir > 0 ? ' ▲' : ' ▼') : ''))
    th.addEventListener('click', () => { if (sortKey === k) sortDir = -sortDir; else { sortKey = k; sortDir = 1 } render() })
    return th
  }))
  const body = h('tbody', {}, ...rows.map(d => {
    const tr = h('tr', { 'data-device': d.id, class: d.status === 'active' ? '' : 'bad' },
      h('td', {}, d.id), h('td', {}, d.status), h('td', {}, d.trust === null ? '100' : String(Math.round(d.trust))),
      h('td', {}, ago(d.lastSeen)), h('td', {}, String(d.rate)), h('td', { class: 'refusal' }, d.lastRefusal ?? ''))
    tr.addEventListener('click', () => { selected = d.id; void poll() })
    return tr
  }))
  const input = h('input', { type: 'search', id: 'filter', placeholder: 'filter', value: filter }) as HTMLInputElement
  input.addEventListener('input', () => { filter = input.value; render(); (document.getElementById('filter') as HTMLInputElement | null)?.focus() })
  return h('section', { id: 'devices' }, h('h2', {}, `Devices (${s.devices.length})`), input,
    h('div', { class: 'scroll' }, h('table', {}, h('thead', {}, head), body)))
}

function deviceView (): HTMLElement | null {
  if (selected === null || detail === null) return null
  const d = detail.device
  const btn = (label: string, fn: () => void): HTMLElement => { const b = h('button', { 'data-action': label }, label); b.addEventListener('click', fn); return b }
  const cmd = h('input', { id: 'command', value: '{"action":"read_now"}' }) as HTMLInputElement
  const certs = detail.certificates as Json[]
  return h('section', { id: 'device' },
    h('h2', {}, `Device ${d.id} `, btn('close', () => { selected = null; detail = null; render() })),
    h('p', {}, `status ${d.status}${d.statusReason ? ` (${d.statusReason})` : ''} · trust ${d.trustScore ?? 100} · held ${d.held} · messages ${d.messages} · refused ${d.rejected}`),
    h('p', {}, `certificate expires ${d.certNotAfter ? new Date(d.certNotAfter).toISOString().slice(0, 10) : 'n/a'} (${certs.length} issued)`),
    h('div', { class: 'actions' },
      d.status === 'quarantined' ? btn('release', () => { void act('release', { device: d.id }, `Release ${d.id}? Its ${d.held} held messages go through the checks again.`) }) : null,
      d.status !== 'revoked' ? btn('revoke', () => { void act('revoke', { device: d.id, reason: 'revoked from the console' }, `Revoke ${d.id}? This cannot be undone.`) }) : null,
      cmd, btn('send command', () => {
        let command: unknown
        try { command = JSON.parse(cmd.value) } catch { notice = 'the command is not JSON'; render(); return }
        void act('command', { device: d.id, command }, `Send ${cmd.value} to ${d.id}?`)
      })),
    h('h3', {}, 'Refusals'), h('ul', { class: 'refusals' }, ...(detail.recentRefusals as Json[]).map(r => h('li', {}, `${ago(r.at)} ${r.reason}: ${r.detail}`))),
    h('h3', {}, 'Recent messages'), h('ul', { class: 'messages' }, ...(detail.messages as Json[]).map(m => h('li', {}, h('code', {}, `${m.stream} ${m.payload}`), ` ${ago(m.at)}`))),
    h('h3', {}, 'Audit'), h('ul', { class: 'audit' }, ...(detail.audit as Json[]).map(a => h('li', { 'data-type': a.type }, `${new Date(a.at).toISOString().slice(0, 19)} ${a.type} (${a.source ?? ''})`))))
}

function pendingView (p: Json): HTMLElement {
  const confirm = h('button', { 'data-action': 'firewall-confirm' }, 'confirm the change')
  confirm.addEventListener('click', () => { void act('firewall-confirm', {}, `Keep firewall change ${p.id}? Unconfirmed, it rolls back at ${new Date(p.deadline).toLocaleTimeString()}.`) })
  return h('p', { class: 'fw-pending' }, `a firewall change (${p.id}) waits for confirmation; unconfirmed, it rolls back at ${new Date(p.deadline).toLocaleTimeString()} `, confirm)
}

function opsView (s: Json): HTMLElement {
  const fw = s.firewall
  const snap = fw?.snapshot
  const retry = h('button', { 'data-action': 'retry' }, 'retry dead letters')
  retry.addEventListener('click', () => { void act('retry', {}, 'Move every dead letter back to the outbox?') })
  return h('section', { id: 'ops' }, h('h2', {}, 'Firewall and tunnel'),
    snap ? h('table', {}, h('tbody', {}, ...snap.counters.map((c: Json) => h('tr', {}, h('td', {}, c.name), h('td', {}, `${c.packets} pkts`), h('td', {}, `${c.bytes} B`))))) : h('p', {}, 'no firewall counters yet (the privileged stats timer writes them)'),
    h('p', {}, `blocklist: ${snap ? (snap.blocklist.length === 0 ? 'empty' : snap.blocklist.map((e: Json) => `${e.address} (${e.expiresSeconds} s)`).join(', ')) : 'n/a'}`),
    fw?.pending ? pendingView(fw.pending) : h('p', {}, 'no firewall change pending'),
    ...(s.wireguard.available
      ? (s.wireguard.peers as Json[]).map(p => h('p', { class: 'wg-peer' }, `WireGuard peer ${String(p.publicKey).slice(0, 8)}… ${p.endpoint ?? ''}: last handshake ${p.latestHandshake === null ? 'never' : ago(p.latestHandshake)}, ${p.rxBytes} B in, ${p.txBytes} B out`))
      : [h('p', { class: 'wg-peer' }, `WireGuard last handshake: not shown: ${s.wireguard.why}`)]),
    h('p', {}, `dead letters: ${s.outbox?.deadLetters ?? 0} `, retry))
}

function render (): void {
  if (state === null) return
  const logout = h('button', { id: 'logout' }, 'log out')
  logout.addEventListener('click', () => { void call('POST', '/console/logout').then(() => { state = null; loginView() }) })
  const filterFocused = document.activeElement?.id === 'filter'
  app.replaceChildren(h('header', {}, h('span', {}, `updated ${new Date(state.at).toISOString().slice(11, 19)}`), logout),
    notice !== '' ? h('p', { id: 'notice' }, notice) : '',
    healthView(state), alertsView(state), chartsView(state), deviceView() ?? '', devicesView(state), opsView(state))
  if (filterFocused) (document.getElementById('filter') as HTMLInputElement | null)?.focus()
}

void call('GET', '/console/session').then(r => { if (r.body?.loggedIn === true) void poll(); else loginView() })
setInterval(() => { if (state !== null && document.visibilityState === 'visible') void poll() }, POLL_MS)
