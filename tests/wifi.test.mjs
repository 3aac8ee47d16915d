// The IoT LAN's Wi-Fi from provisioning (recipes-core/iot-gateway-system-conf): the real
// `iot-gateway provision import` writes this gateway's Wi-Fi onto a /data tree; the recipe's own
// do_install lines render the image's hostapd configuration and the hostapd drop-in;
// iot-gateway-wifi (the script iot-gateway-wifi.service runs) puts the one over the other; and
// Debian's hostapd parses the result. hostapd has no "check the configuration" mode: it reads and
// checks the file completely (every line, then its consistency checks) before it opens the driver,
// so it is run in a network namespace without Wi-Fi, and the test reads whether it got past the
// configuration (to the driver) or stopped at it ("N errors found in configuration file").
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, LAYER, run, which, isRoot } from './helpers.mjs'

const SYSCONF = join(LAYER, 'recipes-core', 'iot-gateway-system-conf')
const FILES = join(SYSCONF, 'files')
const RECIPE = readFileSync(join(SYSCONF, 'iot-gateway-system-conf_1.0.bb'), 'utf8')
const BUNDLE = join(REPO, 'app', 'dist', 'gateway.cjs')
const hostapd = which('hostapd')

// The hostapd part of the recipe's do_install (from the passphrase choice to the drop-in), run as
// the shell BitBake runs, with the knobs' defaults from the recipe.
const knobs = Object.fromEntries([...RECIPE.matchAll(/^(IOT_GATEWAY_[A-Z_]+) \?= "([^"]*)"/gm)].map(m => [m[1], m[2]]))
const hostapdInstall = (() => {
  const body = RECIPE.match(/^do_install\(\) \{\n(.*?)^\}/ms)[1]
  const from = body.indexOf('    if [ -n "${IOT_GATEWAY_WIFI_PASSPHRASE}" ]')
  const to = body.indexOf('\n', body.indexOf('hostapd.service.d/iot-gateway.conf', from))
  if (from < 0 || to < 0) throw new Error('the recipe\'s hostapd lines moved')
  return body.slice(from, to)
})()
function installImage (dir, extra = {}) {
  const D = join(dir, 'image')
  const vars = { ...knobs, ...extra, D, UNPACKDIR: FILES, sysconfdir: '/etc', libexecdir: '/usr/libexec', nonarch_base_libdir: '/usr/lib', systemd_system_unitdir: '/usr/lib/systemd/system' }
  // BitBake expands ${VAR} before the shell runs (also inside single quotes); $var is the shell's
  const script = hostapdInstall.replace(/\$\{([A-Za-z_]+)\}/g, (m, v) => { if (!(v in vars)) throw new Error(`unknown ${m}`); return vars[v] })
  const r = run('sh', ['-ec', script])
  if (r.status !== 0) throw new Error('the recipe\'s hostapd lines: ' + r.stderr)
  return {
    conf: join(D, 'etc', 'hostapd', 'iot-gateway-lan.conf'),
    dropIn: readFileSync(join(D, 'usr/lib/systemd/system/hostapd.service.d/iot-gateway.conf'), 'utf8'),
    script: join(D, 'usr/libexec/iot-gateway-wifi')
  }
}

const wifiConf = data => join(data, 'wifi', 'iot-gateway-lan.conf')
function render (script, image, data, out) {
  return run('sh', [script, image, wifiConf(data), out])
}

/**
 * hostapd on FILE in a network namespace without Wi-Fi. parsed: it read and checked the whole file
 * and went on to the driver (nl80211, which fails here); a refused file stops before the driver with
 * "N errors found in configuration file".
 */
function hostapdParse (file) {
  const r = run('unshare', ['--net', hostapd, '-d', file], { timeout: 30_000 })
  const log = r.stdout + r.stderr
  const refused = /errors? found in configuration file|Failed to set up interface with/.test(log)
  return { parsed: log.includes(`Configuration file: ${file}`) && !refused && /nl80211/.test(log), log }
}

const skipImport = !existsSync(BUNDLE) ? 'app/dist/gateway.cjs is not built (npm run build in app/)' : false
const skipHostapd = !hostapd ? 'hostapd is not installed (scripts/install-deps.sh installs it)' : !isRoot ? 'needs root (a network namespace)' : false

t.test('provisioned Wi-Fi: imported onto /data, put over the image\'s access point, accepted by hostapd\'s parser', { skip: skipImport }, t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-wifi-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const image = installImage(dir)
  t.equal(statSync(image.conf).mode & 0o777, 0o600, 'the image\'s configuration is root\'s alone')
  t.match(readFileSync(image.conf, 'utf8'), /^ssid=iot-gateway$/m, 'the image\'s SSID (the knob\'s default)')
  t.match(readFileSync(image.conf, 'utf8'), /^wpa_psk_file=\/data\/hostapd\/wpa_psk$/m, 'no passphrase in the image')

  // the first boot's import, as the real CLI does it
  const data = join(dir, 'data')
  mkdirSync(join(data, 'iot-gateway'), { recursive: true })
  const conf = join(dir, 'gateway.json')
  writeFileSync(conf, JSON.stringify({ version: 1, gateway: { dataDir: join(data, 'iot-gateway'), overrideFile: join(data, 'iot-gateway.json') }, uplink: { tokenFile: '' } }))
  const prov = join(dir, 'prov.json')
  writeFileSync(prov, JSON.stringify({ version: 1, wifi: { ssid: 'plant floor 2', passphrase: 'a SECRET "wifi" #pass', country: 'FR' } }))
  const imp = run(process.execPath, [BUNDLE, 'provision', 'import', prov, '--config', conf], { env: { ...process.env, GATEWAY_CONFIG: '' } })
  t.equal(imp.status, 0, imp.stderr)
  t.equal(statSync(wifiConf(data)).mode & 0o777, 0o600)
  t.equal(statSync(join(data, 'wifi')).mode & 0o777, 0o700)

  const out = join(dir, 'run', 'hostapd.conf')
  mkdirSync(join(dir, 'run'), { mode: 0o700 })
  const r = render(image.script, image.conf, data, out)
  t.equal(r.status, 0, r.stdout + r.stderr)
  t.match(r.stdout, /access point "plant floor 2", country FR \(from .*iot-gateway-lan\.conf: ssid country_code wpa_passphrase\)/, 'says what it took')
  t.notMatch(r.stdout + r.stderr, /SECRET/, 'never logs the passphrase')
  t.equal(statSync(out).mode & 0o777, 0o600, 'the generated file is root\'s alone (it holds the passphrase)')
  const text = readFileSync(out, 'utf8')
  t.same(text.match(/^(ssid2?|country_code|wpa_passphrase|wpa_psk_file)=.*$/gm), ['ssid=plant floor 2', 'country_code=FR', 'wpa_passphrase=a SECRET "wifi" #pass'],
    'the gateway\'s SSID, country and passphrase replace the image\'s, once each')
  t.match(text, /^ieee80211d=1$/m, 'the country goes out in beacons (802.11d); hostapd sets the kernel\'s regulatory domain from country_code')
  t.match(text, /^channel=6$/m, 'the rest is the image\'s')

  if (skipHostapd) { t.skip(`hostapd: ${skipHostapd}`); t.end(); return }
  const ok = hostapdParse(out)
  t.ok(ok.parsed, `hostapd reads the generated file without an error: ${ok.log}`)
  // and the check can fail: the same file without the passphrase is refused by hostapd's checks
  const broken = join(dir, 'broken.conf')
  writeFileSync(broken, text.replace(/^wpa_passphrase=.*\n/m, ''))
  const bad = hostapdParse(broken)
  t.notOk(bad.parsed, 'hostapd refuses a WPA-PSK configuration without a passphrase')
  t.match(bad.log, /PSK or passphrase is not configured/)

  // an SSID that is not plain ASCII goes as hex, and hostapd reads that too
  writeFileSync(prov, JSON.stringify({ version: 1, wifi: { ssid: 'Halle Süd ', passphrase: 'another-pass', country: 'DE' } }))
  t.equal(run(process.execPath, [BUNDLE, 'provision', 'import', prov, '--config', conf], { env: { ...process.env, GATEWAY_CONFIG: '' } }).status, 0)
  t.match(readFileSync(wifiConf(data), 'utf8'), new RegExp(`^ssid2=${Buffer.from('Halle Süd ').toString('hex')}$`, 'm'))
  t.equal(render(image.script, image.conf, data, out).status, 0)
  t.match(readFileSync(out, 'utf8'), /^ssid2=48616c6c652053c3bc6420$/m)
  t.notMatch(readFileSync(out, 'utf8'), /^ssid=/m, 'the image\'s ssid= is gone')
  const hex = hostapdParse(out)
  t.ok(hex.parsed, `hostapd reads ssid2=HEX: ${hex.log}`)
  t.end()
})

