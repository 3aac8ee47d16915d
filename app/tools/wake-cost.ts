/**
 * What one wake-up of a Node process costs on this machine, printed by the bench next to CPU per
 * message (app/docs/write-path.md, "CPU per message against a bare Node").
 *
 * A child process does the same small unit of work (a message's worth: JSON in and out, a SHA-256, a
 * small Map) back to back, and then once per 1 ms timer, and reports the CPU each unit took in each
 * way. The difference is the wake-up: the timer, epoll, and running cold. At 1,000 msg/s a message
 * that arrives alone pays it; at saturation hundreds share one.
 */
import { execFileSync } from 'node:child_process'

const CHILD = `
const crypto = require('node:crypto')
const msg = JSON.stringify({ epoch: 1, seq: 1, d: 'dev12', t: Date.now(), temp: 21.5, note: 'x'.repeat(60) })
let sink = 0
function unit () {
  const o = JSON.parse(msg); o.seq++; const s = JSON.stringify(o)
  sink += crypto.createHash('sha256').update(s).digest()[0]
  const m = new Map(); for (let i = 0; i < 20; i++) m.set('k' + i, { i, s: s.slice(i) }); sink += m.size
}
for (let i = 0; i < 20000; i++) unit()
const cpu = () => { const c = process.cpuUsage(); return c.user + c.system }
let c0 = cpu()
for (let i = 0; i < 20000; i++) unit()
const burst = (cpu() - c0) / 20000
let n = 0
c0 = cpu()
const tick = () => {
  unit()
  if (++n < 2000) { setTimeout(tick, 1); return }
  console.log(JSON.stringify({ burst, alone: (cpu() - c0) / n, sink }))
}
tick()
`

/** µs of CPU per unit back to back and alone (once per 1 ms timer), and the difference: one wake-up. */
export function wakeCost (): { burstUs: number, aloneUs: number, wakeUs: number } {
  const r = JSON.parse(execFileSync(process.execPath, ['-e', CHILD], { encoding: 'utf8' })) as { burst: number, alone: number }
  return { burstUs: r.burst, aloneUs: r.alone, wakeUs: r.alone - r.burst }
}
