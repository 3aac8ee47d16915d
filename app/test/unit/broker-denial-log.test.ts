import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { BrokerLogParser, DenialFollower, ReplayFilter, type AttributedDenial, type BrokerDenial } from '../../src/broker/denial-log.js'
import { renderMosquittoConf } from '../../src/broker/mosquitto-conf.js'
import { brokerOptions } from '../../src/cli/commands/render.js'
import { buildConfig } from '../../src/config/load.js'
import { createLogger } from '../../src/lib/logger.js'
import { Registry } from '../../src/lib/metrics.js'

/**
 * Real lines: Mosquitto 2.0.11 (Debian 12) run with the rendered configuration (log_type debug,
 * log_dest stderr) under systemd-cat, read back with the default command's flags
 * (journalctl --all --output=short-unix). The scenario: the gateway subscribes; dev1 publishes to its
 * own topic, then to dev2's with QoS 1, 0 and 2+retain, with a client id holding the line's separator,
 * over MQTT 5; dev2 subscribes to dev1's commands (granted, nothing logged) and the gateway sends dev1
 * a command (not delivered to dev2, nothing logged); dev1 takes over dev2's client id "shared"; dev1
 * with a 990-byte client id and with a 1000-byte topic (Mosquitto cuts lines at 999 bytes); the
 * gateway publishes where it may not; dev1 publishes to a stream of its own that is not allowed.
 */
const here = fileURLToPath(new URL('.', import.meta.url))
const journal = readFileSync(join(here, 'fixtures', 'mosquitto-2.0.11-journal.txt'), 'utf8').split('\n').filter(l => l !== '')
const plain = journal.map(l => l.replace(/^\S+ \S+ mosquitto\[\d+\]: /, ''))

const brief = (d: BrokerDenial | undefined): unknown => d && { kind: d.kind, clientId: d.clientId.length > 40 ? `${d.clientId.slice(0, 3)}...(${d.clientId.length})` : d.clientId, username: d.username, topic: d.topic.length > 40 ? `${d.topic.slice(0, 13)}...` : d.topic, truncated: d.truncated }

const EXPECTED = [
  { kind: 'publish', clientId: 'dev1-a', username: 'dev1', topic: 'devices/dev2/telemetry', truncated: false },
  { kind: 'publish', clientId: 'dev1-a', username: 'dev1', topic: 'devices/dev2/telemetry', truncated: false },
  { kind: 'publish', clientId: 'dev1-a', username: 'dev1', topic: 'devices/dev2/events', truncated: false },
  { kind: 'publish', clientId: 'weird id (d0, q1, r0, m1, \'x', username: 'dev1', topic: 'devices/dev2/telemetry', truncated: false },
  { kind: 'publish', clientId: 'dev1-v5', username: 'dev1', topic: 'devices/dev2/events', truncated: false },
  { kind: 'publish', clientId: 'shared', username: 'dev1', topic: 'devices/dev2/telemetry', truncated: false },
  { kind: 'publish', clientId: 'LLL...(979)', username: null, topic: '', truncated: true },
  { kind: 'publish', clientId: 'dev1-lt', username: 'dev1', topic: 'devices/dev2/...', truncated: true },
  { kind: 'publish', clientId: 'gw-test-2', username: 'gw-test', topic: 'devices/dev1/telemetry', truncated: false },
  { kind: 'publish', clientId: 'dev1-a', username: 'dev1', topic: 'devices/dev1/unknownstream', truncated: false }
]

t.test('real Mosquitto 2.0.11 journal lines: every denial, attributed to the certificate CN', async t => {
  const p = new BrokerLogParser()
  const out = journal.map(l => p.line(l)).filter(d => d !== undefined)
  t.same(out.map(brief), EXPECTED)
  t.equal(out[0]!.at, 1795386957273.159, 'journal time kept, to the microsecond')
  t.equal(out.find(d => d.clientId === 'dev1-lt')!.topic.length, 999 - 'Denied PUBLISH from dev1-lt (d0, q1, r0, m1, \''.length, 'a cut line keeps the topic\'s start')
  t.equal(p.size, 1, 'disconnected clients forgotten; only the gateway\'s subscriber (killed with the broker) is left')
  t.equal(p.lookup('gw-test')?.username, 'gw-test')
  t.notOk(journal.some(l => /dev2-sub.*(denied|Denied)/.test(l)), '2.0.11 grants a SUBSCRIBE to another device\'s commands and logs no denial (delivery is filtered silently)')
  t.ok(journal.some(l => l.endsWith('\tdevices/dev1/commands (QoS 1)')), 'the granted subscription as 2.0.11 logs it')
})

