// The layer's oeqa runtime cases (meta-iot-gateway/lib/oeqa/runtime/cases/iot_gateway.py) run for
// real, by oe-core's own runner, against the booted arm64 stand-in (tests/STANDIN.md):
//   oe-test runtime --target-type serial ... meta-iot-gateway/lib/oeqa/runtime/cases
// from the openembedded-core and bitbake snapshots at the commits kas.yml pins. A release image
// has no SSH, so the target is oe-core's OESerialTarget (pexpect on a serial console), the same
// target testimage uses with TEST_TARGET = "serial" on a bench board. Its serial line is the
// stand-in's console, which this test owns, passed through a Unix socket.
// Every case passes; a case is skipped only where its OEHasPackage names a package the stand-in
// does not have (iot-gateway-ssh: a release image has no SSH server), and that reason is checked.
// mosquitto-clients is in the stand-in, as conf/qemuarm64.yml adds it to the testimage build.
// Opt-in like the BitBake parse test (a boot of its own, ~4-8 min on 2 loaded cores):
//   IOTGW_YOCTO_MIRROR=<folder of the upstream snapshots, <owner>+<name>/repo> scripts/test.sh
// skipped with the reason when the snapshots (or the stand-in's needs, or pexpect) are absent.
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, LAYER, run } from './helpers.mjs'
import { VM, buildStandin, standinUnavailable, mark, say, step, timings, sntpServer } from './standin-vm.mjs'

const mirror = process.env.IOTGW_YOCTO_MIRROR ?? ''
const bare = name => join(mirror, name, 'repo')
// the commits kas.yml pins (the layer is parsed and tested against those)
const pinned = name => {
  const m = new RegExp(`^  ${name}:\\n(?:    .*\\n)*?    commit: ([0-9a-f]{40})`, 'm').exec(readFileSync(join(REPO, 'kas.yml'), 'utf8'))
  return m?.[1]
}
const skip = !mirror
  ? 'opt-in: set IOTGW_YOCTO_MIRROR to the folder of the upstream snapshots (<owner>+<name>/repo) to run the layer\'s oeqa cases on the arm64 stand-in'
  : !existsSync(bare('openembedded+openembedded-core'))
      ? `no openembedded-core snapshot at ${bare('openembedded+openembedded-core')}`
      : !existsSync(bare('openembedded+bitbake'))
          ? `no bitbake snapshot at ${bare('openembedded+bitbake')}`
          : run('python3', ['-c', 'import pexpect']).status !== 0
            ? 'python3-pexpect is missing (oe-core\'s serial target needs it; scripts/install-deps.sh)'
            : standinUnavailable()

// What the stand-in has, in the image's package names (oeqa's OEHasPackage reads this manifest).
const PACKAGES = ['iot-gateway', 'iot-gateway-certs', 'iot-gateway-system-conf', 'iot-gateway-time', 'iot-gateway-provision',
  'better-sqlite3', 'nodejs', 'mosquitto', 'mosquitto-clients', 'nftables', 'wireguard-tools', 'hostapd', 'procps', 'kernel-modules']
// The cases a stand-in cannot run, and the only reason accepted for skipping each.
const SKIPPABLE = {
  test_ssh_key_only_host_keys_on_data: /iot-gateway-ssh/
}

/** The serial line for oe-core's target: a Unix socket in front of the console this test owns. */
function serialBridge (vm, path) {
  const clients = new Set()
  const fwd = d => { for (const c of clients) c.write(d) }
  vm.child.stdout.on('data', fwd)
  const server = createServer(c => {
    clients.add(c)
    c.on('data', d => vm.child.stdin.write(d))
    c.on('close', () => clients.delete(c))
    c.on('error', () => {})
  })
  return new Promise(resolve => server.listen(path, () => resolve(() => {
    vm.child.stdout.off('data', fwd)
    for (const c of clients) c.destroy()
    server.close()
  })))
}

