// `node tools/console-cost.mjs …`: bundles tools/console-cost.ts (a module; `npm run bench` prints the same
// figures) with esbuild, as tools/run.mjs does for the bench, and prints its row as JSON.
import { build } from 'esbuild'
import { spawnSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const app = join(dirname(fileURLToPath(import.meta.url)), '..')
const out = join(app, 'node_modules', '.cache', 'iot-gateway-tools', 'console-cost.mjs')
await build({
  stdin: { contents: 'import { consoleCost } from \'./console-cost.ts\'; console.log(JSON.stringify(await consoleCost(...process.argv.slice(2, 5).map(Number))))', resolveDir: join(app, 'tools'), loader: 'ts' },
  outfile: out,
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'esm',
  external: ['better-sqlite3', 'playwright-core'],
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: 'warning',
  logOverride: { 'require-resolve-not-external': 'silent' }
})
const r = spawnSync(process.execPath, [out, ...process.argv.slice(2)], { stdio: 'inherit', cwd: app })
process.exitCode = r.status ?? 1
