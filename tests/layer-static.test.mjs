// Static checks of meta-iot-gateway that need no BitBake: layer.conf, distro, static IDs, the
// bbappends are gated by the distro override (yocto-check-layer: adding the layer alone changes
// nothing), every local file a recipe names exists, the image's features and packages, the wks
// layout, README/SECURITY as yocto-check-layer wants them, and the oeqa module compiles.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join, relative } from 'node:path'
import { t, REPO, LAYER, run, which } from './helpers.mjs'

const read = p => readFileSync(join(LAYER, p), 'utf8')
function walk (dir, out = []) {
  for (const f of readdirSync(dir)) {
    const p = join(dir, f)
    if (statSync(p).isDirectory()) walk(p, out)
    else out.push(p)
  }
  return out
}
const files = walk(LAYER)
const recipes = files.filter(f => /\.(bb|bbappend|inc)$/.test(f))

t.test('layer.conf', t => {
  const c = read('conf/layer.conf')
  t.match(c, /^BBFILE_COLLECTIONS \+= "iot-gateway"$/m)
  t.match(c, /^LAYERSERIES_COMPAT_iot-gateway = "wrynose"$/m)
  t.match(c, /^LAYERDEPENDS_iot-gateway = "core openembedded-layer networking-layer"$/m)
  t.match(c, /BBFILES_DYNAMIC \+= "raspberrypi:/)
  t.end()
})

t.test('distro: systemd, static IDs that match the recipes', t => {
  const d = read('conf/distro/iot-gateway-os.conf')
  t.match(d, /^DISTRO = "iot-gateway-os"$/m)
  // a distro named like a recipe puts that PN into OVERRIDES (pn-overrides QA error)
  t.notOk(existsSync(join(LAYER, 'conf/distro/iot-gateway.conf')), 'no distro named iot-gateway (the recipe\'s PN)')
  t.match(d, /^INIT_MANAGER = "systemd"$/m)
  t.match(d, /^USERADDEXTENSION = "useradd-staticids"$/m)
  // oe-core appends DISTRO_FEATURES_DEFAULTS unless opted out: a headless gateway opts out of these
  const optedOut = (/^DISTRO_FEATURES_OPTED_OUT = "([^"]*)"/ms.exec(d)?.[1] ?? '').replace(/\\\n/g, ' ').split(/\s+/)
  for (const f of ['x11', 'wayland', 'opengl', 'vulkan', 'pulseaudio', 'alsa', 'bluetooth', 'ptest']) t.ok(optedOut.includes(f), `distro opts out of ${f}`)
  const passwd = Object.fromEntries(read('files/passwd').trim().split('\n').map(l => [l.split(':')[0], l.split(':')]))
  const group = Object.fromEntries(read('files/group').trim().split('\n').map(l => [l.split(':')[0], l.split(':')]))
  for (const u of ['iot-gateway', 'mosquitto']) {
    t.ok(passwd[u], `user ${u} has a static uid`)
    t.ok(group[u], `group ${u} has a static gid`)
    if (passwd[u] && group[u]) t.equal(passwd[u][3], group[u][2], `${u}: primary gid = gid of group ${u}`)
  }
  t.ok(group['iot-pki'], 'shared group iot-pki has a static gid')
  const gids = Object.values(group).map(g => g[2])
  t.equal(new Set(gids).size, gids.length, 'gids unique')
  const uids = Object.values(passwd).map(p => p[2])
  t.equal(new Set(uids).size, uids.length, 'uids unique')
  // every user and group the layer's recipes create is in the tables
  for (const f of recipes) {
    const text = readFileSync(f, 'utf8')
    for (const m of text.matchAll(/^(USERADD|GROUPADD)_PARAM:\$\{PN\} = "([^"]*)"/gms)) {
      const name = m[2].replace(/\\\n/g, ' ').trim().split(/\s+/).pop()
      t.ok(m[1] === 'USERADD' ? passwd[name] : group[name], `${relative(LAYER, f)}: ${m[1] === 'USERADD' ? 'user' : 'group'} ${name} is static`)
    }
  }
  t.end()
})

