// `npm run bench` / `npm run demo`: bundles tools/<name>.ts (TypeScript that shares the test
// helpers) with esbuild and runs it with this Node. Arguments after the name go to the tool.
// `node tools/run.mjs monitor-cost [samples]` and `… console-cost [seconds] [devices] [msg/s per
// device]` print, as JSON, the rows that `npm run bench` ends with (tools/monitor-cost.ts and
// console-cost.ts are modules the bench imports).
import { build } from 'esbuild'
import { spawn } from 'node:child_process'
import { constants } from 'node:os'
import { mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const app = join(dirname(fileURLToPath(import.meta.url)), '..')
const name = process.argv[2]
const ROWS = {
  'monitor-cost': "import { monitorCost } from './monitor-cost.ts'; console.log(JSON.stringify(monitorCost(Number(process.argv[2] ?? 2000))))",
  'console-cost': "import { consoleCost } from './console-cost.ts'; console.log(JSON.stringify(await consoleCost(...process.argv.slice(2, 5).map(Number))))"
}
if (name !== 'bench' && name !== 'demo' && !(name in ROWS)) { console.error('usage: node tools/run.mjs bench|demo|monitor-cost|console-cost [args]'); process.exit(2) }
const out = join(app, 'node_modules', '.cache', 'iot-gateway-tools', `${name}.mjs`)
mkdirSync(dirname(out), { recursive: true })
await build({
  ...(name in ROWS
    ? { stdin: { contents: ROWS[name], resolveDir: join(app, 'tools'), loader: 'ts' } }
    : { entryPoints: [join(app, 'tools', `${name}.ts`)] }),
  outfile: out,
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'esm',
  external: ['better-sqlite3', 'playwright-core'],
  // The helpers are ESM (import.meta.url); bundled CommonJS dependencies still need a require.
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: 'warning',
  logOverride: { 'require-resolve-not-external': 'silent' }
})
// Not spawnSync: a signal sent to this process (kill <pid>, SIGUSR1 in the demo) is passed on, so the
// tool cleans up after itself instead of being orphaned.
const child = spawn(process.execPath, [out, ...process.argv.slice(3)], { stdio: 'inherit', cwd: app })
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGUSR1']) process.on(sig, () => { child.kill(sig) })
child.on('exit', (code, signal) => { process.exitCode = code ?? (signal ? 128 + constants.signals[signal] : 1) })