t.test('iot-gateway-wifi refuses what hostapd must not read, and writes nothing then', t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-wifi-bad-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const image = installImage(dir)
  const data = join(dir, 'data')
  mkdirSync(join(data, 'wifi'), { recursive: true, mode: 0o700 })
  const out = join(dir, 'hostapd.conf')
  const cases = [
    ['another hostapd setting', 'ssid=x\ninterface=eth0\n', /iot-gateway-lan\.conf:2: 'interface' may not be set here/],
    ['a lower-case country', 'country_code=de\n', /:1: country_code must be an ISO 3166 code/],
    ['a short passphrase', '# c\nwpa_passphrase=short\n', /:2: wpa_passphrase must be 8 to 63 printable ASCII characters/],
    ['a control character', 'ssid=a\tb\n', /:1: ssid must be 1 to 32 printable ASCII/],
    ['odd hex', 'ssid2=abc\n', /:1: ssid2 must be the SSID's 1 to 32 bytes in hex/],
    ['two SSIDs', 'ssid=a\nssid2=62\n', /:2: ssid is set twice/],
    ['a line without =', 'ssid\n', /:1: not a setting/]
  ]
  for (const [what, text, why] of cases) {
    writeFileSync(wifiConf(data), text, { mode: 0o600 })
    const r = render(image.script, image.conf, data, out)
    t.equal(r.status, 1, `${what}: the unit fails`)
    t.match(r.stdout, why, `${what}: the file, the line and the reason`)
    t.notOk(existsSync(out), `${what}: nothing written for hostapd`)
  }

  // no passphrase anywhere: not an error (hostapd's condition keeps it off), nothing written
  rmSync(wifiConf(data))
  let r = render(image.script, image.conf, data, out)
  t.equal(r.status, 0, r.stdout)
  t.match(r.stdout, /no Wi-Fi passphrase .*stays off/)
  t.notOk(existsSync(out))
  writeFileSync(wifiConf(data), 'country_code=US\n')
  r = render(image.script, image.conf, data, out)
  t.equal(r.status, 0)
  t.notOk(existsSync(out), 'a country alone gives no access point either')

  // the PSK file of the image (wpa_psk_file) still serves, with the gateway's country
  const psk = join(data, 'hostapd', 'wpa_psk')
  mkdirSync(join(data, 'hostapd'), { mode: 0o700 })
  writeFileSync(psk, '00:00:00:00:00:00 a-long-passphrase\n', { mode: 0o600 })
  const imageConf = join(dir, 'image-psk.conf')
  writeFileSync(imageConf, readFileSync(image.conf, 'utf8').replace('/data/hostapd/wpa_psk', psk))
  r = run('sh', [image.script, imageConf, wifiConf(data), out])
  t.equal(r.status, 0, r.stdout)
  t.match(readFileSync(out, 'utf8'), new RegExp(`^wpa_psk_file=${psk}$`, 'm'))
  t.match(readFileSync(out, 'utf8'), /^country_code=US$/m)
  t.equal(readFileSync(out, 'utf8').match(/^country_code=/gm).length, 1)

  // a passphrase in the image (the knob) is used when /data has none
  rmSync(out)
  rmSync(wifiConf(data))
  const withKnob = installImage(join(dir, 'knob'), { IOT_GATEWAY_WIFI_PASSPHRASE: 'image-passphrase' })
  r = run('sh', [withKnob.script, withKnob.conf, wifiConf(data), out])
  t.equal(r.status, 0, r.stdout)
  t.match(readFileSync(out, 'utf8'), /^wpa_passphrase=image-passphrase$/m)
  t.end()
})

