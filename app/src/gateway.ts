import type { AddressInfo } from 'node:net'
import { apiAuth } from './api/auth.js'
import { ApiServer } from './api/server.js'
import { paths } from './config/load.js'
import type { Config } from './config/schema.js'
import { Egress } from './egress/egress.js'
import { AuditLog } from './audit/audit.js'
import { DeviceRegistry } from './devices/registry.js'
import { Lifecycle, type Capability } from './lib/lifecycle.js'
import { DenialFollower } from './broker/denial-log.js'
import { FirewallMonitor } from './firewall/monitor.js'
import { WireguardStats } from './wireguard/stats.js'
import { ConfigError } from './lib/errors.js'
import { createLogger, type Logger } from './lib/logger.js'
import { Registry } from './lib/metrics.js'
import { SdNotify } from './lib/sd-notify.js'
import { MqttIngress } from './mqtt-ingress/mqtt-ingress.js'
import { CoapIngress } from './coap-ingress/coap-ingress.js'
import { ClockKeeper } from './clock/clock.js'
import { deviceRoutes } from './devices/api.js'
import { DeviceGuard } from './devices/guard.js'
import { Pipeline, type RejectionEvent } from './pipeline/pipeline.js'
import { openDatabase, type DB } from './store/db.js'
import { WalSync } from './store/wal-sync.js'
import { Store, type InboundMessage } from './store/store.js'
import { AlertLane } from './alerts/lane.js'
import { AlertManager } from './alerts/manager.js'
import { RefusalBook } from './alerts/refusals.js'
import { AlertStore } from './alerts/store.js'
import { SystemMonitor } from './monitor/monitor.js'
import { LATENCY_BUCKETS } from './lib/metrics.js'
import { VERSION } from './lib/version.js'
import { Console } from './console/console.js'
import { ConsoleHistory } from './console/history.js'

export interface GatewayOptions { log?: Logger, notify?: SdNotify }

/**
 * The composition root. Every part of the daemon is a capability in one ordered list
 * (capabilities()); the lifecycle (lib/lifecycle.ts) starts them in that order and stops them in
 * the reverse one, each step logged with its duration. The first step opens the database and makes
 * every object (wire(): all the wiring in one place: one audit log, one metrics registry); their
 * constructors do no I/O. Stopping thus goes: API, ingress (no new acknowledgements), the pipeline's
 * last commit, the device guard and the alerts, a bounded egress flush, the database last.
 */
export class Gateway {
  readonly metrics = new Registry()
  readonly log: Logger
  db?: DB
  store?: Store
  /** The one hash-chained audit log: the device guard, the firewall monitor and the console write to it. */
  audit?: AuditLog
  pipeline?: Pipeline
  egress?: Egress
  mqtt?: MqttIngress
  devices?: DeviceGuard
  /** Reads Mosquitto's log for ACL denials (broker.denialLogCommand); each lowers the device's trust. */
  denials?: DenialFollower
  coap?: CoapIngress
  api?: ApiServer
  /** Reads the privileged firewall's counter snapshot and events (the daemon runs no nft itself). */
  firewall?: FirewallMonitor
  /** The tunnel's peers as the privileged stats unit writes them (handshake, bytes). */
  wireguardStats?: WireguardStats
  /** Saves the latest known time on /data; clock.state() is the clock's part of /health. */
  clock?: ClockKeeper
  apiAddress?: AddressInfo
  /** System health (app/src/monitor), alert rules and their delivery lanes, refusals per device (app/src/alerts). */
  monitor?: SystemMonitor
  alerts?: AlertManager
  alertLanes: AlertLane[] = []
  refusals?: RefusalBook
  /** The console's page and routes on the management API (app/src/console), and its in-memory hour. */
  console?: Console
  consoleHistory?: ConsoleHistory
  private readonly notify: SdNotify
  private readonly lifecycle: Lifecycle
  private readonly startedAt = Date.now()
  private maintenance?: NodeJS.Timeout
  private stopping?: Promise<void>
  ready = false

