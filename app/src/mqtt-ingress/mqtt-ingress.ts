import { readFileSync } from 'node:fs'
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient, type Packet } from 'mqtt'
import type { Config } from '../config/schema.js'
import { paths } from '../config/load.js'
import { backoffDelay } from '../lib/backoff.js'
import { HttpError } from '../lib/http-post.js'
import type { Logger } from '../lib/logger.js'
import type { Registry } from '../lib/metrics.js'
import type { Pipeline } from '../pipeline/pipeline.js'
import { BROKER_DROPPED_TOPIC } from '../broker/mosquitto-conf.js'

/** Topic scheme: devices/<device id>/<stream>. The broker's ACL ties <device id> to the certificate CN. */
export function parseTopic (topic: string): { device: string, stream: string } | undefined {
  const parts = topic.split('/')
  if (parts.length !== 3 || parts[0] !== 'devices' || parts[1] === '' || parts[2] === '') return undefined
  return { device: parts[1]!, stream: parts[2]! }
}

/** Most QoS 1 messages read from the broker and not yet acknowledged (bounds the gateway's memory). */
const MAX_UNACKED = 2000

type SendPacket = (packet: Packet, cb?: (err?: Error) => void, ...rest: unknown[]) => void

/** A PUBACK held until its message's commit. */
interface PendingAck { packet: Packet, rest: unknown[], state: 'wait' | 'ok' | 'failed' }

/**
 * Subscribes to devices/+/<stream> with QoS 1 on a persistent session (clean: false), so the broker
 * queues for the gateway while it is down, and sends each PUBACK only after the outbox has committed
 * the message.
 *
 * mqtt.js handles incoming packets one at a time and sends the PUBACK when handleMessage calls back.
 * Waiting in handleMessage for a commit would allow one message per fsync. Instead handleMessage
 * returns at once (so the next packets are read and can share the commit) and the PUBACK itself is
 * held back in _sendPacket until the message's commit has finished; PUBACKs stay in arrival order
 * (MQTT 3.1.1 §4.6). If the commit fails the connection is dropped without the PUBACK, and the broker
 * sends the message again on the persistent session.
 */
export class MqttIngress {
  private client?: MqttClient
  private readonly held = new Map<number, Promise<unknown>>()
  /**
   * PUBACKs waiting for their commits, in arrival order; those at the head whose commits are done
   * are sent at once (a queue, not a chain of promises: a chain of 2,000 links released a group's
   * PUBACKs, and the count that lets reading go on, only after thousands of microtasks).
   */
  private acks: PendingAck[] = []
  /** mqtt.js's own _sendPacket, which the PUBACKs go out through once committed. */
  private sendPacket?: SendPacket
  private ackHead = 0
  private ackWaiters: Array<() => void> = []
  /** Messages read but not yet acknowledged; past MAX_UNACKED the ingress stops reading. */
  private unacked = 0
  /** Bumped at each reconnect, so PUBACKs of a dropped connection do not count against the new one. */
  private generation = 0
  private attempts = 0
  private stopping = false
  private readonly abort = new AbortController()
  connected = false
  /** Mosquitto's own count of dropped messages ($SYS), since the broker started. */
  brokerDropped = 0
  private readonly connects
  private readonly errors

  constructor (private readonly config: Config, private readonly pipeline: Pipeline, metrics: Registry, private readonly log: Logger) {
    this.connects = metrics.counter('gateway_mqtt_connects_total', 'Successful connections of the gateway to the broker.').init()
    this.errors = metrics.counter('gateway_mqtt_errors_total', 'Broker connection errors.').init()
    metrics.gauge('gateway_mqtt_connected', '1 while the gateway is connected to the broker.', () => this.connected ? 1 : 0)
    metrics.gauge('gateway_broker_messages_dropped_total', 'Messages Mosquitto dropped (its queue limits), from $SYS; any rise means loss before the gateway.', () => this.brokerDropped, 'counter')
  }

