import t from 'tap'
import { buildConfig } from '../../src/config/load.js'
import { DeviceWatch } from '../../src/alerts/device-watch.js'
import { evaluate, forMsOf, observe, type AlertState, type Inputs, type Observation } from '../../src/alerts/rules.js'
import { ConfigError } from '../../src/lib/errors.js'
import { AlertManager } from '../../src/alerts/manager.js'
import { AlertStore } from '../../src/alerts/store.js'
import { openDatabase } from '../../src/store/db.js'
import { createLogger } from '../../src/lib/logger.js'
import { Registry } from '../../src/lib/metrics.js'

const cfg = buildConfig({ alerts: { cpuForSeconds: 120, temperatureForSeconds: 0 } })
const forMs = forMsOf(cfg.alerts)

const temp = (v: number): Observation[] => observe({ ...idle(0), system: sample({ temperatureMax: v }) }, cfg.alerts).filter(o => o.rule === 'temperature_high')
function sample (over: Record<string, unknown>): NonNullable<Inputs['system']> {
  return { at: 0, cpu: {}, load: null, memory: null, gatewayRssBytes: null, mosquitto: null, temperatures: {}, temperatureMax: null, throttling: null, disk: null, clockSynchronized: null, units: null, ...over } as NonNullable<Inputs['system']>
}
function idle (now: number): Inputs {
  return { now, system: null, broker: { connected: true, since: 0 }, uplink: { failingSince: null, waiting: 0 }, cloudAuthRefused: false, clock: null, outboxOldestAt: null, quarantined: new Map(), silent: [], anomalies: [] }
}

/** Runs a sequence of (time, observations) through evaluate, returning every transition. */
function run (steps: Array<[number, Observation[]]>, start: Map<string, AlertState> = new Map()): { log: string[], state: Map<string, AlertState> } {
  let state = start
  const log: string[] = []
  for (const [now, obs] of steps) {
    const r = evaluate(state, obs, forMs, now)
    state = r.next
    for (const tr of r.transitions) log.push(`${now}:${tr.alert.key}:${tr.to}`)
  }
  return { log, state }
}

t.test('clock rules: unsynchronised fires after its duration; earlier than the PKI fires at once; both resolve once', async t => {
  const clock = (synchronised: boolean, behindPki: boolean): Observation[] =>
    observe({ ...idle(0), clock: { synchronised, behindPki } }, cfg.alerts).filter(o => o.rule.startsWith('clock_'))
  const limit = cfg.alerts.clockUnsynchronisedSeconds * 1000
  const { log } = run([
    [0, clock(false, true)],
    [limit - 1000, clock(false, true)],
    [limit, clock(false, false)],
    [limit + 5000, clock(true, false)],
    [limit + 10000, clock(true, false)]
  ])
  t.same(log, ['0:clock_behind_pki:firing', `${limit}:clock_unsynchronised:firing`, `${limit}:clock_behind_pki:resolved`, `${limit + 5000}:clock_unsynchronised:resolved`])
  t.same(observe(idle(0), cfg.alerts).filter(o => o.rule.startsWith('clock_')), [], 'no clock known: no observation (no data is not good news)')
})

t.test('a threshold fires once after its duration and resolves once past the hysteresis', async t => {
  const cpu = (v: number): Observation[] => observe({ ...idle(0), system: sample({ cpu: { total: v } }) }, cfg.alerts).filter(o => o.rule === 'cpu_high')
  const { log, state } = run([
    [0, cpu(0.95)], // pending
    [60_000, cpu(0.95)],
    [119_000, cpu(0.95)], // not yet 2 minutes
    [120_000, cpu(0.95)], // fires
    [125_000, cpu(0.99)], // still firing, no second report
    [130_000, cpu(0.75)], // below 80 but above 72: hysteresis keeps it firing
    [135_000, cpu(0.85)],
    [140_000, cpu(0.70)], // resolves
    [145_000, cpu(0.70)]
  ])
  t.same(log, ['120000:cpu_high:firing', '140000:cpu_high:resolved'])
  t.equal(state.size, 0)
})

