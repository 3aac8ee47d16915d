// Opt-in (a cold parse takes minutes): BitBake parses the layer against the upstream layers, with
// the parse checker of the shared tools (bitbake -p, show-recipes without skipped recipes,
// bitbake -e and bitbake -g of iot-gateway-image, the oeqa module import) for the Pi and QEMU.
//   IOTGW_YOCTO_PARSE=1 IOTGW_YOCTO_MIRROR=<folder of the upstream snapshots> scripts/test.sh
// app/.taprc limits a test file to 240 s; a cold parse of two machines takes longer, so run it as
//   cd app && IOTGW_YOCTO_PARSE=1 IOTGW_YOCTO_MIRROR=... NODE_PATH=$PWD/node_modules npx tap --timeout=7200 ../tests/layer-parse.test.mjs
// Optional: IOTGW_YOCTO_LAB (build/clone folder, default <tmpdir>/yocto-lab),
//           IOTGW_YOCTO_MACHINES (default "raspberrypi3-64 qemuarm64").
import { existsSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, SHARED, LAYER, run, which } from './helpers.mjs'

const CHECKER = join(SHARED, 'tools', 'yocto-parse-check.sh')
const mirror = process.env.IOTGW_YOCTO_MIRROR ?? ''
const lab = process.env.IOTGW_YOCTO_LAB || join(tmpdir(), 'yocto-lab')
const skip = process.env.IOTGW_YOCTO_PARSE !== '1'
  ? 'opt-in: set IOTGW_YOCTO_PARSE=1 (and IOTGW_YOCTO_MIRROR to the folder of the upstream layer snapshots) to parse the layer with BitBake'
  : !existsSync(CHECKER)
      ? `the parse checker ${CHECKER} is absent (the shared folder beside the checkout)`
      : !which('bash')
          ? 'bash is not installed'
          : !mirror && !existsSync(join(lab, 'openembedded-core'))
              ? 'no upstream layers: set IOTGW_YOCTO_MIRROR (snapshots) or IOTGW_YOCTO_LAB (existing clones)'
              : false

if (!skip) t.setTimeout(2 * 60 * 60 * 1000)

// The knobs of an image with operator SSH and a tunnel, so that every recipe of the layer is parsed
// (iot-gateway-ssh skips itself without keys) and the tunnel's units and dependencies resolve. The
// key file is read only at do_install, so it need not exist for a parse.
const CONF = [
  'IOT_GATEWAY_SSH_AUTHORIZED_KEYS = "${TOPDIR}/operators.pub"',
  'IOT_GATEWAY_WG_ADDRESS = "10.200.0.2/24"'
]
const machines = (process.env.IOTGW_YOCTO_MACHINES || 'raspberrypi3-64 qemuarm64').split(/\s+/).filter(Boolean)
for (const machine of machines) {
  t.test(`bitbake parses meta-iot-gateway for ${machine}`, { skip, timeout: 60 * 60 * 1000 }, t => {
    const r = run('bash', [CHECKER, '-d', 'iot-gateway-os', '-m', machine, ...CONF.flatMap(c => ['-c', c]), LAYER], {
      env: { ...process.env, LAB: lab, MIRROR: mirror }, timeout: 60 * 60 * 1000
    })
    const summary = r.stdout.slice(r.stdout.lastIndexOf('=== summary'))
    t.equal(r.status, 0, `parse checker for ${machine}:\n${summary || r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`)
    for (const step of ['bitbake -p', 'layer recipes (show-recipes)', 'bitbake -e iot-gateway-image', 'bitbake -g iot-gateway-image', 'oeqa runtime cases import']) {
      t.match(summary, new RegExp(`^${step.replace(/[()]/g, '\\$&')}\\s+PASS`, 'm'), step)
    }
    // what BitBake made of the image: the machine's Wi-Fi firmware and the regulatory database
    // are in IMAGE_INSTALL and in the build list (IMAGE_INSTALL is set with "=", so the machine's
    // MACHINE_EXTRA_RRECOMMENDS reach the image only through the recipe)
    const logs = join(lab, `build-check-meta-iot-gateway-${machine}`, 'parse-check-logs')
    const env = readFileSync(join(logs, 'env-iot-gateway-image.txt'), 'utf8')
    const install = (/^IMAGE_INSTALL="(.*)"$/m.exec(env)?.[1] ?? '').split(/\s+/)
    const buildlist = readFileSync(join(logs, 'pn-buildlist-iot-gateway-image'), 'utf8').split('\n')
    t.ok(install.includes('wireless-regdb-static'), 'IMAGE_INSTALL has wireless-regdb-static')
    t.ok(buildlist.includes('wireless-regdb'), 'wireless-regdb is built')
    if (machine.startsWith('raspberrypi')) {
      t.ok(install.includes('linux-firmware-rpidistro-bcm43430'), 'IMAGE_INSTALL has the Pi 3 B Wi-Fi firmware')
      t.ok(install.includes('linux-firmware-rpidistro-bcm43455'), 'IMAGE_INSTALL has the Pi 3 B+ Wi-Fi firmware')
      t.ok(buildlist.includes('linux-firmware-rpidistro'), 'linux-firmware-rpidistro is built')
      t.match(env, /^ENABLE_UART="1"$/m, 'serial console')
    } else {
      t.notOk(install.some(p => p.startsWith('linux-firmware-')), 'no firmware for QEMU')
    }
    t.end()
  })
}
