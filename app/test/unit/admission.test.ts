import t from 'tap'
import { admissionVerdict, commitPlan, type AdmissionContext, type AdmissionInput, type CommitPlanInput, type Verdict } from '../../src/pipeline/admission.js'

type Both = AdmissionInput & AdmissionContext
const admissionVerdictOf = (i: Both): Verdict => admissionVerdict(i, i)
const base = (over: Partial<Both> = {}): Both => ({
  device: 'd1',
  stream: 'telemetry',
  raw: JSON.stringify({ epoch: 1, seq: 5, t: 20 }),
  redelivery: false,
  streams: ['telemetry', 'events'],
  maxPayloadBytes: 1024,
  last: () => ({ epoch: 1, seq: 4 }),
  pendingFrom: () => false,
  takeToken: () => true,
  ratePerSecond: 10,
  full: false,
  ...over
})

t.test('admission: a well-formed next message is admitted with its sequence and payload', async t => {
  const v = admissionVerdictOf(base())
  t.match(v, { admit: true, epoch: 1, seq: 5 })
  if (v.admit) t.equal(JSON.parse(v.payload).t, 20)
})

t.test('admission: each refusal, in the order the checks run', async t => {
  t.match(admissionVerdictOf(base({ device: 'bad/id' })), { admit: false, reason: 'bad_device_id', record: true })
  t.match(admissionVerdictOf(base({ stream: 'secrets' })), { admit: false, reason: 'unknown_stream' })
  t.match(admissionVerdictOf(base({ gate: { reason: 'device_blocked', detail: 'revoked at 12:00' } })), { admit: false, reason: 'device_blocked', detail: 'revoked at 12:00' })
  t.match(admissionVerdictOf(base({ raw: 'not json' })), { admit: false })
  t.match(admissionVerdictOf(base({ last: () => ({ epoch: 1, seq: 5 }) })), { admit: false, reason: 'duplicate', afterCommit: false })
  t.match(admissionVerdictOf(base({ last: () => ({ epoch: 1, seq: 9 }) })), { admit: false, reason: 'replay' })
  t.match(admissionVerdictOf(base({ last: () => ({ epoch: 1, seq: 9 }), redelivery: true })), { admit: false, reason: 'redelivered' }, 'a DUP resend is redelivered, not a replay')
  t.match(admissionVerdictOf(base({ takeToken: () => false })), { admit: false, reason: 'rate_limited', detail: 'more than 10/s' })
  t.match(admissionVerdictOf(base({ full: true })), { admit: false, reason: 'outbox_full', record: false }, 'outbox_full is not logged: the device sends it again')
})

t.test('admission: an old sequence waits for the commit when the device has a message pending', async t => {
  t.match(admissionVerdictOf(base({ last: () => ({ epoch: 1, seq: 5 }), pendingFrom: d => d === 'd1' })), { admit: false, reason: 'duplicate', afterCommit: true })
})

t.test('admission: a rate token is taken only for a message that passed every other check', async t => {
  let taken = 0
  const takeToken = (): boolean => { taken++; return true }
  admissionVerdictOf(base({ takeToken, device: 'bad/id' }))
  admissionVerdictOf(base({ takeToken, last: () => ({ epoch: 1, seq: 9 }) }))
  admissionVerdictOf(base({ takeToken, raw: '{' }))
  t.equal(taken, 0, 'no token for refused messages')
  admissionVerdictOf(base({ takeToken }))
  t.equal(taken, 1)
})

const plan = (over: Partial<CommitPlanInput> = {}): CommitPlanInput => ({
  now: 10_000,
  pending: 1,
  oldestMqtt: 10_000,
  urgent: false,
  lastCommitAt: 0,
  commitLingerMs: 250,
  coapCommitLingerMs: 50,
  commitEarlyMessages: 64,
  commitMinIntervalMs: 50,
  commitMaxMessages: 5000,
  ...over
})

t.test('commit plan: the linger of the oldest message of each transport', async t => {
  t.same(commitPlan(plan({ pending: 0, oldestMqtt: undefined })), 'none')
  t.same(commitPlan(plan()), { at: 10_250 }, 'MQTT: 250 ms')
  t.same(commitPlan(plan({ oldestCoap: 10_100 })), { at: 10_150 }, 'a CoAP message waits less (its 2.04 waits)')
  t.same(commitPlan(plan({ now: 10_300 })), 'now', 'past its deadline')
})

t.test('commit plan: early at commitEarlyMessages or when a transport waits, spaced by commitMinIntervalMs', async t => {
  t.same(commitPlan(plan({ pending: 64 })), 'now')
  t.same(commitPlan(plan({ urgent: true })), 'now')
  t.same(commitPlan(plan({ pending: 64, lastCommitAt: 9_980 })), { at: 10_030 }, 'no closer than 50 ms to the end of the last commit')
  t.same(commitPlan(plan({ pending: 5000, lastCommitAt: 9_980 })), 'now', 'unless commitMaxMessages wait')
})

t.test('commit plan: a timer overdue because the event loop was busy counts as due', async t => {
  t.same(commitPlan(plan({ timerAt: 9_990 })), 'now')
  t.same(commitPlan(plan({ timerAt: 10_100 })), { at: 10_250 }, 'a timer not yet due: the caller keeps the earlier one')
})
