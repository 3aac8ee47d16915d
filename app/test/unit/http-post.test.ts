import t from 'tap'
import { once } from 'node:events'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { HttpError, httpAgent, httpPost } from '../../src/lib/http-post.js'
import { Cloud } from '../helpers/cloud.js'
import { tempDir } from '../helpers/temp.js'

t.test('HttpError: the status and one fixed code per class', async t => {
  const e = new HttpError(503, 'the gateway is not connected to the broker')
  t.ok(e instanceof Error)
  t.equal(e.status, 503)
  t.equal(e.code, 'GW_ERR_HTTP_UNAVAILABLE')
  t.equal(new HttpError(413, 'x').code, 'GW_ERR_HTTP_TOO_LARGE')
  t.equal(new HttpError(400, 'x').code, 'GW_ERR_HTTP_BAD_REQUEST')
  t.equal(new HttpError(418, 'x').code, 'GW_ERR_HTTP_STATUS')
})

t.test('httpPost: digest, request id, bearer token only when there is one, status and text back', async t => {
  const dir = tempDir(t)
  const cloud = new Cloud(dir)
  await cloud.start()
  t.teardown(() => cloud.stop())
  const seen: Array<Record<string, unknown>> = []
  cloud.respond = (b, req) => { seen.push({ ...req.headers }); return b.batchId === 'refuse' ? { status: 429, headers: { 'retry-after': '7' }, body: 'slow down' } : undefined }
  const agent = httpAgent({ caFile: cloud.caFile, certFile: '', keyFile: '' }, { timeoutMs: 5000, connections: 1 })
  t.teardown(() => agent.close())
  const url = new URL(cloud.url)
  const body = (id: string): Buffer => Buffer.from(JSON.stringify({ gateway: 'gw', batchId: id, messages: [] }))
  const ok = await httpPost(agent, url, body('a'), { token: 'tok', timeoutMs: 5000, headers: { 'idempotency-key': 'k1' } })
  t.equal(ok.status, 200)
  t.equal(cloud.batches[0]!.digestOk, true, 'Content-Digest matches the bytes sent')
  t.equal(seen[0]!.authorization, 'Bearer tok')
  t.equal(seen[0]!['idempotency-key'], 'k1')
  t.match(seen[0]!['x-request-id'], /^[0-9a-f-]{36}$/)
  await httpPost(agent, url, body('b'), { token: '', timeoutMs: 5000 })
  t.equal(seen[1]!.authorization, undefined, 'an empty token file sends no "Bearer "')
  const refused = await httpPost(agent, url, body('refuse'), { timeoutMs: 5000 })
  t.same([refused.status, refused.headers['retry-after'], refused.text], [429, '7', 'slow down'])
})

t.test('httpPost: ends on the caller\'s signal, or on its own timeout, whichever comes first', async t => {
  // A receiver that reads the request and never answers.
  const server = createServer(() => {})
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const url = new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}/ingest`)
  // The connection pool's own timeouts are far off: what ends the requests below is httpPost's.
  const agent = httpAgent({ caFile: '', certFile: '', keyFile: '' }, { timeoutMs: 600000, connections: 2 })
  t.teardown(() => agent.destroy())
  const ac = new AbortController()
  const asked = once(server, 'request')
  const stopped = httpPost(agent, url, Buffer.from('{}'), { timeoutMs: 600000, signal: ac.signal })
  await asked
  ac.abort(new Error('the gateway is stopping'))
  await t.rejects(stopped, /the gateway is stopping/, 'the caller\'s signal')
  await t.rejects(httpPost(agent, url, Buffer.from('{}'), { timeoutMs: 300 }), /no answer within 300 ms/, 'its own timeout')
})
