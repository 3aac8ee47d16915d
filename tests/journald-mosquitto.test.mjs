// The broker's journal namespace (recipes-connectivity/mosquitto/files/journald-mosquitto.conf,
// installed as journald@mosquitto.conf.d/10-iot-gateway.conf), read by a real systemd-journald
// instance for the namespace "mosquitto" in a private mount namespace (its own /run, /etc/systemd
// and /var/log/journal): 30 MB of broker-like lines as fast as a flood can send them. The journal
// must stay in RAM (/run/log/journal), within its 16 MB, keep the newest lines and drop none of
// them to rate limiting; the same flood against journald's defaults shows the check can fail (the
// journal goes to /var/log/journal).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, LAYER, isRoot, run, which } from './helpers.mjs'

const CONF = join(LAYER, 'recipes-connectivity', 'mosquitto', 'files', 'journald-mosquitto.conf')
const JOURNALD = ['/lib/systemd/systemd-journald', '/usr/lib/systemd/systemd-journald'].find(p => run('test', ['-x', p]).status === 0)

const SCRIPT = String.raw`
set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /etc/systemd
mkdir -p /etc/systemd/journald@mosquitto.conf.d /var/log/journal
cp "$CONF" /etc/systemd/journald@mosquitto.conf.d/10-iot-gateway.conf
mount -t tmpfs tmpfs /var/log/journal
"$JOURNALD" mosquitto 2>/dev/null &
jp=$!
for i in $(seq 100); do [ -S /run/systemd/journal.mosquitto/dev-log ] && break; sleep 0.1; done
python3 - <<'PY'
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
pad = b'x' * 1000
for i in range(30000):
    s.sendto(b'<15>mosquitto[42]: Received PUBLISH from dev-%d %s' % (i, pad), '/run/systemd/journal.mosquitto/dev-log')
PY
sleep 1
echo "lines $(journalctl --namespace=mosquitto --no-pager -o cat | grep -c '^Received PUBLISH' || true)"
echo "last $(journalctl --namespace=mosquitto --no-pager -o cat -n 1 | cut -c1-40)"
echo "suppressed $(journalctl --namespace=mosquitto --no-pager -o cat | grep -c 'Suppressed' || true)"
echo "run_kb $(du -sk /run/log/journal 2>/dev/null | cut -f1)"
echo "var_kb $(du -sk /var/log/journal | cut -f1)"
kill $jp
`

const missing = ['unshare', 'journalctl', 'python3'].filter(c => which(c) === null)
const skip = !isRoot
  ? 'needs root (a private mount namespace for a journald instance)'
  : JOURNALD === undefined
    ? 'systemd-journald is not installed'
    : missing.length > 0 ? `not installed: ${missing.join(', ')}` : false

function flood (t, conf) {
  const r = run('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', SCRIPT], { env: { ...process.env, CONF: conf, JOURNALD }, timeout: 120_000 })
  t.equal(r.status, 0, r.stderr)
  const out = Object.fromEntries(r.stdout.split('\n').filter(Boolean).map(l => [l.split(' ')[0], l.slice(l.indexOf(' ') + 1)]))
  return { lines: Number(out.lines), last: out.last ?? '', suppressed: Number(out.suppressed), runKb: Number(out.run_kb || 0), varKb: Number(out.var_kb || 0) }
}

t.test('the broker\'s journal namespace: in RAM, bounded, no line lost to rate limiting', { skip }, t => {
  const r = flood(t, CONF)
  t.equal(r.varKb, 0, 'nothing on persistent storage (Storage=volatile)')
  t.ok(r.runKb > 1024, `the journal is in /run/log/journal (${r.runKb} KiB)`)
  t.ok(r.runKb <= 16 * 1024 + 512, `and within RuntimeMaxUse=16M (${r.runKb} KiB for 30 MB of lines)`)
  t.equal(r.suppressed, 0, 'no "Suppressed N messages" (RateLimitIntervalSec=0)')
  t.match(r.last, /^Received PUBLISH from dev-29999 /, 'the newest line is kept (older ones rotate out)')
  t.ok(r.lines > 5000 && r.lines < 30000, `rotation keeps a window of the newest lines (${r.lines})`)
  t.end()
})

t.test('the check can fail: journald\'s defaults keep the namespace on persistent storage', { skip }, t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-journald-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'empty.conf'), '[Journal]\n')
  const r = flood(t, join(dir, 'empty.conf'))
  t.ok(r.varKb > 1024, `defaults: the namespace journal goes to /var/log/journal (${r.varKb} KiB)`)
  t.end()
})
