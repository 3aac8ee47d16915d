/**
 * The gateway on this machine, no Pi needed (`scripts/demo.sh`, or `npm run demo -- [options]`):
 * Mosquitto with the configuration the image uses, the gateway (the bundle, as the unit runs it), a
 * local HTTPS "cloud" and three simulated sensors enrolled with the gateway's own CLI. It shows
 * telemetry arriving, the cloud down for a while with nothing lost, a refused replay, and an ACL
 * denial read from the demo broker's own log. With --keep everything stays up for you to try.
 *
 * Everything lives in one temporary folder (the CA key included), removed on every way out: the
 * end, Ctrl-C, `kill`, an error, or a reader that went away (`| head`).
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import mqtt, { type MqttClient } from 'mqtt'
import { Cloud } from '../test/helpers/cloud.js'
import { testConfig } from '../test/helpers/env.js'
import { GatewayProcess } from '../test/helpers/gateway-process.js'
import { Mosquitto, mosquittoLogFile } from '../test/helpers/mosquitto.js'
import { sleep, waitFor } from '../test/helpers/ports.js'

const HELP = `Usage: scripts/demo.sh [--keep] [--seconds N] [--outage N] [--no-color]

Runs Mosquitto (TLS, client certificates, ACL: the image's configuration), the gateway, a local HTTPS
cloud and three simulated sensors on this machine, in a temporary folder, and shows:
  telemetry arriving in the cloud, in batches;
  the cloud down for --outage seconds while the sensors go on: the outbox holds, nothing is lost,
  the backlog drains;
  a replayed message refused;
  a sensor writing on another sensor's topic: the broker refuses it, the gateway reads that from the
  broker's log and lowers the sensor's trust score.

  --keep        leave everything running afterwards and print what to try (curl the metrics, enrol a
                device, mosquitto_pub, take the cloud down); Ctrl-C or kill stops it and cleans up
  --seconds N   how long the sensors publish at the start (default 10)
  --outage N    how long the cloud is down (default 10)
  --no-color    plain text (also when the output is not a terminal, or NO_COLOR is set)
  --help        this text

scripts/demo.sh installs only what it uses: Mosquitto and its clients (Debian packages), Node 22 and
the npm packages of app/.`

let opts: { keep: boolean, seconds: number, outage: number, color: boolean }
try {
  const { values } = parseArgs({ options: { keep: { type: 'boolean', default: false }, seconds: { type: 'string', default: '10' }, outage: { type: 'string', default: '10' }, 'no-color': { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } } })
  if (values.help) { process.stdout.write(HELP + '\n'); process.exit(0) }
  const seconds = Number(values.seconds); const outage = Number(values.outage)
  if (!(seconds > 0) || !(outage >= 0)) throw new Error('--seconds must be > 0 and --outage >= 0')
  opts = { keep: values.keep, seconds, outage, color: process.stdout.isTTY === true && !values['no-color'] && process.env.NO_COLOR === undefined }
} catch (err) {
  process.stderr.write(`demo: ${(err as Error).message}\n\n${HELP}\n`)
  process.exit(2)
}

// ------------------------------------------------------------------ output and the ways out
let readerGone = false
const write = (s: string): void => { if (!readerGone) process.stdout.write(s) }
const bold = (s: string): string => opts.color ? `\x1b[1m${s}\x1b[0m` : s
const say = (s: string): void => { write(`\n${bold(`== ${s}`)}\n`) }

const dir = mkdtempSync(join(tmpdir(), 'iot-gateway-demo-'))
const bundle = join(process.cwd(), 'dist', 'gateway.cjs')
const cloud = new Cloud(dir)
let broker: Mosquitto | undefined
let gateway: GatewayProcess | undefined
const clients: MqttClient[] = []
let cleaning: Promise<void> | undefined
let leaving = false

/** Stops every process this demo started (by its handle, so by PID) and removes the folder. Once. */
function cleanup (): Promise<void> {
  cleaning ??= (async () => {
    for (const c of clients) c.end(true)
    // The gateway stops its broker-log follower (tail) itself; SIGKILL if it hangs.
    const g = gateway
    if (g) {
      const killer = setTimeout(() => { g.proc?.kill('SIGKILL') }, 10000)
      await g.stop().catch(() => undefined)
      clearTimeout(killer)
    }
    await broker?.stop().catch(() => undefined)
    await cloud.stop().catch(() => undefined)
    rmSync(dir, { recursive: true, force: true })
  })()
  return cleaning
}
/** Nothing new starts once the demo is on its way out (cleanup may already have run past it). */
function live (): void { if (leaving) throw new Error('the demo is stopping') }
function leave (code: number): void {
  if (leaving) return
  leaving = true
  void cleanup().finally(() => process.exit(code))
}
process.on('SIGINT', () => { leave(130) })
process.on('SIGTERM', () => { leave(143) })
process.on('SIGHUP', () => { leave(129) })
// Node ignores SIGPIPE: a reader that went away shows up as EPIPE on the next write.
process.stdout.on('error', err => {
  if ((err as NodeJS.ErrnoException).code === 'EPIPE') { readerGone = true; leave(0) } else leave(1)
})

