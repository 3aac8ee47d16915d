// The arm64 stand-in (scripts/standin.sh) for the tests that boot it: its build with progress,
// QEMU with the serial console as a line protocol, and the host-side helpers (an NTP server for the
// guest, the disk's partitions). Not a test file itself (no .test.mjs).
import { spawn } from 'node:child_process'
import { createSocket } from 'node:dgram'
import { connect as tlsConnect } from 'node:tls'
import { readFileSync, appendFileSync, openSync, readSync, closeSync } from 'node:fs'
import { join } from 'node:path'
import { t, REPO, run } from './helpers.mjs'

export const STANDIN = join(REPO, 'scripts', 'standin.sh')
const T0 = Date.now()
export const elapsed = () => `${Math.round((Date.now() - T0) / 1000)} s`
export const timings = []
// Progress goes to the subtest that runs (tap holds back the root test's comments until its
// running subtest ends: a person watching would see nothing move for minutes).
const progress = { t }
/** A comment in the running subtest, with the time since the test file started. */
export const say = msg => progress.t.comment(`[${elapsed()}] ${msg}`)
/** A progress line that also goes into the timings summary. */
export const mark = what => { timings.push(`${what} at ${elapsed()}`); say(what) }
/** t.test whose comments (say, mark, the VM's waits) show while it runs. */
export const step = (name, fn) => t.test(name, async tt => {
  progress.t = tt
  try { await fn(tt) } finally { progress.t = t }
})

/** Why the stand-in cannot run here (false when it can); IOTGW_STANDIN_BOOT=0 switches it off. */
export function standinUnavailable () {
  if (process.env.IOTGW_STANDIN_BOOT === '0') return 'IOTGW_STANDIN_BOOT=0: the stand-in boot is switched off'
  const check = run('bash', [STANDIN, 'check'])
  return check.status === 0 ? false : `the arm64 stand-in cannot run here: ${(check.stdout + check.stderr).trim()}`
}

/** standin.sh build --out DIR with the knobs; the manifest, or undefined after a failure (reported). */
export async function buildStandin (out, sets) {
  mark('building the stand-in (cold: the root file system takes ~16 min under emulation)')
  const build = spawn('bash', [STANDIN, 'build', '--out', out, ...sets.flatMap(s => ['--set', s])], { stdio: ['ignore', 'inherit', 'pipe'] })
  let buildErr = ''
  build.stderr.on('data', d => { buildErr += d; for (const l of String(d).split('\n')) if (/^(standin|I:|E:|W:)/.test(l)) say(l.slice(0, 200)) })
  const code = await new Promise(resolve => build.once('exit', resolve))
  if (code !== 0) { t.fail(`standin.sh build exited ${code}:\n${buildErr.slice(-4000)}`); return undefined }
  mark('disk built')
  return JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'))
}