t.test('the same lines without the journal prefix (a log file, journalctl --output=cat)', async t => {
  const p = new BrokerLogParser()
  const out = plain.map(l => p.line(l)).filter(d => d !== undefined)
  t.same(out.map(brief), EXPECTED)
  t.ok(out.every(d => d.at === null), 'no time')
})

t.test('Mosquitto 2.1 lines (the image; formats from the 2.1.2 sources)', async t => {
  const p = new BrokerLogParser()
  p.line('New client connected from 192.168.100.20:40000 as sub-1 (p2, c1, k60, u\'dev1\').')
  p.line('Received SUBSCRIBE from sub-1')
  t.same(brief(p.line('\tdevices/dev2/commands (denied)')), { kind: 'subscribe', clientId: 'sub-1', username: 'dev1', topic: 'devices/dev2/commands', truncated: false }, 'a refused subscription (a plugin that checks SUBSCRIBE)')
  t.equal(p.line('\tdevices/dev1/commands (QoS 1)'), undefined, 'a granted one')
  p.line('Sending SUBACK to sub-1')
  t.equal(p.line('\tsomething (denied)'), undefined, 'a tab line outside a SUBSCRIBE is nobody\'s')
  t.same(brief(p.line('Denied PUBLISH to sub-1 (q1, r0, \'devices/dev2/commands\', ... (12 bytes))')), { kind: 'read', clientId: 'sub-1', username: 'dev1', topic: 'devices/dev2/commands', truncated: false }, 'delivery refused by the read ACL')
  t.equal(p.line('Client sub-1 [192.168.100.99:1] disconnected.'), undefined)
  t.equal(p.size, 1, 'a disconnect line naming another connection\'s address (a late line of a taken-over session) forgets nothing')
  p.line('Client sub-1 [192.168.100.20:40000] disconnected: connection closed by client.')
  t.equal(p.size, 0, 'forgotten on its own disconnect')
  t.equal(p.line('Denied PUBLISH from sub-1 (d0, q1, r0, m1, \'devices/dev2/telemetry\', ... (3 bytes))')?.username, null, 'unknown after that')
})

t.test('client ids that imitate the line format blame their own device', async t => {
  const p = new BrokerLogParser()
  p.line('New client connected from 10.0.0.2:1 as victim (p2, c1, k60, u\'dev2\').')
  p.line('New client connected from 10.0.0.3:1 as victim (d0, q1, r0, m1, \'x (p2, c1, k60, u\'dev2\'). (p2, c1, k60, u\'dev1\').')
  t.equal(p.lookup('victim (d0, q1, r0, m1, \'x (p2, c1, k60, u\'dev2\').')?.username, 'dev1', 'the username is the last one on the connection line')
  const d = p.line('Denied PUBLISH from victim (d0, q1, r0, m1, \'x (p2, c1, k60, u\'dev2\'). (d0, q1, r0, m1, \'devices/dev3/telemetry\', ... (1 bytes))')
  t.equal(d?.username, 'dev1', 'the longest connected client id wins')
  t.equal(d?.topic, 'devices/dev3/telemetry')
  const honest = p.line('Denied PUBLISH from victim (d0, q1, r0, m1, \'devices/x\', ... (1 bytes)) (d0, q1, r0, m1, \'y\', ... (1 bytes))')
  t.equal(honest?.username, 'dev2', 'a topic holding the separator does not move the blame')
  t.equal(honest?.topic, 'devices/x\', ... (1 bytes)) (d0, q1, r0, m1, \'y')
  p.line('Client victim (d0, q1, r0, m1, \'x (p2, c1, k60, u\'dev2\'). disconnected.')
  t.equal(p.lookup('victim')?.username, 'dev2', 'a disconnect forgets the longest matching client id only')
  t.equal(p.line('New client connected from 10.0.0.4:1 as nouser (p2, c1, k60).'), undefined)
  t.equal(p.lookup('nouser')?.username, null, 'no username: known, nobody to blame')
  p.line('New client connected from 10.0.0.5:1 as bad (p2, c1, k60, u\'a b\').')
  t.equal(p.lookup('bad')?.username, null, 'a username that is not a device id is nobody')
})

