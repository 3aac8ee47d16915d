// Layered configuration: the image's file, this gateway's override on the data directory, the
// GATEWAY_* environment. `config set` validates with the `config check` checker, writes the override
// durably (0600) and names what must restart; a real gateway process reads the override.
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { deviceCreds, mosquittoPub } from '../helpers/devices.js'
import { startStack, tempDir } from '../helpers/env.js'
import { requireBundle } from '../helpers/gateway-process.js'
import { cli, type CliResult } from '../helpers/identity.js'
import { waitFor } from '../helpers/ports.js'

/** The bundle with an explicit environment (the layers read GATEWAY_*). */
async function gw (args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return await new Promise(resolve => {
    execFile(process.execPath, [requireBundle(), ...args], { env: { PATH: process.env.PATH, ...env } }, (err, out, errOut) => {
      resolve({ code: err ? Number((err as { code?: unknown }).code ?? 1) : 0, out, err: errOut })
    })
  })
}

function image (t: Parameters<typeof tempDir>[0]): { file: string, data: string, override: string } {
  const dir = tempDir(t, 'iotgw-layers-')
  const data = join(dir, 'data')
  mkdirSync(data)
  const file = join(dir, 'image-gateway.json')
  writeFileSync(file, JSON.stringify({ version: 1, gateway: { dataDir: data }, uplink: { url: 'https://image.example/ingest', batchMaxMessages: 500 }, api: { port: 8080 } }))
  return { file, data, override: join(data, 'gateway.json') }
}

t.test('show: the merged result and where each value came from', async t => {
  const { file, override } = image(t)
  writeFileSync(override, JSON.stringify({ version: 1, gateway: { id: 'gw-0007' }, uplink: { batchMaxMessages: 250 } }))
  const r = await gw(['config', 'show', '--json', '-c', file], { GATEWAY_API_PORT: '9090' })
  t.equal(r.code, 0, r.err)
  const j = JSON.parse(r.out)
  t.equal(j.config.gateway.id, 'gw-0007', 'the override sets the id')
  t.equal(j.config.uplink.batchMaxMessages, 250, 'the override wins over the image')
  t.equal(j.config.uplink.url, 'https://image.example/ingest', 'the image value stays where the override is silent')
  t.equal(j.config.api.port, 9090, 'the environment wins over both')
  t.same(j.sources['gateway.id'], { source: 'override', from: override })
  t.same(j.sources['uplink.url'], { source: 'image', from: file })
  t.same(j.sources['api.port'], { source: 'env', from: 'GATEWAY_API_PORT' })
  t.same(j.sources['uplink.gzip'], { source: 'default' })
  const text = await gw(['config', 'show', '-c', file])
  t.match(text.out, /^gateway\.id = "gw-0007" {2}\(override\)$/m)
  t.match(text.out, /^uplink\.url = "https:\/\/image\.example\/ingest" {2}\(image\)$/m)
  // config check applies the same layers
  t.equal(JSON.parse((await gw(['config', 'check', '-c', file])).out).gateway.id, 'gw-0007')
})

t.test('set: validated, persisted 0644, restart named; a bad value writes nothing and exits 2', async t => {
  const { file, override } = image(t)
  const bad = await gw(['config', 'set', 'limits.rateBurst', 'lots', '-c', file])
  t.equal(bad.code, 2, 'configuration error exits 2')
  t.match(bad.err, /limits\.rateBurst.*not a number/)
  t.notOk(existsSync(override), 'nothing written')
  const range = await gw(['config', 'set', 'limits.rateBurst', '0', '-c', file])
  t.equal(range.code, 2)
  t.match(range.err, /limits\.rateBurst: must be >= 1/, 'the schema\'s checker (config check) rejects it')
  const cross = await gw(['config', 'set', 'broker.gatewayPort', '8883', '-c', file])
  t.equal(cross.code, 2, 'cross-field checks apply too')
  t.notOk(existsSync(override))

  const a = await gw(['config', 'set', 'gateway.id', 'gw-0042', '-c', file])
  t.equal(a.code, 0, a.err)
  t.match(a.out, /takes effect after: systemctl restart iot-gateway\.service/)
  const b = await gw(['config', 'set', 'broker.names', '["gw-0042.local","localhost"]', '-c', file])
  t.equal(b.code, 0, b.err)
  t.match(b.out, /systemctl restart iot-gateway\.service mosquitto\.service/, 'a broker change restarts the broker too')
  t.equal(statSync(override).mode & 0o777, 0o644, 'settings only (secrets are files of their own): readable by the root-run units')
  t.same(JSON.parse(readFileSync(override, 'utf8')), { version: 1, gateway: { id: 'gw-0042' }, broker: { names: ['gw-0042.local', 'localhost'] } }, 'both settings kept')
  t.equal(JSON.parse(readFileSync(file, 'utf8')).gateway.id, undefined, 'the image file is untouched')

  t.equal((await gw(['config', 'set', 'gateway.dataDir', '/elsewhere', '-c', file])).code, 2, 'the override cannot move the data directory')
  const u = await gw(['config', 'unset', 'gateway.id', '-c', file])
  t.equal(u.code, 0, u.err)
  t.equal(JSON.parse((await gw(['config', 'check', '-c', file])).out).gateway.id, 'iot-gateway', 'unset: the default applies again')

  // A hand-broken override is named in the error, and every command refuses it (exit 2).
  writeFileSync(override, JSON.stringify({ version: 1, uplink: { batchMaxMessages: -1 } }))
  const broken = await gw(['config', 'check', '-c', file])
  t.equal(broken.code, 2)
  t.match(broken.err, new RegExp(`uplink\\.batchMaxMessages \\(from ${override.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\): must be >= 1`))
  writeFileSync(override, JSON.stringify({ wifi: {} }))
  t.match((await gw(['config', 'check', '-c', file])).err, /gateway\.json: wifi: unknown section/)
})