// ------------------------------------------------------------------ the show
async function main (): Promise<void> {
  write(`${bold('iot-gateway demo')}: working folder ${dir} (keys included; removed when the demo ends)\n`)
  await cloud.start()
  let shown = 0
  cloud.respond = b => {
    for (const m of b.messages.slice(0, Math.max(0, 6 - shown))) { shown++; write(`cloud <- ${m.device} seq=${m.seq} ${JSON.stringify(m.payload)}\n`) }
    return undefined
  }
  const dataDir = join(dir, 'data')
  const brokerLog = mosquittoLogFile(dataDir)
  // The gateway follows THIS broker's log for ACL denials (on the image: journalctl on the broker's
  // journal namespace); a non-empty command also turns on Mosquitto's debug lines, where denials are.
  const { config, file } = await testConfig(dir, {
    gateway: { id: 'demo-gw', dataDir, logLevel: 'warn' },
    uplink: { url: cloud.url, caFile: cloud.caFile, lingerMs: 200 },
    limits: { ratePerSecond: 20, rateBurst: 40 },
    broker: { denialLogCommand: ['tail', '-F', '-n', '+1', brokerLog] }
  })
  broker = new Mosquitto(config)
  gateway = new GatewayProcess(file, config.api.port, join(dir, 'gateway.log'), { bin: process.execPath, args: [bundle] })
  const gw = gateway
  const cli = (...args: string[]): string => execFileSync(process.execPath, [bundle, ...args, '-c', file], { encoding: 'utf8' })
  const metric = async (name: string, labels = ''): Promise<number> => await gw.metric(name, labels)

  say(`Mosquitto (TLS, client certificates, ACL) on localhost:${config.broker.lanPort}, configured by \`iot-gateway render mosquitto\``)
  live()
  await broker.start()
  say('the gateway (the bundle, run as the systemd unit runs it)')
  live()
  await gw.start()
  const devices = ['greenhouse-1', 'greenhouse-2', 'cellar-1']
  const devDir = join(dir, 'devices')
  say(`enrolling ${devices.join(', ')} with \`iot-gateway device enroll <id> -o ${devDir}\``)
  for (const d of devices) write(cli('device', 'enroll', d, '-o', devDir).split('\n')[0]! + '\n')
  for (const d of devices) {
    clients.push(await mqtt.connectAsync(`mqtts://localhost:${config.broker.lanPort}`, {
      clientId: d, ca: readFileSync(join(devDir, 'ca.crt')), cert: readFileSync(join(devDir, `${d}.crt`)), key: readFileSync(join(devDir, `${d}.key`)), reconnectPeriod: 0
    }))
  }

  let seq = 0
  let sent = 0
  /** Every sensor publishes one reading (QoS 1: resolved on the broker's PUBACK). */
  const tick = async (): Promise<void> => {
    seq++
    await Promise.all(clients.map(async (c, i) => {
      await c.publishAsync(`devices/${devices[i]}/telemetry`, JSON.stringify({ seq, temp: +(18 + i * 2 + Math.sin(seq / 5)).toFixed(2), humidity: 60 + i }), { qos: 1 })
      sent++
    }))
  }
  const delivered = async (): Promise<void> => { await waitFor(() => cloud.unique().size >= sent, () => `the cloud to have ${sent} messages (it has ${cloud.unique().size})`, 60000) }

  say(`the sensors publish telemetry (QoS 1), 5 readings a second each, for ${opts.seconds} s`)
  for (const until = Date.now() + opts.seconds * 1000; Date.now() < until;) { await tick(); await sleep(200) }
  await delivered()
  write(`${cloud.unique().size} messages delivered in ${cloud.batches.length} HTTPS batches (gzip, Content-Digest, Idempotency-Key)\n`)

  if (opts.outage > 0) {
    say(`the cloud goes down for ${opts.outage} s; the sensors go on publishing`)
    await cloud.stop()
    const before = sent
    let second = 0
    for (const until = Date.now() + opts.outage * 1000; Date.now() < until;) {
      await tick(); await sleep(200)
      if (Math.floor((Date.now() - (until - opts.outage * 1000)) / 1000) > second) {
        second++
        write(`  cloud down ${second} s: ${sent - before} published since, outbox holds ${await metric('gateway_outbox_messages')} messages (on disk, committed)\n`)
      }
    }
    const held = await metric('gateway_outbox_messages')
    say(`the cloud is back: the backlog of ${held} messages drains`)
    const back = Date.now()
    await cloud.start()
    await delivered()
    await waitFor(async () => await metric('gateway_outbox_messages') === 0, 'the outbox to empty', 60000)
    const dup = cloud.accepted.length - cloud.unique().size
    write(`drained in ${((Date.now() - back) / 1000).toFixed(1)} s: ${sent} published and acknowledged, ${cloud.unique().size} distinct in the cloud, ${sent - cloud.unique().size} lost, ${dup} sent twice\n`)
  }

  say('a replayed message (greenhouse-1 sends seq 1 again) is refused and counted')
  await clients[0]!.publishAsync('devices/greenhouse-1/telemetry', JSON.stringify({ seq: 1, temp: 99 }), { qos: 1 })
  await waitFor(async () => await metric('gateway_messages_rejected_total', '{reason="replay",transport="mqtt"}') >= 1, 'the replay to be counted')
  write(`gateway_messages_rejected_total{reason="replay",transport="mqtt"} ${await metric('gateway_messages_rejected_total', '{reason="replay",transport="mqtt"}')}\n`)

  say('cellar-1 publishes on greenhouse-1\'s topic: the broker refuses it, and the gateway reads that from the broker\'s log')
  await clients[2]!.publishAsync('devices/greenhouse-1/telemetry', JSON.stringify({ seq: 100000, spoofed: true }), { qos: 1 })
  const denied = await waitFor(() => readFileSync(brokerLog, 'utf8').split('\n').find(l => l.includes('Denied PUBLISH from cellar-1')), 'the broker to log the denial')
  write(`broker log (${brokerLog}):\n  ${denied}\n`)
  interface Shown { trustScore: number | null, trustEvents: Record<string, number>, status: string }
  const show = (): Shown => JSON.parse(cli('device', 'show', 'cellar-1', '--json')) as Shown
  const after = await waitFor(() => { const s = show(); return (s.trustEvents.acl_denied ?? 0) >= 1 ? s : undefined }, 'the gateway to count the denial')
  write(`iot-gateway device show cellar-1: trust score ${after.trustScore}, events ${JSON.stringify(after.trustEvents)}, status ${after.status}\n`)
  const spoofed = [...cloud.unique().values()].some(m => (m.payload as { spoofed?: boolean }).spoofed === true)
  write(spoofed ? 'UNEXPECTED: the spoofed message reached the cloud\n' : 'the spoofed message did not reach the cloud\n')

  say(`/metrics (http://127.0.0.1:${config.api.port}/metrics), an excerpt`)
  const text = (await gw.get('/metrics')).text
  write(text.split('\n').filter(l => /^gateway_(messages_(accepted|rejected)|uplink_messages_delivered|outbox_messages|outbox_commits|security_events)/.test(l)).join('\n') + '\n')
  say('iot-gateway status')
  write(cli('status'))

  // The demo's own sensors leave, so that their ids are free to try by hand.
  await Promise.all(clients.splice(0).map(c => c.endAsync()))
  if (!opts.keep) { await cleanup(); write('\nall stopped, the folder removed. `scripts/demo.sh --keep` leaves everything running to try by hand.\n'); return }

  let cloudUp = true
  process.on('SIGUSR1', () => {
    void (async () => {
      if (cloudUp) { await cloud.stop(); cloudUp = false; write('cloud: DOWN (kill -USR1 again brings it back)\n') } else { await cloud.start(); cloudUp = true; write('cloud: UP\n') }
    })()
  })
  const gwCmd = `${process.execPath} ${bundle}`
  const example = resolve(process.cwd(), 'examples', 'sensor-mqtt.mjs')
  const me = join(dir, 'my-sensor')
  write(`
${bold('ready')}: broker mqtts://localhost:${config.broker.lanPort} api http://127.0.0.1:${config.api.port} folder ${dir} pid ${process.pid}
Everything stays up until Ctrl-C or \`kill ${process.pid}\` (either stops it all and removes the folder).

Try next:
  # what the gateway counts
  curl -s http://127.0.0.1:${config.api.port}/metrics | grep -E '^gateway_(messages_accepted|outbox_messages|uplink_messages_delivered)'
  # enrol a device of your own (key, certificate, CA, PKCS#12, CoAP key)
  ${gwCmd} device enroll my-sensor -o ${me} -c ${file}
  # publish as that device
  mosquitto_pub -h localhost -p ${config.broker.lanPort} --cafile ${me}/ca.crt --cert ${me}/my-sensor.crt --key ${me}/my-sensor.key -i my-sensor -q 1 -t devices/my-sensor/telemetry -m '{"seq":1,"temp":21.5}'
  # or run the mqtt.js example sensor (README: "Connect a sensor")
  ${process.execPath} ${example} --url mqtts://localhost:${config.broker.lanPort} --id my-sensor --dir ${me} --count 20
  # take the cloud down (and, the same again, bring it back); watch the outbox hold the data
  kill -USR1 ${process.pid}; curl -s http://127.0.0.1:${config.api.port}/metrics | grep '^gateway_outbox_messages'
  # what the broker refuses, as the gateway reads it
  tail -F ${brokerLog} | grep Denied
`)
  await new Promise<never>(() => { setInterval(() => undefined, 1 << 30) })
}

main().catch(err => {
  if (leaving) return // a signal or a closed reader is already taking everything down
  let tail = ''
  try { tail = readFileSync(join(dir, 'gateway.log'), 'utf8').split('\n').slice(-20).join('\n') } catch {}
  process.stderr.write(`demo failed: ${(err as Error).stack ?? String(err)}\nthe gateway's log, last lines:\n${tail}\n`)
  leave(1)
})
