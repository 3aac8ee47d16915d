import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt from 'mqtt'
import t from 'tap'
import { mqttDevice } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { cli, enrollDevice } from '../helpers/identity.js'
import { waitFor } from '../helpers/ports.js'

/**
 * Mosquitto stamps its lines in whole seconds, and the gateway takes lines stamped before its follower
 * started as history. Waiting for the clock to enter the next second after an event makes every line
 * logged from then on newer than it (a condition on the clock, not a guess at a delay).
 */
async function nextSecond (): Promise<void> {
  const at = (Math.floor(Date.now() / 1000) + 1) * 1000
  await waitFor(() => Date.now() >= at, 'the next second', 5000, 20)
}

/**
 * Until the broker's own clock is past this second. Mosquitto stamps a log line with the time it
 * read at the top of its event loop, before waiting (100 ms) for the next packet, so a line can carry
 * the second before the one it was written in (a CI run: a denial sent at 38.0x stamped 37, read by
 * the gateway as history from before its start at 37.8). journald, on the image, stamps each line
 * when it receives it. Two second boundaries leave the broker a whole second of lag.
 */
async function brokerClockPastNow (): Promise<void> {
  await nextSecond()
  await nextSecond()
}

interface Shown { status: string, trustScore: number | null, trustEvents: Record<string, number>, statusReason: string | null }
interface AuditRow { type: string, device: string | null, source: string | null, detail: Record<string, unknown> }

/**
 * Real Mosquitto (the rendered configuration: log_type debug on stderr, into a file here), real
 * certificates from our CLI, the gateway process following the broker's log with a command. On the
 * image the command is journalctl (short-unix lines); here Mosquitto writes that same line form
 * itself, so the gateway can tell the lines from before it started (learnt from, not counted).
 */
// About thirty CLI processes (device show, audit list) one after the other: near four minutes on a
// loaded 2-core machine, which is tap's default. This bounds a hang; no result depends on it.
t.setTimeout(10 * 60_000)