  /**
   * Connects in the background (the broker may come up later: reconnects go on with backoff).
   * The promise resolves once the first subscription is in place.
   */
  start (): Promise<void> {
    const c = this.config.mqtt
    const p = paths(this.config)
    const tls = c.url.startsWith('mqtts:')
      ? { ca: readFileSync(p.caCert), cert: readFileSync(p.mqttCert), key: readFileSync(p.mqttKey), rejectUnauthorized: true }
      : {}
    const opts: IClientOptions = {
      clientId: this.config.gateway.id,
      clean: false,
      keepalive: c.keepaliveSeconds,
      protocolVersion: 4,
      reconnectPeriod: 0, // reconnects are ours, with backoff and jitter
      connectTimeout: 10000,
      resubscribe: false,
      ...tls
    }
    const client = mqtt.connect(c.url, opts)
    this.client = client
    const send = this.sendPacket = (client as unknown as { _sendPacket: SendPacket })._sendPacket.bind(client)
    ;(client as unknown as { _sendPacket: SendPacket })._sendPacket = (packet, cb, ...rest) => {
      if (packet.cmd === 'puback' && typeof packet.messageId === 'number') {
        const commit = this.held.get(packet.messageId)
        if (commit) {
          this.held.delete(packet.messageId)
          const generation = this.generation
          // Keep the PUBACKs in arrival order: each waits for its own commit and for the previous PUBACK.
          // (No named closure per message: the bundle keeps function names, which costs a
          // defineProperty each, measurable at 1,000 msg/s.)
          const ack: PendingAck = { packet, rest, state: 'wait' }
          this.acks.push(ack)
          commit.then(() => this.settleAck(ack, 'ok', generation), () => this.settleAck(ack, 'failed', generation))
          cb?.()
          return
        }
      }
      send(packet, cb, ...rest)
    }
    client.handleMessage = (packet: IPublishPacket, callback: (err?: Error) => void) => {
      this.onPublish(packet).then(() => callback(), () => callback())
    }

    return new Promise(resolve => {
      let first = true
      client.on('connect', connack => {
        this.connected = true
        this.attempts = 0
        this.connects.inc()
        this.log.info('connected to broker', { url: c.url, sessionPresent: connack.sessionPresent })
        // Subscribing again on a present session is harmless and covers a broker that lost it.
        const topics: Record<string, { qos: 0 | 1 }> = Object.fromEntries(c.streams.map(s => [`devices/+/${s}`, { qos: 1 as const }]))
        topics[BROKER_DROPPED_TOPIC] = { qos: 0 }
        client.subscribe(topics, (err, granted) => {
          if (err) { this.log.error('subscribe failed', { err }); this.dropConnection('subscribe failed'); return }
          const refused = (granted ?? []).filter(g => g.qos === 128)
          if (refused.length > 0) this.log.error('broker refused subscriptions', { topics: refused.map(g => g.topic) })
          if (first) { first = false; resolve() }
        })
      })
      client.on('close', () => {
        const was = this.connected
        this.connected = false
        if (was) this.log.warn('broker connection closed')
        if (!this.stopping) this.scheduleReconnect()
      })
      client.on('error', err => {
        this.errors.inc()
        this.log.warn('broker connection error', { err })
      })
    })
  }

  private async onPublish (packet: IPublishPacket): Promise<void> {
    if (packet.topic === BROKER_DROPPED_TOPIC) {
      const n = Number(packet.payload.toString())
      if (Number.isFinite(n)) {
        if (n > this.brokerDropped) this.log.error('the broker dropped messages before they reached the gateway', { dropped: n - this.brokerDropped, total: n })
        this.brokerDropped = n
      }
      return
    }
    const done = this.submit(packet)
    if (packet.qos > 0 && typeof packet.messageId === 'number') {
      this.held.set(packet.messageId, done)
      this.unacked++
    }
    // The handler returns before the commit so mqtt.js keeps reading; the PUBACK waits in _sendPacket.
    // Reading stops (the broker then queues) while the outbox is full or too much is unacknowledged:
    // the broker's own inflight limit is not a bound the gateway's memory should rely on.
    if (this.unacked >= MAX_UNACKED) this.pipeline.commitSoon() // no linger while reading waits for it
    if (this.pipeline.full || this.unacked >= MAX_UNACKED) await done.catch(() => {})
  }

