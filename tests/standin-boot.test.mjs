// The layer's units, configuration and gateway booted together on the arm64 stand-in
// (scripts/standin.sh; what differs from the image: tests/STANDIN.md): a real arm64 kernel and
// systemd under qemu-system-aarch64, probed from the host through QEMU's user-mode networks and
// driven over the serial console.
//   1. multi-user with no failed unit; read-only root; /data writable; first boot made the CA,
//      keys and WireGuard key with their owners and modes;
//   2. the firewall on the real kernel: from the host, only what the policy admits on that
//      interface answers (the others are dropped: the guest's nft counters say so);
//   3. a device enrolled with the CLI inside the VM publishes MQTT/TLS from the host; the messages
//      reach an HTTPS cloud on the host (10.0.2.2);
//   4. power cut under load: QoS 1 at a steady rate while the cloud answers 503, SIGKILL of QEMU,
//      boot again, the cloud accepts: every message the gateway had taken into its outbox is
//      delivered; the messages the broker had acknowledged but only held in memory are counted;
//   5. a clean reboot changes nothing: same identity, outbox empty, first boot does no work;
//   6. the gateway's idle CPU and RSS inside the VM (reported, not asserted: TCG is not a Pi).
// Opt-in for now (IOTGW_STANDIN_BOOT=1): on the loaded 2-core CI machine a warm run takes about
// 25 minutes (three emulated boots of 5-8 minutes each), more than the whole suite's 20-minute
// budget, and the boot test has not yet passed against the four-partition A/B layout. Once opted
// in, it is skipped with the reason when QEMU/binfmt are unavailable, and with CI set that is a
// failure. A cold run builds the root file system first (~16 min, cached under ~/.cache).
//   IOTGW_STANDIN_BOOT=1 scripts/test.sh        (or run this file alone with tap --timeout=0)
import { spawn } from 'node:child_process'
import { connect as tlsConnect } from 'node:tls'
import { connect as netConnect } from 'node:net'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, appendFileSync, copyFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, run, freePort, require } from './helpers.mjs'

const STANDIN = join(REPO, 'scripts', 'standin.sh')
const optedIn = process.env.IOTGW_STANDIN_BOOT === '1'
const check = optedIn ? run('bash', [STANDIN, 'check']) : { status: 0, stdout: '', stderr: '' }
const why = check.status === 0 ? false : `the arm64 stand-in cannot run here: ${(check.stdout + check.stderr).trim()}`


/** QEMU with the stand-in; the serial console as a line protocol (root is logged in there). */
class VM {
  constructor (dir, args, logFile) {
    this.dir = dir
    this.args = args
    this.logFile = logFile
    this.out = ''
    this.seq = 0
    this.exited = null
  }