t.test('bbappends act only under the iot-gateway-os distro', t => {
  const appends = files.filter(f => f.endsWith('.bbappend'))
  t.ok(appends.length >= 3, `${appends.length} bbappends`)
  for (const f of appends) {
    const lines = readFileSync(f, 'utf8').split('\n')
    let depth = 0
    for (const line of lines) {
      if (depth > 0) { depth += (line.match(/\{/g) || []).length - (line.match(/\}/g) || []).length; continue }
      if (line.trim() === '' || line.startsWith('#')) continue
      const m = /^([A-Za-z0-9_${}:-]+)(\(\))?\s*(\+?\??[:.]?=|\{)?/.exec(line)
      t.ok(m && /:iot-gateway-os\b/.test(m[1]), `${relative(LAYER, f)}: "${line.trim().slice(0, 60)}" is gated by :iot-gateway-os`)
      if (/\{\s*$/.test(line)) depth = 1
    }
  }
  t.end()
})

t.test('the broker configuration the image installs is the file `config set` guards (app/src/cli/commands/config.ts)', t => {
  const append = readFileSync(join(LAYER, 'recipes-connectivity', 'mosquitto', 'mosquitto_%.bbappend'), 'utf8')
  const dropIn = readFileSync(join(LAYER, 'recipes-connectivity', 'mosquitto', 'files', 'mosquitto-iot-gateway.conf'), 'utf8')
  const guarded = /IOT_GATEWAY_BROKER_CONF \?\? '([^']+)'/.exec(readFileSync(join(REPO, 'app', 'src', 'cli', 'commands', 'config.ts'), 'utf8'))?.[1]
  t.equal(guarded, '/etc/mosquitto/iot-gateway.conf')
  t.match(append, /install -m 0644 \$\{UNPACKDIR\}\/iot-gateway\.conf \$\{D\}\$\{sysconfdir\}\/mosquitto\/iot-gateway\.conf/, 'installed there')
  t.match(dropIn, new RegExp(`^ExecStart=/usr/sbin/mosquitto -c ${guarded}$`, 'm'), 'and the broker reads it')
  t.end()
})

