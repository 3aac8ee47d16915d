import { spawn, type ChildProcess } from 'node:child_process'
import { createHash } from 'node:crypto'
import type { Readable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import { DEVICE_ID_PATTERN } from '../devices/device-id.js'
import { backoffDelay } from '../lib/backoff.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'

/**
 * ACL denials as Mosquitto reports them: only in its log, at debug level, naming the client id.
 * What Mosquitto 2.0.11 (Debian 12) and 2.1.2 (the image, meta-oe) print, verified on 2.0.11 and read
 * in the 2.1.2 sources:
 *
 *   New client connected from 127.0.0.1:44372 as cid-a (p2, c1, k60, u'dev1').        (notice; maps id -> CN)
 *   Denied PUBLISH from cid-a (d0, q1, r0, m1, 'devices/dev2/telemetry', ... (9 bytes)) (debug, both)
 *   Received SUBSCRIBE from cid-a  /  \tdevices/dev2/commands (denied)                 (debug, 2.1 only)
 *   Denied PUBLISH to cid-a (q1, r0, 'devices/dev2/commands', ... (12 bytes))          (debug, 2.1 only)
 *   Client cid-a disconnected.  /  Client cid-a [127.0.0.1:44372] disconnected.         (notice; 2.0 / 2.1)
 *
 * A SUBSCRIBE is never refused by the acl_file check (both versions grant it, "FIXME - implement
 * ACL subscription strings"): the read ACL applies when a message is routed, silently on 2.0 and as
 * "Denied PUBLISH to <id>" on 2.1. Debug lines never reach `log_dest topic` ($SYS/broker/log/#), so
 * the log itself (the journal on the image) is the only source. Mosquitto cuts every log line at 999
 * bytes: a client id or topic near that length loses the line's tail, handled below.
 */
export type DenialKind = 'publish' | 'subscribe' | 'read'

export interface BrokerDenial {
  kind: DenialKind
  clientId: string
  /** The connection's username (= certificate CN = device id); null when its connection line was not seen. */
  username: string | null
  topic: string
  /** The broker cut the line: the topic is a prefix. */
  truncated: boolean
  /** The line's time (ms since the epoch) when the log carries one (journalctl --output=short-unix), else null. */
  at: number | null
}

const CONNECTED = /^New client connected from (.+?):(\d+) as (.*) \(p\d+, c\d+, k\d+(?:, u'([^']*)')?\)\.$/s
const DISCONNECT_TAIL = /^ (?:disconnected|closed its connection\.|has exceeded timeout, disconnecting\.|been disconnected by administrative action\.|\[([^\]]*)\] disconnected)/
const PUBLISH_FROM = / \(d\d, q\d, r\d, m\d+, '/g
const PUBLISH_TO = / \(q\d, r\d, '/g
const TOPIC_TAIL = /^(.*)', \.\.\. \(\d+ bytes\)\)$/s
/** journalctl --output=short-unix: "1712345678.123456 host mosquitto[123]: message". */
const SHORT_UNIX = /^(\d{1,12})\.(\d{1,9}) \S+ ([^\s:[]+)(?:\[(\d+)\])?: /
const USERNAME = DEVICE_ID_PATTERN

interface Client { username: string | null, address: string }

/**
 * Pure: reads Mosquitto's log line by line, keeps which client id belongs to which username (from the
 * connection lines; forgotten on disconnect; at most `maxClients`, least recently connected first out)
 * and turns denial lines into {@link BrokerDenial}. Client ids are chosen by the devices and may hold
 * anything printable, including the separators of these lines: where a line can be split in more than
 * one way, the longest client id that is connected wins (the real id of an honest client never holds
 * " (d0, q1, ..."; a device that puts another's id plus such a tail in its own gets itself blamed).
 */
export class BrokerLogParser {
  private readonly clients = new Map<string, Client>()
  private subscriber: string | null = null
  private pid: string | undefined
  constructor (private readonly maxClients = 50000) {}

  get size (): number { return this.clients.size }

  /** Long ids are kept as a hash: a device choosing 900-byte client ids cannot fill the heap. */
  private key (clientId: string): string {
    return clientId.length <= 64 ? `r:${clientId}` : `h:${createHash('sha256').update(clientId).digest('base64')}`
  }

  lookup (clientId: string): Client | undefined { return this.clients.get(this.key(clientId)) }

  line (raw: string): BrokerDenial | undefined {
    let text = raw.endsWith('\r') ? raw.slice(0, -1) : raw
    let at: number | null = null
    const ts = SHORT_UNIX.exec(text)
    if (ts) {
      at = Number(ts[1]) * 1000 + Number(ts[2]!.padEnd(6, '0').slice(0, 6)) / 1000
      text = text.slice(ts[0].length)
      // A new broker process has no clients: forget the previous one's ("mosquitto version ... starting"
      // is an information line, which the rendered configuration does not log).
      if (ts[3] !== 'systemd' && ts[4] !== undefined) {
        if (this.pid !== undefined && ts[4] !== this.pid) this.clients.clear()
        this.pid = ts[4]
      }
    }
    return this.message(text, at)
  }

  private message (m: string, at: number | null): BrokerDenial | undefined {
    if (m.startsWith('Denied PUBLISH from ')) return this.denied('publish', m.slice(20), PUBLISH_FROM, at)
    if (m.startsWith('Denied PUBLISH to ')) return this.denied('read', m.slice(18), PUBLISH_TO, at)
    if (m.startsWith('\t')) {
      if (this.subscriber === null || !m.endsWith(' (denied)')) return undefined
      const c = this.lookup(this.subscriber)
      return { kind: 'subscribe', clientId: this.subscriber, username: c?.username ?? null, topic: m.slice(1, -9), truncated: false, at }
    }
    this.subscriber = null
    if (m.startsWith('Received SUBSCRIBE from ')) { this.subscriber = m.slice(24); return undefined }
    if (m.startsWith('New client connected from ')) { this.connected(m); return undefined }
    if (m.startsWith('Client ')) { this.disconnected(m.slice(7)); return undefined }
    if (/^mosquitto version \S+ starting$/.test(m)) this.clients.clear()
    return undefined
  }

  private connected (m: string): void {
    const r = CONNECTED.exec(m)
    if (!r) return // cut at 999 bytes (a client id near that long): its username is lost with the tail
    const username = r[4] !== undefined && USERNAME.test(r[4]) ? r[4] : null
    const k = this.key(r[3]!)
    this.clients.delete(k)
    this.clients.set(k, { username, address: `${r[1]}:${r[2]}` })
    if (this.clients.size > this.maxClients) this.clients.delete(this.clients.keys().next().value!)
  }

  private disconnected (rest: string): void {
    let best: { key: string, len: number } | undefined
    for (let i = rest.indexOf(' '); i >= 0; i = rest.indexOf(' ', i + 1)) {
      const tail = DISCONNECT_TAIL.exec(rest.slice(i))
      if (!tail) continue
      const k = this.key(rest.slice(0, i))
      const c = this.clients.get(k)
      // 2.1 names the connection's address: a late line of a taken-over session does not forget the new one.
      if (c && (tail[1] === undefined || tail[1] === c.address) && (!best || i > best.len)) best = { key: k, len: i }
    }
    if (best) this.clients.delete(best.key)
  }

  private denied (kind: DenialKind, rest: string, sep: RegExp, at: number | null): BrokerDenial | undefined {
    let first: BrokerDenial | undefined
    let known: BrokerDenial | undefined
    sep.lastIndex = 0
    for (let r = sep.exec(rest); r !== null; r = sep.exec(rest)) {
      const clientId = rest.slice(0, r.index)
      const after = rest.slice(r.index + r[0].length)
      const full = TOPIC_TAIL.exec(after)
      const c = this.lookup(clientId)
      const d: BrokerDenial = { kind, clientId, username: c?.username ?? null, topic: full ? full[1]! : after, truncated: !full, at }
      first ??= d
      if (c) known = d // later matches have longer client ids
      sep.lastIndex = r.index + 1
    }
    // No separator: the line was cut inside the client id (longer than ~900 bytes), whose connection
    // line lost its username the same way. Seen, but nobody to blame.
    return known ?? first ?? { kind, clientId: rest, username: null, topic: '', truncated: true, at }
  }
}

/**
 * Which timed lines are new. A command that prints the log's history (the default, so that devices
 * connected before the gateway are known) prints again, when restarted, what it printed before.
 * Lines before `start` (the previous gateway run handled those) and lines up to the newest one
 * already handled are history; journald gives the lines of one read the same time, so lines sharing
 * the newest time are counted per process.
 */
export class ReplayFilter {
  private at: number
  private n = 0
  private same = 0
  constructor (start: number) { this.at = start }

  /** The command was started again: it prints from its beginning. */
  restarted (): void { this.same = 0 }

  fresh (at: number | null): boolean {
    if (at === null) return true
    if (at < this.at) return false
    if (at === this.at) {
      if (++this.same <= this.n) return false
      this.n = this.same
      return true
    }
    this.at = at
    this.n = this.same = 1
    return true
  }
}

/** A denial to report: `device` is the device to penalise, null when the client's connection was not seen. */
export interface AttributedDenial extends BrokerDenial { device: string | null }

/**
 * A read denial inside the device's own namespace (a subscription to devices/<id>/# getting its own
 * telemetry back, which its ACL does not let it read) is a subscription wider than the ACL, not an
 * attempt on another device: counted, not penalised.
 */
const ownTopic = (d: BrokerDenial): boolean => d.kind === 'read' && d.username !== null && d.topic.startsWith(`devices/${d.username}/`)

export interface DenialFollowerOptions {
  gatewayId: string
  /** Called for each denial seen live (not for the log's history) of a device or of an unknown client; not for the gateway's own. */
  onDenial: (d: AttributedDenial) => void
  maxLineBytes?: number
  restartMinMs?: number
  restartMaxMs?: number
  maxClients?: number
  /** After a read the log's pipe is left alone this long (default 50 ms; 0: read as it comes). See {@link readInBursts}. */
  readIntervalMs?: number
}

/** A read this large: the log fills the pipe (64 KB) in about an interval. */
export const BUSY_READ_BYTES = 49152

/** The stream handle of a child's stdout: reading stopped and started at the pipe itself. */
interface ReadHandle { readStop: () => number, readStart: () => number }

/**
 * Reads a child's stdout in bursts: after each read the pipe is left alone for `intervalMs`.
 * Mosquitto writes its debug log line by line (about 3.4 lines per QoS 1 message): read as it came,
 * the gateway woke about once per message for it. A wake-up costs far more than the lines
 * (app/docs/write-path.md, "CPU per message"), and a denial seen 50 ms later is as good. A read of
 * {@link BUSY_READ_BYTES} or more (the pipe was nearly full) turns the pauses off for a second, so a
 * busy log is read as it comes and the follower does not fall behind.
 *
 * Node has no public call for it: the pipe's handle is stopped and started (a paused stream goes on
 * reading into its buffer). The handle is looked up again when resuming: it is gone once the stream
 * is closed.
 */
function readInBursts (stream: Readable, intervalMs: number, counts: { reads: number, holds: number }, onData: (b: Buffer) => void): void {
  const pipe = (): ReadHandle | undefined => (stream as unknown as { _handle?: ReadHandle | null })._handle ?? undefined
  let holding = false
  let busyUntil = 0
  const resume = (): void => { holding = false; pipe()?.readStart() }
  stream.on('data', (b: Buffer) => {
    counts.reads++
    const handle = pipe()
    if (intervalMs > 0 && handle !== undefined && !holding) {
      const now = Date.now()
      if (b.length >= BUSY_READ_BYTES) busyUntil = now + 1000
      if (now >= busyUntil) {
        holding = true
        counts.holds++
        handle.readStop()
        setTimeout(resume, intervalMs)
      }
    }
    onData(b)
  })
}

/**
 * Follows the broker's log: runs `command` (its stdout is the log, e.g. `journalctl --follow` on the
 * image), feeds each line to a {@link BrokerLogParser} and reports the denials. When the command
 * exits or cannot be started it is started again with backoff; the gateway runs on without it
 * (gateway_broker_log_follower_up says so).
 *
 * History: the command may print the log from the broker's start (the default does, so the devices
 * that connected before the gateway are known). Lines carrying a time (journalctl's short-unix) from
 * before the follower started, or already handled before the command was restarted, only teach the
 * parser who is who; their denials are not reported (again). Lines without a time are all taken as new.
 */
export class DenialFollower {
  readonly parser: BrokerLogParser
  private proc?: ChildProcess
  private timer?: NodeJS.Timeout
  private stopped = true
  private attempt = 0
  private replay = new ReplayFilter(Date.now())
  private running = false
  private readonly maxLine: number
  private readonly denials
  private readonly restarts
  private readonly dropped
  /** Reads of the log's pipe (each one a wake-up of the gateway), and the pauses after them. */
  reads = 0
  holds = 0

  constructor (readonly command: readonly string[], private readonly o: DenialFollowerOptions, metrics: Registry, private readonly log: Logger) {
    this.parser = new BrokerLogParser(o.maxClients)
    this.maxLine = o.maxLineBytes ?? 16384
    this.denials = metrics.counter('gateway_broker_acl_denials_total', 'ACL denials in the broker\'s log, by kind (publish, subscribe, read) and client (device: attributed and penalised; own_topic: a device\'s own namespace, not penalised; gateway; unknown: connection not seen).')
      .init(...['publish', 'subscribe', 'read'].flatMap(kind => ['device', 'own_topic', 'gateway', 'unknown'].map(client => ({ kind, client }))))
    this.restarts = metrics.counter('gateway_broker_log_follower_restarts_total', 'Times the broker log follower command was started again after it exited or failed to start.').init()
    this.dropped = metrics.counter('gateway_broker_log_lines_dropped_total', 'Broker log lines longer than the follower\'s limit, skipped.').init()
    metrics.gauge('gateway_broker_log_follower_up', '1 while the broker log follower command runs (ACL denials are seen).', () => this.running ? 1 : 0)
    metrics.gauge('gateway_broker_log_clients', 'Broker client ids the log follower can attribute to a device.', () => this.parser.size)
  }

  start (): void {
    if (this.command.length === 0 || !this.stopped) return
    this.stopped = false
    this.replay = new ReplayFilter(Date.now())
    this.spawn()
  }

  async stop (): Promise<void> {
    this.stopped = true
    if (this.timer) clearTimeout(this.timer)
    const p = this.proc
    if (!p || p.exitCode !== null || p.signalCode !== null) return
    const exited = new Promise<void>(resolve => p.once('close', () => resolve()))
    p.kill('SIGTERM')
    const t = setTimeout(() => p.kill('SIGKILL'), 2000)
    await exited
    clearTimeout(t)
  }

  /** One line of the log. */
  feed (line: string): void {
    const d = this.parser.line(line)
    if (!d) return
    if (!this.replay.fresh(d.at)) return
    const client = d.username === null ? 'unknown' : d.username === this.o.gatewayId ? 'gateway' : ownTopic(d) ? 'own_topic' : 'device'
    this.denials.inc({ kind: d.kind, client })
    if (client === 'gateway') this.log.warn('the broker denied the gateway itself', { kind: d.kind, topic: d.topic.slice(0, 256) })
    if (client === 'device' || client === 'unknown') this.o.onDenial({ ...d, device: client === 'device' ? d.username : null })
  }

  private spawn (): void {
    if (this.stopped) return
    const [bin, ...args] = this.command
    const started = Date.now()
    this.replay.restarted()
    let p: ChildProcess
    try {
      p = spawn(bin!, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    } catch (err) {
      this.failed(err, started)
      return
    }
    this.proc = p
    let errTail = ''
    let ended = false // 'error' (not started) and 'close' both come when it cannot start: one restart
    p.once('spawn', () => {
      this.running = true
      this.log.info('following the broker log', { command: this.command })
    })
    p.once('error', err => {
      if (ended) return
      ended = true
      this.failed(err, started)
    })
    p.stderr!.setEncoding('utf8')
    p.stderr!.on('data', (s: string) => { errTail = (errTail + s).slice(-1000) })
    const decoder = new StringDecoder('utf8')
    let partial = ''
    let skipping = false
    readInBursts(p.stdout!, this.o.readIntervalMs ?? 50, this, (b: Buffer) => {
      const text = decoder.write(b)
      let start = 0
      for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
        const piece = text.slice(start, nl)
        start = nl + 1
        if (skipping) { skipping = false; partial = ''; continue }
        const line = partial === '' ? piece : partial + piece
        partial = ''
        if (line.length > this.maxLine) { this.dropped.inc(); continue }
        this.safeFeed(line)
      }
      if (skipping) return
      partial += text.slice(start)
      if (partial.length > this.maxLine) { this.dropped.inc(); partial = ''; skipping = true }
    })
    p.once('close', (code, signal) => {
      this.running = false
      if (this.proc === p) this.proc = undefined
      if (ended || this.stopped) return
      ended = true
      this.log.warn('the broker log follower exited; starting it again', { code, signal, stderr: errTail.trim() })
      this.scheduleRestart(started)
    })
  }

  private safeFeed (line: string): void {
    try {
      this.feed(line)
    } catch (err) {
      this.log.error('broker log line not handled', { err })
    }
  }

  private failed (err: unknown, started: number): void {
    this.running = false
    this.log.error('cannot run the broker log follower: ACL denials are not seen', { err, command: this.command })
    this.scheduleRestart(started)
  }

  private scheduleRestart (started: number): void {
    if (this.stopped) return
    if (Date.now() - started > 60_000) this.attempt = 0 // it ran a while: start again soon
    const delay = backoffDelay(this.attempt++, this.o.restartMinMs ?? 1000, this.o.restartMaxMs ?? 60_000)
    this.timer = setTimeout(() => { this.restarts.inc(); this.spawn() }, delay)
    this.timer.unref()
  }
}