/** QEMU with the stand-in; the serial console as a line protocol (root is logged in there). */
// "[  252.339655] iot-gateway-identity[366]: ..." (journald forwarding to the console) and
// "[ SKIP ] ..." / "[FAILED] ..." (systemd's status, with colours)
// eslint-disable-next-line no-control-regex -- ESC is what the colour codes start with
const CONSOLE_NOISE = /^\[\s*\d+\.\d+\] |^\[(\x1b\[[0-9;]*m)?\s*[A-Z]+\s*(\x1b\[[0-9;]*m)?\] /

export class VM {
  constructor (dir, args, logFile) {
    this.dir = dir
    this.args = args
    this.logFile = logFile
    this.out = ''
    this.seq = 0
    this.exited = null
  }

  start (label, disk) {
    // a step that failed before its power cut leaves the previous QEMU running: cut it now, or it
    // would outlive the test (the teardown knows only the newest)
    if (this.child && !this.done) this.child.kill('SIGKILL')
    this.out = ''
    this.label = label
    const child = spawn('bash', [STANDIN, 'boot', '--out', this.dir, ...(disk ? ['--disk', disk] : []), ...this.args], { stdio: ['pipe', 'pipe', 'pipe'] })
    this.child = child
    this.exited = new Promise(resolve => child.once('exit', (code, signal) => resolve({ code, signal })))
    this.done = false
    // (guarded: a previous QEMU cut above may exit, or print its last bytes, after this start)
    this.exited.then(() => { if (this.child === child) { this.done = true; this.wake() } })
    const onData = d => {
      if (this.child !== child) return
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
      const tick = setInterval(() => {
        // progress for a person watching: the last console line
        const line = this.out.trimEnd().split('\n').pop()?.slice(0, 120) ?? ''
        say(`[${this.label}] waiting for ${what} (${Math.round((Date.now() - started) / 1000)} s): ${line}`)
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
    // the console is shared: units with StandardOutput=journal+console (the identity, the data
    // alert) and systemd's status lines write into the middle of a command's output
    const out = m[1].split('\n').filter(l => !CONSOLE_NOISE.test(l)).join('\n')
    return { code: Number(m[2]), out }
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
export function tlsAnswers (port, opts = {}) {
  return new Promise(resolve => {
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...opts })
    s.once('secureConnect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
    s.once('close', () => resolve(false))
  })
}

/**
 * The site's NTP server for the guest (timesyncd asks 10.0.2.2, which QEMU's user network maps to
 * the host's 127.0.0.1): a minimal SNTP server with the host's clock, so that the first boot's
 * wait for a time sync ends at once. Without it (port 123 taken or not bindable) the first boot
 * waits the layer's 2 minutes and dates its certificates from the clock as it is: slower, not wrong.
 */
export function sntpServer () {
  const ts = (buf, off, ms) => {
    buf.writeUInt32BE(Math.floor(ms / 1000) + 2208988800, off)
    buf.writeUInt32BE(Math.floor(((ms % 1000) / 1000) * 2 ** 32) >>> 0, off + 4)
  }
  return new Promise(resolve => {
    const s = createSocket('udp4')
    const server = { answered: 0, close: () => { try { s.close() } catch {} } }
    s.once('error', err => resolve({ ...server, why: err.message }))
    s.on('message', (req, peer) => {
      if (req.length < 48 || (req[0] & 7) !== 3) return // client mode only
      const res = Buffer.alloc(48)
      res[0] = (((req[0] >> 3) & 7) << 3) | 4 // no leap warning, the client's version, server mode
      res[1] = 1 // stratum 1: a reference clock (the host's)
      res[2] = req[2]
      res[3] = 0xec // precision 2^-20 s
      res.write('LOCL', 12, 'ascii')
      const now = Date.now()
      ts(res, 16, now) // reference
      req.copy(res, 24, 40, 48) // origin = the client's transmit timestamp
      ts(res, 32, now) // receive
      ts(res, 40, Date.now()) // transmit
      s.send(res, peer.port, peer.address)
      server.answered++
    })
    s.bind(123, '127.0.0.1', () => resolve(server))
  })
}

/** The partitions of a disk image (sfdisk's JSON): [{ start, size }] in bytes. */
export function partitions (disk) {
  const r = run('sfdisk', ['-J', disk])
  return JSON.parse(r.stdout).partitiontable.partitions.map(p => ({ start: p.start * 512, size: p.size * 512, type: p.type }))
}

/** True when every byte of disk[start, start+size) is zero (root B: reserved, never written). */
export function allZero (disk, start, size) {
  const fd = openSync(disk, 'r')
  try {
    const chunk = 16 << 20
    const buf = Buffer.alloc(chunk)
    const zero = Buffer.alloc(chunk)
    for (let off = 0; off < size; off += chunk) {
      const n = readSync(fd, buf, 0, Math.min(chunk, size - off), start + off)
      if (buf.compare(zero, 0, n, 0, n) !== 0) return false
    }
    return true
  } finally { closeSync(fd) }
}
