// A reference receiver for the gateway's uplink: node:https, no dependencies. It checks the bearer
// token, verifies Content-Digest (RFC 9530, over the gzip bytes as sent), and stores each batch once:
// a batch sent again (the gateway retries until it gets a 2xx) carries the same Idempotency-Key and is
// answered 200 without being stored twice. Each stored message is printed as one JSON line.
//   node cloud-receiver.mjs --cert server.crt --key server.key [--port 8443] [--token-file token]
import { createHash } from 'node:crypto'
import { createServer } from 'node:https'
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { gunzipSync } from 'node:zlib'

const { values: o } = parseArgs({ options: { cert: { type: 'string' }, key: { type: 'string' }, port: { type: 'string', default: '8443' }, host: { type: 'string', default: '0.0.0.0' }, 'token-file': { type: 'string' } } })
const token = o['token-file'] ? readFileSync(o['token-file'], 'utf8').trim() : undefined
const seen = new Set() // a real cloud keeps the keys in its database, stored in the same transaction as the messages
const server = createServer({ cert: readFileSync(o.cert), key: readFileSync(o.key) }, (req, res) => {
  const chunks = []
  req.on('data', c => chunks.push(c)).on('end', () => {
    const body = Buffer.concat(chunks)
    const key = req.headers['idempotency-key']
    if (token !== undefined && req.headers.authorization !== `Bearer ${token}`) return res.writeHead(401).end()
    // A 4xx other than 408/429 is final: the gateway moves the batch to its dead letters, kept for inspection.
    if (req.headers['content-digest'] !== `sha-256=:${createHash('sha256').update(body).digest('base64')}:`) return res.writeHead(400).end('Content-Digest does not match the body\n')
    if (!key) return res.writeHead(400).end('no Idempotency-Key\n')
    if (seen.has(key)) { console.error(`duplicate batch ${key}: already stored`); return res.writeHead(200).end('{"duplicate":true}') }
    let batch
    try { batch = JSON.parse((req.headers['content-encoding'] === 'gzip' ? gunzipSync(body) : body).toString('utf8')) } catch { return res.writeHead(400).end('not gzip JSON\n') }
    for (const m of batch.messages) console.log(JSON.stringify({ gateway: batch.gateway, id: m.id, device: m.device, stream: m.stream, epoch: m.epoch, seq: m.seq, payload: m.payload }))
    seen.add(key)
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
  })
})
server.listen(Number(o.port), o.host, () => console.error(`cloud-receiver: listening on https://${o.host}:${server.address().port}`))
