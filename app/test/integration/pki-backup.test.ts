// An identity that survives the card: `pki export` on gateway A, `pki import` on gateway B (a new
// data directory), real Mosquitto and real devices. A device enrolled on A keeps connecting and
// delivering through B without re-enrolment; a device revoked on A stays refused on B.
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { Cloud } from '../helpers/cloud.js'
import { mosquittoPub } from '../helpers/devices.js'
import { startStack, tempDir, testConfig } from '../helpers/env.js'
import { GatewayProcess } from '../helpers/gateway-process.js'
import { cli, enrollDevice } from '../helpers/identity.js'
import { Mosquitto } from '../helpers/mosquitto.js'
import { waitFor } from '../helpers/ports.js'

t.test('a device enrolled on A delivers through B restored from the backup; a revoked one stays refused', { timeout: 180000 }, async t => {
  const a = await startStack(t)
  const devDir = tempDir(t, 'iotgw-devs-')
  const good = await enrollDevice(a.configFile, devDir, 'sensor-good')
  const bad = await enrollDevice(a.configFile, devDir, 'sensor-revoked')
  t.equal((await mosquittoPub(a.broker.lanPort, good, 'devices/sensor-good/telemetry', ['{"seq":1}'])).code, 0)
  await waitFor(() => a.cloud.accepted.some(m => m.device === 'sensor-good'), 'sensor-good at A\'s cloud')
  const rev = await cli(a.configFile, ['device', 'revoke', 'sensor-revoked'])
  t.equal(rev.code, 0, rev.err)

  const pass = join(devDir, 'passphrase')
  writeFileSync(pass, 'correct horse battery staple\n', { mode: 0o600 })
  const backup = join(devDir, 'gw-test.pki-backup')
  const ex = await cli(a.configFile, ['pki', 'export', '--out', backup, '--passphrase-file', pass, '--json'])
  t.equal(ex.code, 0, ex.err)
  t.equal(JSON.parse(ex.out).devices, 2)
  t.equal(statSync(backup).mode & 0o777, 0o600, 'the backup file is 0600')
  const text = readFileSync(backup, 'utf8')
  t.notMatch(text, /BEGIN|PRIVATE|sensor-good/, 'nothing readable in the backup')
  // The card dies.
  await a.gateway.stop('SIGKILL')
  await a.broker.stop()

  const dirB = tempDir(t, 'iotgw-b-')
  const cloudB = new Cloud(dirB)
  await cloudB.start()
  const b = await testConfig(dirB, { uplink: { url: cloudB.url, caFile: cloudB.caFile } })

  const wrong = join(dirB, 'wrong')
  writeFileSync(wrong, 'not the passphrase at all\n')
  const w = await cli(b.file, ['pki', 'import', backup, '--passphrase-file', wrong])
  t.equal(w.code, 1)
  t.match(w.err, /GW_ERR_PKI_BACKUP_DECRYPT/, 'a wrong passphrase is a clear error')
  const damaged = join(dirB, 'damaged')
  const env = JSON.parse(text)
  env.ciphertext = Buffer.from(Buffer.from(env.ciphertext, 'base64').map((x, i) => i === 10 ? x ^ 1 : x)).toString('base64')
  writeFileSync(damaged, JSON.stringify(env))
  t.match((await cli(b.file, ['pki', 'import', damaged, '--passphrase-file', pass])).err, /GW_ERR_PKI_BACKUP_DECRYPT/, 'one flipped bit is detected')

  const im = await cli(b.file, ['pki', 'import', backup, '--passphrase-file', pass, '--json'])
  t.equal(im.code, 0, im.err)
  t.same(JSON.parse(im.out).revoked, ['sensor-revoked'])
  const pkiB = join(b.config.gateway.dataDir, 'pki')
  t.equal(statSync(join(pkiB, 'ca.key')).mode & 0o777, 0o600, 'ca.key keeps its mode')
  t.equal(readFileSync(join(pkiB, 'ca.crt'), 'utf8'), readFileSync(join(a.config.gateway.dataDir, 'pki', 'ca.crt'), 'utf8'), 'the same CA')
  const again = await cli(b.file, ['pki', 'import', backup, '--passphrase-file', pass])
  t.equal(again.code, 1, 'a registry with devices is not overwritten without --force')
  t.match(again.err, /GW_ERR_PKI_BACKUP_NOT_EMPTY/)

  const brokerB = new Mosquitto(b.config)
  await brokerB.start()
  const gwB = new GatewayProcess(b.file, b.config.api.port, join(dirB, 'gateway.log'))
  t.teardown(async () => { await gwB.stop('SIGKILL'); await brokerB.stop(); await cloudB.stop() })
  await gwB.start()

  const refused = await mosquittoPub(brokerB.lanPort, bad, 'devices/sensor-revoked/telemetry', ['{"seq":5}'])
  t.not(refused.code, 0, `the revoked device is refused by B's broker: ${refused.output}`)
  const ok = await mosquittoPub(brokerB.lanPort, good, 'devices/sensor-good/telemetry', ['{"seq":2}', '{"seq":3}'])
  t.equal(ok.code, 0, `the enrolled device connects to B with its old certificate: ${ok.output}`)
  await waitFor(() => cloudB.accepted.filter(m => m.device === 'sensor-good').length >= 2, 'sensor-good at B\'s cloud')
  t.same(cloudB.accepted.filter(m => m.device === 'sensor-good').map(m => m.payload.seq), [2, 3], 'delivered through B, in order, without re-enrolment')
  t.equal(cloudB.accepted.filter(m => m.device === 'sensor-revoked').length, 0, 'nothing from the revoked device')
  const show = await cli(b.file, ['device', 'show', 'sensor-revoked', '--json'])
  t.match(show.out, /"status": "revoked"/, 'B\'s registry says revoked')
})
