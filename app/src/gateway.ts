import type { AddressInfo } from 'node:net'
import { apiAuth } from './api/auth.js'
import { ApiServer } from './api/server.js'
import { paths } from './config/load.js'
import type { Config } from './config/schema.js'
import { Egress } from './egress/egress.js'
import { AuditLog } from './audit/audit.js'
import { DenialFollower } from './broker/denial-log.js'
import { FirewallMonitor } from './firewall/monitor.js'
import { createLogger, type Logger } from './lib/logger.js'
import { Registry } from './lib/metrics.js'
import { SdNotify } from './lib/sd-notify.js'
import { MqttIngress } from './mqtt-ingress/mqtt-ingress.js'
import { CoapIngress } from './coap-ingress/coap-ingress.js'
import { ClockKeeper } from './clock/clock.js'
import { deviceRoutes } from './devices/api.js'
import { DeviceGuard } from './devices/guard.js'
import { Pipeline } from './pipeline/pipeline.js'
import { openDatabase, type DB } from './store/db.js'
import { Store } from './store/store.js'
import { AlertLane } from './alerts/lane.js'
import { AlertManager } from './alerts/manager.js'
import { RefusalBook } from './alerts/refusals.js'
import { AlertStore } from './alerts/store.js'
import { SystemMonitor } from './monitor/monitor.js'
import { LATENCY_BUCKETS } from './lib/metrics.js'
import { VERSION } from './cli/index.js'
import { Console } from './console/console.js'
import { ConsoleHistory } from './console/history.js'

export interface GatewayOptions { log?: Logger, notify?: SdNotify }

/**
 * The composition root. start(): store -> pipeline -> egress -> ingress -> API, then READY=1.
 * stop(): ingress -> egress flush (bounded) -> store close. Each capability has start()/stop() and
 * does nothing in its constructor.
 */
export class Gateway {
  readonly metrics = new Registry()
  readonly log: Logger
  db?: DB
  store?: Store
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
  private readonly startedAt = Date.now()
  private maintenance?: NodeJS.Timeout
  private stopping?: Promise<void>
  ready = false

  constructor (readonly config: Config, opts: GatewayOptions = {}) {
    this.log = opts.log ?? createLogger(config.gateway.logLevel)
    this.notify = opts.notify ?? new SdNotify()
  }

  async start (): Promise<void> {
    const c = this.config
    if (c.uplink.url === '') throw new Error('uplink.url is not set: the gateway has nowhere to deliver (set it in the configuration file or GATEWAY_UPLINK_URL)')
    this.db = openDatabase(paths(c).db, { synchronous: c.outbox.synchronous })
    this.clock = new ClockKeeper(c.gateway.dataDir, this.log.child({ cap: 'clock' }))
    this.clock.start()
    const store = this.store = new Store(this.db)
    const pipeline = this.pipeline = new Pipeline(store, c, this.metrics, this.log.child({ cap: 'pipeline' }), c.gateway.dataDir)
    pipeline.start()
    const egress = this.egress = new Egress(c, store, this.metrics, this.log.child({ cap: 'egress' }), () => pipeline.notifySpace())
    pipeline.on('committed', () => egress.kick())
    // Sending from memory (app/docs/write-path.md): the uplink does not wait for the commit's fsync.
    egress.memory = pipeline
    pipeline.onAdmit = () => egress.admitted()
    this.registerGauges()
    this.startOperations(pipeline, egress, store)
    this.firewall = new FirewallMonitor(c.firewall.stateDir, c.firewall.statsPollSeconds, this.metrics,
      new AuditLog(this.db, err => this.log.error('audit write failed', { err })), this.log.child({ cap: 'firewall' }), this.db)
    this.firewall.start()
    egress.start()
    const devices = this.devices = new DeviceGuard(c, this.db, pipeline, this.metrics, this.log.child({ cap: 'devices' }))
    devices.start()
    if (c.broker.denialLogCommand.length > 0) {
      this.denials = new DenialFollower(c.broker.denialLogCommand, {
        gatewayId: c.gateway.id,
        onDenial: d => devices.aclDenied(d.device, {
          kind: d.kind,
          topic: d.topic.slice(0, 256),
          ...(d.truncated ? { truncated: true } : {}),
          ...(d.device === null ? { clientId: d.clientId.slice(0, 128) } : {})
        })
      }, this.metrics, this.log.child({ cap: 'broker-log' }))
      this.denials.start()
    }
    this.mqtt = new MqttIngress(c, pipeline, this.metrics, this.log.child({ cap: 'mqtt' }))
    // READY waits for the broker subscription, but only so long: a broker that comes up later is
    // reached by the reconnect loop, and /health says "broker": "disconnected" meanwhile.
    const subscribed = await Promise.race([this.mqtt.start().then(() => true), new Promise<false>(resolve => setTimeout(() => resolve(false), 10000).unref())])
    if (!subscribed) this.log.warn('broker not reachable yet; starting without it', { url: c.mqtt.url })
    if (c.coap.enabled) {
      this.coap = new CoapIngress(c, pipeline, devices, this.metrics, this.log.child({ cap: 'coap' }))
      await this.coap.start()
    }
    const extra = deviceRoutes(c, devices, async (topic, payload) => { await this.mqtt!.publish(topic, payload, 1) })
    const auth = apiAuth(c)
    this.startConsole(auth.token, extra.get('POST /commands')!)
    auth.session = this.console!.session
    this.api = new ApiServer(c.api.host, c.api.port, { health: () => this.health(), status: () => this.status(), extra, console: this.console }, this.metrics, this.log.child({ cap: 'api' }), auth)
    this.apiAddress = await this.api.start()
    this.maintenance = setInterval(() => this.maintain(), 10 * 60_000).unref()
    this.maintain()
    this.ready = true
    this.log.info('gateway ready', { api: `${this.apiAddress.address}:${this.apiAddress.port}`, outbox: store.outboxDepth })
    await this.notify.ready('ready')
    this.notify.startWatchdog(() => this.ready)
  }

