import { X509Certificate } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { assertMayIssue, ClockKeeper, clockState, crlAt, issueAt, latestKnownFile, readLatestKnown, recordLatestKnown } from '../../src/clock/clock.js'
import { silentLogger } from '../../src/lib/logger.js'
import { issueDeviceCert } from '../../src/pki/device-certs.js'
import { initPki, loadIssuer, pkiPaths, writeCrl } from '../../src/pki/pki.js'
import { BACKDATE_DAYS, CRL_DAYS, newKeyPair, parseCrl } from '../../src/pki/x509.js'
import { tempDir } from '../helpers/env.js'

const DAY = 86400_000
const T0 = Date.parse('2026-06-01T12:00:00Z')

function setup (t: { teardown: (fn: () => void) => void }): { dataDir: string, synced: string, unsynced: string } {
  const dir = tempDir(t)
  const synced = join(dir, 'synchronized')
  writeFileSync(synced, '')
  return { dataDir: join(dir, 'data'), synced, unsynced: join(dir, 'no-such-flag') }
}

t.test('the latest known time: only forward while unsynchronised, the synchronised clock wins', async t => {
  const { dataDir, synced, unsynced } = setup(t)
  t.equal(readLatestKnown(dataDir), null, 'none at first')
  t.same(recordLatestKnown(dataDir, { syncFlag: unsynced, now: () => T0 }), { written: true, latestKnown: T0 })
  t.equal(readFileSync(latestKnownFile(dataDir), 'utf8'), `${T0 / 1000}\n`, 'whole seconds, one line (read by the boot script)')
  t.same(recordLatestKnown(dataDir, { syncFlag: unsynced, now: () => T0 - 2 * 3600_000 }), { written: false, latestKnown: T0 }, 'a clock behind does not move it back')
  t.same(recordLatestKnown(dataDir, { syncFlag: unsynced, now: () => T0 + 60_000 }), { written: true, latestKnown: T0 + 60_000 })
  t.same(recordLatestKnown(dataDir, { syncFlag: synced, now: () => T0 - DAY }), { written: true, latestKnown: T0 - DAY },
    'synchronised: the clock is right, even earlier (a clock that ran ahead is not carried forward)')
  writeFileSync(latestKnownFile(dataDir), 'garbage\n')
  t.equal(readLatestKnown(dataDir), null, 'an unreadable file counts as none')
  t.same(recordLatestKnown(dataDir, { syncFlag: unsynced, now: () => T0 }), { written: true, latestKnown: T0 }, 'and is rewritten')
})

t.test('issuing is refused while unsynchronised and earlier than the latest known time', async t => {
  const { dataDir, synced, unsynced } = setup(t)
  recordLatestKnown(dataDir, { syncFlag: unsynced, now: () => T0 })
  t.equal(assertMayIssue(dataDir, 'x', { syncFlag: unsynced, now: () => T0 + 1000 }), T0 + 1000, 'later: allowed')
  t.throws(() => assertMayIssue(dataDir, 'a certificate for "s1"', { syncFlag: unsynced, now: () => T0 - 7200_000 }),
    { code: 'GW_ERR_PKI_CLOCK_BEHIND', message: /not issuing a certificate for "s1": the clock \(2026-06-01T10:00:00.000Z\) is not synchronised and is earlier than the latest time this gateway has seen \(2026-06-01T12:00:00.000Z\)/ })
  t.equal(assertMayIssue(dataDir, 'x', { syncFlag: synced, now: () => T0 - 7200_000 }), T0 - 7200_000, 'synchronised: allowed')
  let called = false
  t.throws(() => issueAt(dataDir, 'x', () => { called = true }, { syncFlag: unsynced, now: () => T0 - 1000 }), { code: 'GW_ERR_PKI_CLOCK_BEHIND' })
  t.notOk(called, 'nothing issued')
  issueAt(dataDir, 'x', () => { called = true }, { syncFlag: unsynced, now: () => T0 + 5000 })
  t.ok(called)
  t.equal(readLatestKnown(dataDir), T0 + 5000, 'the issue time is saved')
})

