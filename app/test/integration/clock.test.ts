// A Pi 3 has no RTC: after a reboot the broker and the gateway run with a clock that is behind (or,
// wrongly set, ahead). Here the real Mosquitto, the gateway and the CLI run under libfaketime
// (LD_PRELOAD=libfaketime.so.1 with FAKETIME="-7200" shifts what time()/clock_gettime() return; the
// monotonic clock is left alone so timers behave), with the PKI made at the real time, as on a box
// that was set up, then rebooted without NTP.
import { execFile } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { latestKnownFile, readLatestKnown } from '../../src/clock/clock.js'
import { loadIssuer, pkiPaths } from '../../src/pki/pki.js'
import { BACKDATE_DAYS, createCertificate, keyToPem, newKeyPair, parseCrl } from '../../src/pki/x509.js'
import { mosquittoPub, type DeviceCreds } from '../helpers/devices.js'
import { startStack, type Stack } from '../helpers/env.js'
import { GatewayProcess, requireBundle } from '../helpers/gateway-process.js'
import { enrollDevice, type CliResult } from '../helpers/identity.js'
import { waitFor } from '../helpers/ports.js'

const DAY = 86400

/** Debian's libfaketime (scripts/install-deps.sh installs `libfaketime`). */
function libfaketime (): string {
  for (const dir of ['/usr/lib', '/usr/lib64', ...readdirSync('/usr/lib').filter(d => d.includes('-linux-')).map(d => join('/usr/lib', d))]) {
    const f = join(dir, 'faketime', 'libfaketime.so.1')
    if (existsSync(f)) return f
  }
  throw new Error('libfaketime.so.1 not found: install the Debian package libfaketime (scripts/install-deps.sh)')
}
const LIB = libfaketime()

/** The environment that runs a process with its wall clock shifted by `seconds`. */
const shifted = (seconds: number): NodeJS.ProcessEnv => ({
  LD_PRELOAD: LIB,
  FAKETIME: seconds >= 0 ? `+${seconds}` : String(seconds),
  FAKETIME_DONT_FAKE_MONOTONIC: '1'
})

/** Mosquitto (the helper's, with the rendered configuration) restarted with its clock shifted. */
async function restartBroker (s: Stack, seconds: number): Promise<void> {
  await s.broker.stop()
  // The helper spawns mosquitto with this process's environment: shift it for that spawn only.
  const env = shifted(seconds)
  const saved = Object.fromEntries(Object.keys(env).map(k => [k, process.env[k]]))
  Object.assign(process.env, env)
  try { await s.broker.start() } finally {
    for (const [k, v] of Object.entries(saved)) { if (v === undefined) delete process.env[k]; else process.env[k] = v }
  }
}

async function startGateway (t: Test, s: Stack, seconds: number): Promise<GatewayProcess> {
  const gw = new GatewayProcess(s.configFile, s.config.api.port, join(s.dir, `gateway${seconds}.log`),
    { bin: process.execPath, args: [requireBundle()], env: { ...shifted(seconds), GATEWAY_TIMESYNC_FLAG: join(s.dir, 'not-synchronised') } })
  t.teardown(() => gw.stop('SIGKILL'))
  await gw.start()
  // Its log is stamped with its own clock: the shift really applies to the gateway.
  const first = JSON.parse(readFileSync(gw.logFile, 'utf8').split('\n')[0]!) as { time: string }
  t.ok(Math.abs(Date.parse(first.time) - (Date.now() + seconds * 1000)) < 600_000, `the gateway's clock is shifted by ${seconds} s (${first.time})`)
  return gw
}

/** Our CLI with its clock shifted and the time-sync flag file given. */
async function cliAt (s: Stack, seconds: number, syncFlag: string, args: string[]): Promise<CliResult> {
  return await new Promise(resolve => {
    execFile(process.execPath, [requireBundle(), ...args, '-c', s.configFile], { timeout: 30000, env: { ...process.env, ...shifted(seconds), GATEWAY_TIMESYNC_FLAG: syncFlag } }, (err, out, errOut) => {
      resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, out, err: errOut })
    })
  })
}

/**
 * A device certificate whose notBefore is `secondsAgo` before now: a probe that a broker whose clock
 * is further behind refuses ("not yet valid"), so a test cannot pass with an unshifted broker.
 */