t.test('every file:// of the layer\'s recipes exists', t => {
  // better-sqlite3/ is another recipe's business; LIC_FILES_CHKSUM points into ${S}; ${@...} is conditional
  for (const f of recipes.filter(f => !f.includes('/better-sqlite3/'))) {
    const text = readFileSync(f, 'utf8').split('\n').filter(l => !l.includes('${@') && !l.startsWith('LIC_FILES_CHKSUM')).join('\n')
    for (const m of text.matchAll(/file:\/\/([^\s;"'}]+)/g)) {
      const name = m[1]
      if (name.startsWith('${')) continue
      const candidates = [join(dirname(f), 'files', name), join(dirname(f), name), join(REPO, name)]
      t.ok(candidates.some(existsSync), `${relative(LAYER, f)}: ${name}`)
    }
  }
  const units = /IOT_GATEWAY_UNITS = "([^"]*)"/s.exec(read('recipes-gateway/iot-gateway/iot-gateway.inc'))[1].split(/[\s\\]+/).filter(Boolean)
  for (const u of units) t.ok(existsSync(join(LAYER, 'recipes-gateway/iot-gateway/files', u)), `unit ${u}`)
  t.end()
})

t.test('image: read-only root, no package manager, the packages', t => {
  const img = read('recipes-core/images/iot-gateway-image.bb')
  t.match(img, /^inherit core-image$/m)
  t.match(img, /^IMAGE_FEATURES \+= "read-only-rootfs"$/m)
  t.match(img, /^IMAGE_FEATURES:remove = "package-management"$/m)
  t.notMatch(img, /ssh-server|empty-root-password|debug-tweaks|allow-root-login/, 'no debug access in the image recipe')
  for (const p of ['iot-gateway', 'better-sqlite3', 'mosquitto', 'nftables', 'wireguard-tools', 'nodejs', 'hostapd', 'iot-gateway-certs', 'iot-gateway-system-conf']) {
    t.match(img, new RegExp(`^ {4}${p} \\\\$`, 'm'), `IMAGE_INSTALL has ${p}`)
  }
  t.match(img, /^IMAGE_INSTALL \+= "iot-gateway-time"$/m, 'the clock recipe (recipes-core/iot-gateway-time)')
  t.end()
})

// IMAGE_INSTALL is set with "=" and there is no packagegroup-base, so nothing consumes the
// machine's MACHINE_EXTRA_RRECOMMENDS: the image must name the Wi-Fi firmware itself. Without it
// there is no wlan0 on a Pi, no hostapd, no IoT LAN. The expression is evaluated here the way
// BitBake evaluates it, on the Pi 3 machines' MACHINE_EXTRA_RRECOMMENDS (meta-raspberrypi,
// wrynose); layer-parse.test.mjs checks the same in `bitbake -e` when the snapshots are there.
t.test('image: the machine\'s Wi-Fi firmware and the regulatory database', { skip: !which('python3') && 'python3 is not installed' }, t => {
  const img = read('recipes-core/images/iot-gateway-image.bb')
  const m = /^IOT_GATEWAY_WIFI_FIRMWARE \?= "\$\{@(.*)\}"$/m.exec(img)
  t.ok(m, 'IOT_GATEWAY_WIFI_FIRMWARE is computed from the machine')
  t.match(img, /^IMAGE_INSTALL \+= "\$\{IOT_GATEWAY_WIFI_FIRMWARE\} wireless-regdb-static"$/m, 'IMAGE_INSTALL takes it, and wireless-regdb-static')
  if (!m) return t.end()
  const machines = {
    // conf/machine/raspberrypi3-64.conf + include/rpi-base.inc
    'raspberrypi3-64': 'linux-firmware-rpidistro-bcm43430 linux-firmware-rpidistro-bcm43455 bluez-firmware-rpidistro-bcm43430a1-hcd bluez-firmware-rpidistro-bcm4345c0-hcd kernel-modules udev-rules-rpi',
    qemuarm64: ''
  }
  for (const [machine, recommends] of Object.entries(machines)) {
    const r = run('python3', ['-c', `import sys
class D:
    def getVar(self, k): return sys.argv[1] if k == 'MACHINE_EXTRA_RRECOMMENDS' else None
d = D()
print(${m[1]})`, recommends])
    t.equal(r.status, 0, r.stderr)
    const pkgs = r.stdout.trim().split(/\s+/).filter(Boolean)
    if (machine === 'qemuarm64') t.same(pkgs, [], 'qemuarm64: no firmware')
    else t.same(pkgs, ['linux-firmware-rpidistro-bcm43430', 'linux-firmware-rpidistro-bcm43455'], `${machine}: the Pi 3 B and 3 B+ Wi-Fi firmware, no Bluetooth firmware`)
  }
  const distro = read('conf/distro/iot-gateway-os.conf')
  t.match(distro, /^LICENSE_FLAGS_ACCEPTED:append:rpi = " synaptics-killswitch"$/m, 'the firmware\'s licence flag is accepted')
  t.match(distro, /^ENABLE_UART \?= "1"$/m, 'serial console on release images')
  t.end()
})

t.test('wic: boot, root A, root B (reserved), data: four primaries, fixed sizes but data', t => {
  const w = read('files/wic/iot-gateway-rpi.wks.in')
  const parts = w.split('\n').filter(l => l.startsWith('part '))
  t.equal(parts.length, 4, 'four partitions: an msdos table holds them all as primaries')
  t.match(parts[0], /^part \/boot .*--fstype=vfat .*--fixed-size \$\{IOT_GATEWAY_BOOT_SIZE\}/)
  t.match(parts[1], /^part \/ --source rootfs .*--fstype=ext4 .*--fixed-size \$\{IOT_GATEWAY_ROOT_SIZE\}/)
  t.match(parts[2], /^part --ondisk \S+ --fstype=none .*--fixed-size \$\{IOT_GATEWAY_ROOT_SIZE\}$/, 'root B: empty, no mount point, as big as root A')
  t.match(parts[3], /^part \/data .*--fstype=ext4 .*--label data/)
  t.notMatch(w, /--type logical|--ptable gpt/)
  const q = read('files/wic/iot-gateway-qemu.wks.in').split('\n').filter(l => l.startsWith('part '))
  t.equal(q.length, 3)
  t.match(q[1], /^part --ondisk vda --fstype=none .*--fixed-size \$\{IOT_GATEWAY_ROOT_SIZE\}$/)
  t.match(q[2], /^part \/data .*--label data/)
  t.end()
})

t.test('python helpers: addpylib, and the gateway recipe uses them', t => {
  t.match(read('conf/layer.conf'), /^addpylib \$\{LAYERDIR\}\/lib iotgw$/m)
  const inc = read('recipes-gateway/iot-gateway/iot-gateway.inc')
  t.match(inc, /^PV = "\$\{@iotgw\.source\.field\(/m)
  t.match(inc, /^do_unpack\[postfuncs\] \+= "iot_gateway_source_date_epoch"$/m)
  t.notOk(existsSync(join(LAYER, 'recipes-gateway/iot-gateway/iot-gateway_0.1.0.bb')), 'no version in the recipe\'s file name')
  t.end()
})

t.test('kernel fragment: WireGuard and nf_tables', t => {
  for (const p of ['recipes-kernel/linux/files/iot-gateway.cfg', 'dynamic-layers/raspberrypi/recipes-kernel/linux/files/iot-gateway.cfg']) {
    const c = read(p)
    for (const o of ['CONFIG_WIREGUARD', 'CONFIG_NF_TABLES', 'CONFIG_NF_TABLES_INET', 'CONFIG_NFT_CT', 'CONFIG_NFT_NAT']) t.match(c, new RegExp(`^${o}=[ym]$`, 'm'), `${p}: ${o}`)
  }
  t.end()
})

t.test('README (maintainer, patches, knobs) and SECURITY.md', t => {
  const r = read('README.md')
  t.match(r, /^## Maintainer/m)
  t.match(r, /patches/i)
  for (const k of ['IOT_GATEWAY_CLOUD_URL', 'IOT_GATEWAY_TRUST_DIR', 'WireGuard', 'IOT_GATEWAY_WIFI_SSID', 'IOT_GATEWAY_SSH_AUTHORIZED_KEYS', 'IOT_GATEWAY_SSH_FROM_WAN', 'IOT_GATEWAY_ACL_DENIALS', 'IOT_GATEWAY_DATA_GROW', '### Machine']) t.match(r, k)
  t.ok(existsSync(join(LAYER, 'SECURITY.md')))
  // wrynose has no cve-check class any more: sbom-cve-check (and VEX from the SPDX SBOM)
  const sec = read('SECURITY.md')
  t.notMatch(sec, /INHERIT \+= "cve-check"/, 'SECURITY.md does not tell users to inherit the removed cve-check')
  t.match(sec, /sbom-cve-check/)
  for (const k of ['ENABLE_UART', 'When /data fails', 'A/B updates', 'Unit sandboxing', 'only a real Pi', 'ping']) t.match(r, k, `README: ${k}`)
  t.end()
})

t.test('oeqa runtime module compiles', { skip: !which('python3') && 'python3 is not installed' }, t => {
  const f = join(LAYER, 'lib/oeqa/runtime/cases/iot_gateway.py')
  const r = run('python3', ['-c', 'import ast,sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])', f])
  t.equal(r.status, 0, r.stderr)
  // oeqa's loader overwrites these four with the class's setUp/tearDown/setUpClass/tearDownClass:
  // defined in a case class, they never run (the delivery cases' setup did not, unnoticed)
  const defs = run('python3', ['-c', 'import ast,sys; print(*sorted({n.name for c in ast.walk(ast.parse(open(sys.argv[1]).read())) if isinstance(c, ast.ClassDef) for n in c.body if isinstance(n, ast.FunctionDef)}))', f])
  for (const name of ['setUpMethod', 'tearDownMethod', 'setUpClassMethod', 'tearDownClassMethod']) t.notOk(defs.stdout.split(/\s+/).includes(name), `no ${name} (oeqa's loader replaces it)`)
  t.ok(defs.stdout.split(/\s+/).includes('setUp'), `the delivery cases' setUp is found (${defs.stdout.trim()})`)
  t.end()
})

t.test('nothing of this layer names a build machine path', t => {
  const mine = [...files, join(REPO, 'kas.yml'), join(REPO, 'kas.lock.yml'), ...walk(join(REPO, 'conf')), ...walk(join(REPO, 'tests')),
    join(REPO, 'scripts/gen-npm-inc.mjs'), join(REPO, 'scripts/flash.sh'), join(REPO, 'scripts/reflash.sh')]
  const forbidden = new RegExp(['/' + 'work/', '\\.' + 'library', '/' + 'root/', '/' + 'home/'].join('|'))
  for (const f of mine) {
    if (!existsSync(f) || f.includes('/better-sqlite3/')) continue
    t.notMatch(readFileSync(f, 'utf8'), forbidden, relative(REPO, f))
  }
  t.end()
})