t.test('set: a change the image cannot apply (its broker configuration, the broker certificate) is refused, nothing written', async t => {
  const { file, data, override } = image(t)
  // The image's broker configuration, rendered at build time into the read-only root.
  const brokerConf = join(data, '..', 'iot-gateway.conf')
  writeFileSync(brokerConf, (await gw(['render', 'mosquitto', '-c', file])).out)
  const env = { IOT_GATEWAY_BROKER_CONF: brokerConf }
  const port = await gw(['config', 'set', 'broker.lanPort', '9883', '-c', file], env)
  t.equal(port.code, 2, 'a configuration error')
  t.match(port.err, /broker\.lanPort: would change the broker's configuration, which is fixed in this image .*iot-gateway\.conf/)
  t.notOk(existsSync(override), 'nothing written')
  const log = await gw(['config', 'set', 'broker.denialLogCommand', '[]', '-c', file], env)
  t.equal(log.code, 2, 'the broker\'s debug logging is in that file too')
  // Another follower command leaves the broker's file as it is: only what changes the file is refused.
  const follower = await gw(['config', 'set', 'broker.denialLogCommand', '["journalctl","--follow"]', '-c', file], env)
  t.equal(follower.code, 0, follower.err)
  const url = await gw(['config', 'set', 'uplink.url', 'https://elsewhere.example/ingest', '-c', file], env)
  t.equal(url.code, 0, url.err)
  // Without that file (a development machine, the demo), the broker is rendered from the config.
  t.equal((await gw(['config', 'set', 'broker.lanPort', '9883', '-c', file])).code, 0)
  t.equal((await gw(['config', 'unset', 'broker.lanPort', '-c', file], env)).code, 2, 'unset is checked the same way')

  // After the first boot the broker's certificate exists: names it was not issued for are refused.
  mkdirSync(join(data, 'pki'))
  writeFileSync(join(data, 'pki', 'broker.crt'), 'issued at the first boot\n')
  const names = await gw(['config', 'set', 'broker.names', '["gw-0042.local"]', '-c', file])
  t.equal(names.code, 2)
  t.match(names.err, /broker\.names: the broker's certificate .* was issued at the first boot/)
  t.notOk(JSON.parse(readFileSync(override, 'utf8')).broker?.names, 'not written')
})

t.test('applied: a real gateway reads the override; config set uplink.token makes it send Authorization', async t => {
  const s = await startStack(t, { uplink: { tokenFile: '' } })
  const dev = deviceCreds(s.config, 'sensor-1')
  t.equal((await mosquittoPub(s.broker.lanPort, dev, 'devices/sensor-1/telemetry', ['{"seq":1}'])).code, 0)
  await waitFor(() => s.cloud.batches.length >= 1, 'first batch')
  t.equal(s.cloud.batches[0]!.authorization, undefined, 'no token yet: no Authorization header (the old image)')

  const set = await cli(s.configFile, ['config', 'set', 'uplink.token', 'tok-AAAA'])
  t.equal(set.code, 0, set.err)
  const tokenFile = join(s.config.gateway.dataDir, 'uplink.token')
  t.match(set.out, /takes effect after: systemctl restart iot-gateway\.service/)
  t.equal(statSync(tokenFile).mode & 0o777, 0o600, 'token file 0600')
  t.equal(readFileSync(tokenFile, 'utf8'), 'tok-AAAA\n')
  const lim = await cli(s.configFile, ['config', 'set', 'uplink.batchMaxMessages', '1'])
  t.equal(lim.code, 0, lim.err)

  await s.gateway.stop()
  await s.gateway.start()
  t.equal((await mosquittoPub(s.broker.lanPort, dev, 'devices/sensor-1/telemetry', ['{"seq":2}', '{"seq":3}'])).code, 0)
  await waitFor(() => s.cloud.accepted.length >= 3, 'messages after the restart')
  const after = s.cloud.batches.slice(1)
  t.ok(after.length >= 2, 'uplink.batchMaxMessages=1 from the override: one message per batch')
  t.ok(after.every(b => b.messages.length === 1), 'every batch after the restart holds one message')
  t.ok(after.every(b => b.authorization === 'Bearer tok-AAAA'), 'the token from config set reaches the cloud')
})