t.test('the client map is bounded; long ids are kept hashed; a new broker process starts empty', async t => {
  const p = new BrokerLogParser(3)
  for (const id of ['a', 'b', 'c']) p.line(`New client connected from 10.0.0.1:1 as ${id} (p2, c1, k60, u'${id}').`)
  p.line('New client connected from 10.0.0.1:2 as a (p2, c1, k60, u\'a\').') // reconnects: most recent again
  p.line('New client connected from 10.0.0.1:1 as d (p2, c1, k60, u\'d\').')
  t.equal(p.size, 3)
  t.equal(p.lookup('b'), undefined, 'the least recently connected is dropped')
  t.ok(p.lookup('a') && p.lookup('c') && p.lookup('d'))
  const long = 'x'.repeat(500)
  p.line(`New client connected from 10.0.0.1:1 as ${long} (p2, c1, k60, u'dev9').`)
  t.equal(p.line(`Denied PUBLISH from ${long} (d0, q0, r0, m0, 'devices/dev1/telemetry', ... (1 bytes))`)?.username, 'dev9')
  const q = new BrokerLogParser()
  q.line('1.000001 h mosquitto[10]: New client connected from 10.0.0.1:1 as a (p2, c1, k60, u\'a\').')
  q.line('2.000001 h systemd[1]: Stopping mosquitto.service...')
  t.equal(q.size, 1, 'systemd\'s own lines do not count as a new broker')
  q.line('3.000001 h mosquitto[11]: New connection from 10.0.0.1:5 on port 8883.')
  t.equal(q.size, 0, 'another broker pid: its clients are new')
})

t.test('history and restarts: lines printed again are not counted again', async t => {
  const r = new ReplayFilter(1000)
  t.notOk(r.fresh(999), 'before the start: handled by the previous gateway run')
  t.ok(r.fresh(null), 'no time: new')
  t.ok(r.fresh(1000))
  t.ok(r.fresh(1001))
  t.ok(r.fresh(1001), 'journald stamps the lines of one read alike: a second one is new')
  r.restarted()
  t.notOk(r.fresh(1000), 'printed again')
  t.notOk(r.fresh(1001))
  t.notOk(r.fresh(1001), 'both of that instant printed again')
  t.ok(r.fresh(1001), 'a third one of that instant is new')
  t.ok(r.fresh(1002))
})

