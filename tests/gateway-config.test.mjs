// The /etc/iot-gateway/gateway.json the recipe writes (its python write_gateway_json, run here with
// a stand-in for BitBake's datastore) is accepted by the gateway's own configuration loader, and
// `iot-gateway render mosquitto` with it prints exactly the Mosquitto configuration the image
// ships. With the WireGuard knobs set, `iot-gateway wg render` accepts the tunnel settings.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, LAYER, run, which } from './helpers.mjs'

const INC = join(LAYER, 'recipes-gateway', 'iot-gateway', 'iot-gateway.inc')
const SHIPPED = join(LAYER, 'recipes-connectivity', 'mosquitto', 'files', 'iot-gateway.conf')
const BUNDLE = join(REPO, 'app', 'dist', 'gateway.cjs')

// Runs the recipe's `python write_gateway_json() {...}` (a postfunc of do_install) with the ?= defaults of the .inc, overridden
// by the knobs given as JSON; prints the written gateway.json.
const RUN_PY = String.raw`
import json, os, re, sys
text = open(sys.argv[1]).read()
knobs = json.loads(sys.argv[3])
vals = dict(re.findall(r'^([A-Z_]+) \?= "([^"]*)"', text, re.M))
vals.update({'sysconfdir': '/etc', 'D': sys.argv[2]})
vals.update(knobs)
body = re.search(r'^python write_gateway_json\(\) \{\n(.*?)^\}', text, re.M | re.S).group(1)
class D:
    def getVar(self, k):
        return vals.get(k, '')
class BB:
    warnings = []
    def warn(self, msg): self.warnings.append(msg)
    def fatal(self, msg): raise SystemExit('fatal: ' + msg)
os.makedirs(sys.argv[2] + '/etc/iot-gateway', exist_ok=True)
src = 'def f(d, bb):\n' + body
ns = {'os': os}
exec(src, ns)
ns['f'](D(), BB())
print(open(sys.argv[2] + '/etc/iot-gateway/gateway.json').read())
`

function recipeConfig (t, knobs = {}) {
  const D = mkdtempSync(join(tmpdir(), 'iotgw-cfg-'))
  t.teardown(() => rmSync(D, { recursive: true, force: true }))
  const r = run('python3', ['-c', RUN_PY, INC, D, JSON.stringify(knobs)])
  if (r.status !== 0) throw new Error('recipe python failed: ' + r.stderr)
  return { file: join(D, 'etc', 'iot-gateway', 'gateway.json'), json: JSON.parse(r.stdout) }
}

const skip = !which('python3') ? 'python3 is not installed' : !existsSync(BUNDLE) ? 'app/dist/gateway.cjs is not built (npm run build in app/)' : false

t.test('the image\'s gateway.json renders the shipped mosquitto config', { skip }, t => {
  const { file, json } = recipeConfig(t)
  t.equal(json.version, 1)
  t.equal(json.wireguard.privateKeyFile, '/data/wireguard/private.key')
  const r = run(process.execPath, [BUNDLE, '--config', file, 'render', 'mosquitto'])
  t.equal(r.status, 0, 'the gateway accepts the configuration:\n' + r.stderr)
  t.equal(r.stdout, readFileSync(SHIPPED, 'utf8'), 'recipes-connectivity/mosquitto/files/iot-gateway.conf == `iot-gateway render mosquitto`')
  t.end()
})

t.test('knobs reach the configuration and the gateway accepts them', { skip }, t => {
  const { file, json } = recipeConfig(t, {
    IOT_GATEWAY_CLOUD_URL: 'https://cloud.example.net/ingest',
    IOT_GATEWAY_TRUST_DIR: '/somewhere',
    IOT_GATEWAY_LAN_ADDRESS: '192.168.50.1/24',
    IOT_GATEWAY_WG_ADDRESS: '10.200.0.2/24',
    IOT_GATEWAY_WG_HUB_ENDPOINT: 'hub.example.net:51820',
    IOT_GATEWAY_WG_HUB_PUBLIC_KEY: 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=',
    IOT_GATEWAY_WG_HUB_ALLOWED_IPS: '10.200.0.0/24 10.201.0.0/24'
  })
  t.equal(json.uplink.url, 'https://cloud.example.net/ingest')
  t.equal(json.uplink.caFile, '/etc/iot-gateway/cloud-ca.pem')
  t.same(json.broker.addresses, ['192.168.50.1', '127.0.0.1'])
  t.same(json.wireguard.hubAllowedIps, ['10.200.0.0/24', '10.201.0.0/24'])
  const wg = run(process.execPath, [BUNDLE, '--config', file, 'wg', 'render'])
  t.equal(wg.status, 0, 'wg render accepts the tunnel settings:\n' + wg.stderr)
  t.match(wg.stdout, /hub\.example\.net:51820/)
  const bad = recipeConfig(t, { IOT_GATEWAY_CLOUD_URL: 'ftp://nope' })
  const r = run(process.execPath, [BUNDLE, '--config', bad.file, 'render', 'mosquitto'])
  t.not(r.status, 0, 'an invalid knob is rejected by the gateway (the check can fail)')
  t.end()
})

