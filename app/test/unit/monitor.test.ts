import t from 'tap'
import { mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { parseThrottled, SystemReader } from '../../src/monitor/system.js'
import { tempDir } from '../helpers/temp.js'

function tree (t: { teardown: (f: () => void) => void }, files: Record<string, string>): string {
  const root = tempDir(t, 'iotgw-root-')
  write(root, files)
  return root
}
function write (root: string, files: Record<string, string>): void {
  for (const [p, text] of Object.entries(files)) { mkdirSync(dirname(join(root, p)), { recursive: true }); writeFileSync(join(root, p), text) }
}
const stat = (busy: number, idle: number): string =>
  `cpu  ${busy * 2} 0 0 ${idle * 2} 0 0 0 0 0 0\ncpu0 ${busy} 0 0 ${idle} 0 0 0 0 0 0\ncpu1 ${busy} 0 0 ${idle} 0 0 0 0 0 0\nintr 1 2 3\n`

t.test('a fake /proc and /sys: CPU, load, memory, RSS, temperature, throttling, clock', async t => {
  const root = tree(t, {
    'proc/stat': stat(100, 900),
    'proc/loadavg': '0.52 0.40 0.33 1/123 4567\n',
    'proc/meminfo': 'MemTotal:        949448 kB\nMemFree:          100000 kB\nMemAvailable:     474724 kB\n',
    'proc/self/status': 'Name:\tnode\nVmRSS:\t   61440 kB\n',
    'proc/321/comm': 'mosquitto\n',
    'proc/321/status': 'Name:\tmosquitto\nVmRSS:\t    8192 kB\n',
    'proc/77/comm': 'systemd\n',
    'sys/class/thermal/thermal_zone0/temp': '48312\n',
    'sys/class/thermal/thermal_zone0/type': 'cpu-thermal\n',
    'sys/devices/platform/soc/soc:firmware/get_throttled': '0x50005\n',
    'run/systemd/timesync/synchronized': ''
  })
  const r = new SystemReader({ root, dataDir: root, mosquittoProcess: 'mosquitto', units: [], unitsIntervalMs: 30000 })
  const first = r.sample(1000)
  t.same(first.cpu, {}, 'no CPU usage before a second reading')
  write(root, { 'proc/stat': stat(190, 910) })
  const s = r.sample(6000)
  t.equal(s.cpu.total, 0.9, 'total: 90 busy of 100 ticks')
  t.equal(s.cpu['0'], 0.9)
  t.same(s.load, [0.52, 0.40, 0.33])
  t.equal(s.memory?.availableBytes, 474724 * 1024)
  t.equal(s.memory?.usedRatio, 0.5)
  t.equal(s.gatewayRssBytes, 61440 * 1024)
  t.same(s.mosquitto, { pid: 321, rssBytes: 8192 * 1024 })
  t.same(s.temperatures, { 'thermal_zone0:cpu-thermal': 48.312 })
  t.equal(s.temperatureMax, 48.312)
  t.equal(s.throttling?.source, '/sys/devices/platform/soc/soc:firmware/get_throttled')
  t.same(s.throttling?.now, { under_voltage: true, frequency_capped: false, throttled: true, soft_temperature_limit: false })
  t.same(s.throttling?.sinceBoot, { under_voltage: true, frequency_capped: false, throttled: true, soft_temperature_limit: false })
  t.equal(s.clockSynchronized, true)
  t.ok(s.disk && s.disk.sizeBytes > 0 && s.disk.files > 0, 'statfs of the data directory')
  t.equal(s.units, null, 'no systemd in the fake root: units not sampled')
  // Mosquitto restarted under another pid: the cached pid is dropped, found again by the next scan.
  rmSync(join(root, 'proc/321'), { recursive: true })
  write(root, { 'proc/400/comm': 'mosquitto\n', 'proc/400/status': 'Name:\tmosquitto\nVmRSS:\t 9000 kB\n' })
  t.equal(r.sample(10_000).mosquitto, null, 'gone; the next /proc scan waits a minute')
  t.same(r.sample(71_000).mosquitto, { pid: 400, rssBytes: 9000 * 1024 })
})

t.test('absent interfaces are absent, not zero', async t => {
  const root = tree(t, { 'proc/loadavg': 'garbage' })
  const s = new SystemReader({ root, dataDir: join(root, 'nope'), mosquittoProcess: 'mosquitto', units: ['x.service'], unitsIntervalMs: 30000 }).sample()
  t.same(s.temperatures, {})
  t.equal(s.temperatureMax, null)
  t.equal(s.throttling, null)
  t.equal(s.load, null)
  t.equal(s.memory, null)
  t.equal(s.disk, null)
  t.equal(s.clockSynchronized, null)
  t.equal(s.mosquitto, null)
})

t.test('mainline kernels: under-voltage from raspberrypi-hwmon', async t => {
  const root = tree(t, { 'sys/class/hwmon/hwmon1/name': 'rpi_volt\n', 'sys/class/hwmon/hwmon1/in0_lcrit_alarm': '1\n', 'run/systemd/timesync/.keep': '' })
  const s = new SystemReader({ root, dataDir: root, mosquittoProcess: 'mosquitto', units: [], unitsIntervalMs: 30000 }).sample()
  t.same(s.throttling, { source: '/sys/class/hwmon/hwmon1/in0_lcrit_alarm', now: { under_voltage: true }, sinceBoot: {} })
  t.equal(s.clockSynchronized, false, 'timesyncd present but not synchronised')
  t.equal(parseThrottled('zz'), null)
})

t.test('systemctl show: state and cgroup memory per unit', async t => {
  const { parseSystemctlShow } = await import('../../src/monitor/system.js')
  const text = 'Id=mosquitto.service\nActiveState=active\nSubState=running\nMemoryCurrent=6373376\n\nId=iot-gateway-wireguard.service\nActiveState=failed\nSubState=failed\nMemoryCurrent=[not set]\n'
  t.same(parseSystemctlShow(text), {
    'mosquitto.service': { active: 'active', sub: 'running', memoryBytes: 6373376 },
    'iot-gateway-wireguard.service': { active: 'failed', sub: 'failed', memoryBytes: null }
  })
})