  private registerGauges (): void {
    const store = this.store!
    this.metrics.gauge('gateway_outbox_messages', 'Messages waiting in the outbox.', () => store.outboxDepth)
    this.metrics.gauge('gateway_outbox_bytes', 'Payload bytes waiting in the outbox.', () => store.outboxBytes)
    this.metrics.gauge('gateway_outbox_oldest_age_seconds', 'Age of the oldest message in the outbox.', () => {
      const at = store.oldestReceivedAt()
      return at === null ? 0 : (Date.now() - at) / 1000
    })
    this.metrics.gauge('gateway_dead_letters', 'Messages in the dead-letter table.', () => store.stats().deadLetters)
    this.metrics.gauge('gateway_outbox_full', '1 while the outbox is at capacity (ingress is held back).', () => this.pipeline?.full === true ? 1 : 0)
    this.metrics.gauge('process_resident_memory_bytes', 'Resident set size.', () => process.memoryUsage.rss())
    this.metrics.gauge('process_start_time_seconds', 'Start time of the process.', () => Math.floor(this.startedAt / 1000))
  }

  /** Monitor, alert rules, alert lanes, refusal book, latency histograms. */
  private startOperations (pipeline: Pipeline, egress: Egress, store: Store): void {
    const c = this.config
    const log = this.log.child({ cap: 'alerts' })
    const alertStore = new AlertStore(this.db!)
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
    this.alerts.start()
    this.refusals = new RefusalBook(alertStore, this.log.child({ cap: 'refusals' }))
    this.refusals.load()
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
    for (const l of this.alertLanes) l.start()
    this.monitor.start()
  }

  private startConsole (token: string | null, sendCommand: ConstructorParameters<typeof Console>[0]['sendCommand']): void {
    const store = this.store!
    const count = (name: string) => () => this.metrics.counter(name, '').total()
    const history = this.consoleHistory = new ConsoleHistory({
      received: count('gateway_messages_received_total'),
      delivered: count('gateway_uplink_messages_delivered_total'),
      outboxDepth: () => store.outboxDepth,
      oldestAt: () => store.outboxDepth > 0 ? store.oldestReceivedAt() : null
    })
    this.pipeline!.on('committed', (_n: number, msgs?: Array<{ device: string, stream: string, receivedAt: number, payload: string }>) => {
      if (msgs) for (const m of msgs) history.message(m.device, m.stream, m.receivedAt, m.payload)
    })
    this.pipeline!.on('rejected', (e: { device: string | null, reason: string, detail: string }) => history.refusal(e.device, e.reason, e.detail))
    history.start()
    this.console = new Console({
      config: this.config,
      db: this.db!,
      token,
      history,
      devices: () => this.devices,
      firewall: () => this.firewall,
      health: () => this.health(),
      status: () => this.status(),
      firing: () => this.alerts?.firing() ?? [],
      refusalSummary: () => this.refusals?.summary(5000) ?? {},
      retryDeadLetters: () => { const n = store.retryDeadLetters(); this.egress?.kick(); return n },
      sendCommand,
      audit: this.devices!.audit,
      log: this.log.child({ cap: 'console' })
    })
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

  /** Idempotent. Ingress first (no new acknowledgements), then a bounded egress flush, then the store. */
  stop (graceMs = 5000): Promise<void> {
    this.stopping ??= (async () => {
      this.ready = false
      await this.notify.stopping()
      this.notify.stopWatchdog()
      if (this.maintenance) clearInterval(this.maintenance)
      this.clock?.stop()
      this.firewall?.stop()
      await this.mqtt?.stop().catch(err => this.log.warn('mqtt stop', { err }))
      await this.coap?.stop().catch(err => this.log.warn('coap stop', { err }))
      this.pipeline?.close()
      await this.denials?.stop().catch(err => this.log.warn('broker log follower stop', { err }))
      this.devices?.stop()
      this.monitor?.stop()
      this.consoleHistory?.stop()
      this.refusals?.flush()
      // An alert request in flight (the egress awaits it before its batch) must not outlast the grace.
      const lanesDeadline = setTimeout(() => { for (const l of this.alertLanes) void l.stop() }, graceMs)
      await this.egress?.stop(graceMs)
      clearTimeout(lanesDeadline)
      for (const l of this.alertLanes) await l.stop()
      await this.api?.stop()
      this.db?.close()
      this.log.info('gateway stopped', { outboxLeft: this.store?.outboxDepth })
    })()
    return this.stopping
  }
}

