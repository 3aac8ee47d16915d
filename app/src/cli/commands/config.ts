import { Command } from 'commander'
import { configReference } from '../../config/reference.js'
import { configFrom, printJson, type Io } from '../io.js'

/** `config check | reference`: validate a configuration, or print the reference made from the schema. */
export function makeConfigCommand (io: Io): Command {
  const config = new Command('config').description('check the configuration, or print its reference')
  config.command('check')
    .description('validate the configuration (file + GATEWAY_* environment) and print the effective values')
    .action((_o: unknown, cmd: Command) => { printJson(io, configFrom(cmd.optsWithGlobals(), io)) })
  config.command('reference')
    .description('every field with its type, default, environment variable and meaning (Markdown)')
    .action(() => { io.out(configReference()) })
  return config
}