async function main () {
  const tmp = mkdtempSync(join(tmpdir(), 'oeqa-standin-'))
  t.teardown(() => rmSync(tmp, { recursive: true, force: true }))

  // oe-core's scripts and meta/lib, bitbake's lib: exported from the snapshots, never committed
  const oe = join(tmp, 'oe')
  mkdirSync(join(oe, 'bitbake'), { recursive: true })
  for (const [name, paths, dest] of [['openembedded-core', ['scripts', 'meta/lib'], oe], ['bitbake', ['lib'], join(oe, 'bitbake')]]) {
    const commit = pinned(name) ?? 'HEAD'
    const r = run('sh', ['-c', `git --git-dir="$1" archive "$2" ${paths.join(' ')} | tar -x -C "$3"`, 'sh', bare(`openembedded+${name}`), commit, dest])
    if (r.status !== 0) { t.fail(`git archive of ${name} ${commit}: ${r.stderr}`); return }
    t.comment(`${name} at ${commit}`)
  }

  const ntp = await sntpServer()
  t.teardown(() => ntp.close())
  const out = join(tmp, 'vm')
  const hubKey = run('sh', ['-c', 'wg genkey | wg pubkey']).stdout.trim()
  // a tunnel as in a deployment (the API's socket, the port test's tunnel address); the cloud is
  // not needed here (the sink case runs its own on the target)
  const manifest = await buildStandin(out, ['IOT_GATEWAY_WG_ADDRESS=10.200.0.2/24', 'IOT_GATEWAY_WG_HUB_ENDPOINT=10.0.2.2:51820',
    `IOT_GATEWAY_WG_HUB_PUBLIC_KEY=${hubKey}`, 'IOT_GATEWAY_WG_HUB_ALLOWED_IPS=10.200.0.1/32'])
  if (!manifest) return

  const vm = new VM(out, [], join(tmp, 'console.log'))
  t.teardown(() => { if (vm.child && !vm.done) vm.child.kill('SIGKILL') })
  await step('the stand-in boots to multi-user', async t => {
    mark('QEMU started')
    vm.start('oeqa boot')
    await vm.login(10 * 60 * 1000)
    const state = (await vm.sh('systemctl is-system-running --wait', 10 * 60 * 1000)).out.trim()
    mark(`boot: ${state}`)
    t.equal(state, 'running', 'no failed unit')
  })
  await step('oe-test runtime runs the layer\'s cases on the stand-in over its serial console', async t => {
    if (vm.done) { t.fail('the stand-in is not running'); return }

    // the console as oe-core's serial target expects it: a prompt it can match (root@<machine>), no
    // bracketed-paste escapes around each command; its own `stty -echo` follows when it connects
    vm.child.stdin.write("bind 'set enable-bracketed-paste off'; PS1='root@standin:~# '; cd\n")
    const sock = join(tmp, 'serial.sock')
    const closeBridge = await serialBridge(vm, sock)
    t.teardown(closeBridge)
    // TEST_SERIALCONTROL_CMD: a raw terminal (no local echo, no CR-LF translation) to the socket; the
    // console's CR-LF line ends become LF, as an SSH target's output has them
    const bridge = join(tmp, 'serial-bridge.cjs')
    writeFileSync(bridge, `const s = require('node:net').connect(process.argv[2])
  process.stdin.pipe(s)
  s.on('data', d => process.stdout.write(d.toString('latin1').replace(/\\r\\n/g, '\\n'), 'latin1'))
  s.on('close', () => process.exit(0))
  `)
    writeFileSync(join(tmp, 'testdata.json'), JSON.stringify({
      MACHINE: 'qemuarm64',
      MLPREFIX: '', // testimage's testdata.json has it; OEHasPackage prefixes package names with it
      TEST_SERIALCONTROL_CMD: `stty raw -echo 2>/dev/null; exec '${process.execPath}' '${bridge}' '${sock}'`,
      TEST_SERIALCONTROL_PS1: 'root@standin:~# ',
      TEST_SERIALCONTROL_CONNECT_TIMEOUT: 5
    }))
    writeFileSync(join(tmp, 'manifest'), PACKAGES.map(p => `${p} aarch64 1.0\n`).join(''))
    mark('oe-test runtime started')
    const results = join(tmp, 'results')
    // the cases' folder first: --run-tests takes every word after it
    const child = spawn('python3', [join(oe, 'scripts', 'oe-test'), 'runtime', join(LAYER, 'lib', 'oeqa', 'runtime', 'cases'), '--target-type', 'serial',
      '--target-ip', '127.0.0.1', '--server-ip', '10.0.2.2',
      '--test-data-file', join(tmp, 'testdata.json'), '--packages-manifest', join(tmp, 'manifest'),
      '--output-log', join(tmp, 'oe-test.log'), '--json-result-dir', results,
      '--run-tests', 'iot_gateway'],
    { cwd: tmp, env: { ...process.env, PYTHONPATH: join(oe, 'bitbake', 'lib') }, stdio: ['ignore', 'pipe', 'pipe'] })
    let log = ''
    const onLine = d => {
      log += d
      for (const l of String(d).split('\n')) if (/ - runtime - (INFO|ERROR)/.test(l) && /\.\.\.|RESULTS|Ran /.test(l)) say(l.replace(/^.* - runtime - \w+ - /, '').slice(0, 200))
    }
    child.stdout.on('data', onLine)
    child.stderr.on('data', onLine)
    const code = await new Promise(resolve => child.once('exit', resolve))
    mark(`oe-test runtime exited ${code}`)
    const file = existsSync(results) && readdirSync(results).find(f => f.endsWith('.json'))
    if (!file) { t.fail(`no JSON results from oe-test (exit ${code}):\n${log.slice(-6000)}`); return }
    const json = JSON.parse(readFileSync(join(results, file), 'utf8'))
    const cases = Object.values(json).flatMap(r => Object.entries(r.result ?? {}))
    t.ok(cases.length >= 12, `every case of the module ran (${cases.length})`)
    for (const [name, r] of cases) {
      const short = name.split('.').pop()
      if (r.status === 'SKIPPED' && SKIPPABLE[short]) {
        t.match(r.log ?? '', SKIPPABLE[short], `${short}: skipped only for the package the stand-in lacks (${(r.log ?? '').trim()})`)
      } else {
        t.equal(r.status, 'PASSED', `${short}${r.log ? `:\n${r.log}` : ''}`)
      }
    }
    t.equal(code, 0, 'oe-test runtime succeeded')
    await vm.powerCut()
    t.comment(`timings: ${timings.join('; ')}`)
  })
}

if (skip) {
  t.skip(skip)
} else {
  t.setTimeout(60 * 60 * 1000)
  await main()
}