  constructor (readonly config: Config, opts: GatewayOptions = {}) {
    this.log = opts.log ?? createLogger(config.gateway.logLevel)
    this.notify = opts.notify ?? new SdNotify()
    this.lifecycle = new Lifecycle(this.log.child({ cap: 'lifecycle' }))
  }

  async start (): Promise<void> {
    const c = this.config
    if (c.uplink.url === '') throw new ConfigError('uplink.url', 'is not set: the gateway has nowhere to deliver (set it in the configuration file or GATEWAY_UPLINK_URL)', 'GW_ERR_CONFIG_MISSING')
    // False: stopped (SIGTERM) while starting; what had started is stopped again, and no READY=1.
    if (!await this.lifecycle.start(this.capabilities())) return
    this.ready = true
    this.log.info('gateway ready', { api: `${this.apiAddress!.address}:${this.apiAddress!.port}`, outbox: this.store!.outboxDepth })
    await this.notify.ready('ready')
    this.notify.startWatchdog(() => this.ready)
  }

  /** The capabilities in start order (stop runs the list backwards). */
  private capabilities (): Capability[] {
    const c = this.config
    const optional = (on: boolean, cap: Capability): Capability[] => on ? [cap] : []
    return [
      {
        name: 'database',
        start: () => { this.db = openDatabase(paths(c).db, { synchronous: c.outbox.synchronous }); this.wire(this.db) },
        stop: () => { this.audit?.flush(); this.db?.close() }
      },
      { name: 'clock', start: () => this.clock!.start(), stop: () => this.clock?.stop() },
      {
        name: 'maintenance',
        start: () => { this.maintenance = setInterval(() => this.maintain(), 10 * 60_000).unref(); this.maintain() },
        stop: () => { if (this.maintenance) clearInterval(this.maintenance) }
      },
      { name: 'firewall-monitor', start: () => this.firewall!.start(), stop: () => this.firewall?.stop() },
      {
        name: 'uplink',
        start: () => { for (const l of this.alertLanes) l.start(); this.egress!.start() },
        stop: async graceMs => {
          // An alert request in flight (the egress awaits it before its batch) must not outlast the grace.
          const lanesDeadline = setTimeout(() => { for (const l of this.alertLanes) void l.stop() }, graceMs)
          await this.egress?.stop(graceMs)
          clearTimeout(lanesDeadline)
          for (const l of this.alertLanes) await l.stop()
        }
      },
      {
        name: 'alerts',
        start: () => { this.alerts!.start(); this.refusals!.load(); this.monitor!.start() },
        stop: () => { this.monitor?.stop(); this.refusals?.flush() }
      },
      { name: 'devices', start: () => this.devices!.start(), stop: () => this.devices?.stop() },
      ...optional(this.config.broker.denialLogCommand.length > 0, { name: 'broker-log', start: () => this.denials!.start(), stop: () => this.denials?.stop() }),
      { name: 'pipeline', start: () => this.pipeline!.start(), stop: () => this.pipeline?.close() },
      ...optional(c.coap.enabled, { name: 'coap', start: () => this.coap!.start(), stop: () => this.coap?.stop() }),
      {
        name: 'mqtt',
        start: async () => {
          // READY waits for the broker subscription, but only so long: a broker that comes up later is
          // reached by the reconnect loop, and /health says "broker": "disconnected" meanwhile.
          const subscribed = await Promise.race([this.mqtt!.start().then(() => true), new Promise<false>(resolve => setTimeout(() => resolve(false), 10000).unref())])
          if (!subscribed) this.log.warn('broker not reachable yet; starting without it', { url: c.mqtt.url })
        },
        stop: () => this.mqtt?.stop()
      },
      { name: 'console-history', start: () => this.consoleHistory!.start(), stop: () => this.consoleHistory?.stop() },
      {
        name: 'api',
        start: async () => {
          this.apiAddress = await this.wireApi().start()
        },
        stop: () => this.api?.stop()
      }
    ]
  }

