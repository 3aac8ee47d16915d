import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildConfig, loadConfig } from '../../src/config/load.js'
import { envName } from '../../src/config/define.js'
import { tempDir } from '../helpers/env.js'

t.test('defaults are complete, valid and frozen', async t => {
  const c = buildConfig({})
  t.equal(c.outbox.synchronous, 'FULL', 'durable by default')
  t.equal(c.api.host, '127.0.0.1', 'management API on loopback by default')
  t.equal(c.mqtt.url, 'mqtts://127.0.0.1:8884')
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.uplink) && Object.isFrozen(c.mqtt.streams))
})

t.test('a bad field is named with the reason', async t => {
  const cases: Array<[unknown, RegExp]> = [
    [{ uplink: { batchMaxMessages: 'x' } }, /^uplink\.batchMaxMessages: must be a number/],
    [{ uplink: { batchMaxMessages: 0 } }, /^uplink\.batchMaxMessages: must be >= 1/],
    [{ outbox: { synchronous: 'OFF' } }, /^outbox\.synchronous: must be one of FULL, NORMAL/],
    [{ uplink: { url: 'ftp://x' } }, /^uplink\.url: "ftp:\/\/x" does not match/],
    [{ uplink: { nope: 1 } }, /^uplink\.nope: unknown field/],
    [{ nope: {} }, /^nope: unknown section/],
    [{ version: 9 }, /^version: unsupported configuration version 9/],
    [{ mqtt: { streams: ['telemetry', 'commands'] } }, /^mqtt\.streams: "commands" is the downlink/],
    [{ mqtt: { reconnectMinMs: 5000, reconnectMaxMs: 1000 } }, /^mqtt\.reconnectMaxMs: must be >= mqtt\.reconnectMinMs/],
    [[], /must contain a JSON object/]
  ]
  for (const [input, re] of cases) {
    t.throws(() => buildConfig(input), { name: 'ConfigError', code: 'GW_ERR_CONFIG_INVALID', message: re }, `${JSON.stringify(input)} -> ${re}`)
  }
})

t.test('environment overrides the file, typed; flags override both', async t => {
  t.equal(envName('uplink', 'batchMaxMessages'), 'GATEWAY_UPLINK_BATCH_MAX_MESSAGES')
  const c = buildConfig({ uplink: { batchMaxMessages: 10, gzip: true } }, { GATEWAY_UPLINK_BATCH_MAX_MESSAGES: '20', GATEWAY_UPLINK_GZIP: 'false', GATEWAY_MQTT_STREAMS: 'a,b' })
  t.equal(c.uplink.batchMaxMessages, 20)
  t.equal(c.uplink.gzip, false)
  t.same(c.mqtt.streams, ['a', 'b'])
  t.throws(() => buildConfig({}, { GATEWAY_UPLINK_GZIP: 'maybe' }), /uplink\.gzip \(from GATEWAY_UPLINK_GZIP\): environment value "maybe" is not a boolean/)
  t.equal(buildConfig({}, { GATEWAY_API_PORT: '9' }, { api: { port: 10 } }).api.port, 10)
})

t.test('loading a file: JSON errors and unreadable files are named', async t => {
  const dir = tempDir(t)
  const bad = join(dir, 'bad.json')
  writeFileSync(bad, '{"uplink": ')
  t.throws(() => loadConfig(bad, {}), new RegExp(`^${bad}: is not valid JSON`))
  t.throws(() => loadConfig(join(dir, 'absent.json'), {}), /cannot read configuration file \(ENOENT\)/)
  const good = join(dir, 'good.json')
  writeFileSync(good, JSON.stringify({ version: 1, $comment: 'ok', uplink: { url: 'https://cloud.example/ingest' } }))
  t.equal(loadConfig(good, {}).uplink.url, 'https://cloud.example/ingest')
  t.equal(loadConfig(undefined, { GATEWAY_CONFIG: good }).uplink.url, 'https://cloud.example/ingest')
})

t.test('the shipped example loads, and CONFIG.md is the reference the schema makes', async t => {
  const { readFileSync } = await import('node:fs')
  const { configReference } = await import('../../src/config/reference.js')
  const here = new URL('../../', import.meta.url)
  const example = loadConfig(new URL('gateway.example.json', here).pathname, {})
  t.equal(example.uplink.url, 'https://ingest.example.com/v1/telemetry')
  t.equal(example.api.host, '0.0.0.0')
  t.equal(readFileSync(new URL('CONFIG.md', here), 'utf8'), configReference(), 'CONFIG.md is up to date (regenerate: iot-gateway config reference > app/CONFIG.md)')
})
