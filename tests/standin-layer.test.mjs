// The stand-in installs the layer's files by running each recipe's own do_install
// (scripts/standin-layer.py), so the stand-in and the recipes cannot disagree about what goes where.
// This checks that the installer really reads the recipes: what it installs for the image's
// packages, the units it enables, the knobs it passes, and that a recipe it has never seen comes
// along without a change to the stand-in. Quick: no QEMU.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, LAYER, run, which } from './helpers.mjs'

const SCRIPT = join(REPO, 'scripts', 'standin-layer.py')
const bundle = join(REPO, 'app', 'dist', 'gateway.cjs')
const skip = !which('python3')
  ? 'python3 is not installed'
  : !existsSync(bundle)
      ? 'app/dist/gateway.cjs is missing (npm run build)'
      : false

function install (layer, knobs = []) {
  const root = mkdtempSync(join(tmpdir(), 'standin-layer-'))
  mkdirSync(join(root, 'etc', 'mosquitto'), { recursive: true }) // Debian's mosquitto package made it
  const r = run('python3', [SCRIPT, layer, REPO, root, ...knobs])
  return { root, r, manifest: r.status === 0 ? JSON.parse(r.stdout) : null }
}

t.test('the image\'s packages are installed by their recipes\' do_install', { skip }, async t => {
  const { root, r, manifest } = install(LAYER, ['IOT_GATEWAY_CLOUD_URL=https://cloud.example.net/ingest', 'IOT_GATEWAY_WG_ADDRESS=10.200.0.2/24'])
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  t.equal(r.status, 0, r.stderr)
  if (!manifest) return
  for (const p of ['iot-gateway', 'iot-gateway-certs', 'iot-gateway-system-conf', 'mosquitto']) t.ok(manifest.recipes.includes(p), `${p} installed`)
  // every unit of the gateway recipe's list, where the recipe puts it
  const inc = readFileSync(join(LAYER, 'recipes-gateway', 'iot-gateway', 'iot-gateway.inc'), 'utf8')
  const units = /IOT_GATEWAY_UNITS = "([^"]*)"/.exec(inc)[1].replace(/\\\n/g, ' ').split(/\s+/).filter(Boolean)
  t.ok(units.length >= 5, 'the recipe lists its units')
  for (const u of units) t.ok(existsSync(join(root, 'usr/lib/systemd/system', u)), `${u} installed`)
  t.ok(manifest.enable.includes('iot-gateway-wireguard.service'), 'the tunnel unit is enabled when IOT_GATEWAY_WG_ADDRESS is set')
  t.ok(manifest.enable.includes('iot-gateway-grow-data.service'), 'the growth unit is enabled (IOT_GATEWAY_DATA_GROW defaults to 1)')
  t.ok(existsSync(join(root, 'usr/lib/systemd/system/mosquitto.service.d/iot-gateway.conf')), 'the Mosquitto bbappend\'s drop-in')
  t.ok(existsSync(join(root, 'etc/mosquitto/iot-gateway.conf')), 'the Mosquitto configuration')
  t.equal(statSync(join(root, 'etc/hostapd/iot-gateway-lan.conf')).mode & 0o777, 0o600, 'the hostapd configuration keeps the recipe\'s mode')
  const cfg = JSON.parse(readFileSync(join(root, 'etc/iot-gateway/gateway.json'), 'utf8'))
  t.equal(cfg.uplink.url, 'https://cloud.example.net/ingest', 'the python postfunc wrote gateway.json from the knobs')
  t.equal(cfg.wireguard.address, '10.200.0.2/24')
  t.same(manifest.members, [['iot-gateway', 'iot-pki']], 'USERADD_PARAM\'s supplementary group')
})

t.test('a knob of the mosquitto bbappend reaches the installed file', { skip }, async t => {
  const { root, r } = install(LAYER, ['IOT_GATEWAY_ACL_DENIALS=0'])
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  t.equal(r.status, 0, r.stderr)
  t.notMatch(readFileSync(join(root, 'etc/mosquitto/iot-gateway.conf'), 'utf8'), /^log_type debug$/m, 'no debug logging with IOT_GATEWAY_ACL_DENIALS = "0"')
})

t.test('a new recipe of the layer comes along without a change to the stand-in', { skip }, async t => {
  const layer = mkdtempSync(join(tmpdir(), 'standin-layer-copy-'))
  t.teardown(() => rmSync(layer, { recursive: true, force: true }))
  cpSync(LAYER, layer, { recursive: true })
  mkdirSync(join(layer, 'recipes-core', 'zz-probe', 'files'), { recursive: true })
  writeFileSync(join(layer, 'recipes-core', 'zz-probe', 'files', 'zz-probe.service'), '[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n')
  writeFileSync(join(layer, 'recipes-core', 'zz-probe', 'zz-probe_1.0.bb'), [
    'SRC_URI = "file://zz-probe.service"',
    'ZZ_MODE ?= "0644"',
    'do_install() {',
    '    install -D -m ${ZZ_MODE} ${UNPACKDIR}/zz-probe.service ${D}${systemd_system_unitdir}/zz-probe.service',
    '}',
    'SYSTEMD_SERVICE:${PN} = "zz-probe.service"',
    ''
  ].join('\n'))
  const image = join(layer, 'recipes-core', 'images', 'iot-gateway-image.bb')
  writeFileSync(image, readFileSync(image, 'utf8') + '\nIMAGE_INSTALL += "zz-probe"\n')
  // the copy is outside the checkout: say where app/ is, as the recipe's knob allows
  const { root, r, manifest } = install(layer, ['ZZ_MODE=0640', `IOT_GATEWAY_REPO_DIR=${REPO}`])
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  t.equal(r.status, 0, r.stderr)
  t.ok(manifest?.recipes.includes('zz-probe'), 'the new recipe was installed')
  t.ok(manifest?.enable.includes('zz-probe.service'), 'and its unit enabled')
  t.equal(statSync(join(root, 'usr/lib/systemd/system/zz-probe.service')).mode & 0o777, 0o640, 'by its own do_install, with the knob')
})
