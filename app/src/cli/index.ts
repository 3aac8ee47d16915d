import { Command, CommanderError } from 'commander'
import { isConfigError, isGatewayError, isUsageError } from '../lib/errors.js'
import { makeAuditCommand } from './commands/audit.js'
import { makeConfigCommand } from './commands/config.js'
import { makeDeviceCommand } from './commands/device.js'
import { makeOutboxCommand } from './commands/outbox.js'
import { makePkiCommand } from './commands/pki.js'
import { addPkiBackupCommands } from './commands/pki-backup.js'
import { makeProvisionCommand } from './commands/provision.js'
import { makeFirewallCommand } from './commands/firewall.js'
import { makeIdentityCommand } from './commands/identity.js'
import { makeRenderCommand } from './commands/render.js'
import { makeRunCommand, type RunHandle } from './commands/run.js'
import { makeStatusCommand } from './commands/status.js'
import { makeWgCommand } from './commands/wg.js'
import { EXIT, Exit, processIo, type Io } from './io.js'
import { VERSION } from '../lib/version.js'

export { VERSION }

export function makeProgram (io: Io, onStarted?: (h: RunHandle) => void): Command {
  const program = new Command('iot-gateway')
    .description('IoT security gateway: MQTT/TLS and CoAP in, durable outbox, HTTPS out')
    .version(VERSION)
    .option('-c, --config <file>', 'configuration file (default: $GATEWAY_CONFIG or /etc/iot-gateway/gateway.json)')
    .exitOverride()
    .configureOutput({ writeOut: s => io.out(s), writeErr: s => io.err(s) })
  for (const make of [makeRunCommand(io, onStarted), makeStatusCommand(io), makeOutboxCommand(io), addPkiBackupCommands(makePkiCommand(io), io), makeRenderCommand(io), makeDeviceCommand(io), makeAuditCommand(io), makeFirewallCommand(io), makeWgCommand(io), makeIdentityCommand(io), makeConfigCommand(io), makeProvisionCommand(io)]) {
    program.addCommand(make)
  }
  for (const c of program.commands) {
    c.exitOverride()
    for (const sub of c.commands) sub.exitOverride()
  }
  return program
}

/** Runs the CLI; resolves to the exit code (the bin shim sets process.exitCode). */
export async function run (argv: string[], io: Io = processIo(), onStarted?: (h: RunHandle) => void): Promise<number> {
  const program = makeProgram(io, onStarted)
  try {
    await program.parseAsync(argv)
    return EXIT.OK
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.OK
      return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE
    }
    if (err instanceof Exit) {
      if (err.message !== '') io.err(`error: ${err.message}\n`)
      return err.code
    }
    // Every configuration error exits 2, whichever command found it (a field `run` needs but others do not too).
    if (isConfigError(err)) { io.err(`error: configuration: ${err.message} (${err.code})\n`); return EXIT.USAGE }
    // A refused argument (a device id that cannot be one, the gateway's own id): bad usage, exit 2 as documented.
    if (isUsageError(err)) { io.err(`error: ${err.message} (${err.code})\n`); return EXIT.USAGE }
    if (isGatewayError(err)) { io.err(`error: ${err.message} (${err.code})\n`); return EXIT.FAILURE }
    io.err(`error: ${(err as Error).message}\n`)
    return EXIT.FAILURE
  }
}