  private settleAck (ack: PendingAck, state: 'ok' | 'failed', generation: number): void {
    ack.state = state
    if (generation === this.generation) this.releaseAcks()
  }

  /** Into the pipeline; resolves once committed (or refused), retries while the outbox is full. */
  private async submit (packet: IPublishPacket): Promise<void> {
    const t = parseTopic(packet.topic)
    for (;;) {
      if (this.pipeline.full) {
        // Backpressure: stop reading (this promise holds mqtt.js's callback) until the outbox has room.
        await this.pipeline.waitForSpace(this.abort.signal)
      }
      // retain set on delivery: the broker's stored message, sent again at each (re-)subscription; an
      // old sequence number there is not the device's replay (MQTT 3.1.1 3.3.1.3: live deliveries carry retain 0).
      const outcome = t
        ? await this.pipeline.submit({ device: t.device, transport: 'mqtt', stream: t.stream, raw: packet.payload as Buffer, redelivery: packet.dup || packet.retain })
        : await this.pipeline.submit({ device: '', transport: 'mqtt', stream: '', raw: packet.payload as Buffer })
      if (outcome.accepted || outcome.reason !== 'outbox_full') return
      await this.pipeline.waitForSpace(this.abort.signal)
      if (this.stopping) throw new Error('stopping with a full outbox')
    }
  }

  /** Sends the PUBACKs at the head of the queue whose commits are done; a failed commit drops the connection. */
  private releaseAcks (): void {
    while (this.ackHead < this.acks.length && this.acks[this.ackHead]!.state !== 'wait') {
      const a = this.acks[this.ackHead++]!
      this.unacked--
      if (a.state === 'failed') {
        // The broker sends this message, and all unacknowledged after it, again after the reconnect.
        this.dropConnection('commit failed')
        this.acks = []
        this.ackHead = 0
        break
      }
      if (this.client?.connected === true) this.sendPacket?.(a.packet, undefined, ...a.rest)
    }
    if (this.ackHead > 1024 && this.ackHead * 2 > this.acks.length) { this.acks = this.acks.slice(this.ackHead); this.ackHead = 0 }
    if (this.ackHead >= this.acks.length) for (const w of this.ackWaiters.splice(0)) w()
  }

  private dropConnection (why: string): void {
    this.log.warn('dropping broker connection; unacknowledged messages will be sent again', { why })
    this.client?.stream?.destroy()
  }

  private scheduleReconnect (): void {
    const c = this.config.mqtt
    const delay = backoffDelay(this.attempts++, c.reconnectMinMs, c.reconnectMaxMs)
    setTimeout(() => {
      if (this.stopping || !this.client || this.client.connected) return
      this.held.clear()
      this.acks = []
      this.ackHead = 0
      this.unacked = 0
      this.generation++
      this.client.reconnect()
    }, delay).unref()
  }

  /** Publishes on the gateway's own connection (commands to devices); resolves on the broker's PUBACK. */
  async publish (topic: string, payload: string, qos: 0 | 1 = 1): Promise<void> {
    const client = this.client
    if (!client || !this.connected) throw new HttpError(503, 'the gateway is not connected to the broker')
    await client.publishAsync(topic, payload, { qos })
  }

  /** Stops reading, lets committed messages' PUBACKs go out, and closes the connection. */
  async stop (): Promise<void> {
    this.stopping = true
    this.abort.abort()
    const client = this.client
    if (!client) return
    if (client.connected) {
      const sent = this.ackHead >= this.acks.length ? Promise.resolve() : new Promise<void>(resolve => this.ackWaiters.push(resolve))
      await Promise.race([sent, new Promise(resolve => setTimeout(resolve, 2000))])
      await new Promise<void>(resolve => client.end(false, {}, () => resolve()))
    } else {
      // Still connecting (or between reconnects): give up the attempt.
      await new Promise<void>(resolve => client.end(true, {}, () => resolve()))
    }
    this.connected = false
  }
}