t.test('a condition shorter than the duration never fires', async t => {
  const cpu = (v: number): Observation[] => observe({ ...idle(0), system: sample({ cpu: { total: v } }) }, cfg.alerts).filter(o => o.rule === 'cpu_high')
  const { log } = run([[0, cpu(0.95)], [100_000, cpu(0.95)], [110_000, cpu(0.5)], [200_000, cpu(0.95)], [310_000, cpu(0.95)]])
  t.same(log, [], 'the pending state restarts after a dip')
})

t.test('a firing alert loaded after a restart is not reported again, and resolves once', async t => {
  const first = run([[0, temp(75)]])
  t.same(first.log, ['0:temperature_high:firing'])
  // "restart": the persisted state is the firing map
  const second = run([[10_000, temp(76)], [20_000, temp(60)], [30_000, temp(60)]], new Map(first.state))
  t.same(second.log, ['20000:temperature_high:resolved'])
})

t.test('no observation keeps the state (no data is not good news)', async t => {
  const first = run([[0, temp(75)]])
  const r = evaluate(first.state, [], forMs, 1000)
  t.equal(r.transitions.length, 0)
  t.equal(r.next.get('temperature_high')?.state, 'firing')
})

t.test('broker, uplink, auth, disk and device rules from inputs', async t => {
  const a = cfg.alerts
  const obs = observe({
    ...idle(100_000),
    broker: { connected: false, since: 100_000 - a.brokerUnreachableSeconds * 1000 },
    uplink: { failingSince: 100_000 - a.uplinkFailingSeconds * 1000 - 1, waiting: 10 },
    cloudAuthRefused: true,
    system: sample({ disk: { path: '/data', sizeBytes: 1e9, freeBytes: 1e6, availBytes: 1e6, files: 100, filesFree: 50 } }),
    quarantined: new Map([['d1', true], ['d2', false]]),
    silent: [{ device: 'd3', silentMs: 400_000, limitMs: 300_000 }]
  }, a)
  const breach = Object.fromEntries(obs.map(o => [o.key, o.breach]))
  t.same(breach, { disk_low: true, outbox_stale: false, uplink_failing: true, cloud_auth_refused: true, broker_unreachable: true, 'device_quarantined:d1': true, 'device_quarantined:d2': false, 'device_silent:d3': true })
  const off = observe({ ...idle(0), cloudAuthRefused: true }, buildConfig({ alerts: { disabled: ['cloud_auth_refused'] } }).alerts)
  t.notOk(off.some(o => o.rule === 'cloud_auth_refused'), 'a disabled rule is not observed')
  t.throws(() => buildConfig({ alerts: { disabled: ['cpu'] } }), ConfigError, 'an unknown rule name is a configuration error')
})

t.test('device silence is judged against the device\'s own learned interval', async t => {
  const w = new DeviceWatch(buildConfig({ alerts: { deviceSilentMinSeconds: 1, deviceSilentFactor: 5, deviceSilentWarmup: 3 } }).alerts)
  for (let i = 0; i <= 3; i++) w.observe('slow', 'telemetry', i * 60_000, '{"seq":1}')
  for (let i = 0; i <= 20; i++) w.observe('fast', 'telemetry', 180_000 + i * 2_000, '{"seq":1}')
  w.observe('new', 'telemetry', 0, '{"seq":1}')
  const s = Object.fromEntries(w.silence(250_000).map(x => [x.device, x]))
  t.notOk('new' in s, 'not judged before its warm-up')
  t.equal(s.slow!.limitMs, 300_000, '5 x 60 s')
  t.ok(s.slow!.silentMs < s.slow!.limitMs, 'the slow device is not silent after 70 s')
  t.equal(s.fast!.limitMs, 10_000, '5 x 2 s')
  t.ok(s.fast!.silentMs > s.fast!.limitMs, 'the fast device is silent after 30 s')
  // Bursts (gaps under a second) do not shrink the learned interval.
  for (let i = 0; i < 10; i++) w.observe('slow', 'telemetry', 250_000 + i, '{"seq":1}')
  t.equal(w.interval('slow'), 60_000 + 0.2 * (70_000 - 60_000))
})