function probeCreds (s: Stack, id: string, secondsAgo: number): DeviceCreds {
  const p = pkiPaths(join(s.config.gateway.dataDir, 'pki'))
  const k = newKeyPair()
  const cert = createCertificate({ subject: { CN: id }, publicKey: k.publicKey, issuer: loadIssuer(p), days: 30, clientAuth: true, now: Date.now() + BACKDATE_DAYS * DAY * 1000 - secondsAgo * 1000 })
  writeFileSync(join(s.dir, `${id}.crt`), cert)
  writeFileSync(join(s.dir, `${id}.key`), keyToPem(k.privateKey), { mode: 0o600 })
  return { id, certFile: join(s.dir, `${id}.crt`), keyFile: join(s.dir, `${id}.key`), caFile: p.caCert }
}

let seq = 0
async function delivers (t: Test, s: Stack, dev: DeviceCreds, what: string): Promise<void> {
  const n = ++seq
  const pub = await mosquittoPub(s.broker.lanPort, dev, `devices/${dev.id}/telemetry`, [JSON.stringify({ seq: n })])
  t.equal(pub.code, 0, `${what}: the broker accepts ${dev.id} (${pub.output.trim()})`)
  await waitFor(() => s.cloud.accepted.some(m => m.device === dev.id && m.payload.seq === n), `${what}: message ${n} of ${dev.id} in the cloud`)
  t.pass(`${what}: ${dev.id}'s message reached the cloud through the gateway`)
}

t.test('broker and gateway 2 hours and 30 days behind: an enrolled device still connects and delivers', async t => {
  const s = await startStack(t, {}, { startGateway: false })
  const dev = await enrollDevice(s.configFile, join(s.dir, 'd'), 'sensor-t')
  for (const [label, seconds] of [['2 hours behind', -7200], ['30 days behind', -30 * DAY]] as const) {
    await restartBroker(s, seconds)
    const probe = await mosquittoPub(s.broker.lanPort, probeCreds(s, `probe${-seconds}`, -seconds / 2), 'devices/x/telemetry', ['{}'])
    t.not(probe.code, 0, `${label}: the broker's clock is shifted (a certificate valid from ${-seconds / 2} s ago is not yet valid for it)`)
    const gw = await startGateway(t, s, seconds)
    await delivers(t, s, dev, label)
    t.equal((await gw.health()).body.broker, 'connected', `${label}: the gateway's own connection to the broker is accepted`)
    await gw.stop()
  }
  t.ok(readLatestKnown(s.config.gateway.dataDir)! >= Date.now() - 600_000, 'the latest known time was not moved back by the clocks behind')
})

t.test('a clock a year ahead neither expires the CRL nor lets a revoked device in', async t => {
  const s = await startStack(t, {}, { startGateway: false })
  const dev = await enrollDevice(s.configFile, join(s.dir, 'a'), 'sensor-a')
  const gone = await enrollDevice(s.configFile, join(s.dir, 'r'), 'sensor-r')
  const rev = await cliAt(s, 0, join(s.dir, 'not-synchronised'), ['device', 'revoke', 'sensor-r', '--reason', 'lost'])
  t.equal(rev.code, 0, rev.err)
  const crlFile = pkiPaths(join(s.config.gateway.dataDir, 'pki')).crl
  const crlBefore = readFileSync(crlFile, 'utf8')
  const ahead = 366 * DAY
  await restartBroker(s, ahead)
  const gw = await startGateway(t, s, ahead)
  // (The test cloud's own certificate is valid 30 days, so the uplink is not what is looked at here.)
  const accepted = async (): Promise<number> => (await gw.get('/metrics')).text.split('\n')
    .filter(l => l.startsWith('gateway_messages_accepted_total')).reduce((n, l) => n + Number(l.split(' ').pop()), 0)
  const before = await accepted()
  const pub = await mosquittoPub(s.broker.lanPort, dev, 'devices/sensor-a/telemetry', ['{"seq":1}'])
  t.equal(pub.code, 0, `a year ahead: the broker accepts sensor-a (${pub.output.trim()})`)
  await waitFor(async () => await accepted() > before, 'the gateway to accept sensor-a\'s message')
  const refused = await mosquittoPub(s.broker.lanPort, gone, 'devices/sensor-r/telemetry', ['{"seq":-1}'])
  t.not(refused.code, 0, `the revoked device stays refused (${refused.output.trim()})`)
  t.equal(readFileSync(crlFile, 'utf8'), crlBefore, 'the gateway did not re-issue the CRL with the wrong date')
  const crl = parseCrl(crlBefore)
  t.ok(crl.nextUpdate! > Date.now() + ahead * 1000 + 365 * DAY * 1000, 'the CRL stays valid well past a year ahead')
  t.equal((await gw.health()).body.broker, 'connected')
  await gw.stop()
  // The unsynchronised gateway saved the clock it ran with: once the clock is back, nothing is issued
  // until it is synchronised (the operator is told why), instead of dating certificates wrongly.
  t.ok(readLatestKnown(s.config.gateway.dataDir)! > Date.now() + (ahead - DAY) * 1000, 'the clock ahead was saved as the latest known time')
  const later = await cliAt(s, 0, join(s.dir, 'not-synchronised'), ['device', 'enroll', 'sensor-b', '--out', join(s.dir, 'b')])
  t.equal(later.code, 1)
  t.match(later.err, /GW_ERR_PKI_CLOCK_BEHIND/, 'refused, with the reason')
  writeFileSync(join(s.dir, 'synchronized'), '')
  const synced = await cliAt(s, 0, join(s.dir, 'synchronized'), ['device', 'enroll', 'sensor-b', '--out', join(s.dir, 'b')])
  t.equal(synced.code, 0, `a synchronised clock is trusted: ${synced.err}`)
})

