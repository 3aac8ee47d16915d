import t from 'tap'
import { buildConfig } from '../../src/config/load.js'
import { eventFor, TrustScores } from '../../src/devices/trust.js'
import { deviceIdProblem } from '../../src/devices/device-id.js'

t.test('scores fall with events, recover with traffic, and cross the floor once', async t => {
  const c = buildConfig({ trust: { initial: 100, floor: 40, penaltyReplay: 25, recoverPerMessage: 1 } })
  const s = new TrustScores(c.trust)
  t.equal(s.get('d').score, 100)
  t.same(s.lower('d', 'replay'), { score: 75, crossed: false })
  t.same(s.lower('d', 'replay'), { score: 50, crossed: false })
  t.ok(s.restore('d', 5))
  t.equal(s.get('d').score, 55)
  t.same(s.lower('d', 'replay'), { score: 30, crossed: true }, 'below the floor')
  t.same(s.lower('d', 'replay'), { score: 5, crossed: false }, 'crossed only once')
  t.same(s.lower('d', 'replay'), { score: 0, crossed: false }, 'never below 0')
  t.same(s.get('d').events, { replay: 5 })
  t.ok(s.below('d'))
  s.restore('e', 10)
  t.equal(s.get('e').score, 100, 'never above initial')
  s.set('d', null)
  t.equal(s.get('d').score, 100, 'release resets')
})

t.test('which refusals are security events', async t => {
  t.equal(eventFor('duplicate'), 'replay')
  t.equal(eventFor('bad_json'), 'malformed_input')
  t.equal(eventFor('rate_limited'), 'rate_limit_applied')
  t.equal(eventFor('bad_signature'), undefined, 'a wrong MAC is unauthenticated: not the claimed device\'s doing')
  t.equal(eventFor('unknown_device'), undefined)
  t.equal(eventFor('outbox_full'), undefined, 'a full outbox is not the device\'s fault')
  t.equal(eventFor('device_blocked'), undefined)
})

t.test('device ids', async t => {
  for (const ok of ['a', 'sensor-1', 'A.b_c-9', 'x'.repeat(64)]) t.equal(deviceIdProblem(ok, 'gw'), undefined, ok)
  for (const bad of ['', '-a', '.a', 'a/b', 'a+', 'a#', 'a b', '..', 'x'.repeat(65), 'ü', 'a\n']) t.ok(deviceIdProblem(bad, 'gw'), JSON.stringify(bad))
  t.match(deviceIdProblem('gw', 'gw')!, /gateway's own id/)
})
