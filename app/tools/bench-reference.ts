/**
 * The bench's reference: a bare Node process doing the gateway's I/O and nothing else, run by the
 * bench in the same run and under the same V8 flags (`node <bench bundle> reference run -c <config>`).
 *
 * It subscribes to the devices' streams on the gateway's broker listener with the gateway's TLS
 * client certificate, QoS 1 and a persistent session, as the gateway does; mqtt.js acknowledges each
 * message as it arrives. Every `uplink.lingerMs` it POSTs what arrived (at most `uplink.batchMaxMessages`
 * messages, JSON, gzip) to the uplink URL with undici, one request in flight. It answers /health so
 * the bench starts it like the gateway.
 *
 * What it leaves out is everything the gateway is for: validation, replay and rate checks, the
 * durable outbox (SQLite, fsync), the audit chain, metrics. So the gateway's CPU and RSS over the
 * reference's, phase by phase, is what that work costs; and the reference's own CPU per message at
 * 1,000 msg/s over saturation is what any Node process pays on this machine for the same traffic.
 */
import { readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { gzipSync } from 'node:zlib'
import mqtt from 'mqtt'
import { Agent, request } from 'undici'
import { buildConfig, paths } from '../src/config/load.js'

export function reference (configFile: string): void {
  const c = buildConfig(JSON.parse(readFileSync(configFile, 'utf8')))
  const p = paths(c)
  const batchMax = c.uplink.batchMaxMessages
  const agent = new Agent({ connect: { ca: readFileSync(c.uplink.caFile) } })
  createServer((_req, res) => { res.end('{"status":"ok"}') }).listen(c.api.port, '127.0.0.1')
  const client = mqtt.connect(c.mqtt.url, {
    clientId: c.gateway.id,
    clean: false,
    protocolVersion: 4,
    ca: readFileSync(p.caCert),
    cert: readFileSync(p.mqttCert),
    key: readFileSync(p.mqttKey)
  })
  client.on('connect', () => { client.subscribe(Object.fromEntries(c.mqtt.streams.map(s => [`devices/+/${s}`, { qos: 1 as const }]))) })
  client.on('error', err => { process.stderr.write(`reference: ${err.message}\n`) })

  let queue: Array<{ device: string, stream: string, payload: unknown }> = []
  let timer: NodeJS.Timeout | undefined
  let sending = false
  const send = async (): Promise<void> => {
    timer = undefined
    sending = true
    const batch = queue.slice(0, batchMax)
    try {
      const json = Buffer.from(JSON.stringify({ messages: batch }))
      const res = await request(c.uplink.url, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body: gzipSync(json)
      })
      await res.body.dump()
      if (res.statusCode < 300) queue = queue.slice(batch.length)
    } catch (err) {
      process.stderr.write(`reference: ${(err as Error).message}\n`)
    }
    sending = false
    if (queue.length > 0) timer = setTimeout(() => { void send() }, queue.length >= batchMax ? 0 : c.uplink.lingerMs)
  }
  client.on('message', (topic, payload) => {
    const [, device = '', stream = ''] = topic.split('/')
    queue.push({ device, stream, payload: JSON.parse(payload.toString('utf8')) })
    if (timer === undefined && !sending) timer = setTimeout(() => { void send() }, c.uplink.lingerMs)
  })
  process.on('SIGTERM', () => { client.end(true, () => process.exit(0)) })
}
