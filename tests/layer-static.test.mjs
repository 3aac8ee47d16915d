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
  t.end()
})

t.test('wic: boot vfat, root ext4 read-only, data ext4 at /data; fixed boot/root sizes', t => {
  const w = read('files/wic/iot-gateway-rpi.wks.in')
  const parts = w.split('\n').filter(l => l.startsWith('part '))
  t.equal(parts.length, 3)
  t.match(parts[0], /^part \/boot .*--fstype=vfat .*--fixed-size \$\{IOT_GATEWAY_BOOT_SIZE\}/)
  t.match(parts[1], /^part \/ --source rootfs .*--fstype=ext4 .*--fixed-size \$\{IOT_GATEWAY_ROOT_SIZE\}/)
  t.match(parts[2], /^part \/data .*--fstype=ext4 .*--label data/)
  const q = read('files/wic/iot-gateway-qemu.wks.in')
  t.match(q, /^part \/data .*--label data/m)
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
  t.end()
})

t.test('oeqa runtime module compiles', { skip: !which('python3') && 'python3 is not installed' }, t => {
  const f = join(LAYER, 'lib/oeqa/runtime/cases/iot_gateway.py')
  const r = run('python3', ['-c', 'import ast,sys; ast.parse(open(sys.argv[1]).read(), sys.argv[1])', f])
  t.equal(r.status, 0, r.stderr)
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
