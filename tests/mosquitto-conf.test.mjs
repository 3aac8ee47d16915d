// The Mosquitto configuration the image ships (recipes-connectivity/mosquitto/files/
// iot-gateway.conf) starts a real mosquitto, with certificates made here by openssl, its
// /data/iot-gateway paths moved into a temp dir and its two listeners moved to free ports.
// Then, over TLS: an enrolled device publishes to its own topic and the gateway's session (on the
// loopback listener) receives it; a device cannot publish as another; a client without a
// certificate, with a certificate of another CA, or with a revoked one is refused; persistence
// is written to the data directory.
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, require, REPO, LAYER, run, which, isRoot, freePort, listening } from './helpers.mjs'

const CONF = join(LAYER, 'recipes-connectivity', 'mosquitto', 'files', 'iot-gateway.conf')
const mosquitto = which('mosquitto')
const openssl = which('openssl')
const skip = !mosquitto ? 'mosquitto is not installed (Debian: apt install mosquitto)' : !openssl ? 'openssl is not installed' : false

function ssl (dir, args) {
  const r = run(openssl, args, { cwd: dir })
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr}`)
}

/** A CA with an index (for the CRL), the broker, the gateway and three devices (one revoked). */
function makePki (dir) {
  mkdirSync(join(dir, 'newcerts'))
  writeFileSync(join(dir, 'index.txt'), '')
  writeFileSync(join(dir, 'serial'), '1000\n')
  writeFileSync(join(dir, 'crlnumber'), '1000\n')
  writeFileSync(join(dir, 'ca.cnf'), `[ca]
default_ca = ca_default
[ca_default]
dir = ${dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_days = 2
default_crl_days = 2
policy = policy_any
copy_extensions = copy
unique_subject = no
[policy_any]
commonName = supplied
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
`)
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes']
  ssl(dir, ['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=test device CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'])
  const leaf = (name, san) => {
    ssl(dir, ['req', '-new', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}`,
      ...(san ? ['-addext', `subjectAltName=${san}`] : [])])
    ssl(dir, ['ca', '-batch', '-config', 'ca.cnf', '-cert', 'ca.crt', '-keyfile', 'ca.key', '-extensions', 'leaf',
      '-in', `${name}.csr`, '-out', `${name}.crt`, '-notext'])
  }
  leaf('broker', 'IP:127.0.0.1,DNS:localhost')
  leaf('iot-gateway')
  leaf('dev1')
  leaf('dev2')
  leaf('dev3')
  ssl(dir, ['ca', '-config', 'ca.cnf', '-cert', 'ca.crt', '-keyfile', 'ca.key', '-revoke', 'dev3.crt'])
  ssl(dir, ['ca', '-gencrl', '-config', 'ca.cnf', '-cert', 'ca.crt', '-keyfile', 'ca.key', '-out', 'crl.pem'])
  // a stranger: its own CA
  ssl(dir, ['req', '-x509', ...ec, '-keyout', 'stranger.key', '-out', 'stranger.crt', '-days', '2', '-subj', '/CN=dev1'])
}

