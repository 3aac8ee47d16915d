// First boot as the image does it, on a temp "data partition": `iot-gateway pki init` (the
// gateway's own PKI code) as iot-gateway-firstboot.service runs it, then the
// shipped Mosquitto configuration on those files. The gateway's own client certificate connects
// on the loopback listener, a device enrolled with `iot-gateway device enroll` publishes on the
// device listener, and the message arrives. Proves that the identity the first boot makes fits
// the broker configuration the image ships.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, require, REPO, LAYER, run, which, isRoot, freePort, listening } from './helpers.mjs'

const BUNDLE = join(REPO, 'app', 'dist', 'gateway.cjs')
const UNIT = join(LAYER, 'recipes-gateway', 'iot-gateway', 'files', 'iot-gateway-firstboot.service')
const CONF = join(LAYER, 'recipes-connectivity', 'mosquitto', 'files', 'iot-gateway.conf')
const mosquitto = which('mosquitto')
const skip = !existsSync(BUNDLE) ? 'app/dist/gateway.cjs is not built (npm run build in app/)' : !mosquitto ? 'mosquitto is not installed' : false

t.test('pki init + firstboot unit + shipped mosquitto.conf: gateway and device talk over TLS', { skip, timeout: 120000 }, async t => {
  const mqtt = require('mqtt')
  const data = mkdtempSync(join(tmpdir(), 'iotgw-firstboot-'))
  t.teardown(() => rmSync(data, { recursive: true, force: true }))
  // what tmpfiles.d makes before the first boot unit (owner/group aside)
  mkdirSync(join(data, 'pki'), { mode: 0o2750 })
  mkdirSync(join(data, 'mosquitto'), { mode: 0o2770 })
  const cfg = join(data, 'gateway.json')
  writeFileSync(cfg, JSON.stringify({ version: 1, gateway: { dataDir: data } }))
  const gw = (...args) => run(process.execPath, [BUNDLE, '--config', cfg, ...args], { env: { ...process.env, GATEWAY_CONFIG: '' } })

  const init = gw('pki', 'init')
  t.equal(init.status, 0, 'pki init:\n' + init.stderr)
  for (const f of ['ca.crt', 'broker.crt', 'broker.key', 'gateway.crt', 'gateway.key', 'crl.pem']) t.ok(existsSync(join(data, 'pki', f)), `pki/${f}`)
  t.equal(gw('pki', 'init').status, 0, 'pki init again (idempotent)')

  // The first-boot unit is `pki init` alone: no post steps that could drift from it.
  t.notMatch(readFileSync(UNIT, 'utf8'), /^ExecStartPost=/m, 'firstboot has no post steps')
  t.equal(statSync(join(data, 'pki', 'broker.key')).mode & 0o777, 0o640, 'broker.key readable by the group (iot-pki on the image)')
  t.equal(statSync(join(data, 'pki', 'ca.key')).mode & 0o077, 0, 'the CA key stays private')
  t.match(readFileSync(join(data, 'mosquitto', 'acl'), 'utf8'), /pattern write devices\/%u\//, 'initial ACL written')

  const enrol = gw('device', 'enroll', 'sensor-1', '--out', join(data, 'dev'))
  t.equal(enrol.status, 0, 'device enroll:\n' + enrol.stderr)

  const lanPort = await freePort()
  const gwPort = await freePort()
  const conf = readFileSync(CONF, 'utf8').replaceAll('/data/iot-gateway', data)
    .replace(/^listener 8883$/m, `listener ${lanPort} 127.0.0.1`).replace(/^listener 8884 127\.0\.0\.1$/m, `listener ${gwPort} 127.0.0.1`)
  writeFileSync(join(data, 'mosquitto.conf'), conf)
  if (isRoot) {
    // as root mosquitto drops to the user "mosquitto"; on the image it shares the group iot-pki
    const open = d => { chmodSync(d, 0o777); for (const f of readdirSync(d)) { const p = join(d, f); if (statSync(p).isDirectory()) open(p); else chmodSync(p, 0o644) } }
    open(data)
  }
  const broker = spawn(mosquitto, ['-c', join(data, 'mosquitto.conf')], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  broker.stderr.on('data', d => { log += d })
  t.teardown(() => { if (broker.exitCode === null) broker.kill('SIGKILL') })
  const deadline = Date.now() + 15000
  while (!(await listening(lanPort) && await listening(gwPort))) {
    if (broker.exitCode !== null || Date.now() > deadline) { t.fail('mosquitto did not start:\n' + log); return }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  const read = f => readFileSync(join(data, f))
  const connect = (port, cert, key) => new Promise(resolve => {
    const c = mqtt.connect({ host: '127.0.0.1', port, protocol: 'mqtts', ca: read('pki/ca.crt'), cert: read(cert), key: read(key), reconnectPeriod: 0, connectTimeout: 5000, clientId: `c${Math.random().toString(16).slice(2, 8)}` })
    c.once('connect', () => resolve(c))
    c.once('error', err => { c.end(true); resolve(err) })
  })
  const gateway = await connect(gwPort, 'pki/gateway.crt', 'pki/gateway.key')
  t.notOk(gateway instanceof Error, 'the gateway\'s certificate from pki init is accepted: ' + (gateway instanceof Error ? gateway.message : 'ok'))
  if (gateway instanceof Error) return
  const got = []
  gateway.on('message', (topic, payload) => got.push(`${topic} ${payload}`))
  await gateway.subscribeAsync('devices/+/telemetry', { qos: 1 })
  const device = await connect(lanPort, 'dev/sensor-1.crt', 'dev/sensor-1.key')
  t.notOk(device instanceof Error, 'the enrolled device is accepted: ' + (device instanceof Error ? device.message : 'ok'))
  if (device instanceof Error) return
  await device.publishAsync('devices/sensor-1/telemetry', '{"seq":1}', { qos: 1 })
  const until = Date.now() + 5000
  while (got.length === 0 && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 50))
  t.same(got, ['devices/sensor-1/telemetry {"seq":1}'], 'delivered to the gateway\'s session')
  await device.endAsync()
  await gateway.endAsync()
  broker.kill('SIGTERM')
})
