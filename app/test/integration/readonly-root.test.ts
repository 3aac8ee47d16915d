import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { bundlePath } from '../helpers/gateway-process.js'
import { deviceCreds, mosquittoPub } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { waitFor } from '../helpers/ports.js'

/**
 * The image's root is read-only and only /data is writable. Here: a private mount namespace in
 * which every mount is remounted read-only (per mount, so the host is untouched) except the
 * gateway's data directory, and the gateway run as the unit runs it (`iot-gateway run --config`,
 * with the unit's NODE_OPTIONS).
 */
const READ_ONLY_EXCEPT_DATA = `
set -e
data="$1"; shift
mount --make-rprivate /
mount --bind "$data" "$data"
awk '{print $2}' /proc/self/mounts | sort -u | while read -r mp; do
  case "$mp" in "$data"|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
  mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
if touch /etc/.iotgw-rw-probe 2>/dev/null || touch "$data/../rw-probe" 2>/dev/null; then echo "root is writable" >&2; exit 97; fi
exec "$@"
`

/** The NODE_OPTIONS of the image's unit, read from the unit file itself (so the test follows it). */
const UNIT = join(import.meta.dirname, '..', '..', '..', 'meta-iot-gateway', 'recipes-gateway', 'iot-gateway', 'files', 'iot-gateway.service')
const unitNodeOptions = /^Environment="NODE_OPTIONS=([^"]+)"$/m.exec(readFileSync(UNIT, 'utf8'))?.[1]

const skip = process.getuid?.() !== 0 ? 'needs root (mount namespaces)' : false

t.test('read-only root: the gateway runs with only its data directory writable and delivers end to end', { skip }, async t => {
  const s = await startStack(t, {}, { startGateway: false })
  const gw = s.gateway
  ;(gw as unknown as { command: { bin: string, args: string[], env?: NodeJS.ProcessEnv } }).command = {
    bin: 'unshare',
    args: ['--mount', '--propagation', 'private', 'sh', '-c', READ_ONLY_EXCEPT_DATA, 'sh', s.config.gateway.dataDir, process.execPath, bundlePath],
    env: { NODE_OPTIONS: unitNodeOptions ?? '' }
  }
  t.match(unitNodeOptions, /--max-old-space-size=\d+/, 'the unit caps the V8 heap')
  await gw.start()
  const dev = deviceCreds(s.config, 'ro-sensor')
  const payloads = Array.from({ length: 10 }, (_, i) => JSON.stringify({ seq: i + 1, v: i }))
  t.equal((await mosquittoPub(s.broker.lanPort, dev, 'devices/ro-sensor/telemetry', payloads)).code, 0)
  await waitFor(() => s.cloud.unique().size === 10, 'ten messages at the cloud')
  t.same([...s.cloud.unique().values()].map(m => JSON.stringify(m.payload)), payloads)
  // Prove the namespace really was read-only: the same script, with a command that writes outside /data.
  let writable = true
  try {
    execFileSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', READ_ONLY_EXCEPT_DATA, 'sh', s.config.gateway.dataDir, 'sh', '-c', `touch ${join(s.dir, 'outside-data')} && touch ${join(s.config.gateway.dataDir, 'inside-data')}`], { stdio: 'pipe' })
  } catch { writable = false }
  t.equal(writable, false, 'writing outside the data directory fails in that namespace')
  execFileSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', READ_ONLY_EXCEPT_DATA, 'sh', s.config.gateway.dataDir, 'touch', join(s.config.gateway.dataDir, 'inside-data')])
  t.pass('writing inside the data directory works')
  t.equal(await gw.stop('SIGTERM'), 0, 'clean stop')
})
