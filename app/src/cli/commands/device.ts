import { Command } from 'commander'
import { AlertStore } from '../../alerts/store.js'
import { readFileSync, writeFileSync } from 'node:fs'
import { AuditLog } from '../../audit/audit.js'
import { paths } from '../../config/load.js'
import type { Config } from '../../config/schema.js'
import { commandTopic } from '../../devices/api.js'
import { enrolDevice, releaseDevice, revokeDevice, signCsr, type DeviceContext } from '../../devices/operations.js'
import { DeviceRegistry, type DeviceRecord } from '../../devices/registry.js'
import { openDatabase } from '../../store/db.js'
import { apiBase, apiRequest } from '../api-client.js'
import { becomeDataOwner, configFrom, EXIT, Exit, output, type Io } from '../io.js'

function withDevices<T> (cmd: Command, io: Io, fn: (ctx: DeviceContext) => T): { result: T, config: Config } {
  const config = configFrom(cmd.optsWithGlobals(), io)
  becomeDataOwner(config.gateway.dataDir)
  const db = openDatabase(paths(config).db, { synchronous: config.outbox.synchronous })
  try {
    const audit = new AuditLog(db, err => io.err(`warning: audit log write failed: ${(err as Error).message}\n`))
    const result = fn({ config, registry: new DeviceRegistry(db), audit })
    audit.flush()
    return { result, config }
  } finally {
    db.close()
  }
}

/** Tells a running daemon that the registry changed (it also notices within devices.registryPollMs). */
async function notifyDaemon (c: Config): Promise<boolean> {
  try {
    return (await apiRequest(c, 'POST', '/registry/reload', undefined, 3000)).status === 200
  } catch {
    return false
  }
}

const iso = (t: number | null): string => t === null ? '-' : new Date(t).toISOString()

function showText (d: DeviceRecord, initial: number, certs: ReturnType<DeviceRegistry['certificates']>): string {
  const score = d.trustScore ?? initial
  const events = Object.entries(d.trustEvents).map(([k, v]) => `${k}=${v}`).join(', ')
  return [
    `device      ${d.id}`,
    `status      ${d.status}${d.statusReason !== null ? ` (${d.statusReason}, ${iso(d.statusChangedAt)})` : ''}`,
    `trust       ${score.toFixed(1)}${events !== '' ? ` (events: ${events})` : ''}`,
    `enrolled    ${d.enrolledAt === null ? 'no' : `${iso(d.enrolledAt)} (${d.enrolment})`}`,
    `certificate ${d.certSerial ?? '-'}${d.certNotAfter !== null ? `, valid until ${iso(d.certNotAfter)}` : ''}`,
    ...certs.filter(c => c.revokedAt !== null).map(c => `revoked     ${c.serial} at ${iso(c.revokedAt)}`),
    `last seen   ${iso(d.lastSeen)}`,
    `messages    ${d.messages} accepted, ${d.rejected} rejected, last (epoch ${d.lastEpoch}, seq ${d.lastSeq})`,
    `held        ${d.held}`,
    ''
  ].join('\n')
}