  /**
   * Makes every capability's object on the open database and connects them: the one audit log and
   * the one metrics registry are handed to whoever records. No I/O here beyond preparing statements;
   * the API (whose token file is made at its start) is wired by wireApi().
   */
  private wire (db: DB): void {
    const c = this.config
    const log = (cap: string): Logger => this.log.child({ cap })
    const audit = this.audit = new AuditLog(db, err => this.log.error('audit write failed', { err }))
    this.clock = new ClockKeeper(c.gateway.dataDir, log('clock'))
    // The outbox's commits are synced off the event loop (app/docs/write-path.md, "The fsync off the
    // event loop"); the other tables of the database keep FULL commits.
    const store = this.store = new Store(db, { walSync: new WalSync(`${paths(c).db}-wal`) })
    // Device events overtake a telemetry backlog (app/docs/operations.md, "Where alerts go").
    store.prioritise(['events'])
    const pipeline = this.pipeline = new Pipeline(store, c, this.metrics, log('pipeline'), c.gateway.dataDir)
    // What the disk has may not be what was written: exit, as a crash would, and let systemd start
    // the gateway again on what the disk has (EX_IOERR). Nothing unsynced has been acknowledged.
    pipeline.on('syncFailed', () => { process.exit(74) })
    const egress = this.egress = new Egress(c, store, this.metrics, log('egress'), () => pipeline.notifySpace())
    pipeline.on('committed', () => egress.kick())
    // Sending from memory (app/docs/write-path.md): the uplink does not wait for the commit's fsync.
    egress.memory = pipeline.memory
    pipeline.onAdmit = () => egress.admitted()
    this.registerGauges()
    this.wireOperations(db, pipeline, egress, store)
    this.firewall = new FirewallMonitor(c.firewall.stateDir, c.firewall.statsPollSeconds, this.metrics, audit, log('firewall'), db)
    this.wireguardStats = new WireguardStats(c.firewall.stateDir, c.wireguard.interface)
    this.wireguardStats.register(this.metrics)
    const devices = this.devices = new DeviceGuard(c, { registry: new DeviceRegistry(db), audit }, pipeline, this.metrics, log('devices'))
    pipeline.gate = (device, s) => devices.gate(device, s)
    pipeline.on('rejected', (e: RejectionEvent) => devices.onRejected(e))
    pipeline.on('committed', (_n: number, msgs?: InboundMessage[]) => { if (msgs) devices.onCommitted(msgs) })
    if (c.broker.denialLogCommand.length > 0) {
      this.denials = new DenialFollower(c.broker.denialLogCommand, {
        gatewayId: c.gateway.id,
        onDenial: d => devices.aclDenied(d.device, {
          kind: d.kind,
          topic: d.topic.slice(0, 256),
          ...(d.truncated ? { truncated: true } : {}),
          ...(d.device === null ? { clientId: d.clientId.slice(0, 128) } : {})
        })
      }, this.metrics, log('broker-log'))
    }
    this.mqtt = new MqttIngress(c, pipeline, this.metrics, log('mqtt'))
    if (c.coap.enabled) this.coap = new CoapIngress(c, pipeline, devices, this.metrics, log('coap'))
    this.wireConsoleHistory(store, pipeline)
  }

  private registerGauges (): void {
    const store = this.store!
    this.metrics.gauge('gateway_outbox_messages', 'Messages waiting in the outbox.', () => store.outboxDepth)
    this.metrics.gauge('gateway_outbox_bytes', 'Payload bytes waiting in the outbox.', () => store.outboxBytes)
    // A timestamp, not an age (the Prometheus convention: the age is `time() - x` and never goes
    // stale between scrapes), and no series while the outbox is empty: an age of 0 would claim a
    // fresh message that does not exist.
    this.metrics.gauge('gateway_outbox_oldest_message_timestamp_seconds', 'Receipt time (Unix seconds) of the oldest message in the outbox; absent while the outbox is empty.', () => {
      const at = store.outboxDepth > 0 ? store.oldestReceivedAt() : null
      return at === null ? [] : [[{}, at / 1000]]
    })
    this.metrics.gauge('gateway_dead_letters', 'Messages in the dead-letter table.', () => store.stats().deadLetters)
    this.metrics.gauge('gateway_outbox_full', '1 while the outbox is at capacity (ingress is held back).', () => this.pipeline?.full === true ? 1 : 0)
    this.metrics.gauge('process_resident_memory_bytes', 'Resident set size.', () => process.memoryUsage.rss())
    this.metrics.gauge('process_start_time_seconds', 'Start time of the process.', () => Math.floor(this.startedAt / 1000))
  }