/** The ACL the gateway renders (`iot-gateway render acl`), from the built bundle when there is one. */
function acl () {
  const bundle = join(REPO, 'app', 'dist', 'gateway.cjs')
  if (existsSync(bundle)) {
    const r = run(process.execPath, [bundle, 'render', 'acl'], { env: { ...process.env, GATEWAY_CONFIG: '' } })
    if (r.status === 0 && /pattern write devices\/%u\//.test(r.stdout)) return r.stdout
  }
  return ['user iot-gateway', 'topic read devices/+/telemetry', 'topic read devices/+/events', 'topic write devices/+/commands',
    'pattern write devices/%u/telemetry', 'pattern write devices/%u/events', 'pattern read devices/%u/commands', ''].join('\n')
}

t.test('the shipped mosquitto.conf runs a broker that enforces certificate identity', { skip, timeout: 90000 }, async t => {
  const mqtt = require('mqtt')
  const data = mkdtempSync(join(tmpdir(), 'iotgw-mosq-'))
  t.teardown(() => rmSync(data, { recursive: true, force: true }))
  const pki = join(data, 'pki')
  mkdirSync(pki)
  makePki(pki)
  mkdirSync(join(data, 'mosquitto'))
  writeFileSync(join(data, 'mosquitto', 'acl'), acl())

  const shipped = readFileSync(CONF, 'utf8')
  t.match(shipped, /^listener 8883$/m, 'devices listener on 8883')
  t.match(shipped, /^listener 8884 127\.0\.0\.1$/m, 'gateway listener on loopback')
  t.match(shipped, /^require_certificate true$/m)
  t.match(shipped, /^use_identity_as_username true$/m)
  t.equal(shipped.match(/^use_username_as_clientid true$/mg)?.length, 2, 'client ids bound to the CN on both listeners')
  t.notMatch(shipped, /^retain_available false$/m, 'retained $SYS values stay (the gateway reads the dropped count there)')
  t.match(shipped, /^memory_limit \d+$/m, 'the broker\'s RAM is bounded')
  t.match(shipped, /^crlfile \/data\/iot-gateway\/pki\/crl\.pem$/m)
  t.match(shipped, /^persistence_location \/data\/iot-gateway\/mosquitto\/$/m)
  t.match(shipped, /^allow_anonymous false$/m)
  const lanPort = await freePort()
  const gwPort = await freePort()
  const conf = shipped
    .replaceAll('/data/iot-gateway', data)
    .replace(/^listener 8883$/m, `listener ${lanPort} 127.0.0.1`)
    .replace(/^listener 8884 127\.0\.0\.1$/m, `listener ${gwPort} 127.0.0.1`)
  t.not(conf, shipped)
  writeFileSync(join(data, 'mosquitto.conf'), conf)
  if (isRoot) {
    // as root mosquitto drops to the user "mosquitto": let it read the test PKI and write persistence
    for (const d of [data, pki, join(data, 'mosquitto')]) chmodSync(d, 0o777)
    for (const f of readdirSync(pki)) chmodSync(join(pki, f), 0o644)
    chmodSync(join(data, 'mosquitto', 'acl'), 0o644)
  }

  const broker = spawn(mosquitto, ['-c', join(data, 'mosquitto.conf')], { stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  broker.stdout.on('data', d => { log += d })
  broker.stderr.on('data', d => { log += d })
  const exited = new Promise(resolve => broker.once('exit', (code, signal) => resolve({ code, signal })))
  t.teardown(() => { if (broker.exitCode === null) broker.kill('SIGKILL') })
  // ready when both listeners accept connections (its log on a pipe is block-buffered)
  const deadline = Date.now() + 15000
  while (!(await listening(lanPort) && await listening(gwPort))) {
    if (broker.exitCode !== null || Date.now() > deadline) {
      t.fail('mosquitto did not start:\n' + log)
      return
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.pass('mosquitto started with the shipped configuration')

  const file = f => readFileSync(join(pki, f))
  const tls = (who, port, extra = {}) => ({
    host: '127.0.0.1',
    port,
    protocol: 'mqtts',
    ca: file('ca.crt'),
    rejectUnauthorized: true,
    ...(who ? { cert: file(`${who}.crt`), key: file(`${who}.key`) } : {}),
    clientId: `${who || 'anon'}-${Math.random().toString(16).slice(2, 8)}`,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ...extra
  })
  const connect = opts => new Promise(resolve => {
    const c = mqtt.connect(opts)
    c.once('connect', () => resolve({ client: c }))
    c.once('error', err => { c.end(true); resolve({ error: err }) })
    c.once('close', () => resolve({ error: new Error('closed') }))
  })

  const gw = await connect(tls('iot-gateway', gwPort))
  t.notOk(gw.error, 'the gateway connects on the loopback listener with its certificate')
  if (gw.error) return
  const got = []
  gw.client.on('message', (topic, payload) => got.push(`${topic} ${payload}`))
  await gw.client.subscribeAsync('devices/+/telemetry', { qos: 1 })

  const dev1 = await connect(tls('dev1', lanPort))
  t.notOk(dev1.error, 'an enrolled device connects on the device listener')
  await dev1.client.publishAsync('devices/dev1/telemetry', '{"seq":1}', { qos: 1 })
  await dev1.client.publishAsync('devices/dev2/telemetry', '{"seq":1,"spoofed":true}', { qos: 1 })
  // A barrier from the same client after the spoofed message: the broker handles one client's
  // messages in order, so once the barrier is here the spoofed one would have been too.
  await dev1.client.publishAsync('devices/dev1/telemetry', '{"seq":2,"barrier":true}', { qos: 1 })
  const until = Date.now() + 15000
  while (got.length < 2 && Date.now() < until) await new Promise(resolve => setTimeout(resolve, 50))
  t.same(got, ['devices/dev1/telemetry {"seq":1}', 'devices/dev1/telemetry {"seq":2,"barrier":true}'], 'own topic delivered; another device\'s topic denied by the ACL')
  await dev1.client.endAsync()

  const anon = await connect(tls(null, lanPort))
  t.ok(anon.error, 'no client certificate: refused')
  const stranger = await connect(tls('stranger', lanPort))
  t.ok(stranger.error, 'certificate of another CA: refused')
  const revoked = await connect(tls('dev3', lanPort))
  t.ok(revoked.error, 'revoked certificate (CRL): refused')
  const gwOnLan = await connect({ ...tls('dev2', gwPort) })
  t.notOk(gwOnLan.error, 'loopback listener also authenticates by certificate')
  if (gwOnLan.client) await gwOnLan.client.endAsync()
  await gw.client.endAsync()

  broker.kill('SIGTERM')
  const end = await exited
  t.ok(end.code === 0 || end.signal === 'SIGTERM', 'broker stops on SIGTERM')
  t.ok(existsSync(join(data, 'mosquitto', 'mosquitto.db')), 'persistence written to <data>/mosquitto/')
})
