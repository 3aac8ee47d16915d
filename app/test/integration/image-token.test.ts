// The image's /etc/iot-gateway/gateway.json, as the recipe's python write_gateway_json renders it
// (run here with a stand-in for BitBake's datastore, as tests/gateway-config.test.mjs does), names a
// token file on /data; the token written there by `config set uplink.token` reaches a real HTTPS
// cloud as `Authorization: Bearer`, and the image's gateway.id stays generic.
import { spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { loadConfig } from '../../src/config/load.js'
import { Cloud } from '../helpers/cloud.js'
import { deviceCreds, mosquittoPub } from '../helpers/devices.js'
import { tempDir } from '../helpers/env.js'
import { appDir, GatewayProcess, requireBundle } from '../helpers/gateway-process.js'
import { Mosquitto } from '../helpers/mosquitto.js'
import { freePort, waitFor } from '../helpers/ports.js'

const INC = join(appDir, '..', 'meta-iot-gateway', 'recipes-gateway', 'iot-gateway', 'iot-gateway.inc')
const TMPFILES = join(appDir, '..', 'meta-iot-gateway', 'recipes-core', 'iot-gateway-provision', 'files', 'iot-gateway-provision.tmpfiles')

const RUN_PY = String.raw`
import json, os, re, sys
text = open(sys.argv[1]).read()
vals = dict(re.findall(r'^([A-Z_]+) \?= "([^"]*)"', text, re.M))
vals.update({'sysconfdir': '/etc', 'D': sys.argv[2]})
vals.update(json.loads(sys.argv[3]))
body = re.search(r'^python write_gateway_json\(\) \{\n(.*?)^\}', text, re.M | re.S).group(1)
class D:
    def getVar(self, k): return vals.get(k, '')
class BB:
    def warn(self, msg): pass
    def fatal(self, msg): raise SystemExit('fatal: ' + msg)
os.makedirs(sys.argv[2] + '/etc/iot-gateway', exist_ok=True)
ns = {'os': os}
exec('def f(d, bb):\n' + body, ns)
ns['f'](D(), BB())
`

function render (dir: string, knobs: Record<string, string> = {}): { file: string, json: any } {
  const r = spawnSync('python3', ['-c', RUN_PY, INC, dir, JSON.stringify(knobs)], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error('recipe python failed: ' + r.stderr)
  const file = join(dir, 'etc', 'iot-gateway', 'gateway.json')
  return { file, json: JSON.parse(readFileSync(file, 'utf8')) }
}

const skip = spawnSync('python3', ['--version']).status !== 0 ? 'python3 is not installed' : false

t.test('the image names a 0600 token file on /data and no gateway id', { skip }, async t => {
  const { json } = render(tempDir(t))
  t.equal(json.uplink.tokenFile, '/data/iot-gateway/uplink.token', 'uplink.tokenFile is on /data, in the gateway\'s data directory')
  t.equal(json.gateway.overrideFile, '/data/iot-gateway.json', 'the override is beside the 0710 data directory (root-run units without CAP_DAC_OVERRIDE read it)')
  t.equal(json.gateway.id, undefined, 'the image\'s id stays generic (each gateway\'s comes from its override)')
  t.match(readFileSync(TMPFILES, 'utf8'), /^f \/data\/iot-gateway\/uplink\.token +0600 iot-gateway iot-gateway -$/m, 'tmpfiles.d makes it empty, 0600, gateway-owned')
  t.ok(loadConfig(render(tempDir(t)).file, {}).uplink.tokenFile.startsWith(loadConfig(render(tempDir(t)).file, {}).gateway.dataDir + '/'), 'inside gateway.dataDir')
})

t.test('the rendered image configuration sends Authorization to a real HTTPS cloud', { skip, timeout: 120000 }, async t => {
  const dir = tempDir(t)
  const data = join(dir, 'data')
  mkdirSync(data)
  // The one knob moved for the test: the token file's directory (the image's is /data/iot-gateway).
  const tokenFile = join(data, 'uplink.token')
  const { file } = render(dir, { IOT_GATEWAY_TOKEN_FILE: tokenFile })
  const rendered = JSON.parse(readFileSync(file, 'utf8'))
  rendered.gateway.overrideFile = join(dir, 'iot-gateway.json') // the image's is /data/iot-gateway.json
  writeFileSync(file, JSON.stringify(rendered))
  writeFileSync(tokenFile, '', { mode: 0o600 }) // what tmpfiles.d makes before provisioning
  const cloud = new Cloud(dir)
  await cloud.start()
  const gatewayPort = await freePort()
  // Only what a test host needs differs from the image (ports, addresses, the data directory, the
  // cloud), given the way an operator would: GATEWAY_* variables over the image's file.
  const env: NodeJS.ProcessEnv = {
    GATEWAY_GATEWAY_DATA_DIR: data,
    GATEWAY_MQTT_URL: `mqtts://127.0.0.1:${gatewayPort}`,
    GATEWAY_BROKER_GATEWAY_PORT: String(gatewayPort),
    GATEWAY_BROKER_LAN_PORT: String(await freePort()),
    GATEWAY_BROKER_LAN_BIND: '127.0.0.1',
    GATEWAY_BROKER_DENIAL_LOG_COMMAND: '',
    GATEWAY_API_HOST: '127.0.0.1',
    GATEWAY_API_PORT: String(await freePort()),
    GATEWAY_UPLINK_URL: cloud.url,
    GATEWAY_UPLINK_CA_FILE: cloud.caFile,
    GATEWAY_UPLINK_LINGER_MS: '20',
    GATEWAY_COAP_ENABLED: 'false'
  }
  const cli = (...args: string[]) => spawnSync(process.execPath, [requireBundle(), ...args, '-c', file], { encoding: 'utf8', env: { PATH: process.env.PATH, ...env } })
  const config = loadConfig(file, env)
  const broker = new Mosquitto(config)
  await broker.start()
  const gw = new GatewayProcess(file, config.api.port, join(dir, 'gateway.log'), { bin: process.execPath, args: [requireBundle()], env })
  t.teardown(async () => { await gw.stop('SIGKILL'); await broker.stop(); await cloud.stop() })

  const id = cli('config', 'set', 'gateway.id', 'gw-fleet-07')
  t.equal(id.status, 0, id.stderr)
  const dev = deviceCreds(config, 'sensor-1')
  // Before provisioning: the empty token file means no token (not "Bearer ").
  await gw.start()
  t.equal((await mosquittoPub(broker.lanPort, dev, 'devices/sensor-1/telemetry', ['{"seq":1}'])).code, 0)
  await waitFor(() => cloud.accepted.length >= 1, 'message at the cloud')
  t.equal(cloud.batches[0]!.authorization, undefined, 'an empty token file sends no Authorization')
  t.ok(cloud.batches[0]!.batchId.startsWith('gw-fleet-07-'), 'the gateway id from the override reaches the cloud')

  const tok = cli('config', 'set', 'uplink.token', 'secret-token-07')
  t.equal(tok.status, 0, tok.stderr)
  t.match(tok.stdout, new RegExp(`wrote the cloud token to ${tokenFile}`), 'written to the image\'s token file')
  t.equal(statSync(tokenFile).mode & 0o777, 0o600)
  await gw.stop()
  await gw.start()
  t.equal((await mosquittoPub(broker.lanPort, dev, 'devices/sensor-1/telemetry', ['{"seq":2}'])).code, 0)
  await waitFor(() => cloud.accepted.length >= 2, 'second message at the cloud')
  t.equal(cloud.batches.at(-1)!.authorization, 'Bearer secret-token-07', 'Authorization from the image\'s token file')
})
