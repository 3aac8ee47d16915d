import type { MqttClient } from 'mqtt'
import type { Config } from '../../src/config/schema.js'
import { deviceCreds, mqttDevice } from './devices.js'

export interface Acked { device: string, seq: number }

/**
 * mqtt.js devices publishing QoS 1 as fast as the broker acknowledges (a window of `inflight` each).
 * `acked` holds what the broker confirmed (the device's PUBACK): the set the gateway must deliver.
 */
export class LoadGenerator {
  readonly acked: Acked[] = []
  readonly clients: MqttClient[] = []
  private running = false
  private loops: Array<Promise<void>> = []
  constructor (private readonly config: Config, readonly devices: string[], private readonly inflight = 10) {}

  async connect (): Promise<void> {
    for (const d of this.devices) this.clients.push(await mqttDevice(this.config.broker.lanPort, deviceCreds(this.config, d), { clean: true }))
  }

  /** Publishes until stop() or `perDevice` messages each; `ratePerDevice` (msg/s) paces each device. */
  start (perDevice = Infinity, ratePerDevice = Infinity, payloadBytes = 64): void {
    this.running = true
    const pad = 'x'.repeat(Math.max(0, payloadBytes - 40))
    this.loops = this.clients.map(async (c, i) => {
      const device = this.devices[i]!
      let seq = 0
      const inflight = new Set<Promise<void>>()
      const t0 = Date.now()
      while (this.running && seq < perDevice) {
        if (Number.isFinite(ratePerDevice)) {
          const due = t0 + (seq * 1000) / ratePerDevice - Date.now()
          if (due > 0) await new Promise(resolve => setTimeout(resolve, due))
        }
        const s = ++seq
        const p: Promise<void> = c.publishAsync(`devices/${device}/telemetry`, JSON.stringify({ seq: s, t: Date.now(), pad }), { qos: 1 })
          .then(() => { this.acked.push({ device, seq: s }) }, () => {})
          .finally(() => inflight.delete(p))
        inflight.add(p)
        if (inflight.size >= this.inflight) await Promise.race(inflight)
      }
      await Promise.all(inflight)
    })
  }

  /** Waits until every device has sent its `perDevice` messages. */
  async finished (): Promise<void> { await Promise.all(this.loops) }

  async stop (): Promise<void> {
    this.running = false
    await Promise.all(this.loops)
  }

  async close (): Promise<void> {
    await this.stop()
    await Promise.all(this.clients.map(c => c.endAsync().catch(() => {})))
  }
}
