// Opt-in (a cold parse takes minutes): BitBake parses the layer against the upstream layers, with
// the parse checker of the shared tools (bitbake -p, show-recipes without skipped recipes,
// bitbake -e and bitbake -g of iot-gateway-image, the oeqa module import) for the Pi and QEMU.
//   IOTGW_YOCTO_PARSE=1 IOTGW_YOCTO_MIRROR=<folder of the upstream snapshots> scripts/test.sh
// app/.taprc limits a test file to 240 s; a cold parse of two machines takes longer, so run it as
//   cd app && IOTGW_YOCTO_PARSE=1 IOTGW_YOCTO_MIRROR=... NODE_PATH=$PWD/node_modules npx tap --timeout=7200 ../tests/layer-parse.test.mjs
// Optional: IOTGW_YOCTO_LAB (build/clone folder, default <tmpdir>/yocto-lab),
//           IOTGW_YOCTO_MACHINES (default "raspberrypi3-64 qemuarm64").
import { existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, SHARED, LAYER, run, which } from './helpers.mjs'

const CHECKER = join(SHARED, 'tools', 'yocto-parse-check.sh')
const mirror = process.env.IOTGW_YOCTO_MIRROR ?? ''
const lab = process.env.IOTGW_YOCTO_LAB || join(tmpdir(), 'yocto-lab')
const skip = process.env.IOTGW_YOCTO_PARSE !== '1'
  ? 'opt-in: set IOTGW_YOCTO_PARSE=1 (and IOTGW_YOCTO_MIRROR to the folder of the upstream layer snapshots) to parse the layer with BitBake'
  : !existsSync(CHECKER) ? `the parse checker ${CHECKER} is absent (the shared folder beside the checkout)`
  : !which('bash') ? 'bash is not installed'
  : !mirror && !existsSync(join(lab, 'openembedded-core')) ? `no upstream layers: set IOTGW_YOCTO_MIRROR (snapshots) or IOTGW_YOCTO_LAB (existing clones)`
  : false

if (!skip) t.setTimeout(2 * 60 * 60 * 1000)

const machines = (process.env.IOTGW_YOCTO_MACHINES || 'raspberrypi3-64 qemuarm64').split(/\s+/).filter(Boolean)
for (const machine of machines) {
  t.test(`bitbake parses meta-iot-gateway for ${machine}`, { skip, timeout: 60 * 60 * 1000 }, t => {
    const r = run('bash', [CHECKER, '-d', 'iot-gateway-os', '-m', machine, LAYER], {
      env: { ...process.env, LAB: lab, MIRROR: mirror }, timeout: 60 * 60 * 1000
    })
    const summary = r.stdout.slice(r.stdout.lastIndexOf('=== summary'))
    t.equal(r.status, 0, `parse checker for ${machine}:\n${summary || r.stdout.slice(-3000)}\n${r.stderr.slice(-2000)}`)
    for (const step of ['bitbake -p', 'layer recipes (show-recipes)', 'bitbake -e iot-gateway-image', 'bitbake -g iot-gateway-image', 'oeqa runtime cases import']) {
      t.match(summary, new RegExp(`^${step.replace(/[()]/g, '\\$&')}\\s+PASS`, 'm'), step)
    }
    t.end()
  })
}
