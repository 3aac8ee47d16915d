// The management API against a real gateway process: a token for everything but /health and
// /metrics, constant Host and Origin checks, no HTML-form bodies; the CLI keeps working with the
// token file the daemon made.
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import t from 'tap'
import { mqttDevice } from '../helpers/devices.js'
import { startStack } from '../helpers/env.js'
import { cli, enrollDevice } from '../helpers/identity.js'
import { waitFor } from '../helpers/ports.js'

t.test('management API: bearer token, Host, Origin and content type; the CLI still works', async t => {
  const s = await startStack(t)
  const port = s.config.api.port
  const tokenFile = join(s.config.gateway.dataDir, 'api-token')
  const token = readFileSync(tokenFile, 'utf8').trim()
  t.ok(token.length >= 32, 'the daemon made a token on the data directory')
  t.equal(statSync(tokenFile).mode & 0o777, 0o640, 'token file 0640: the gateway\'s group and root read it')

  const dev = await enrollDevice(s.configFile, join(s.dir, 'b'), 'sensor-b')
  const client = await mqttDevice(s.broker.lanPort, dev)
  t.teardown(() => client.endAsync())
  const got: string[] = []
  client.on('message', (_topic, p) => got.push(p.toString()))
  await client.subscribeAsync('devices/sensor-b/commands', { qos: 1 })

  const call = async (method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<{ status: number, text: string }> => {
    const r = await request(`http://127.0.0.1:${port}${path}`, { method: method as 'GET', headers, body, signal: AbortSignal.timeout(5000) })
    return { status: r.statusCode, text: await r.body.text() }
  }
  const bearer = { authorization: `Bearer ${token}` }
  const command = JSON.stringify({ device: 'sensor-b', command: { action: 'reboot' } })

  t.equal((await call('GET', '/health')).status, 200, '/health needs no token')
  t.equal((await call('GET', '/metrics')).status, 200, '/metrics needs no token')
  t.equal((await call('GET', '/status')).status, 401, '/status without a token: 401')
  t.equal((await call('GET', '/status', { authorization: `Bearer ${token.slice(0, -1)}x` })).status, 401, 'a wrong token: 401')
  t.equal((await call('GET', '/status', bearer)).status, 200, 'the right token: 200')
  t.equal((await call('POST', '/registry/reload')).status, 401, '/registry/reload without a token: 401')

  // The cross-site request: an HTML form on another site, posting text/plain.
  const evil = await call('POST', '/commands', { 'content-type': 'text/plain', origin: 'http://evil.example' }, command)
  t.equal(evil.status, 403, 'cross-site text/plain POST: 403')
  t.equal((await call('POST', '/commands', { ...bearer, 'content-type': 'application/json', origin: 'http://evil.example' }, command)).status, 403, 'a foreign Origin is refused even with the token')
  t.equal((await call('POST', '/commands', { ...bearer, 'content-type': 'text/plain' }, command)).status, 415, 'a text/plain body is refused even with the token')
  t.equal((await call('POST', '/commands', { ...bearer, 'content-type': 'application/json', 'sec-fetch-site': 'cross-site' }, command)).status, 403, 'Sec-Fetch-Site cross-site: 403')
  t.equal((await call('POST', '/commands', { 'content-type': 'application/json' }, command)).status, 401, 'no token: 401')
  // DNS rebinding: the page's own name in Host.
  t.equal((await call('GET', '/status', { ...bearer, host: `evil.example:${port}` })).status, 403, 'a foreign Host: 403')
  t.equal((await call('GET', '/health', { host: 'evil.example' })).status, 403, 'a foreign Host is refused on /health too')
  t.equal((await call('GET', '/status', { ...bearer, host: `localhost:${port}` })).status, 200, 'localhost on a loopback listener is ours')
  t.equal((await call('POST', '/commands', { ...bearer, 'content-type': 'application/json', origin: `http://127.0.0.1:${port}` }, command)).status, 202, 'same-origin JSON with the token: 202')

  // The operator's CLI reads the token file: unchanged commands keep working.
  const status = await cli(s.configFile, ['status', '--json'])
  t.equal(status.code, 0, `status: ${status.err}`)
  const sent = await cli(s.configFile, ['device', 'command', 'sensor-b', '{"action":"read_now"}'])
  t.equal(sent.code, 0, `device command: ${sent.err}`)
  await waitFor(() => got.length >= 2, 'the two accepted commands at the device')
  t.same(got.map(p => JSON.parse(p).action), ['reboot', 'read_now'], 'only the authenticated same-origin command and the CLI\'s reached the device')
  t.equal(await s.gateway.metric('gateway_api_refused_total', '{status="403"}'), 5, 'refusals counted')
})