  start (label) {
    this.out = ''
    this.label = label
    const child = spawn('bash', [STANDIN, 'boot', '--out', this.dir, ...this.args], { stdio: ['pipe', 'pipe', 'pipe'] })
    this.child = child
    this.exited = new Promise(resolve => child.once('exit', (code, signal) => resolve({ code, signal })))
    this.done = false
    this.exited.then(() => { this.done = true; this.wake() })
    const onData = d => {
      const s = d.toString('utf8').replace(/\r/g, '')
      this.out += s
      appendFileSync(this.logFile, s)
      this.wake()
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    this.waiters = new Set()
  }

  wake () { for (const w of this.waiters) w() }

  /** Resolves with the match of `re` in the console output after `from`; rejects on exit or timeout. */
  waitFor (re, what, timeoutMs, from = 0) {
    return new Promise((resolve, reject) => {
      const started = Date.now()
      let lastReport = started
      const tick = setInterval(() => {
        // progress for a person watching: the last console line
        const line = this.out.trimEnd().split('\n').pop()?.slice(0, 120) ?? ''
        t.comment(`[${this.label}] waiting for ${what} (${Math.round((Date.now() - started) / 1000)} s): ${line}`)
        lastReport = Date.now()
      }, 15000)
      const timer = setTimeout(() => finish(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}; console tail:\n${this.out.slice(-3000)}`)), timeoutMs)
      const finish = (err, m) => {
        clearInterval(tick); clearTimeout(timer); this.waiters.delete(check)
        if (err) reject(err); else resolve(m)
      }
      const check = () => {
        const m = re.exec(this.out.slice(from))
        if (m) finish(null, m)
        else if (this.done) finish(new Error(`QEMU exited while waiting for ${what}; console tail:\n${this.out.slice(-3000)}`))
      }
      void lastReport
      this.waiters.add(check)
      check()
    })
  }

  /** Waits for the autologin shell and makes it a quiet command channel. */
  async login (timeoutMs) {
    await this.waitFor(/root@standin[^\n]*# $/m, 'the root shell on the serial console', timeoutMs)
    this.child.stdin.write('stty -echo; PS1=; PS2=; dmesg -n 1; kill -s RTMIN+21 1; export SYSTEMD_COLORS=0 SYSTEMD_PAGER= TERM=dumb\n')
    await this.sh('true')
  }

  /** Runs a shell command on the console; { code, out }. */
  async sh (cmd, timeoutMs = 120000) {
    const id = ++this.seq
    const from = this.out.length
    this.child.stdin.write(`printf '@@B%s@@\\n' ${id}; ( ${cmd} ) 2>&1; printf '@@E%s %s@@\\n' ${id} $?\n`)
    const m = await this.waitFor(new RegExp(`@@B${id}@@\\n([\\s\\S]*?)@@E${id} (\\d+)@@`), `\`${cmd.slice(0, 60)}\``, timeoutMs, from)
    return { code: Number(m[2]), out: m[1] }
  }

  /** A command that must succeed; its output. */
  async ok (tt, cmd, timeoutMs) {
    const r = await this.sh(cmd, timeoutMs)
    if (r.code !== 0) tt.fail(`\`${cmd}\` exited ${r.code}: ${r.out}`)
    return r.out
  }

  async powerCut () {
    this.child.kill('SIGKILL')
    await this.exited
  }

  async poweroff () {
    this.child.stdin.write('systemctl poweroff\n')
    const r = await Promise.race([this.exited, new Promise(resolve => setTimeout(() => resolve(null), 180000))])
    if (!r) throw new Error('the stand-in did not power off within 180 s')
    return r
  }
}

/** What a host-side TCP client gets from a forwarded port: the TLS handshake or an HTTP answer. */
function tlsAnswers (port, opts = {}) {
  return new Promise(resolve => {
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts })
    s.once('secureConnect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
    s.once('close', () => resolve(false))
  })
}

async function main () {
  const { Cloud } = await import('../app/test/helpers/cloud.ts')
  const { waitFor } = await import('../app/test/helpers/ports.ts')
  const mqtt = require('mqtt')
  const tmp = mkdtempSync(join(tmpdir(), 'standin-'))
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }))
  const out = process.env.STANDIN_OUT || join(tmp, 'vm')
  const logFile = join(tmp, 'console.log')
  t.comment(`serial console log: ${logFile}`)

  // The cloud on the host; the gateway reaches it as 10.0.2.2 (QEMU's user network).
  const cloud = new Cloud(tmp)
  await cloud.start()
  t.teardown(() => cloud.stop())
  const port = new URL(cloud.url).port
  const trust = join(tmp, 'trust')
  mkdirSync(trust)
  copyFileSync(cloud.caFile, join(trust, 'cloud-ca.pem'))

  t.comment('building the stand-in (cold: the root file system takes ~15 min under emulation)')
  // the management tunnel configured as in a deployment (the hub itself is not needed: the key,
  // the interface and the firewall's wg zone are what the boot makes)
  const hubKey = run('sh', ['-c', 'wg genkey | wg pubkey']).stdout.trim()
  const build = spawn('bash', [STANDIN, 'build', '--out', out,
    '--set', `IOT_GATEWAY_CLOUD_URL=https://10.0.2.2:${port}/ingest`, '--set', `IOT_GATEWAY_TRUST_DIR=${trust}`,
    '--set', 'IOT_GATEWAY_WG_ADDRESS=10.200.0.2/24', '--set', 'IOT_GATEWAY_WG_HUB_ENDPOINT=10.0.2.2:51820',
    '--set', `IOT_GATEWAY_WG_HUB_PUBLIC_KEY=${hubKey}`, '--set', 'IOT_GATEWAY_WG_HUB_ALLOWED_IPS=10.200.0.1/32'],
  { stdio: ['ignore', 'inherit', 'pipe'] })
  let buildErr = ''
  build.stderr.on('data', d => { buildErr += d; for (const l of String(d).split('\n')) if (/^(standin|I:|E:|W:)/.test(l)) t.comment(l.slice(0, 200)) })
  const code = await new Promise(resolve => build.once('exit', resolve))
  if (code !== 0) { t.fail(`standin.sh build exited ${code}:\n${buildErr.slice(-4000)}`); return }
  const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'))
  t.ok(manifest.recipes.includes('iot-gateway') && manifest.enable.includes('iot-gateway.service'), `the layer's recipes were installed: ${manifest.recipes.join(', ')}`)

  const wan = { mqtt: await freePort(), api: await freePort(), ssh: await freePort() }
  const lan = { mqtt: await freePort(), api: await freePort() }
  const vm = new VM(out, [
    '--wan-fwd', `tcp::${wan.mqtt}-:8883`, '--wan-fwd', `tcp::${wan.api}-:8080`, '--wan-fwd', `tcp::${wan.ssh}-:22`,
    '--lan-fwd', `tcp::${lan.mqtt}-:8883`, '--lan-fwd', `tcp::${lan.api}-:8080`
  ], logFile)
  t.teardown(() => { if (vm.child && !vm.done) vm.child.kill('SIGKILL') })

  const bootUp = async (label) => {
    vm.start(label)
    await vm.login(10 * 60 * 1000)
    const state = await vm.sh('systemctl is-system-running --wait', 10 * 60 * 1000)
    return state.out.trim()
  }
  const identity = async () => (await vm.sh('sha256sum /data/iot-gateway/pki/ca.crt /data/iot-gateway/pki/ca.key /data/iot-gateway/pki/broker.key && wg pubkey < /data/wireguard/private.key && stat -c "%Y %n" /data/iot-gateway/pki/ca.crt /data/wireguard/private.key')).out
  const outboxStats = async () => {
    const r = await vm.sh('runuser -u iot-gateway -- iot-gateway outbox stats --json')
    return JSON.parse(r.out.slice(r.out.indexOf('{')))
  }

  // ---- 1. first boot
  let firstIdentity = ''
  await t.test('first boot: multi-user, no failed unit, read-only root, identity on /data', async t => {
    const state = await bootUp('boot 1')
    const failed = await vm.sh('systemctl list-units --failed --no-legend --plain')
    t.equal(failed.out.trim(), '', 'no failed unit')
    for (const unit of failed.out.split('\n').map(l => l.split(' ')[0]).filter(u => u.endsWith('.service'))) {
      t.comment(`${unit}:\n${(await vm.sh(`journalctl -b -u ${unit} --no-pager -o cat | tail -20`)).out}`)
    }
    t.equal(state, 'running', 'systemctl is-system-running')
    t.match(await vm.ok(t, 'systemctl get-default; systemctl is-active multi-user.target'), /multi-user\.target\nactive/, 'multi-user.target reached')
    t.match(await vm.ok(t, 'findmnt -no OPTIONS /'), /^ro[,\n]/, 'the root is mounted read-only')
    t.not((await vm.sh('touch /usr/standin-probe')).code, 0, 'the root cannot be written')
    t.match(await vm.ok(t, 'findmnt -no SOURCE,OPTIONS /data'), /rw,nosuid,nodev,noexec/, '/data is mounted rw,nosuid,nodev,noexec')
    await vm.ok(t, 'touch /data/standin-probe && rm /data/standin-probe')
    const modes = await vm.ok(t, 'stat -c "%n %a %U:%G" /data/iot-gateway /data/iot-gateway/pki /data/iot-gateway/pki/ca.key /data/iot-gateway/pki/broker.key /data/iot-gateway/pki/ca.crt /data/iot-gateway/mosquitto /data/iot-gateway/mosquitto/acl /data/wireguard /data/wireguard/private.key')
    t.comment(modes)
    for (const [path, mode] of [
      ['/data/iot-gateway', '710 iot-gateway:iot-pki'],
      ['/data/iot-gateway/pki', '2750 iot-gateway:iot-pki'],
      ['/data/iot-gateway/pki/ca.key', '600 iot-gateway:'],
      ['/data/iot-gateway/pki/broker.key', '640 iot-gateway:iot-pki'],
      ['/data/iot-gateway/mosquitto', '2770 iot-gateway:iot-pki'],
      ['/data/wireguard', '700 root:root'],
      ['/data/wireguard/private.key', '600 root:']
    ]) t.match(modes, new RegExp(`^${path} ${mode}`, 'm'), `${path}: ${mode}`)
    t.match(await vm.ok(t, 'journalctl -b -u iot-gateway-firstboot --no-pager -o cat'), /created \/data\/iot-gateway\/pki\/ca\.crt/, 'first boot made the CA')
    t.match(await vm.ok(t, 'stat -c "%U" /proc/$(systemctl show -p MainPID --value iot-gateway.service) /proc/$(systemctl show -p MainPID --value mosquitto.service)'), /^iot-gateway\nmosquitto\n?$/, 'the gateway and the broker run unprivileged')
    // systemd 252's networkd cannot read the key credential (tests/STANDIN.md), so wg0 itself is not
    // up here: what is checked is the unit's work and that the real kernel makes WireGuard links
    t.match(await vm.ok(t, 'systemctl is-active iot-gateway-wireguard.service; ls -1 /run/systemd/network; stat -c "%a %U" /run/credstore/network.wireguard.private.wg0'),
      /^active\n[\s\S]*wg0\.netdev[\s\S]*wg0\.network\n600 root\n?$/, 'the tunnel unit wrote the networkd files and the key credential')
    t.match(await vm.ok(t, 'ip link add standin-wg type wireguard && wg set standin-wg private-key /data/wireguard/private.key && wg show standin-wg public-key && wg pubkey < /data/wireguard/private.key; ip link del standin-wg; lsmod'),
      /^(\S{44})\n\1\n[\s\S]*^wireguard\s/m, 'the real kernel runs a WireGuard link with the key made on /data')
    firstIdentity = await identity()
  })

  // ---- 2. the firewall, from the host
  await t.test('firewall: from the host only what the policy admits on that interface answers', async t => {
    const counter = async name => Number(/packets (\d+)/.exec((await vm.ok(t, `nft list counter inet iot_gateway ${name}`)))?.[1] ?? NaN)
    // the API may bind a moment after the unit is up (TCG is slow): wait for it in the guest
    t.match(await vm.ok(t, 'for i in $(seq 120); do ss -ltnH | grep -q ":8080 " && break; sleep 1; done; ss -ltnH; journalctl -b -u iot-gateway --no-pager -o cat | tail -3'),
      /0\.0\.0\.0:8080/, 'the management API listens on every address (the firewall guards it)')
    t.ok(await tlsAnswers(lan.mqtt), 'LAN (wlan0): MQTT/TLS 8883 answers')
    for (const [zone, fwd, name] of [['wan', wan.mqtt, 'MQTT 8883'], ['wan', wan.api, 'API 8080'], ['wan', wan.ssh, 'SSH 22'], ['lan', lan.api, 'API 8080']]) {
      const before = await counter(`closed_${zone}`)
      // QEMU accepts the host's connection and sends the SYN on to the guest: an open port answers,
      // a dropped SYN shows up in the zone's counter and nothing ever comes back
      let got = ''
      const s = netConnect(fwd, '127.0.0.1')
      s.on('data', d => { got += d })
      s.on('error', () => {})
      s.write('GET / HTTP/1.0\r\n\r\n')
      const until = Date.now() + 120000
      let after = before
      while (after <= before && Date.now() < until) after = await counter(`closed_${zone}`)
      s.destroy()
      t.ok(after > before, `${zone.toUpperCase()} ${name}: the SYN was dropped by the closed_${zone} rule (${before} -> ${after})`)
      t.equal(got, '', `${zone.toUpperCase()} ${name}: no answer reached the host`)
    }
  })

  // ---- 3. enrolment and end-to-end delivery
  let creds
  await t.test('a device enrolled inside the VM publishes MQTT/TLS; the cloud on the host gets it', async t => {
    const bundle = await vm.ok(t, 'd=$(mktemp -d) && chown iot-gateway "$d" && runuser -u iot-gateway -- iot-gateway device enroll sensor-1 --out "$d" --json > "$d/out.json" && for f in sensor-1.crt sensor-1.key ca.crt; do echo "== $f"; cat "$d/$f" 2>/dev/null || cat "$d"/*"${f#sensor-1}"; done; cat "$d/out.json"', 180000)
    const pem = name => { const m = new RegExp(`== ${name.replace('.', '\\.')}\\n([\\s\\S]*?-----END [A-Z ]+-----)`).exec(bundle); return m?.[1] }
    creds = { cert: pem('sensor-1.crt'), key: pem('sensor-1.key'), ca: pem('ca.crt') }
    if (!creds.cert || !creds.key || !creds.ca) { t.fail(`no bundle from device enroll:\n${bundle}`); return }
    const c = await mqtt.connectAsync(`mqtts://localhost:${lan.mqtt}`, { clientId: 'sensor-1-e2e', ...creds, reconnectPeriod: 0, protocolVersion: 4, connectTimeout: 60000 })
    for (let i = 1; i <= 5; i++) await c.publishAsync('devices/sensor-1/telemetry', JSON.stringify({ seq: i, e2e: i }), { qos: 1 })
    await c.endAsync()
    await waitFor(() => cloud.accepted.filter(m => m.payload?.e2e).length >= 5, 'the five messages at the cloud', 180000, 200).catch(() => {})
    if (cloud.accepted.length === 0) t.comment(`gateway journal:\n${(await vm.sh('journalctl -b -u iot-gateway --no-pager -o cat | tail -30')).out}`)
    const got = cloud.accepted.filter(m => m.payload?.e2e).map(m => m.payload.e2e).sort()
    t.same(got, [1, 2, 3, 4, 5], 'the five messages reached the cloud through the gateway')
    t.ok(cloud.batches.every(b => b.digestOk), 'with a valid Content-Digest')
  })

  // ---- 4. power cut under load
  let lossAllowed = 0
  await t.test('power cut under load: what the gateway took in survives; what only the broker held is counted', async t => {
    if (!creds) { t.fail('no enrolled device'); return }
    cloud.respond = () => ({ status: 503, headers: { 'retry-after': '1' } })
    const dev = await mqtt.connectAsync(`mqtts://localhost:${lan.mqtt}`, { clientId: 'sensor-1-load', ...creds, reconnectPeriod: 0, protocolVersion: 4, connectTimeout: 60000 })
    dev.on('error', () => {})
    const acked = new Set()
    // the device's own sequence numbers (the gateway refuses replays) continue after the five above
    let seq = 0
    let running = true
    const rate = 10 // msg/s, well under the per-device limit (20/s)
    const t0 = Date.now()
    const loop = (async () => {
      while (running) {
        const due = t0 + (seq * 1000) / rate - Date.now()
        if (due > 0) await new Promise(resolve => setTimeout(resolve, due))
        const s = ++seq
        dev.publishAsync('devices/sensor-1/telemetry', JSON.stringify({ seq: 100 + s, load: s }), { qos: 1 }).then(() => acked.add(s), () => {})
      }
    })()
    // the gateway's own count of what it has made durable: its outbox (SQLite, fsynced)
    let committed = 0
    const loadUntil = Date.now() + 10 * 60 * 1000
    while (committed < 100) {
      if (Date.now() > loadUntil) { running = false; await loop; dev.end(true); t.fail(`the outbox never reached 100 messages (${committed}) in 10 min`); return }
      committed = (await outboxStats()).depth
      t.comment(`under load: ${seq} published, ${acked.size} acknowledged by the broker, ${committed} in the gateway's outbox`)
    }
    await vm.powerCut()
    running = false
    await loop
    dev.end(true)
    const published = seq
    const ackedAtCut = new Set(acked)
    t.comment(`power cut: ${published} published, ${ackedAtCut.size} acknowledged by the broker, at least ${committed} in the outbox`)

    const state = await bootUp('boot 2 (after the power cut)')
    t.equal((await vm.sh('systemctl list-units --failed --no-legend --plain')).out.trim(), '', `no failed unit after the power cut (${state})`)
    const survived = await outboxStats()
    t.comment(`after the power cut the outbox holds ${JSON.stringify(survived)}`)
    cloud.respond = () => undefined
    const loadSeqs = () => new Set([...cloud.unique().values()].filter(m => m.payload?.load).map(m => m.payload.load))
    const until = Date.now() + 10 * 60 * 1000
    let last = -1
    while (Date.now() < until) {
      const st = await outboxStats()
      const n = loadSeqs().size
      if (n !== last) t.comment(`delivering: ${n} distinct load messages at the cloud, outbox ${JSON.stringify(st)}`)
      last = n
      if (st.depth === 0) break
    }
    const delivered = loadSeqs()
    const missingCommitted = []
    for (let s = 1; s <= committed; s++) if (!delivered.has(s)) missingCommitted.push(s)
    t.same(missingCommitted, [], `every message the outbox held before the cut (1..${committed}) reached the cloud`)
    t.ok([...delivered].every(s => s >= 1 && s <= published), 'the cloud got nothing that was not published')
    const lost = [...ackedAtCut].filter(s => !delivered.has(s))
    lossAllowed = lost.length
    t.comment(`broker-acknowledged but lost (held only in Mosquitto's memory at the cut; the contract allows this): ${lost.length} of ${ackedAtCut.size}${lost.length ? ` (seq ${lost[0]}..${lost[lost.length - 1]})` : ''}`)
    t.ok(lost.every(s => s > committed), 'only messages after the last outbox count can be lost')
  })

  // ---- 5. a clean reboot changes nothing
  await t.test('a second reboot changes nothing: same identity, empty outbox, no first-boot work', async t => {
    const before = await identity()
    t.equal(before, firstIdentity, 'the identity survived the power cut unchanged')
    const r = await vm.poweroff()
    t.comment(`powered off (${JSON.stringify(r)})`)
    const state = await bootUp('boot 3 (clean reboot)')
    t.equal(state, 'running', 'no failed unit')
    t.equal(await identity(), firstIdentity, 'same CA, broker key and WireGuard key')
    t.match(await vm.ok(t, 'journalctl -b -u iot-gateway-firstboot --no-pager -o cat'), /nothing changed/, 'first boot found its work done')
    const st = await outboxStats()
    t.equal(st.depth, 0, `the outbox is empty (${JSON.stringify(st)})`)
  })

  // ---- 6. idle cost (reported only)
  await t.test('the gateway idle inside the VM (reported, not asserted)', async t => {
    // a 20 s window of the process's own CPU ticks: a measurement, not a wait for something
    const r = await vm.ok(t, 'p=$(systemctl show -p MainPID --value iot-gateway.service); a=$(cut -d" " -f14,15 /proc/$p/stat); sleep 20; b=$(cut -d" " -f14,15 /proc/$p/stat); echo "$a $b $(getconf CLK_TCK)"; grep -E "VmRSS|VmHWM" /proc/$p/status; m=$(systemctl show -p MainPID --value mosquitto.service); grep VmRSS /proc/$m/status')
    const [u0, s0, u1, s1, hz] = r.split('\n')[0].trim().split(/\s+/).map(Number)
    const cpu = ((u1 + s1 - u0 - s0) / hz) / 20 * 100
    t.comment(`gateway idle CPU under TCG: ${cpu.toFixed(2)} % of one core; ${r.split('\n').slice(1).join('; ')}`)
    t.comment(`power cut: ${lossAllowed} broker-acknowledged message(s) lost (held only in the broker's memory)`)
    t.ok(Number.isFinite(cpu), 'measured')
    await vm.poweroff()
  })
}

if (!optedIn) {
  t.skip('opt-in: set IOTGW_STANDIN_BOOT=1 to boot the layer on the arm64 stand-in (about 25 minutes warm on 2 loaded cores; tests/STANDIN.md)')
} else if (why && process.env.CI) {
  t.fail(`${why} (CI is set: the stand-in must run)`)
} else if (why) {
  t.skip(why)
} else {
  t.setTimeout(90 * 60 * 1000)
  await main()
}
