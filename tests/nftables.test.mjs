// The static fail-closed ruleset the image ships (/etc/iot-gateway/fallback.nft, loaded only when
// the rendered ruleset could not be applied) passes `nft -c` in a fresh network namespace, loads
// there, and really closes the input side: from a second namespace, a TCP port that is open in
// the first is unreachable while the ruleset is loaded and reachable without it.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { t, LAYER, run, which, isRoot } from './helpers.mjs'

const RULES = join(LAYER, 'recipes-gateway', 'iot-gateway', 'files', 'fallback.nft')
const nft = which('nft')
const ip = which('ip')
const skip = !isRoot ? 'network namespaces need root' : !nft ? 'nft is not installed (Debian: apt install nftables)' : !ip ? 'ip (iproute2) is not installed' : false

function netns (t, name) {
  run(ip, ['netns', 'del', name])
  const r = run(ip, ['netns', 'add', name])
  if (r.status !== 0) return r.stderr
  t.teardown(() => run(ip, ['netns', 'del', name]))
  return null
}
const inNs = (ns, cmd, args, opts) => run(ip, ['netns', 'exec', ns, cmd, ...args], opts)

t.test('fallback.nft: syntax and semantics check in a fresh namespace', { skip }, t => {
  const ns = `iotgw-nftc-${process.pid}`
  const err = netns(t, ns)
  if (err) return t.skip(`cannot create a network namespace: ${err.trim()}`)
  const c = inNs(ns, nft, ['-c', '-f', RULES])
  t.equal(c.status, 0, 'nft -c:\n' + c.stderr)
  const bad = inNs(ns, nft, ['-c', '-f', '-'], { input: readFileSync(RULES, 'utf8').replace('policy drop;', 'policy dorp;') })
  t.not(bad.status, 0, 'nft -c rejects a broken ruleset (the check can fail)')
  const load = inNs(ns, nft, ['-f', RULES])
  t.equal(load.status, 0, 'loads:\n' + load.stderr)
  const listed = inNs(ns, nft, ['list', 'ruleset']).stdout
  t.match(listed, /table inet iot_gateway_fallback/)
  t.match(listed, /hook input priority filter; policy drop;/)
  t.match(listed, /hook forward priority filter; policy drop;/)
  t.match(listed, /iifname "eth0" udp dport 51820 accept/, 'WireGuard from the WAN')
  t.match(listed, /iifname "wg0" tcp dport \{ 22, 8080 \}/, 'management only through the tunnel')
  t.notMatch(listed, /8883|5683/, 'no device traffic while failed closed')
  t.end()
})

t.test('fallback.nft drops inbound connections from another namespace', { skip, timeout: 60000 }, async t => {
  const a = `iotgw-fwa-${process.pid}`
  const b = `iotgw-fwb-${process.pid}`
  for (const ns of [a, b]) {
    const err = netns(t, ns)
    if (err) return t.skip(`cannot create a network namespace: ${err.trim()}`)
  }
  const va = `iotgwa${process.pid % 10000}`
  const vb = `iotgwb${process.pid % 10000}`
  const steps = [
    [ip, ['link', 'add', va, 'type', 'veth', 'peer', 'name', vb]],
    [ip, ['link', 'set', va, 'netns', a]],
    [ip, ['link', 'set', vb, 'netns', b]],
    [ip, ['-n', a, 'link', 'set', va, 'name', 'eth0']],
    [ip, ['-n', a, 'addr', 'add', '10.251.0.1/24', 'dev', 'eth0']],
    [ip, ['-n', a, 'link', 'set', 'eth0', 'up']],
    [ip, ['-n', a, 'link', 'set', 'lo', 'up']],
    [ip, ['-n', b, 'addr', 'add', '10.251.0.2/24', 'dev', vb]],
    [ip, ['-n', b, 'link', 'set', vb, 'up']]
  ]
  for (const [cmd, args] of steps) {
    const r = run(cmd, args)
    if (r.status !== 0) return t.skip(`cannot set up veth pair: ${args.join(' ')}: ${r.stderr.trim()}`)
  }
  // a listener in namespace a (node, so nothing else is needed), probed from namespace b
  const server = 'require(\'net\').createServer(s => s.end(\'hi\')).listen(8883, \'0.0.0.0\', () => console.log(\'up\'))'
  const { spawn } = await import('node:child_process')
  const srv = spawn(ip, ['netns', 'exec', a, process.execPath, '-e', server], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => srv.kill('SIGKILL'))
  await new Promise(resolve => srv.stdout.once('data', resolve))
  const probe = `const s = require('net').connect(8883, '10.251.0.1'); s.setTimeout(1500);
    s.on('data', () => { console.log('open'); process.exit(0) }); s.on('timeout', () => { console.log('filtered'); process.exit(0) });
    s.on('error', e => { console.log(e.code); process.exit(0) })`
  const before = inNs(b, process.execPath, ['-e', probe]).stdout.trim()
  t.equal(before, 'open', 'without a ruleset the port answers')
  t.equal(inNs(a, nft, ['-f', RULES]).status, 0, 'ruleset loaded')
  const after = inNs(b, process.execPath, ['-e', probe]).stdout.trim()
  t.equal(after, 'filtered', 'with fallback.nft the port is dropped (no answer, not even a reset)')
})
