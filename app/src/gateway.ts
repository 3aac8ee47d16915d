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
import { deviceRoutes } from './devices/api.js'
import { DeviceGuard } from './devices/guard.js'
import { Pipeline } from './pipeline/pipeline.js'
import { openDatabase, type DB } from './store/db.js'
import { Store } from './store/store.js'

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
  apiAddress?: AddressInfo
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
    const store = this.store = new Store(this.db)
    const pipeline = this.pipeline = new Pipeline(store, c, this.metrics, this.log.child({ cap: 'pipeline' }))
    const egress = this.egress = new Egress(c, store, this.metrics, this.log.child({ cap: 'egress' }), () => pipeline.notifySpace())
    pipeline.on('committed', () => egress.kick())
    this.registerGauges()
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
    this.api = new ApiServer(c.api.host, c.api.port, { health: () => this.health(), status: () => this.status(), extra }, this.metrics, this.log.child({ cap: 'api' }), apiAuth(c))
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

  private maintain (): void {
    try {
      const o = this.config.outbox
      const removed = this.store?.pruneTrafficLog(o.trafficLogRetentionHours * 3600_000, o.trafficLogMaxRows) ?? 0
      if (removed > 0) this.log.info('traffic log pruned', { removed })
    } catch (err) {
      this.log.error('maintenance failed', { err })
    }
  }

  health (): { ok: boolean, body: Record<string, unknown> } {
    const s = this.store?.stats()
    const ok = this.ready && this.store !== undefined
    return {
      ok,
      body: {
        status: ok ? 'ok' : 'starting',
        live: true,
        ready: ok,
        broker: this.mqtt?.connected === true ? 'connected' : 'disconnected',
        uplink: this.egress?.state ?? 'stopped',
        outbox: s ? { depth: s.depth, bytes: s.bytes, full: this.pipeline?.full === true } : null,
        coap: !this.config.coap.enabled ? 'disabled' : this.coap?.bound ? 'listening' : 'not bound'
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
      memory: { rssBytes: process.memoryUsage.rss() }
    }
  }

  /** Idempotent. Ingress first (no new acknowledgements), then a bounded egress flush, then the store. */
  stop (graceMs = 5000): Promise<void> {
    this.stopping ??= (async () => {
      this.ready = false
      await this.notify.stopping()
      this.notify.stopWatchdog()
      if (this.maintenance) clearInterval(this.maintenance)
      this.firewall?.stop()
      await this.mqtt?.stop().catch(err => this.log.warn('mqtt stop', { err }))
      await this.coap?.stop().catch(err => this.log.warn('coap stop', { err }))
      this.pipeline?.close()
      await this.denials?.stop().catch(err => this.log.warn('broker log follower stop', { err }))
      this.devices?.stop()
      await this.egress?.stop(graceMs)
      await this.api?.stop()
      this.db?.close()
      this.log.info('gateway stopped', { outboxLeft: this.store?.outboxDepth })
    })()
    return this.stopping
  }
}