t.test('the follower: learns from the history, reports live denials, penalises only devices', async t => {
  const metrics = new Registry()
  const got: AttributedDenial[] = []
  const f = new DenialFollower(['true'], { gatewayId: 'gw-test', onDenial: d => got.push(d) }, metrics, createLogger('silent'))
  const now = Date.now() / 1000
  const at = (s: number): string => `${(now + s).toFixed(6)} h mosquitto[7]: `
  f.feed(at(-100) + 'New client connected from 10.0.0.1:1 as c1 (p2, c1, k60, u\'dev1\').')
  f.feed(at(-99) + 'Denied PUBLISH from c1 (d0, q1, r0, m1, \'devices/dev2/telemetry\', ... (1 bytes))')
  t.equal(got.length, 0, 'a denial from before the follower started is not counted (it was, by the previous run)')
  f.feed(at(1) + 'Denied PUBLISH from c1 (d0, q1, r0, m1, \'devices/dev2/telemetry\', ... (1 bytes))')
  t.same(got.map(d => [d.device, d.topic]), [['dev1', 'devices/dev2/telemetry']], 'the client was learnt from the history')
  f.feed(at(2) + 'New client connected from 10.0.0.1:2 as gw (p2, c1, k60, u\'gw-test\').')
  f.feed(at(2) + 'Denied PUBLISH from gw (d0, q1, r0, m1, \'devices/dev1/telemetry\', ... (1 bytes))')
  f.feed(at(2) + 'Denied PUBLISH from stranger (d0, q1, r0, m1, \'devices/dev1/telemetry\', ... (1 bytes))')
  f.feed(at(3) + 'Denied PUBLISH to c1 (q1, r0, \'devices/dev1/telemetry\', ... (1 bytes))')
  f.feed(at(3) + 'Denied PUBLISH to c1 (q1, r0, \'devices/dev3/commands\', ... (1 bytes))')
  t.same(got.slice(1).map(d => [d.kind, d.device, d.clientId]), [['publish', null, 'stranger'], ['read', 'dev1', 'c1']],
    'the gateway\'s own denial is not reported; an unknown client is, without a device; a read of its own namespace is not')
  const m = metrics.render()
  t.match(m, /gateway_broker_acl_denials_total\{kind="publish",client="device"\} 1/)
  t.match(m, /gateway_broker_acl_denials_total\{kind="publish",client="gateway"\} 1/)
  t.match(m, /gateway_broker_acl_denials_total\{kind="publish",client="unknown"\} 1/)
  t.match(m, /gateway_broker_acl_denials_total\{kind="read",client="own_topic"\} 1/)
  t.match(m, /gateway_broker_acl_denials_total\{kind="read",client="device"\} 1/)
})

t.test('the follower process: lines from its stdout, too long ones skipped, restarted when it exits, a missing command survives', async t => {
  const metrics = new Registry()
  const got: AttributedDenial[] = []
  const logs: string[] = []
  const log = createLogger('debug', {}, l => { logs.push(l) })
  const child = [
    'const w = s => process.stdout.write(s)',
    'w("New client connected from 1.2.3.4:5 as c (p2, c1, k60, u\'dev1\').\\n")',
    'w("y".repeat(20000) + "\\n")',
    'w("Denied PUBLISH from c (d0, q1, r0, m1, \'devices/dev2/telemetry\', ... (1 bytes))\\n")',
    'w("Denied PUBLISH from c (d0, q1, r0, m1, \'devices/dev2/")',
    'setTimeout(() => { w("events\', ... (1 bytes))\\n"); process.stderr.write("oops\\n"); process.exitCode = 3 }, 200)'
  ].join('\n')
  const f = new DenialFollower([process.execPath, '-e', child],
    { gatewayId: 'gw', onDenial: d => got.push(d), restartMinMs: 50, restartMaxMs: 100 }, metrics, log)
  f.start()
  t.teardown(() => f.stop())
  const until = Date.now() + 10000
  while (metrics.counter('gateway_broker_log_follower_restarts_total', '').total() < 2 && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 50))
  await f.stop()
  t.ok(metrics.counter('gateway_broker_log_follower_restarts_total', '').total() >= 2, 'restarted after each exit')
  t.ok(got.length >= 4, `denials read from every run (${got.length})`)
  t.same(got.slice(0, 2).map(d => d.topic), ['devices/dev2/telemetry', 'devices/dev2/events'], 'a line split across reads is joined')
  t.ok(metrics.counter('gateway_broker_log_lines_dropped_total', '').total() >= 1, 'a 20,000-byte line is skipped')
  t.ok(logs.some(l => /follower exited/.test(l) && /"code":3/.test(l) && /oops/.test(l)), 'its exit is logged with its stderr')

  const m2 = new Registry()
  const logs2: string[] = []
  const missing = new DenialFollower(['/nonexistent/journalctl'], { gatewayId: 'gw', onDenial: () => {}, restartMinMs: 20, restartMaxMs: 40 }, m2, createLogger('info', {}, l => { logs2.push(l) }))
  missing.start()
  const until2 = Date.now() + 5000
  while (m2.counter('gateway_broker_log_follower_restarts_total', '').total() < 2 && Date.now() < until2) await new Promise(resolve => setTimeout(resolve, 20))
  await missing.stop()
  t.ok(m2.counter('gateway_broker_log_follower_restarts_total', '').total() >= 2, 'a missing command is tried again')
  t.ok(logs2.some(l => /cannot run the broker log follower/.test(l) && /ENOENT/.test(l)), 'and logged')
  t.match(m2.render(), /gateway_broker_log_follower_up 0/)
})

