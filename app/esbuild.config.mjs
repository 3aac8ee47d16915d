// Bundles the gateway into one CommonJS file for Node 22. better-sqlite3 stays external: it is the
// one native part and is installed beside the bundle (node_modules/better-sqlite3). The build is
// reproducible: no timestamps, no absolute paths, fixed options; built twice it is byte-identical.
// The layer's recipe runs this same file inside BitBake.
import { build } from 'esbuild'
import { fileURLToPath } from 'node:url'
import { dirname, join } from 'node:path'

const here = dirname(fileURLToPath(import.meta.url))
const outfile = process.env.IOTGW_BUNDLE_OUT ?? join(here, 'dist', 'gateway.cjs')

// The console's page (app/src/console/client): built first, in memory, for browsers, then put into
// the gateway's bundle as two strings; the gateway serves them itself (no CDN, no extra file).
const page = await build({
  absWorkingDir: here,
  entryPoints: ['src/console/client/main.ts', 'src/console/client/style.css'],
  outdir: 'console-out',
  write: false,
  bundle: true,
  platform: 'browser',
  target: ['es2020'],
  format: 'iife',
  minify: true,
  legalComments: 'none',
  sourcemap: false,
  charset: 'utf8',
  logLevel: 'warning'
})
const pageFile = ext => new TextDecoder().decode(page.outputFiles.find(f => f.path.endsWith(ext)).contents)

await build({
  absWorkingDir: here,
  entryPoints: ['src/bin.ts'],
  define: { __CONSOLE_JS__: JSON.stringify(pageFile('.js')), __CONSOLE_CSS__: JSON.stringify(pageFile('.css')) },
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node22',
  format: 'cjs',
  external: ['better-sqlite3'],
  // mqtt.js and others probe optional modules (ws, bufferutil, ...) that the gateway never uses.
  logOverride: { 'require-resolve-not-external': 'silent' },
  banner: { js: '#!/usr/bin/env node' },
  legalComments: 'linked',
  minifySyntax: true,
  keepNames: true,
  sourcemap: false,
  charset: 'utf8',
  metafile: false,
  logLevel: 'warning'
})