  /** Monitor, alert rules, alert lanes, refusal book, latency histograms (started by the alerts and uplink steps). */
  private wireOperations (db: DB, pipeline: Pipeline, egress: Egress, store: Store): void {
    const c = this.config
    const log = this.log.child({ cap: 'alerts' })
    const alertStore = new AlertStore(db)
    const deliveries = this.metrics.counter('gateway_alert_deliveries_total', 'Alert deliveries (firing or resolved) by receiver and result (ok, retry, auth_refused, refused).')
    this.alertLanes = [new AlertLane(c, alertStore, { name: 'cloud', url: c.alerts.url !== '' ? c.alerts.url : c.uplink.url, tokenFile: c.uplink.tokenFile }, deliveries, log.child({ lane: 'cloud' }))]
    if (c.alerts.webhookUrl !== '') this.alertLanes.push(new AlertLane(c, alertStore, { name: 'webhook', url: c.alerts.webhookUrl, tokenFile: '' }, deliveries, log.child({ lane: 'webhook' })))
    const cloudLane = this.alertLanes[0]!
    egress.beforeBatch = () => cloudLane.flushNow()
    const toCommit = this.metrics.histogram('gateway_message_commit_latency_seconds', 'From receipt by the gateway to the outbox commit (the device is acknowledged then).', LATENCY_BUCKETS)
    const toCloud = this.metrics.histogram('gateway_message_delivery_latency_seconds', 'From receipt by the gateway to the cloud\'s acknowledgement (includes outages).', LATENCY_BUCKETS)
    egress.onDelivered = rows => { const now = Date.now(); for (const r of rows) toCloud.observe((now - r.receivedAt) / 1000) }
    this.metrics.gauge('gateway_build_info', 'Build information; always 1.', () => [[{ version: VERSION, node: process.version }, 1]])
    this.metrics.gauge('gateway_alert_queue_messages', 'Alert deliveries waiting, per receiver.', () => this.alertLanes.map(l => [{ target: l.target.name }, l.pending]))
    const devices = (): DeviceGuard | undefined => this.devices
    this.alerts = new AlertManager(c, alertStore, store.instance, {
      brokerConnected: () => this.mqtt?.connected === true,
      uplinkFailing: () => egress.lastError !== null,
      outboxDepth: () => store.outboxDepth,
      outboxOldestAt: () => store.outboxDepth > 0 ? store.oldestReceivedAt() : null,
      cloudAuthRefused: () => this.cloudAuthRefused(),
      clock: () => this.clock?.state() ?? null,
      quarantined: () => {
        const out = new Map<string, boolean>()
        const d = devices()
        if (d) for (const [id, st] of d.registry.states()) out.set(id, st.status === 'quarantined')
        return out
      }
    }, this.alertLanes, this.metrics, log)
    this.refusals = new RefusalBook(alertStore, this.log.child({ cap: 'refusals' }))
    const refusals = this.refusals
    const watch = this.alerts.watch
    pipeline.on('rejected', e => refusals.record(e))
    pipeline.on('committed', (_n: number, msgs?: Array<{ device: string, stream: string, receivedAt: number, payload: string }>) => {
      if (!msgs) return
      const now = Date.now()
      for (const m of msgs) { toCommit.observe((now - m.receivedAt) / 1000); watch.observe(m.device, m.stream, m.receivedAt, m.payload) }
    })
    this.monitor = new SystemMonitor(c, this.metrics, this.log.child({ cap: 'monitor' }), { clockSynchronized: () => this.clock ? this.clock.synchronised() : null })
    let refusalFlushAt = Date.now()
    this.monitor.onSample(sample => {
      const transitions = this.alerts?.tick(sample)
      if (transitions) this.console?.transitions(transitions)
      if (Date.now() - refusalFlushAt >= 60_000) { refusalFlushAt = Date.now(); refusals.flush() }
    })
  }

