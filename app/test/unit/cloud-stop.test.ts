import t from 'tap'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { connect as tcpConnect } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { Agent, request } from 'undici'
import { Cloud } from '../helpers/cloud.js'
import { tempDir } from '../helpers/temp.js'

/**
 * The test cloud's stop() is what tests and the demo use to take the cloud "down". A connection the
 * server accepted but whose TLS handshake was not done yet is not an HTTP connection to Node
 * (closeAllConnections() does not see it): it went on being served with keep-alive after close(),
 * and close() waited for it as long as the client kept using it (a demo test hung on it under load).
 */
const batch = (id: string): string => JSON.stringify({ batchId: id, messages: [{ id, device: 'd1', transport: 'mqtt', stream: 'telemetry', epoch: 1, seq: 1, receivedAt: 0, payload: {} }] })

t.test('stop() drops a connection accepted before it, even one still in its TLS handshake', async t => {
  const cloud = new Cloud(tempDir(t))
  await cloud.start()
  t.teardown(() => cloud.stop())
  const { port } = new URL(cloud.url)
  const ca = readFileSync(cloud.caFile)
  const raw = tcpConnect(Number(port), '127.0.0.1')
  raw.on('error', () => {})
  await once(raw, 'connect')
  // A whole request on a second connection: the server accepts connections in order, so it has
  // accepted the first (which has sent nothing yet) by the time this one is answered.
  const agent = new Agent({ connect: { ca } })
  t.teardown(() => agent.close())
  const r = await request(cloud.url, { method: 'POST', body: batch('before'), dispatcher: agent })
  await r.body.text()
  t.equal(r.statusCode, 200, 'the cloud answers while up')
  const stopped = cloud.stop()
  // The handshake and a request on the connection accepted before stop(): no answer any more.
  const answer = await new Promise<string>(resolve => {
    const s = tlsConnect({ socket: raw, ca, servername: 'localhost' }, () => {
      const body = batch('after')
      s.write(`POST /ingest HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
    })
    let got = ''
    // An answer (the bug) or the connection dropped (the fix): either ends the wait.
    s.on('data', d => { got += String(d); if (got.includes('\r\n\r\n')) { resolve(got); s.destroy() } })
    s.on('error', () => {})
    s.on('close', () => resolve(got))
  })
  t.notMatch(answer, /^HTTP\/1\.1 200/, 'the stopped cloud does not answer it')
  await stopped
  t.same(cloud.accepted.map(m => m.id), ['before'], 'nothing accepted after stop()')
})
