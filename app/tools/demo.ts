/**
 * The gateway on this machine, no Pi needed: Mosquitto with the configuration the image uses, the
 * gateway (the bundle, as the unit runs it), a local HTTPS "cloud" that prints what arrives, and a
 * few simulated sensors enrolled with the gateway's own CLI. Shows telemetry arriving, /metrics,
 * and a replayed message being refused. Usage: npm run demo [-- --seconds 15]
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { Cloud } from '../test/helpers/cloud.js'
import { testConfig } from '../test/helpers/env.js'
import { GatewayProcess } from '../test/helpers/gateway-process.js'
import { Mosquitto } from '../test/helpers/mosquitto.js'
import { waitFor } from '../test/helpers/ports.js'

const say = (s: string): void => { process.stdout.write(`\n\x1b[1m== ${s}\x1b[0m\n`) }
const seconds = Number(process.argv[process.argv.indexOf('--seconds') + 1] ?? 15) || 15

async function main (): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'iot-gateway-demo-'))
  const bundle = join(process.cwd(), 'dist', 'gateway.cjs')
  const cloud = new Cloud(dir)
  await cloud.start()
  let shown = 0
  cloud.respond = b => {
    for (const m of b.messages.slice(0, Math.max(0, 12 - shown))) { shown++; process.stdout.write(`cloud <- ${m.device} seq=${m.seq} ${JSON.stringify(m.payload)}\n`) }
    return undefined
  }
  const { config, file } = await testConfig(dir, { gateway: { id: 'demo-gw', logLevel: 'warn' }, uplink: { url: cloud.url, caFile: cloud.caFile, lingerMs: 200 }, limits: { ratePerSecond: 20, rateBurst: 40 } })
  const broker = new Mosquitto(config)
  const gateway = new GatewayProcess(file, config.api.port, join(dir, 'gateway.log'), { bin: process.execPath, args: [bundle] })
  try {
    say(`Mosquitto (TLS, client certificates, ACL) on localhost:${config.broker.lanPort}; configuration from \`iot-gateway render mosquitto\``)
    await broker.start()
    say('gateway starting (the bundle, run as the systemd unit runs it)')
    await gateway.start()
    const cli = (...args: string[]): string => execFileSync(process.execPath, [bundle, ...args, '-c', file], { encoding: 'utf8' })
    const devices = ['greenhouse-1', 'greenhouse-2', 'cellar-1']
    say(`enrolling ${devices.join(', ')} with \`iot-gateway device enroll\``)
    for (const d of devices) process.stdout.write(cli('device', 'enroll', d, '-o', dir))
    const clients = await Promise.all(devices.map(d => mqtt.connectAsync(`mqtts://localhost:${config.broker.lanPort}`, {
      clientId: d, ca: readFileSync(join(dir, 'ca.crt')), cert: readFileSync(join(dir, `${d}.crt`)), key: readFileSync(join(dir, `${d}.key`)), reconnectPeriod: 0
    })))
    say(`sensors publish telemetry (QoS 1) for ${seconds} s`)
    const until = Date.now() + seconds * 1000
    let seq = 0
    while (Date.now() < until) {
      seq++
      await Promise.all(clients.map((c, i) => c.publishAsync(`devices/${devices[i]}/telemetry`, JSON.stringify({ seq, temp: +(18 + i * 2 + Math.sin(seq / 5)).toFixed(2), humidity: 60 + i }), { qos: 1 })))
      await new Promise(resolve => setTimeout(resolve, 100))
    }
    await waitFor(() => cloud.unique().size >= seq * devices.length, 'delivery', 15000)
    say(`${cloud.unique().size} messages delivered to the cloud in ${cloud.batches.length} HTTPS batches`)
    say('a replayed message (seq 1 again from greenhouse-1) is refused and counted')
    await clients[0]!.publishAsync('devices/greenhouse-1/telemetry', JSON.stringify({ seq: 1, temp: 99 }), { qos: 1 })
    await waitFor(async () => await gateway.metric('gateway_messages_rejected_total', '{reason="replay",transport="mqtt"}') === 1, 'the replay counted')
    say('a device publishing on another device\'s topic is stopped by the broker\'s ACL (nothing arrives)')
    await clients[2]!.publishAsync('devices/greenhouse-1/telemetry', JSON.stringify({ seq: 100000, spoofed: true }), { qos: 1 })
    say(`/metrics (http://127.0.0.1:${config.api.port}/metrics), an excerpt`)
    const metrics = (await gateway.get('/metrics')).text.split('\n').filter(l => /^gateway_(messages|uplink_messages_delivered|outbox_messages|outbox_commits)/.test(l))
    process.stdout.write(metrics.join('\n') + '\n')
    say('iot-gateway status')
    process.stdout.write(cli('status'))
    const spoofed = [...cloud.unique().values()].some(m => (m.payload as { spoofed?: boolean }).spoofed === true)
    process.stdout.write(spoofed ? 'UNEXPECTED: the spoofed message arrived\n' : 'the spoofed message did not arrive\n')
    await Promise.all(clients.map(c => c.endAsync()))
  } finally {
    await gateway.stop()
    await broker.stop()
    await cloud.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}

main().catch(err => { console.error(err); process.exitCode = 1 })