// The management API: the daemon stays on 127.0.0.1 (no api section: the schema's default). The
// tunnel's address comes from the configuration at run time (iot-gateway-api-tunnel.service runs
// `wg api-listen`): the image's own knob, or this gateway's override on /data for a fleet image.
t.test('the API: loopback in gateway.json, the tunnel address of the merged configuration, never 0.0.0.0', { skip }, t => {
  const apiListen = (file, env = {}) => {
    const r = run(process.execPath, [BUNDLE, '--config', file, 'wg', 'api-listen'], { env: { ...process.env, GATEWAY_CONFIG: '', ...env } })
    t.equal(r.status, 0, r.stderr)
    return r.stdout
  }
  for (const knobs of [{}, { IOT_GATEWAY_WG_ADDRESS: '10.200.0.2/24' }]) {
    const { file, json } = recipeConfig(t, knobs)
    t.notOk('api' in json, 'gateway.json sets no api section')
    const eff = JSON.parse(run(process.execPath, [BUNDLE, '--config', file, 'config', 'check'], { env: { ...process.env, GATEWAY_CONFIG: '' } }).stdout)
    t.equal(eff.api.host, '127.0.0.1', 'the daemon listens on loopback')
  }
  t.equal(apiListen(recipeConfig(t, { IOT_GATEWAY_WG_ADDRESS: '10.200.0.2/24' }).file),
    'IOT_GATEWAY_API_LISTEN=10.200.0.2:8080\nIOT_GATEWAY_API_TARGET=127.0.0.1:8080\n', 'an image with its own tunnel address')
  t.equal(apiListen(recipeConfig(t, { IOT_GATEWAY_WG_ADDRESS: 'fd00:200::2/64' }).file),
    'IOT_GATEWAY_API_LISTEN=[fd00:200::2]:8080\nIOT_GATEWAY_API_TARGET=127.0.0.1:8080\n')
  const fleet = recipeConfig(t)
  t.equal(apiListen(fleet.file), 'IOT_GATEWAY_API_LISTEN=\nIOT_GATEWAY_API_TARGET=\n', 'no tunnel address anywhere: no socket')
  // the fleet image's gateway.json names /data/iot-gateway.json as the override: the same file
  // elsewhere, with the address provisioning writes there
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-api-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const override = join(dir, 'iot-gateway.json')
  writeFileSync(override, JSON.stringify({ version: 1, wireguard: { address: '10.200.0.42/24' } }))
  const image = join(dir, 'gateway.json')
  writeFileSync(image, JSON.stringify({ ...fleet.json, gateway: { ...fleet.json.gateway, overrideFile: override } }))
  t.equal(apiListen(image), 'IOT_GATEWAY_API_LISTEN=10.200.0.42:8080\nIOT_GATEWAY_API_TARGET=127.0.0.1:8080\n', 'a fleet image: the provisioned address')
  const socket = readFileSync(join(LAYER, 'recipes-gateway', 'iot-gateway', 'files', 'iot-gateway-api@.socket'), 'utf8')
  t.match(socket, /^FreeBind=yes$/m)
  t.match(socket, /^ListenStream=%I$/m)
  t.end()
})

t.test('IOT_GATEWAY_SSH_FROM_WAN opens SSH on the WAN in the rendered ruleset, and only then', { skip }, t => {
  const rules = knobs => {
    const { file } = recipeConfig(t, knobs)
    const r = run(process.execPath, [BUNDLE, '--config', file, 'firewall', 'render'])
    t.equal(r.status, 0, r.stderr)
    return r.stdout
  }
  // the rendered chain of each zone names its services in comments: "# ssh: tcp/22"
  const wanChain = text => text.split(/\n(?=\s*chain )/).find(c => /chain zone_wan\b/.test(c)) ?? ''
  const release = rules({})
  const debug = rules({ IOT_GATEWAY_SSH_FROM_WAN: '1' })
  t.ok(wanChain(release) !== '' && wanChain(debug) !== '', 'the ruleset has a WAN zone chain')
  t.notMatch(wanChain(release), /tcp dport \{?[^}\n]*\b22\b/, 'release: no SSH from the WAN')
  t.match(wanChain(debug), /tcp dport \{?[^}\n]*\b22\b/, 'debug/test images: SSH from the WAN')
  t.end()
})

t.test('IOT_GATEWAY_ACL_DENIALS = "0": no follower, and the broker config the bbappend ships has no debug lines', { skip }, t => {
  const append = readFileSync(join(LAYER, 'recipes-connectivity', 'mosquitto', 'mosquitto_%.bbappend'), 'utf8')
  const sedExpr = /sed -i -e '([^']+)' \$\{D\}\$\{sysconfdir\}\/mosquitto\/iot-gateway\.conf/.exec(append)
  t.ok(sedExpr, 'the bbappend edits the shipped configuration with sed')
  const { file, json } = recipeConfig(t, { IOT_GATEWAY_ACL_DENIALS: '0' })
  t.same(json.broker.denialLogCommand, [])
  const rendered = run(process.execPath, [BUNDLE, '--config', file, 'render', 'mosquitto'])
  t.equal(rendered.status, 0, rendered.stderr)
  t.notMatch(rendered.stdout, /log_type debug/)
  const shipped = run('sed', ['-e', sedExpr[1], SHIPPED])
  t.equal(shipped.status, 0, shipped.stderr)
  t.equal(shipped.stdout, rendered.stdout, 'the shipped configuration after the bbappend\'s sed == `render mosquitto` with the knob off')
  t.match(readFileSync(SHIPPED, 'utf8'), /^log_type debug$/m, 'the default ships debug logging (the knob on)')
  t.end()
})