t.test('value anomalies: warm-up, minimum spread, a jump, a lasting step is learnt', async t => {
  const a = buildConfig({ alerts: { anomalyWarmup: 20, anomalyZ: 6, anomalyMinSpread: 0.5 } }).alerts
  const w = new DeviceWatch(a)
  const z = (): number => w.anomalies(0).find(x => x.field === 'temp')?.z ?? 0
  w.observe('d', 'telemetry', 0, '{"seq":1,"temp":20}')
  w.observe('d', 'telemetry', 1, '{"seq":2,"temp":90}')
  t.equal(z(), 0, 'no judgement during the warm-up')
  const w2 = new DeviceWatch(a)
  for (let i = 0; i < 50; i++) w2.observe('c', 'telemetry', i * 1000, `{"seq":${i},"temp":21}`)
  w2.observe('c', 'telemetry', 50_000, '{"seq":50,"temp":21.3}')
  t.ok((w2.anomalies(0).find(x => x.field === 'temp')?.z ?? 99) < 1, 'a constant sensor\'s first wiggle is not an anomaly (minimum spread)')
  t.notOk(w2.anomalies(0).some(x => x.field === 'seq'), 'seq is not a measurement')
  w2.observe('c', 'telemetry', 51_000, '{"seq":51,"temp":60}')
  const jump = w2.anomalies(a.anomalyZ)
  t.equal(jump.length, 1)
  t.ok(jump[0]!.z > 6, `a jump to 60 is an anomaly (z ${jump[0]!.z})`)
  for (let i = 52; i < 200; i++) w2.observe('c', 'telemetry', i * 1000, `{"seq":${i},"temp":60}`)
  t.equal(w2.anomalies(a.anomalyZ).length, 0, 'a lasting step becomes the new normal')
  w2.observe('c', 'events', 300_000, '{"seq":300,"temp":-100}')
  t.equal(w2.anomalies(a.anomalyZ).length, 0, 'only telemetry is judged')
})

t.test('the manager: transitions persisted in one write; a failed write is kept and retried, the alert still fires', async t => {
  const db = openDatabase(':memory:')
  const store = new AlertStore(db)
  let failNext = 1
  const real = store.apply.bind(store)
  store.apply = (...args) => { if (failNext-- > 0) throw new Error('SQLITE_FULL: database or disk is full'); real(...args) }
  const lines: string[] = []
  const log = createLogger('info', {}, l => { lines.push(l) })
  const c = buildConfig({ alerts: { temperatureForSeconds: 0 } })
  const sources = { brokerConnected: () => true, uplinkFailing: () => false, outboxDepth: () => 0, outboxOldestAt: () => null, cloudAuthRefused: () => false, quarantined: () => new Map<string, boolean>() }
  const m = new AlertManager(c, store, 'inst', sources, [], new Registry(), log)
  m.start()
  const hot = { at: 0, cpu: {}, load: null, memory: null, gatewayRssBytes: null, mosquitto: null, temperatures: {}, temperatureMax: 80, throttling: null, disk: null, clockSynchronized: null, units: null }
  t.equal(m.tick(hot, 1000).length, 1, 'fires although the write failed')
  t.ok(m.isFiring('temperature_high'))
  t.equal(store.firing().size, 0, 'nothing written yet')
  t.equal(lines.filter(l => l.includes('ALERT firing')).length, 1, 'the journal has it')
  t.equal(m.tick(hot, 2000).length, 0, 'no second transition')
  t.equal(store.firing().size, 1, 'written at the next tick')
  // A restart: a new manager on the same database reads the alert back and does not fire again.
  const m2 = new AlertManager(c, store, 'inst', sources, [], new Registry(), log)
  m2.start()
  t.equal(m2.tick(hot, 3000).length, 0)
  const r = m2.tick({ ...hot, temperatureMax: 40 }, 4000)
  t.same(r.map(x => x.to), ['resolved'])
  t.equal(store.firing().size, 0)
})