t.test('hostapd reads what iot-gateway-wifi.service writes, after it, at every start', t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-wifi-units-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const unit = readFileSync(join(FILES, 'iot-gateway-wifi.service'), 'utf8')
  const exec = unit.match(/^ExecStart=(.*)$/m)[1].split(' ')
  t.same(exec.slice(0, 3), ['/usr/libexec/iot-gateway-wifi', '/etc/hostapd/iot-gateway-lan.conf', '/data/wifi/iot-gateway-lan.conf'])
  const { dropIn } = installImage(dir)
  t.match(dropIn, new RegExp(`^ExecStart=/usr/sbin/hostapd ${exec[3]} `, 'm'), 'hostapd reads the generated file')
  t.match(exec[3], /^\/run\/iot-gateway-wifi\//, 'under the unit\'s RuntimeDirectory=')
  t.match(unit, /^RuntimeDirectory=iot-gateway-wifi$/m)
  t.match(unit, /^RuntimeDirectoryPreserve=yes$/m, 'kept after the oneshot ends')
  t.notMatch(unit, /^RemainAfterExit=yes/m, 'not staying active: every start of hostapd makes the file again')
  t.match(unit, /^After=.*iot-gateway-provision\.service/m, 'after the first boot\'s import')
  t.match(dropIn, /^Requires=iot-gateway-wifi\.service$/m)
  t.match(dropIn, /^After=.*iot-gateway-wifi\.service/m)
  t.same(dropIn.match(/^ConditionPathExists=.*$/gm), ['ConditionPathExists=|/data/wifi/iot-gateway-lan.conf', 'ConditionPathExists=|/data/hostapd/wpa_psk'],
    'without a passphrase in the image, hostapd starts once either file exists')
  t.notMatch(installImage(join(dir, 'k'), { IOT_GATEWAY_WIFI_PASSPHRASE: 'image-passphrase' }).dropIn, /^ConditionPathExists=/m, 'with one, always')
  t.match(RECIPE, /^\s+\$\{libexecdir\}\/iot-gateway-wifi \\$/m, 'the script is packaged')
  t.match(RECIPE, /^\s+\$\{systemd_system_unitdir\}\/iot-gateway-wifi\.service \\$/m, 'the unit is packaged')
  t.match(RECIPE, /echo "d \/data\/wifi 0700 root root -"/, 'tmpfiles.d makes /data/wifi, root\'s alone')
  chmodSync(dir, 0o700)
  t.end()
})