  /** The console's in-memory hour of messages and refusals (started by the console-history step). */
  private wireConsoleHistory (store: Store, pipeline: Pipeline): void {
    const count = (name: string) => () => this.metrics.counter(name, '').total()
    const history = this.consoleHistory = new ConsoleHistory({
      received: count('gateway_messages_received_total'),
      delivered: count('gateway_uplink_messages_delivered_total'),
      outboxDepth: () => store.outboxDepth,
      oldestAt: () => store.outboxDepth > 0 ? store.oldestReceivedAt() : null
    })
    pipeline.on('committed', (_n: number, msgs?: Array<{ device: string, stream: string, receivedAt: number, payload: string }>) => {
      if (msgs) for (const m of msgs) history.message(m.device, m.stream, m.receivedAt, m.payload)
    })
    pipeline.on('rejected', (e: { device: string | null, reason: string, detail: string }) => history.refusal(e.device, e.reason, e.detail))
  }

  /**
   * The management API and the console on it. Made at the API's step, not in wire(): apiAuth()
   * makes the token file when it is missing, and the console and the server need the token.
   */
  private wireApi (): ApiServer {
    const c = this.config
    const store = this.store!
    const devices = this.devices!
    const extra = deviceRoutes(c, devices, async (topic, payload) => { await this.mqtt!.publish(topic, payload, 1) })
    const auth = apiAuth(c)
    this.console = new Console({
      config: c,
      db: this.db!,
      token: auth.token,
      history: this.consoleHistory!,
      devices: () => this.devices,
      firewall: () => this.firewall,
      wireguard: () => this.wireguardStats,
      health: () => this.health(),
      status: () => this.status(),
      firing: () => this.alerts?.firing() ?? [],
      refusalSummary: () => this.refusals?.summary(5000) ?? {},
      retryDeadLetters: () => { const n = store.retryDeadLetters(); this.egress?.kick(); return n },
      sendCommand: extra.get('POST /commands')!,
      audit: this.audit!,
      log: this.log.child({ cap: 'console' })
    })
    auth.session = this.console.session
    this.api = new ApiServer(c.api.host, c.api.port, { health: () => this.health(), status: () => this.status(), extra, console: this.console }, this.metrics, this.log.child({ cap: 'api' }), auth)
    return this.api
  }

  /** The cloud refuses the gateway's credentials: the telemetry uplink or the alert lane. */
  private cloudAuthRefused (): boolean {
    return this.egress?.authFailing === true || this.alertLanes[0]?.authRefused === true
  }

  /** Why the gateway cannot do its job now; empty when it can. */
  problems (): string[] {
    const c = this.config
    const out: string[] = []
    if (this.alerts?.isFiring('broker_unreachable') === true) out.push(`broker down: no connection to ${c.mqtt.url} for more than ${c.alerts.brokerUnreachableSeconds} s`)
    const disk = this.monitor?.last?.disk
    const full = this.pipeline?.diskFullReason ?? null
    if (full !== null || (disk && disk.availBytes < c.outbox.minFreeBytes)) {
      const why = full === 'sqlite_full' ? 'the outbox cannot write (SQLITE_FULL)' : disk ? `${Math.round(disk.availBytes / 1048576)} MiB available on ${disk.path}` : 'below outbox.minFreeBytes'
      out.push(`disk full: ${why}`)
    }
    if (disk && disk.files > 0 && disk.filesFree < c.alerts.diskFreeMinInodes / 10) out.push(`disk full: ${disk.filesFree} inodes free on ${disk.path}`)
    // An unsynchronised clock alone is no reason: the gateway works without NTP (certificates are
    // backdated); a clock earlier than the PKI makes the broker refuse every device.
    if (this.clock?.state().behindPki === true) out.push('clock earlier than the PKI: the broker refuses devices until the clock is set (see app/docs/time.md)')
    if (this.cloudAuthRefused()) out.push('cloud refusing authentication (HTTP 401/403): check uplink.tokenFile')
    const st = this.store
    if (st) {
      const hw = c.alerts.outboxHighWaterRatio
      if (st.outboxDepth >= c.outbox.maxMessages * hw || st.outboxBytes >= c.outbox.maxBytes * hw) out.push(`outbox over its high-water mark: ${st.outboxDepth} messages, ${st.outboxBytes} bytes (${Math.round(hw * 100)} % of outbox.maxMessages/maxBytes)`)
    }
    return out
  }