t.test('enrolment while unsynchronised and earlier than the latest known time is refused; revocation is not', async t => {
  const s = await startStack(t, {}, { startGateway: false })
  const one = await enrollDevice(s.configFile, join(s.dir, 'one'), 'sensor-1')
  const latest = readLatestKnown(s.config.gateway.dataDir)
  t.ok(latest !== null && latest <= Date.now() && latest > Date.now() - 600_000, `enrolment saved its time in ${latestKnownFile(s.config.gateway.dataDir)}`)
  const unsynced = join(s.dir, 'not-synchronised')
  const out = join(s.dir, 'two')
  const r = await cliAt(s, -7200, unsynced, ['device', 'enroll', 'sensor-2', '--out', out])
  t.equal(r.code, 1, 'exit code 1')
  t.match(r.err, /not issuing a certificate for "sensor-2": the clock \(.*\) is not synchronised and is earlier than the latest time this gateway has seen .*\(GW_ERR_PKI_CLOCK_BEHIND\)/, r.err.trim())
  t.notOk(existsSync(join(out, 'sensor-2.key')), 'no key written')
  const show = await cliAt(s, 0, unsynced, ['device', 'show', 'sensor-2'])
  t.not(show.code, 0, 'the device was not registered')
  const init = await cliAt(s, -7200, unsynced, ['pki', 'init'])
  t.equal(init.code, 0, 'pki init with an existing identity changes nothing and is not refused')

  // A revocation is never refused for the clock's sake: the CRL is dated from the latest known time,
  // so a broker at the same (behind) clock takes it.
  const rev = await cliAt(s, -7200, unsynced, ['device', 'revoke', 'sensor-1', '--reason', 'stolen'])
  t.equal(rev.code, 0, rev.err)
  const crl = parseCrl(readFileSync(pkiPaths(join(s.config.gateway.dataDir, 'pki')).crl, 'utf8'))
  t.ok(crl.thisUpdate >= latest! - BACKDATE_DAYS * DAY * 1000, 'the CRL is not dated from the clock behind')
  const two = await cliAt(s, -7200, join(s.dir, 'none'), ['device', 'enroll', 'sensor-3', '--out', join(s.dir, 'three')])
  t.equal(two.code, 1, 'still refused')
  writeFileSync(join(s.dir, 'synchronized'), '')
  const ok = await cliAt(s, -7200, join(s.dir, 'synchronized'), ['device', 'enroll', 'sensor-3', '--out', join(s.dir, 'three'), '--json'])
  t.equal(ok.code, 0, `synchronised (the clock is right): enrolment goes ahead ${ok.err}`)
  await restartBroker(s, -7200)
  const three: DeviceCreds = { id: 'sensor-3', certFile: join(s.dir, 'three', 'sensor-3.crt'), keyFile: join(s.dir, 'three', 'sensor-3.key'), caFile: one.caFile }
  const pub3 = await mosquittoPub(s.broker.lanPort, three, 'devices/sensor-3/telemetry', ['{}'])
  t.equal(pub3.code, 0, `the broker 2 hours behind takes the new CRL and the new device (${pub3.output.trim()})`)
  const pub1 = await mosquittoPub(s.broker.lanPort, one, 'devices/sensor-1/telemetry', ['{}'])
  t.not(pub1.code, 0, 'and refuses the revoked one')
})
