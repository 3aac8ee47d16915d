// scripts/demo.sh as a newcomer runs it (real Mosquitto, gateway, HTTPS cloud; nothing faked):
// - --help answers without starting anything;
// - piped to `head`, it stops everything it started and removes its folder (CA key included) when
//   the reader goes away, and prints no terminal colours into the pipe;
// - with --keep it stays up: the mqtt.js example sensor (app/examples/sensor-mqtt.mjs) publishes to
//   it, its cloud goes down and comes back on SIGUSR1 with the outbox holding the data meanwhile, and
//   Ctrl-C (SIGINT to the whole process group, as a terminal sends it) leaves nothing behind.
import { spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { REPO, run, t, which } from './helpers.mjs'

const DEMO = join(REPO, 'scripts', 'demo.sh')
const skip = !which('mosquitto') && 'mosquitto is not installed (scripts/install-deps.sh --demo installs it)'

/** Processes whose command line mentions `text` (the demo's folder is in every one it starts). */
function processesWith (text) {
  const found = []
  for (const pid of readdirSync('/proc').filter(p => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')
      if (cmd.includes(text)) found.push(`${pid}: ${cmd}`)
    } catch {}
  }
  return found
}

const waitExit = p => new Promise(resolve => { if (p.exitCode !== null || p.signalCode !== null) resolve(p.exitCode); else p.once('exit', code => resolve(code)) })

t.test('--help prints the usage and starts nothing', async t => {
  const r = run('bash', [DEMO, '--help'])
  t.equal(r.status, 0)
  t.match(r.stdout, /^Usage: scripts\/demo\.sh \[--keep\]/)
  t.match(r.stdout, /--keep/)
  t.notMatch(r.stdout, /install-deps|working folder/)
})

t.test('piped to head: everything stops and the folder goes when the reader does', { skip }, async t => {
  const r = run('bash', ['-c', `set -o pipefail; bash ${JSON.stringify(DEMO)} --seconds 60 --outage 0 | head -n 3; echo "pipeline $?" >&2`], { timeout: 180000 })
  const dir = /working folder (\S+)/.exec(r.stdout)?.[1]
  t.ok(dir, `the first lines name the folder: ${JSON.stringify(r.stdout)}`)
  if (!dir) return
  t.equal(r.stdout.trimEnd().split('\n').length, 3, 'head took three lines')
  t.notOk(r.stdout.includes('\x1b['), 'no terminal escapes in a pipe')
  t.notOk(existsSync(dir), 'the folder (with the CA key) is gone')
  t.same(processesWith(dir), [], 'no broker, gateway or log follower left')
})

t.test('--keep: stays up for a client, the cloud toggles on SIGUSR1, Ctrl-C cleans up', { skip }, async t => {
  const demo = spawn('bash', [DEMO, '--keep', '--seconds', '1', '--outage', '2'], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  demo.stdout.on('data', d => { out += d })
  demo.stderr.on('data', d => { err += d })
  t.teardown(() => { try { process.kill(-demo.pid, 'SIGKILL') } catch {} })
  const exited = waitExit(demo)
  // Every wait has a deadline and says what it waited for, with the demo's output and the end of its
  // gateway's log: a hang fails here with the story, not at tap's timeout with none.
  let dir = '' // the demo's folder, once it has said it
  let api = '' // and its gateway's API
  const story = async () => {
    let log = ''
    try { log = readFileSync(join(dir, 'gateway.log'), 'utf8').split('\n').slice(-15).join('\n') } catch {}
    // What the gateway counted: received, accepted, refused (by reason), its broker connection.
    let counts = ''
    try {
      counts = (await (await fetch(`${api}/metrics`, { signal: AbortSignal.timeout(5000) })).text()).split('\n')
        .filter(l => /^gateway_(messages_(received|accepted|rejected)_total|mqtt_connected|outbox_messages)\b/.test(l) && !/ 0$/.test(l)).join('\n')
    } catch {}
    return `the demo's output:\n${out}\n${err}\nits gateway's log, last lines:\n${log}\nits gateway's counts:\n${counts}`
  }
  const until = async (check, what, ms = 90000) => {
    for (const deadline = Date.now() + ms; ;) {
      const v = await check()
      if (v) return v
      if (demo.exitCode !== null || demo.signalCode !== null) throw new Error(`the demo exited before ${what}\n${await story()}`)
      if (Date.now() > deadline) throw new Error(`waited ${ms / 1000} s for ${what}\n${await story()}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }
  const wait = (re, what) => until(() => re.exec(out), what, 180000)
  const ready = await wait(/^ready: broker mqtts:\/\/localhost:(\d+) api (http:\/\/127\.0\.0\.1:\d+) folder (\S+) pid (\d+)$/m, 'ready')
  const [, port, apiUrl, folder, pid] = ready
  dir = folder
  api = apiUrl
  t.match(out, /0 lost, 0 sent twice/, 'the outage lost nothing')
  t.match(out, /Denied PUBLISH from cellar-1/, 'the denial read from the demo broker\'s own log')
  t.match(out, /events \{"acl_denied":1\}/, 'and counted against cellar-1')
  t.match(out, /Try next:[\s\S]*curl -s http[\s\S]*device enroll my-sensor[\s\S]*mosquitto_pub [\s\S]*kill -USR1/, 'what to try next')

  const metric = async name => {
    const text = await (await fetch(`${api}/metrics`)).text()
    return Number(/^(\S+) (\S+)$/m.exec(text.split('\n').find(l => l.startsWith(`${name} `)) ?? 'x 0')[2])
  }
  const sensor = (count) => run(process.execPath, [join(REPO, 'app', 'examples', 'sensor-mqtt.mjs'), '--url', `mqtts://localhost:${port}`, '--id', 'greenhouse-2', '--dir', join(dir, 'devices'), '--count', String(count), '--interval', '20'], { timeout: 60000 })
  const before = await metric('gateway_uplink_messages_delivered_total')
  const s1 = sensor(3)
  t.equal(s1.status, 0, s1.stderr)
  t.equal(s1.stdout.match(/^acknowledged /gm)?.length, 3, 'the example sensor got 3 PUBACKs')
  await until(async () => await metric('gateway_uplink_messages_delivered_total') >= before + 3, 'its 3 messages at the cloud')
  t.pass('its 3 messages reached the demo\'s cloud')

  process.kill(Number(pid), 'SIGUSR1')
  await wait(/^cloud: DOWN/m, 'the cloud to go down')
  const s2 = sensor(4)
  t.equal(s2.status, 0, s2.stderr)
  await until(async () => await metric('gateway_outbox_messages') >= 4, 'the 4 in the outbox')
  t.equal(await metric('gateway_outbox_messages'), 4, 'the outbox holds the 4 while the cloud is down')
  process.kill(Number(pid), 'SIGUSR1')
  await wait(/^cloud: UP/m, 'the cloud to come back')
  await until(async () => await metric('gateway_outbox_messages') === 0, 'the outbox to empty')
  t.equal(await metric('gateway_uplink_messages_delivered_total'), before + 7, 'all 7 delivered')

  t.ok(existsSync(join(dir, 'data', 'pki')), 'the folder is there while the demo runs')
  process.kill(-demo.pid, 'SIGINT') // what Ctrl-C does: the whole foreground process group
  await until(() => demo.exitCode !== null || demo.signalCode !== null, 'the demo to exit on Ctrl-C', 60000)
  const code = await exited
  t.equal(code, 130, 'exit status of an interrupted program')
  t.notOk(existsSync(dir), 'the folder (with the CA key) is gone')
  t.same(processesWith(dir), [], 'no broker, gateway or log follower left')
})