  private maintain (): void {
    try {
      const o = this.config.outbox
      const removed = (this.store?.pruneTrafficLog(o.trafficLogRetentionHours * 3600_000, o.trafficLogMaxRows) ?? 0) +
        (this.store?.pruneTrafficRollups(o.trafficLogRetentionHours * 3600_000) ?? 0)
      if (removed > 0) this.log.info('traffic log pruned', { removed })
    } catch (err) {
      this.log.error('maintenance failed', { err })
    }
  }

  health (): { ok: boolean, body: Record<string, unknown> } {
    const clock = this.clock?.state()
    const s = this.store?.stats()
    const ready = this.ready && this.store !== undefined
    const reasons = ready ? this.problems() : []
    const ok = ready && reasons.length === 0
    return {
      ok,
      body: {
        status: ok ? 'ok' : ready ? 'degraded' : 'starting',
        reasons,
        live: true,
        ready: ok,
        broker: this.mqtt?.connected === true ? 'connected' : 'disconnected',
        uplink: this.egress?.state ?? 'stopped',
        outbox: s ? { depth: s.depth, bytes: s.bytes, full: this.pipeline?.full === true } : null,
        coap: !this.config.coap.enabled ? 'disabled' : this.coap?.bound ? 'listening' : 'not bound',
        clock: clock ? { synchronised: clock.synchronised, problems: clock.problems } : null
      }
    }
  }

  status (): Record<string, unknown> {
    const s = this.store?.stats()
    const rejected = this.metrics.counter('gateway_messages_rejected_total', '')
    return {
      gateway: this.config.gateway.id,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000),
      ready: this.ready,
      broker: { url: this.config.mqtt.url, connected: this.mqtt?.connected === true },
      uplink: { url: this.config.uplink.url, state: this.egress?.state, lastError: this.egress?.lastError ?? null, lastSuccessAt: this.egress?.lastSuccessAt ?? null },
      outbox: s,
      messages: {
        received: this.metrics.counter('gateway_messages_received_total', '').total(),
        accepted: this.metrics.counter('gateway_messages_accepted_total', '').total(),
        rejected: rejected.total(),
        delivered: this.metrics.counter('gateway_uplink_messages_delivered_total', '').total()
      },
      memory: { rssBytes: process.memoryUsage.rss() },
      problems: this.problems(),
      system: this.monitor?.last ?? null,
      alerts: {
        firing: this.alerts?.firing().map(a => ({ rule: a.rule, key: a.key, labels: a.labels, value: a.value, threshold: a.threshold, summary: a.summary, firedAt: a.firedAt })) ?? [],
        queued: Object.fromEntries(this.alertLanes.map(l => [l.target.name, l.pending])),
        delivery: Object.fromEntries(this.alertLanes.map(l => [l.target.name, { lastError: l.lastError, lastSuccessAt: l.lastSuccessAt, authRefused: l.authRefused }]))
      },
      refusals: this.refusals?.summary() ?? {}
    }
  }

  /** Idempotent. The capabilities in reverse order: API, ingress, the pipeline's last commit, ..., a bounded egress flush, the database. */
  stop (graceMs = 5000): Promise<void> {
    this.stopping ??= (async () => {
      this.ready = false
      await this.notify.stopping()
      this.notify.stopWatchdog()
      await this.lifecycle.stop(graceMs)
      this.log.info('gateway stopped', { outboxLeft: this.store?.outboxDepth })
    })()
    return this.stopping
  }
}
