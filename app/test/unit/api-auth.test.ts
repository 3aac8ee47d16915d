import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import type { IncomingMessage } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { apiAuth, authorize, ensureApiToken } from '../../src/api/auth.js'
import { buildConfig } from '../../src/config/load.js'

const req = (headers: Record<string, string>): IncomingMessage => ({ headers }) as unknown as IncomingMessage

t.test('the token file is made once, 0640, and never overwritten', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-token-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'api-token')
  t.same(ensureApiToken(file), { created: true })
  const first = readFileSync(file, 'utf8')
  t.match(first, /^[A-Za-z0-9_-]{43}\n$/)
  t.equal(statSync(file).mode & 0o777, 0o640)
  t.same(ensureApiToken(file), { created: false })
  t.equal(readFileSync(file, 'utf8'), first, 'kept')
  writeFileSync(file, 'operator-chosen-token-0123456789\n')
  t.same(ensureApiToken(file), { created: false }, 'an operator\'s own token is kept too')
})

t.test('authorize: Host, Origin, content type, token', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-auth-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const c = buildConfig({ gateway: { dataDir: dir }, api: { host: '127.0.0.1', port: 8080, allowedHosts: ['gw-7.mgmt.example'] } })
  const a = apiAuth(c)
  const token = readFileSync(join(dir, 'api-token'), 'utf8').trim()
  const ok = { host: '127.0.0.1:8080', authorization: `Bearer ${token}` }
  const status = (h: Record<string, string>, pub = false): number => { const r = authorize(req(h), a, pub); return r.ok ? 200 : r.status }
  t.equal(status(ok), 200)
  t.equal(status({ ...ok, host: 'localhost:8080' }), 200, 'localhost on loopback')
  t.equal(status({ ...ok, host: 'gw-7.mgmt.example:8080' }), 200, 'api.allowedHosts')
  t.equal(status({ ...ok, host: 'GW-7.mgmt.example' }), 200, 'names are case-insensitive; no port is fine')
  t.equal(status({ ...ok, host: '127.0.0.1:8081' }), 403, 'another port')
  t.equal(status({ ...ok, host: '10.0.0.1:8080' }), 403, 'another address')
  t.equal(status({ ...ok, host: 'rebound.evil.example:8080' }), 403)
  t.equal(status({ ...ok, host: '' }), 403, 'no Host')
  t.equal(status({ host: '127.0.0.1:8080' }, true), 200, 'public route without a token')
  t.equal(status({ host: 'evil.example' }, true), 403, 'public routes check Host too')
  t.equal(status({ ...ok, origin: 'http://127.0.0.1:8080' }), 200, 'same origin')
  t.equal(status({ ...ok, origin: 'http://evil.example' }), 403)
  t.equal(status({ ...ok, origin: 'null' }), 403, 'an opaque origin')
  t.equal(status({ ...ok, origin: 'http://127.0.0.1:9999' }), 403, 'another port is another origin')
  t.equal(status({ ...ok, 'content-length': '10', 'content-type': 'text/plain' }), 415)
  t.equal(status({ ...ok, 'content-length': '10', 'content-type': 'application/x-www-form-urlencoded' }), 415)
  t.equal(status({ ...ok, 'transfer-encoding': 'chunked' }), 415, 'a chunked body without a type')
  t.equal(status({ ...ok, 'content-length': '10', 'content-type': 'application/json; charset=utf-8' }), 200)
  t.equal(status({ host: '127.0.0.1:8080' }), 401, 'no token')
  t.equal(status({ host: '127.0.0.1:8080', authorization: `Bearer ${token}x` }), 401, 'a longer token')
  t.equal(status({ host: '127.0.0.1:8080', authorization: token }), 401, 'not a bearer scheme')
  // behind the socket on the tunnel's address (iot-gateway-api@.socket), that address is the Host
  const tunnelled = apiAuth(buildConfig({ gateway: { dataDir: dir }, api: { host: '127.0.0.1', port: 8080 }, wireguard: { address: '10.200.0.42/24' } }))
  const via = (h: Record<string, string>): number => { const r = authorize(req(h), tunnelled, false); return r.ok ? 200 : r.status }
  t.equal(via({ host: '10.200.0.42:8080', authorization: `Bearer ${token}` }), 200, 'the tunnel\'s address')
  t.equal(via({ host: '10.200.0.42:8080', authorization: `Bearer ${token}`, origin: 'http://10.200.0.42:8080' }), 200, 'the console\'s origin through the tunnel')
  t.equal(via({ host: '10.200.0.42:8080' }), 401, 'still the token')
  t.equal(via({ host: '10.200.0.43:8080', authorization: `Bearer ${token}` }), 403, 'another address of the tunnel\'s network')
  t.equal(status({ ...ok, host: '10.200.0.42:8080' }), 403, 'no tunnel address configured: refused as before')
  const none = apiAuth(buildConfig({ gateway: { dataDir: dir }, api: { auth: 'none', host: '::1', port: 8080 } }))
  t.equal(none.token, null)
  const r = authorize(req({ host: '[::1]:8080' }), none, false)
  t.ok(r.ok, 'api.auth none: no token; an IPv6 Host in brackets')
})
