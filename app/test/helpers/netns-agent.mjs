// Runs inside a test network namespace (`ip netns exec NS node netns-agent.mjs MODE JSON`).
//   listen {tcp:[ports], udp:[ports]}           TCP: accept and write "ok"; UDP: answer "ok". Prints "ready".
//   probe  {host, tcp:[ports], udp:[ports], timeoutMs}
//          prints {tcp:{port:result}, udp:{port:result}}: open (answered), closed (RST / ICMP unreachable:
//          reached the host, nothing listening), filtered (no answer: dropped).
//   burst  {host, port, count, timeoutMs}        count connections at once; prints {open: n, filtered: m, ...}
//   http   {url, timeoutMs}                      prints {status, body} or {error}
import { createServer, connect } from 'node:net'
import { createSocket } from 'node:dgram'

const [mode, arg] = process.argv.slice(2)
const o = JSON.parse(arg ?? '{}')

function probeTcp (host, port, timeoutMs) {
  return new Promise(resolve => {
    const s = connect({ host, port })
    const done = r => { clearTimeout(t); s.destroy(); resolve(r) }
    const t = setTimeout(() => done('filtered'), timeoutMs)
    s.once('connect', () => done('open'))
    s.once('error', e => done(e.code === 'ECONNREFUSED' ? 'closed' : e.code === 'EHOSTUNREACH' ? 'filtered' : `error:${e.code}`))
  })
}

function probeUdp (host, port, timeoutMs) {
  return new Promise(resolve => {
    const s = createSocket(host.includes(':') ? 'udp6' : 'udp4')
    const done = r => { clearTimeout(t); try { s.close() } catch {} resolve(r) }
    const t = setTimeout(() => done('filtered'), timeoutMs)
    s.once('message', () => done('open'))
    s.once('error', e => done(e.code === 'ECONNREFUSED' ? 'closed' : `error:${e.code}`))
    s.connect(port, host, err => {
      if (err) return done(`error:${err.code}`)
      s.send('probe')
      // A second datagram in case the first one raced the ARP resolution.
      setTimeout(() => { try { s.send('probe') } catch {} }, Math.min(200, timeoutMs / 3))
    })
  })
}

if (mode === 'listen') {
  const servers = []
  for (const port of o.tcp ?? []) {
    servers.push(new Promise((resolve, reject) => {
      const srv = createServer(c => { c.on('error', () => {}); c.end('ok\n') })
      srv.once('error', reject)
      srv.listen(port, '0.0.0.0', resolve)
    }))
  }
  for (const port of o.udp ?? []) {
    servers.push(new Promise((resolve, reject) => {
      const s = createSocket({ type: 'udp4', reuseAddr: false })
      s.on('message', (_m, rinfo) => s.send('ok', rinfo.port, rinfo.address))
      s.once('error', reject)
      s.bind(port, '0.0.0.0', resolve)
    }))
  }
  Promise.all(servers).then(() => process.stdout.write('ready\n'), e => { process.stderr.write(`listen failed: ${e.message}\n`); process.exit(1) })
} else if (mode === 'probe') {
  const timeoutMs = o.timeoutMs ?? 800
  const out = { tcp: {}, udp: {} }
  await Promise.all([
    ...(o.tcp ?? []).map(async p => { out.tcp[p] = await probeTcp(o.host, p, timeoutMs) }),
    ...(o.udp ?? []).map(async p => { out.udp[p] = await probeUdp(o.host, p, timeoutMs) })
  ])
  process.stdout.write(JSON.stringify(out) + '\n')
} else if (mode === 'burst') {
  // count TCP connections to one port at once: how many got through
  const results = await Promise.all(Array.from({ length: o.count }, () => probeTcp(o.host, o.port, o.timeoutMs ?? 800)))
  const tally = {}
  for (const r of results) tally[r] = (tally[r] ?? 0) + 1
  process.stdout.write(JSON.stringify(tally) + '\n')
} else if (mode === 'http') {
  try {
    const r = await fetch(o.url, { signal: AbortSignal.timeout(o.timeoutMs ?? 2000) })
    process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() }) + '\n')
  } catch (e) {
    process.stdout.write(JSON.stringify({ error: e.cause?.code ?? e.name }) + '\n')
  }
  // A connection attempt that the firewall drops would keep the process alive for minutes.
  process.exit(0)
} else {
  process.stderr.write(`unknown mode ${mode}\n`)
  process.exit(2)
}
