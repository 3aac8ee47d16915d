import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Stack } from './env.js'
import { waitFor } from './ports.js'

/** A fake kernel tree the gateway's monitor reads (monitor.root). */
export function fakeRoot (dir: string): { root: string, set: (files: Record<string, string>) => void } {
  const root = join(dir, 'root')
  const set = (files: Record<string, string>): void => {
    for (const [p, text] of Object.entries(files)) { mkdirSync(dirname(join(root, p)), { recursive: true }); writeFileSync(join(root, p), text) }
  }
  set({
    'proc/stat': 'cpu  100 0 0 900 0 0 0 0\ncpu0 100 0 0 900 0 0 0 0\n',
    'proc/loadavg': '0.10 0.10 0.10 1/100 1\n',
    'proc/meminfo': 'MemTotal: 1000000 kB\nMemAvailable: 800000 kB\n',
    'proc/self/status': 'Name:\tnode\nVmRSS:\t1000 kB\n',
    'sys/class/thermal/thermal_zone0/temp': '45000\n',
    'sys/devices/platform/soc/soc:firmware/get_throttled': '0x0\n'
  })
  return { root, set }
}

export const FAST = { intervalSeconds: 1 }
export const count = (s: Stack, rule: string, state: string): number => s.cloud.alerts.filter(a => a.rule === rule && a.state === state).length
export const firing = async (s: Stack, rule: string): Promise<number> => {
  const line = (await s.gateway.get('/metrics')).text.split('\n').find(l => l.startsWith(`gateway_alerts_firing{rule="${rule}",`))
  return line ? Number(line.split(' ').pop()) : NaN
}
/** Waits until the gateway has taken `n` more samples (each followed by an evaluation): the barrier for "nothing else happened". */
export async function evaluations (s: Stack, n: number): Promise<void> {
  const from = await s.gateway.metric('gateway_monitor_samples_total')
  await waitFor(async () => await s.gateway.metric('gateway_monitor_samples_total') >= from + n, `${n} more monitor samples`)
}
