// The integration tests read /metrics through this parser: a renamed metric must fail them, not read as 0.
import t from 'tap'
import { parseMetric } from '../helpers/gateway-process.js'

const text = [
  '# HELP gateway_x_total X.', '# TYPE gateway_x_total counter', 'gateway_x_total{kind="a"} 3',
  '# HELP gateway_up Up.', '# TYPE gateway_up gauge', 'gateway_up 1',
  '# HELP gateway_y_total Y.', '# TYPE gateway_y_total counter'
].join('\n')

t.test('reads a series', async t => {
  t.equal(parseMetric(text, 'gateway_x_total', '{kind="a"}'), 3)
  t.equal(parseMetric(text, 'gateway_up'), 1)
})

t.test('a missing series fails, a missing family fails even with absentIs', async t => {
  t.throws(() => parseMetric(text, 'gateway_renamed_total'), /not in \/metrics/)
  t.throws(() => parseMetric(text, 'gateway_renamed_total', '', { absentIs: 0 }), /not in \/metrics/)
  t.throws(() => parseMetric(text, 'gateway_x_total', '{kind="b"}'), /no such series/)
  t.throws(() => parseMetric(text, 'gateway_y_total'), /no such series/)
  t.throws(() => parseMetric(text, 'gateway_up_', ''), /not in \/metrics/, 'a prefix is not the metric')
})

t.test('absentIs: a never-incremented series of a known family', async t => {
  t.equal(parseMetric(text, 'gateway_x_total', '{kind="b"}', { absentIs: 0 }), 0)
  t.equal(parseMetric(text, 'gateway_y_total', '', { absentIs: 0 }), 0)
})