t.test('the follower reads a slow log once per interval, a busy one as it comes', async t => {
  const interval = 50
  /** Follows a child's output until `n` denials came: the follower (its read counts), the denials, the time it took. */
  const follow = async (child: string, n: number): Promise<{ f: DenialFollower, got: AttributedDenial[], elapsed: number }> => {
    const got: AttributedDenial[] = []
    const f = new DenialFollower([process.execPath, '-e', child], { gatewayId: 'gw', onDenial: d => got.push(d), readIntervalMs: interval }, new Registry(), createLogger('silent'))
    const t0 = Date.now()
    f.start()
    t.teardown(() => f.stop())
    while (got.length < n) {
      if (Date.now() - t0 > 20000) throw new Error(`timed out waiting for ${n} denials (${got.length})`)
      await new Promise(resolve => setTimeout(resolve, 10))
    }
    const elapsed = Date.now() - t0
    await f.stop()
    return { f, got, elapsed }
  }
  // Slow: 200 denials, each line its own write, about 2 ms apart (as Mosquitto writes at 1,000 msg/s).
  const slow = await follow([
    'let i = 0',
    'setInterval(() => { if (i++ < 200) process.stdout.write("Denied PUBLISH from c (d0, q1, r0, m" + i + ", \'devices/dev2/telemetry\', ... (1 bytes))\\n") }, 2)'
  ].join('\n'), 200)
  t.equal(slow.got.length, 200, 'every denial of the slow log')
  // Each read is followed by a pause of the interval: at most one read per interval (plus the first).
  t.ok(slow.f.reads <= 2 + slow.elapsed / interval, `${slow.f.reads} reads in ${slow.elapsed} ms (one per line would be 200)`)

  // Busy: 2 MB of lines written as fast as the pipe takes them, then one denial.
  const busy = await follow([
    'const chunk = "Received PINGREQ from c\\n".repeat(340)',
    'for (let i = 0; i < 256; i++) process.stdout.write(chunk)',
    'process.stdout.write("Denied PUBLISH from c (d0, q1, r0, m1, \'devices/dev2/events\', ... (1 bytes))\\n")',
    'setInterval(() => {}, 1000)'
  ].join('\n'), 1)
  t.equal(busy.got[0]?.topic, 'devices/dev2/events', 'the denial after 2 MB of log')
  // A full pipe turns the pauses off for a second: at most one pause per second, not one per 64 KB.
  t.ok(busy.f.holds <= 2 + busy.elapsed / 1000, `${busy.f.holds} pauses over ${busy.f.reads} reads in ${busy.elapsed} ms (one per 64 KB would be 32)`)
})

t.test('the rendered broker configuration logs debug lines only when the gateway follows them', async t => {
  const on = renderMosquittoConf(brokerOptions(buildConfig({})))
  t.match(on, /^log_type debug$/m)
  t.match(on, /^log_dest stderr$/m, 'stderr: unbuffered on every Mosquitto 2.0.x')
  t.notMatch(on, /^log_dest stdout$/m)
  t.match(on, /^connection_messages true$/m, 'the connection lines map client ids to devices')
  const off = renderMosquittoConf(brokerOptions(buildConfig({ broker: { denialLogCommand: [] } })))
  t.notMatch(off, /log_type debug/)
  t.same(buildConfig({}).broker.denialLogCommand, ['journalctl', '--namespace=mosquitto', '--follow', '--lines=all', '--boot', '--all', '--output=short-unix', '--unit=mosquitto.service'])
})
