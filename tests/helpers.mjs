// Shared helpers of the system-level tests in tests/ (not a test file itself).
// The tests run from app/ with NODE_PATH=app/node_modules; ESM `import` does not honour NODE_PATH,
// so packages from there are loaded with a require() made here.
import { createRequire } from 'node:module'
import { spawnSync } from 'node:child_process'
import { connect, createServer } from 'node:net'
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const require = createRequire(import.meta.url)
export const t = require('tap')

/** The repository checkout (tests/..), and the `shared` folder that sits beside it. */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..')
export const SHARED = resolve(REPO, '..', 'shared')
export const LAYER = join(REPO, 'meta-iot-gateway')

/** Run a command; returns { status, stdout, stderr } (status null when it could not start). */
export function run (cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts })
  return { status: r.error ? null : r.status, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? String(r.error) : '') }
}

/** Path of an executable on PATH (or in the sbin folders, which a non-root PATH may lack), or null. */
export function which (name) {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/bin', '/bin'])
  for (const d of dirs) if (d && existsSync(join(d, name))) return join(d, name)
  return null
}

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0

/** A TCP port on 127.0.0.1 that is free right now. */
export function freePort () {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)) })
  })
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
export function listening (port) {
  return new Promise(resolve => {
    const s = connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

/** Mosquitto 2.x's own unit (service/systemd/mosquitto.service.notify), as the wrynose recipe installs it: the base the layer's drop-ins extend. */
export const MOSQUITTO_UPSTREAM_UNIT = `[Unit]
Description=Mosquitto MQTT Broker
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
ExecStartPre=/bin/mkdir -m 740 -p /var/log/mosquitto
ExecStartPre=/bin/chown mosquitto /var/log/mosquitto

[Install]
WantedBy=multi-user.target
`

/**
 * A root for `systemd-analyze verify --root=`: the host's units (the targets and services ours are
 * ordered against), then `units` (name -> text, e.g. upstream units the host lacks), and each path of
 * `stubs` as an executable that exits 0. Removed with the test.
 */
export function unitRoot (t, prefix, units, stubs) {
  const root = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const unitDir = join(root, 'usr/lib/systemd/system')
  mkdirSync(unitDir, { recursive: true })
  for (const dir of ['/usr/lib/systemd/system', '/lib/systemd/system']) {
    if (!existsSync(dir)) continue
    for (const f of readdirSync(dir)) {
      const p = join(dir, f)
      try { if (statSync(p).isFile() && !existsSync(join(unitDir, f))) copyFileSync(p, join(unitDir, f)) } catch {}
    }
  }
  for (const [name, text] of Object.entries(units)) writeFileSync(join(unitDir, name), text)
  for (const exe of stubs) {
    mkdirSync(join(root, dirname(exe)), { recursive: true })
    writeFileSync(join(root, exe), '#!/bin/sh\nexit 0\n')
    chmodSync(join(root, exe), 0o755)
  }
  return { root, unitDir }
}