/** `device enroll | sign-csr | list | show | revoke | release | command`. */
export function makeDeviceCommand (io: Io): Command {
  const device = new Command('device').description('enrol, inspect, revoke and command devices (ids: 1-64 of A-Z a-z 0-9 _ . -, starting with a letter or digit)')

  device.command('enroll')
    .description('make a key and certificate for a device that cannot (bundle: PEM key 0600, certificate, CA, PKCS#12 + password file, CoAP key)')
    .argument('<id>', 'device id (becomes the certificate CN and the MQTT username)')
    .option('-o, --out <dir>', 'directory for the bundle', '.')
    .option('--p12-password-file <file>', 'PKCS#12 password from this file (default: a random one, written to <id>.p12.pass)')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { out: string, p12PasswordFile?: string, json?: boolean }, cmd: Command) => {
      const password = opts.p12PasswordFile !== undefined ? readFileSync(opts.p12PasswordFile, 'utf8').replace(/\r?\n$/, '') : undefined
      const { result, config } = withDevices(cmd, io, ctx => enrolDevice(ctx, id, opts.out, password !== undefined ? { p12Password: password } : {}))
      await notifyDaemon(config)
      output(io, opts, result, () => `enrolled ${result.id}: certificate ${result.serial}, valid until ${result.notAfter}\n${Object.entries(result.files).map(([k, f]) => `  ${k.padEnd(11)} ${f}\n`).join('')}`)
    })

  device.command('sign-csr')
    .description('issue a certificate for a device that made its own key (the CSR\'s CN must be a valid device id)')
    .argument('<file>', 'PEM certificate request')
    .option('-o, --out <file>', 'write the certificate here (default: stdout)')
    .option('--coap-key-out <file>', 'write the device\'s CoAP key here (0600)')
    .option('--json', 'print JSON')
    .action(async (file: string, opts: { out?: string, coapKeyOut?: string, json?: boolean }, cmd: Command) => {
      let text: string
      try { text = readFileSync(file, 'utf8') } catch (err) { throw new Exit(EXIT.USAGE, `cannot read ${file}: ${(err as Error).message}`) }
      const { result, config } = withDevices(cmd, io, ctx => signCsr(ctx, text))
      if (opts.out !== undefined) writeFileSync(opts.out, result.cert, { mode: 0o644 })
      if (opts.coapKeyOut !== undefined) writeFileSync(opts.coapKeyOut, result.coapKey + '\n', { mode: 0o600 })
      await notifyDaemon(config)
      const { coapKey: _secret, ...shown } = result
      output(io, opts, { ...shown, certFile: opts.out ?? null, coapKeyFile: opts.coapKeyOut ?? null }, () =>
        opts.out === undefined ? result.cert : `signed ${result.id}: certificate ${result.serial}, valid until ${result.notAfter} -> ${opts.out}\n`)
    })

  device.command('list')
    .description('every device the gateway knows: status, trust score, last seen')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }, cmd: Command) => {
      const { result: list, config } = withDevices(cmd, io, ctx => ctx.registry.list())
      output(io, opts, list.map(d => ({ ...d, trustScore: d.trustScore ?? config.trust.initial })), () => list.length === 0
        ? 'no devices\n'
        : `${'DEVICE'.padEnd(24)} ${'STATUS'.padEnd(11)} ${'TRUST'.padStart(6)} ${'MESSAGES'.padStart(9)} ${'REJECTED'.padStart(9)}  LAST SEEN\n` +
          list.map(d => `${d.id.padEnd(24)} ${d.status.padEnd(11)} ${(d.trustScore ?? config.trust.initial).toFixed(1).padStart(6)} ${String(d.messages).padStart(9)} ${String(d.rejected).padStart(9)}  ${iso(d.lastSeen)}\n`).join(''))
    })

  device.command('show')
    .description('one device: status, trust score and the events behind it, certificates')
    .argument('<id>', 'device id')
    .option('--json', 'print JSON')
    .action((id: string, opts: { json?: boolean }, cmd: Command) => {
      const { result, config } = withDevices(cmd, io, ctx => ({ d: ctx.registry.get(id), certs: ctx.registry.certificates(id), refusals: new AlertStore(ctx.registry.db).refusalsOf(id) }))
      if (!result.d) throw new Exit(EXIT.FAILURE, `no device "${id}"`)
      const d = result.d
      output(io, opts, { ...d, trustScore: d.trustScore ?? config.trust.initial, certificates: result.certs, refusals: result.refusals }, () =>
        showText(d, config.trust.initial, result.certs) +
        // Why its messages were refused (written by the gateway once a minute; app/src/alerts/refusals.ts).
        result.refusals.map(r => `refused     ${r.reason} x${r.count}, last ${iso(r.lastAt)}: ${r.lastDetail}\n`).join(''))
    })

  device.command('revoke')
    .description('revoke a device: CRL and ACL rewritten (Mosquitto reloads them), the daemon drops its messages at once')
    .argument('<id>', 'device id')
    .option('--reason <text>', 'recorded in the audit log', 'revoked by operator')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { reason: string, json?: boolean }, cmd: Command) => {
      const { result, config } = withDevices(cmd, io, ctx => revokeDevice(ctx, id, opts.reason))
      const daemon = await notifyDaemon(config)
      output(io, opts, { ...result, daemonNotified: daemon }, () => `revoked ${id}: ${result.serials.length} certificate(s) on CRL #${result.crlNumber}; ACL updated${daemon ? '; gateway notified' : ' (gateway not reachable: it notices within a second when it runs)'}\n`)
    })

  device.command('release')
    .description('clear a quarantined device (its held messages go through the checks again unless --discard)')
    .argument('<id>', 'device id')
    .option('--discard', 'drop the messages held during the quarantine')
    .option('--json', 'print JSON')
    .action(async (id: string, opts: { discard?: boolean, json?: boolean }, cmd: Command) => {
      const { result, config } = withDevices(cmd, io, ctx => releaseDevice(ctx, id, opts.discard === true))
      await notifyDaemon(config)
      output(io, opts, result, () => `released ${id}: ${result.held} held message(s) resubmitted, ${result.discarded} discarded\n`)
    })

  device.command('command')
    .description('send a command to a device (QoS 1 on devices/<id>/commands, through the running gateway)')
    .argument('<id>', 'device id')
    .argument('<json>', 'a JSON object, e.g. \'{"action":"read_now"}\' or \'{"action":"set_interval","seconds":60}\'')
    .option('--json', 'print JSON')
    .action(async (id: string, text: string, opts: { json?: boolean }, cmd: Command) => {
      let command: unknown
      try { command = JSON.parse(text) } catch { throw new Exit(EXIT.USAGE, 'the command must be JSON') }
      const c = configFrom(cmd.optsWithGlobals(), io)
      let status: number
      let body: Record<string, unknown>
      try {
        const r = await apiRequest(c, 'POST', '/commands', { device: id, command }, 10000)
        status = r.status
        body = typeof r.body === 'object' && r.body !== null ? r.body : { error: String(r.body) }
      } catch (err) {
        if (err instanceof Exit) throw err
        throw new Exit(EXIT.UNREACHABLE, `gateway not reachable at ${apiBase(c)}: ${(err as Error).message}`)
      }
      if (status !== 202) throw new Exit(status >= 500 ? EXIT.UNREACHABLE : EXIT.FAILURE, `command refused (${status}): ${String(body.error)}`)
      output(io, opts, body, () => `sent to ${commandTopic(id)} (QoS 1, ${String(body.bytes)} bytes)\n`)
    })
  return device
}