t.test('ACL denials in the broker log lower the device\'s trust, are audited, and quarantine it', async t => {
  const s = await startStack(t, { trust: { floor: 40, penaltyAclDenied: 25, recoverPerMessage: 0 } }, {
    startGateway: false,
    brokerConf: ['log_timestamp true', 'log_timestamp_format %s.000000 iot-gateway mosquitto[1]']
  })
  const follow = (command: string[]): void => {
    const j = JSON.parse(readFileSync(s.configFile, 'utf8')) as { broker: Record<string, unknown> }
    j.broker.denialLogCommand = command
    writeFileSync(s.configFile, JSON.stringify(j, null, 2))
  }
  const show = async (id: string): Promise<Shown> => JSON.parse((await cli(s.configFile, ['device', 'show', id, '--json'])).out) as Shown
  const audit = async (device?: string): Promise<AuditRow[]> => JSON.parse((await cli(s.configFile, ['audit', 'list', '--json', ...(device ? ['--device', device] : [])])).out) as AuditRow[]
  const gatewayLog = (): string => readFileSync(s.gateway.logFile, 'utf8')

  // A follower command that does not exist: the gateway runs without it, and says so.
  follow(['/nonexistent/broker-log-follower'])
  await s.gateway.start()
  await waitFor(() => gatewayLog().includes('cannot run the broker log follower'), 'the follower error in the log')
  t.match(gatewayLog(), /ENOENT/)
  t.equal((await s.gateway.health()).status, 200, 'a missing follower command does not stop the gateway')
  t.equal(await s.gateway.metric('gateway_broker_log_follower_up'), 0, '/metrics says nobody reads the broker log')

  const a = await enrollDevice(s.configFile, join(s.dir, 'a'), 'sensor-a')
  const b = await enrollDevice(s.configFile, join(s.dir, 'b'), 'sensor-b')
  // sensor-a connects while nobody follows the log, and is refused once: the next gateway learns its
  // client id from the log's history, and does not count that old denial.
  const devA = await mqttDevice(s.broker.lanPort, a)
  t.teardown(() => devA.endAsync())
  await devA.publishAsync('devices/sensor-b/telemetry', '{"seq":1,"before":true}', { qos: 1 })
  await waitFor(() => readFileSync(s.broker.logFile, 'utf8').includes('Denied PUBLISH from sensor-a'), 'the broker to log the denial')
  t.equal(await s.gateway.stop(), 0)
  await nextSecond()

  // A follower that prints the whole file, and records its PID so that the test can make it exit
  // (it is then restarted and prints the whole file again). The test ends it rather than a timer:
  // a follower exiting every few seconds gets restarted with a growing backoff, and under load the
  // test would wait on that backoff rather than on the gateway.
  const pidFile = join(s.dir, 'follower.pid')
  follow(['sh', '-c', 'echo $$ > "$1"; exec tail -F -n +1 "$2"', 'follower', pidFile, s.broker.logFile])
  await s.gateway.start()
  await waitFor(async () => await s.gateway.metric('gateway_broker_log_follower_up') === 1, 'the follower to run')
  await brokerClockPastNow()
  await devA.publishAsync('devices/sensor-b/telemetry', '{"seq":2,"spoofed":true}', { qos: 1 })
  // On a timeout, say what the follower saw: a failure in one CI run (not reproduced in 8 runs
  // under load since) must be diagnosable from its output.
  await waitFor(async () => (await show('sensor-a')).trustScore === 75, async () => `sensor-a's score to fall (${JSON.stringify(await show('sensor-a'))}; ` +
    `denials ${(await s.gateway.get('/metrics')).text.split('\n').filter(l => l.startsWith('gateway_broker_')).join(' | ')}; ` +
    `broker log tail: ${readFileSync(s.broker.logFile, 'utf8').split('\n').slice(-8).join(' | ')}; gateway log tail: ${gatewayLog().split('\n').slice(-8).join(' | ')})`, 45000)
  const shown = await show('sensor-a')
  t.same(shown.trustEvents, { acl_denied: 1 }, 'one penalty: the denial from before the gateway started is not counted')
  t.equal(shown.status, 'active')
  const rows = (await audit('sensor-a')).filter(r => r.type === 'acl_denied')
  t.equal(rows.length, 1, 'an audit row for the device')
  t.match(rows[0], { device: 'sensor-a', source: 'mqtt', detail: { reason: 'acl_denied', kind: 'publish', topic: 'devices/sensor-b/telemetry' } })
  t.equal(await s.gateway.metric('gateway_security_events_total', '{type="acl_denied"}'), 1)
  t.equal(await s.gateway.metric('gateway_broker_acl_denials_total', '{kind="publish",client="device"}'), 1)
  t.equal(await s.gateway.metric('gateway_device_trust_score', '{device="sensor-a"}'), 75, 'the score in /metrics')
  t.equal((await show('sensor-b')).trustScore ?? 100, 100, 'the device whose topic was targeted is not blamed')
  t.match((await cli(s.configFile, ['device', 'show', 'sensor-a'])).out, /trust\s+75\.0 \(events: acl_denied=1\)/, '`device show` names the reason')

  // Its own traffic still flows.
  await devA.publishAsync('devices/sensor-a/telemetry', '{"seq":1,"v":"mine"}', { qos: 1 })
  await waitFor(() => s.cloud.accepted.some(m => m.payload.v === 'mine'), 'the device\'s own message in the cloud')

  // The follower exits and is started again; what it prints again is not counted again.
  const restarts = await s.gateway.metric('gateway_broker_log_follower_restarts_total', '', { absentIs: 0 })
  const firstPid = readFileSync(pidFile, 'utf8').trim()
  process.kill(Number(firstPid), 'SIGTERM')
  await waitFor(async () => await s.gateway.metric('gateway_broker_log_follower_restarts_total') > restarts, 'the follower to be restarted', 20000, 200)
  await waitFor(async () => readFileSync(pidFile, 'utf8').trim() !== firstPid && await s.gateway.metric('gateway_broker_log_follower_up') === 1, 'the follower to run again')
  t.match(gatewayLog(), /broker log follower exited; starting it again.*"signal":"SIGTERM"/, 'its exit is logged')

  // Two more denials: below the floor (100 - 3 x 25 < 40): quarantine. Each is also the barrier for
  // the replay: the restarted follower prints the old denial before it, so a double count would show.
  await devA.publishAsync('devices/sensor-b/events', '{"seq":3}', { qos: 1 })
  await waitFor(async () => ((await show('sensor-a')).trustEvents.acl_denied ?? 0) >= 2, 'the second denial')
  t.same((await show('sensor-a')).trustEvents, { acl_denied: 2 }, 'the restarted follower does not count the same denial twice')
  t.equal((await show('sensor-a')).trustScore, 50)
  await devA.publishAsync('devices/sensor-b/commands', '{"seq":4}', { qos: 0 })
  await waitFor(async () => (await show('sensor-a')).status === 'quarantined', 'quarantine', 20000, 200)
  const q = await show('sensor-a')
  t.equal(q.trustScore, 25)
  t.same(q.trustEvents, { acl_denied: 3 }, 'each denial counted once, across restarts of the follower')
  t.match(q.statusReason, /below 40 after acl_denied/)
  t.ok((await audit('sensor-a')).some(r => r.type === 'device_quarantined'), 'quarantine audited')
  t.match(gatewayLog(), /ALERT device quarantined/)

  // A client id chosen to cut Mosquitto's log lines (990 bytes) does not hide the client any more:
  // the broker replaces every client id by the certificate's CN (use_username_as_clientid), so the
  // denial is charged to the certificate's device. (Cut lines themselves: test/unit/broker-denial-log.)
  const longId = await mqtt.connectAsync(`mqtts://localhost:${s.broker.lanPort}`, {
    clientId: 'L'.repeat(990), ca: readFileSync(b.caFile), cert: readFileSync(b.certFile), key: readFileSync(b.keyFile), reconnectPeriod: 0, protocolVersion: 4
  })
  t.teardown(() => longId.endAsync())
  await longId.publishAsync('devices/sensor-a/telemetry', '{"seq":9}', { qos: 1 })
  await waitFor(async () => ((await show('sensor-b')).trustScore ?? 100) === 75, 'the denial charged to sensor-b', 20000, 200)
  t.equal(await s.gateway.metric('gateway_broker_acl_denials_total', '{kind="publish",client="unknown"}', { absentIs: 0 }), 0, 'no unattributed denial')
  t.equal(await s.gateway.metric('gateway_security_events_total', '{type="acl_denied"}'), 4, 'every denial is a security event of the device that holds the certificate')
})