t.test('the PKI is dated from the clock, backdated, and the gate covers pki init and device certificates', async t => {
  const { dataDir, synced, unsynced } = setup(t)
  const pkiDir = join(dataDir, 'pki')
  initPki(pkiDir, { gatewayId: 'gw', brokerNames: { dns: ['localhost'], ip: [] }, clock: { syncFlag: synced, now: () => T0 } })
  const p = pkiPaths(pkiDir)
  for (const f of [p.caCert, p.brokerCert, p.gatewayCert]) {
    t.equal(Date.parse(new X509Certificate(readFileSync(f)).validFrom), T0 - BACKDATE_DAYS * DAY, `${f}: notBefore ${BACKDATE_DAYS} days back`)
  }
  const crl = parseCrl(readFileSync(p.crl, 'utf8'))
  t.equal(crl.thisUpdate, T0 - BACKDATE_DAYS * DAY, 'CRL thisUpdate backdated as much')
  t.equal(crl.nextUpdate, T0 + CRL_DAYS * DAY, 'CRL valid ten years: a clock a year ahead does not expire it')
  t.equal(readLatestKnown(dataDir), T0, 'pki init saved its time')

  const key = newKeyPair().publicKey
  t.throws(() => issueDeviceCert(pkiDir, 's1', key, 365, { syncFlag: unsynced, now: () => T0 - 3600_000 }), { code: 'GW_ERR_PKI_CLOCK_BEHIND' })
  const issued = issueDeviceCert(pkiDir, 's1', key, 365, { syncFlag: unsynced, now: () => T0 + 3600_000 })
  t.equal(issued.notAfter, T0 + 3600_000 + 365 * DAY)
  t.equal(readLatestKnown(dataDir), T0 + 3600_000)

  // A CRL (a revocation) is never refused: dated at the latest known time instead of the clock's.
  writeCrl(p, [{ serial: issued.serial, revokedAt: T0 }], 2, { syncFlag: unsynced, now: () => T0 - 30 * DAY })
  t.equal(parseCrl(readFileSync(p.crl, 'utf8')).thisUpdate, T0 + 3600_000 - BACKDATE_DAYS * DAY, 'the CRL is dated from the latest known time')
  t.same(parseCrl(readFileSync(p.crl, 'utf8')).serials, [issued.serial])
  t.equal(crlAt(dataDir, now => now, { syncFlag: synced, now: () => T0 - DAY }), T0 - DAY, 'synchronised: the clock')
  t.ok(loadIssuer(p))
})

t.test('clockState: what /health and the alerts report', async t => {
  const { dataDir, synced, unsynced } = setup(t)
  mkdirSync(dataDir, { recursive: true })
  t.same(clockState(dataDir, { syncFlag: synced, now: () => T0 }),
    { synchronised: true, behindPki: false, behindLatestKnown: false, latestKnown: null, pkiValidFrom: null, now: new Date(T0).toISOString(), problems: [] })
  initPki(join(dataDir, 'pki'), { gatewayId: 'gw', brokerNames: { dns: ['localhost'], ip: [] }, clock: { syncFlag: synced, now: () => T0 } })
  const behind = clockState(dataDir, { syncFlag: unsynced, now: () => T0 - 2 * 3600_000 })
  t.same(behind.problems, ['clock not synchronised', 'clock earlier than the latest known time'], 'two hours behind: still after the backdated PKI')
  t.equal(behind.latestKnown, new Date(T0).toISOString())
  const far = clockState(dataDir, { syncFlag: unsynced, now: () => T0 - (BACKDATE_DAYS + 1) * DAY })
  t.ok(far.behindPki, 'more than the margin behind: the broker would refuse the PKI')
  t.same(far.problems, ['clock not synchronised', 'clock earlier than the PKI', 'clock earlier than the latest known time'])
})

t.test('the daemon\'s keeper saves the time at start, on its timer and at stop; a failure is logged, not thrown', async t => {
  const { dataDir, unsynced } = setup(t)
  let now = T0
  const warnings: string[] = []
  const log = { ...silentLogger, warn: (m: string) => { warnings.push(m) }, child: () => log }
  const keeper = new ClockKeeper(dataDir, log, 60_000, { syncFlag: unsynced, now: () => now })
  keeper.start()
  t.teardown(() => keeper.stop())
  t.equal(readLatestKnown(dataDir), T0, 'at start')
  now = T0 + 3600_000
  keeper.stop()
  t.equal(readLatestKnown(dataDir), T0 + 3600_000, 'at stop')
  t.same(keeper.state().problems, ['clock not synchronised'])
  // The data directory's clock/ is a file: the write fails and is reported, the daemon goes on.
  const bad = new ClockKeeper(join(dataDir, 'clock', 'latest-known'), log, 60_000, { syncFlag: unsynced, now: () => now })
  bad.start()
  bad.stop()
  t.equal(warnings.length, 2, 'logged twice (start, stop)')
  t.match(warnings[0], /cannot save the latest known time/)
})
