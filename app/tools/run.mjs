// `npm run bench` / `npm run demo`: bundles tools/<name>.ts (TypeScript that shares the test
// helpers) with esbuild and runs it with this Node. Arguments after the name go to the tool.
import { build } from 'esbuild'
import { spawnSync } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const app = join(dirname(fileURLToPath(import.meta.url)), '..')
const name = process.argv[2]
if (name !== 'bench' && name !== 'demo') { console.error('usage: node tools/run.mjs bench|demo [args]'); process.exit(2) }
const out = join(app, 'node_modules', '.cache', 'iot-gateway-tools', `${name}.mjs`)
mkdirSync(dirname(out), { recursive: true })
await build({ entryPoints: [join(app, 'tools', `${name}.ts`)], outfile: out, bundle: true, platform: 'node', target: 'node22', format: 'esm', external: ['better-sqlite3'],
  // The helpers are ESM (import.meta.url); bundled CommonJS dependencies still need a require.
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" }, logLevel: 'warning', logOverride: { 'require-resolve-not-external': 'silent' } })
const r = spawnSync(process.execPath, [out, ...process.argv.slice(3)], { stdio: 'inherit', cwd: app })
process.exitCode = r.status ?? 1
