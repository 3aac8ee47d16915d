// The console (app/src/console) in a real headless Chromium (Debian's `chromium`, driven by
// playwright-core) against a running gateway with Mosquitto, the HTTPS cloud and devices publishing.
// Skipped when Chromium is absent, except under CI (CI set): then it fails.
import t from 'tap'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:http'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { request } from 'undici'
import { mqttDevice } from '../helpers/devices.js'
import { startStack, tempDir } from '../helpers/env.js'
import { appDir } from '../helpers/gateway-process.js'
import { cli, enrollDevice } from '../helpers/identity.js'
import { waitFor } from '../helpers/ports.js'

const CHROMIUM = '/usr/bin/chromium'
const ARTEFACTS = process.env.IOTGW_ARTEFACTS ?? join(appDir, '.tap', 'artefacts', 'console')

if (!existsSync(CHROMIUM)) {
  if (process.env.CI !== undefined && process.env.CI !== '') t.fail(`${CHROMIUM} is missing (scripts/install-deps.sh installs Debian's chromium); CI must run the console test`)
  else t.plan(0, `${CHROMIUM} is missing: apt-get install --no-install-recommends chromium (scripts/install-deps.sh)`)
} else {
  t.test('console: live health, charts, devices, refusals, alerts, release; refused without the token or cross-site', async t => {
    const { chromium } = await import('playwright-core')
    const s = await startStack(t, { monitor: { intervalSeconds: 1 }, alerts: { brokerUnreachableSeconds: 1 }, trust: { floor: 40, penaltyReplay: 10 } })
    const port = s.config.api.port
    const base = `http://127.0.0.1:${port}`
    const token = readFileSync(join(s.config.gateway.dataDir, 'api-token'), 'utf8').trim()
    const good = await enrollDevice(s.configFile, join(s.dir, 'a'), 'sensor-a')
    const bad = await enrollDevice(s.configFile, join(s.dir, 'b'), 'sensor-bad')
    const q = await enrollDevice(s.configFile, join(s.dir, 'q'), 'sensor-q')
    const clients = await Promise.all([good, bad, q].map(d => mqttDevice(s.broker.lanPort, d)))
    t.teardown(async () => { for (const c of clients) await c.endAsync(true).catch(() => {}) })
    const [ca, cb, cq] = clients as [typeof clients[0], typeof clients[0], typeof clients[0]]

    const profile = tempDir(t, 'iotgw-chromium-')
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 800 }
    })
    t.teardown(() => context.close())
    const page = context.pages()[0] ?? await context.newPage()
    const errors: string[] = []
    const foreign: string[] = []
    page.on('console', m => { if (m.type() === 'error') errors.push(m.text()) })
    page.on('pageerror', e => errors.push(String(e)))
    page.on('dialog', d => { void d.accept() })
    page.on('request', r => { if (!r.url().startsWith(`${base}/`)) foreign.push(r.url()) })

    // The whole page (HTML, script, style) from the gateway, well under 150 KB gzipped.
    let gz = 0
    for (const path of ['/console', '/console/app.js', '/console/app.css']) {
      const r = await request(`${base}${path}`)
      t.equal(r.statusCode, 200, `${path} is public`)
      t.match(String(r.headers['content-security-policy']), /default-src 'none'/, `${path}: CSP`)
      gz += gzipSync(Buffer.from(await r.body.arrayBuffer())).length
    }
    t.ok(gz < 150 * 1024, `the page is ${gz} bytes gzipped`)

    await page.goto(`${base}/console`)
    await page.fill('#token', 'wrong-token-wrong-token')
    await page.click('#login button')
    await page.waitForSelector('#login .err')
    t.ok(errors.length === 1 && errors.every(e => /401/.test(e)), `the wrong token: a 401, nothing else (${errors.join('; ')})`)
    errors.length = 0
    await page.fill('#token', token)
    await page.click('#login button')
    await page.waitForSelector('#health')
    const cookie = (await context.cookies()).find(c => c.name === 'gw_session')
    t.ok(cookie, 'a session cookie')
    t.equal(cookie?.httpOnly, true, 'HttpOnly')
    t.equal(cookie?.sameSite, 'Strict', 'SameSite=Strict')
    t.equal(await page.textContent('#overall'), 'ok', 'healthy at first')

    // Devices publish: the message-rate chart and the device table change.
    const rateLine = async (): Promise<string> => await page.getAttribute('[data-chart="messages/s"] polyline.s0', 'points') ?? ''
    const before = await rateLine()
    let seq = 0
    let publishing = true
    const loop = (async () => {
      while (publishing) {
        seq++
        await ca.publishAsync('devices/sensor-a/telemetry', JSON.stringify({ seq, t: 20 + seq % 5 }), { qos: 1 }).catch(() => {})
      }
    })()
    await waitFor(async () => /[1-9]/.test(await page.textContent('[data-device="sensor-a"] td:nth-child(5)') ?? '0'), 'a message rate for sensor-a in the table')
    await waitFor(async () => (await rateLine()) !== before && /in [1-9]/.test(await page.textContent('[data-chart="messages/s"] .legend') ?? ''), 'the message-rate chart moves')
    publishing = false
    await loop
    t.pass(`chart and table moved (${seq} messages)`)

    // Malformed messages: the refusal reason in the table, the same as /status's.
    for (let i = 0; i < 3; i++) await cb.publishAsync('devices/sensor-bad/telemetry', 'not json {', { qos: 1 })
    const refusalCell = '[data-device="sensor-bad"] td.refusal'
    await waitFor(async () => (await page.textContent(refusalCell) ?? '') !== '', 'sensor-bad\'s refusal reason in the table')
    const status = JSON.parse((await request(`${base}/status`, { headers: { authorization: `Bearer ${token}` } }).then(r => r.body.text())))
    t.equal(await page.textContent(refusalCell), status.refusals['sensor-bad'].last.reason, 'the reason the gateway recorded')
    await page.click('[data-device="sensor-bad"]')
    await waitFor(async () => (await page.textContent('#device .refusals') ?? '').includes(status.refusals['sensor-bad'].last.reason), 'the refusal in the device view')

    // A quarantined device (replays), released from the page.
    await cq.publishAsync('devices/sensor-q/telemetry', JSON.stringify({ seq: 1 }), { qos: 1 })
    for (let i = 0; i < 7; i++) await cq.publishAsync('devices/sensor-q/telemetry', JSON.stringify({ seq: 1 }), { qos: 1 })
    await waitFor(async () => (await page.textContent('[data-device="sensor-q"] td:nth-child(2)')) === 'quarantined', 'sensor-q quarantined in the table')

    // Without the token (or the session), every action is refused; the cookie alone without the console header too.
    const actions: Array<[string, unknown]> = [['release', { device: 'sensor-q' }], ['revoke', { device: 'sensor-q' }], ['command', { device: 'sensor-q', command: { action: 'read_now' } }], ['retry', {}], ['firewall-confirm', {}]]
    for (const [a, body] of actions) {
      const r = await request(`${base}/console/api/${a}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-gateway-console': '1' }, body: JSON.stringify(body) })
      await r.body.dump()
      t.equal(r.statusCode, 401, `${a} without the token: 401`)
      const r2 = await request(`${base}/console/api/${a}`, { method: 'POST', headers: { 'content-type': 'application/json', cookie: `gw_session=${cookie!.value}` }, body: JSON.stringify(body) })
      await r2.body.dump()
      t.equal(r2.statusCode, 403, `${a} with the cookie but without X-Gateway-Console: 403`)
    }
    t.equal((await request(`${base}/console/api/state`)).statusCode, 401, 'the state without the session: 401')

    // A cross-site form post from another origin in the same browser (which holds the session).
    const evil = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' }).end(`<form method="post" action="${base}/console/api/release" enctype="text/plain"><input name='{"device":"sensor-q","x":"' value='"}'></form><script>document.forms[0].submit()</script>`)
    })
    await new Promise<void>(resolve => evil.listen(0, '127.0.0.1', resolve))
    t.teardown(() => { evil.close() })
    const other = await context.newPage()
    const posted = other.waitForResponse(r => r.url() === `${base}/console/api/release`)
    await other.goto(`http://localhost:${(evil.address() as { port: number }).port}/`)
    t.equal((await posted).status(), 403, 'cross-site form post refused')
    await other.close()
    t.equal(JSON.parse((await cli(s.configFile, ['device', 'show', 'sensor-q', '--json'])).out).status, 'quarantined', 'still quarantined after the forged post')

    await page.click('[data-device="sensor-q"]')
    await page.waitForSelector('#device [data-action="release"]')
    await page.click('#device [data-action="release"]')
    await waitFor(async () => (await page.textContent('[data-device="sensor-q"] td:nth-child(2)')) === 'active', 'sensor-q active after the release')
    const audit = JSON.parse((await cli(s.configFile, ['audit', 'list', '--device', 'sensor-q', '--json'])).out) as Array<{ type: string, source: string }>
    t.ok(audit.some(e => e.type === 'device_released' && e.source === 'console'), 'the release is in the audit log, from the console')
    await waitFor(async () => (await page.textContent('#device .audit') ?? '').includes('device_released'), 'and in the device view')

    // The other actions from the page: a command (the API's POST /commands underneath) and the dead-letter retry.
    await page.fill('#device #command', '{"action":"read_now"}')
    await page.click('#device [data-action="send command"]')
    await waitFor(async () => /command: done/.test(await page.textContent('#notice') ?? ''), 'the command sent')
    await waitFor(async () => (JSON.parse((await cli(s.configFile, ['audit', 'list', '--device', 'sensor-q', '--json'])).out) as Array<{ type: string }>).some(e => e.type === 'command_sent'), 'the command audited')
    await page.click('[data-action="retry"]')
    await waitFor(async () => /retry: done \{"moved":0\}/.test(await page.textContent('#notice') ?? ''), 'the retry done')
    // Confirming a firewall change is a request to the root path unit (test/integration/firewall-confirm.test.ts);
    // with nothing pending it is refused and nothing is written.
    const fw = await request(`${base}/console/api/firewall-confirm`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
    t.equal(fw.statusCode, 409, 'confirming a firewall change with none pending: refused')
    t.match((await fw.body.json() as { error: string }).error, /nothing to confirm/)
    const all = JSON.parse((await cli(s.configFile, ['audit', 'list', '--limit', '500', '--json'])).out) as Array<{ type: string, source: string }>
    for (const type of ['console_login_failed', 'console_login', 'dead_letters_retried']) t.ok(all.some(e => e.type === type && e.source === 'console'), `${type} audited`)
    t.equal((await cli(s.configFile, ['audit', 'verify'])).code, 0, 'the audit chain verifies')

    // Screenshots at a phone's and a laptop's size (test artefacts).
    mkdirSync(ARTEFACTS, { recursive: true })
    await page.click('#device [data-action="close"]')
    await page.evaluate(() => window.scrollTo(0, 0))
    await page.screenshot({ path: join(ARTEFACTS, 'console-1280x800.png'), fullPage: false })
    await page.setViewportSize({ width: 390, height: 844 })
    t.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390 + 1), 'no horizontal scrolling at 390 px')
    await page.screenshot({ path: join(ARTEFACTS, 'console-390x844.png'), fullPage: false })
    await page.setViewportSize({ width: 1280, height: 800 })

    // Mosquitto stops: the broker alert and reason appear, and clear when it is back.
    await s.broker.stop()
    await waitFor(async () => await page.locator('#alerts .firing [data-rule="broker_unreachable"]').count() === 1, 'the broker alert on the page')
    t.match(await page.textContent('#reasons') ?? '', /broker down/, 'the reason on the page')
    t.equal(await page.getAttribute('[data-health="broker"]', 'class'), 'tile bad')
    await s.broker.start()
    await waitFor(async () => await page.locator('#alerts .firing [data-rule="broker_unreachable"]').count() === 0, 'the broker alert cleared')
    await waitFor(async () => await page.locator('#alerts .resolved [data-rule="broker_unreachable"]').count() === 1, 'and listed as resolved')
    t.equal(await page.textContent('#overall'), 'ok', 'healthy again')

    t.same(errors, [], 'no console errors')
    t.same(foreign, [], 'no request left the gateway')
  })
}
