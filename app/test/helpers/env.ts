import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildConfig } from '../../src/config/load.js'
import type { Config } from '../../src/config/schema.js'
import { Cloud } from './cloud.js'
import { GatewayProcess } from './gateway-process.js'
import { Mosquitto } from './mosquitto.js'
import { freePort } from './ports.js'
import { tempDir } from './temp.js'

export type Sections = Record<string, Record<string, unknown>>

export { tempDir }

/** Builds (and validates) a configuration for tests, with free ports, and writes it as the daemon reads it. */
export async function testConfig (dir: string, sections: Sections = {}): Promise<{ config: Config, file: string, raw: Sections }> {
  const raw: Sections = {
    gateway: { id: 'gw-test', dataDir: join(dir, 'data'), logLevel: 'info', ...sections.gateway },
    mqtt: { url: `mqtts://127.0.0.1:${await freePort()}`, reconnectMinMs: 100, reconnectMaxMs: 1000, ...sections.mqtt },
    limits: { ratePerSecond: 100000, rateBurst: 100000, ...sections.limits },
    outbox: { ...sections.outbox },
    uplink: { lingerMs: 20, backoffBaseMs: 100, backoffMaxMs: 1000, timeoutMs: 5000, ...sections.uplink },
    api: { port: await freePort(), ...sections.api },
    broker: { lanPort: await freePort(), lanBind: '127.0.0.1', ...sections.broker },
    // CoAP binds the LAN address (192.168.100.1) by default; tests that want it say where.
    coap: { enabled: false, ...sections.coap }
  }
  raw.broker = { ...raw.broker, gatewayPort: Number(new URL(String(raw.mqtt!.url)).port) }
  for (const [k, v] of Object.entries(sections)) if (!(k in raw)) raw[k] = v
  const config = buildConfig(raw)
  const file = join(dir, 'gateway.json')
  writeFileSync(file, JSON.stringify({ version: 1, ...raw }, null, 2))
  return { config, file, raw }
}

export interface Stack { dir: string, config: Config, configFile: string, broker: Mosquitto, cloud: Cloud, gateway: GatewayProcess }

/**
 * Broker + cloud + gateway process, all real, on loopback, torn down with the test.
 * `sections` adjusts the gateway configuration (the cloud URL and CA are filled in).
 */
export async function startStack (t: { teardown: (fn: () => Promise<void> | void) => void }, sections: Sections = {}, opts: { startGateway?: boolean, command?: ConstructorParameters<typeof GatewayProcess>[3], brokerConf?: string[] } = {}): Promise<Stack> {
  const dir = tempDir(t)
  const cloud = new Cloud(dir)
  await cloud.start()
  const { config, file } = await testConfig(dir, { ...sections, uplink: { url: cloud.url, caFile: cloud.caFile, ...sections.uplink } })
  const broker = new Mosquitto(config, opts.brokerConf)
  await broker.start()
  const gateway = new GatewayProcess(file, config.api.port, join(dir, 'gateway.log'), opts.command)
  t.teardown(async () => {
    await gateway.stop('SIGKILL')
    await broker.stop()
    await cloud.stop()
  })
  if (opts.startGateway !== false) await gateway.start()
  return { dir, config, configFile: file, broker, cloud, gateway }
}
