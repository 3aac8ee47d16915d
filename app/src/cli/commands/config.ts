import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { Command } from 'commander'
import { configReference } from '../../config/reference.js'
import { buildConfig, loadLayered } from '../../config/load.js'
import { checkOverrideShape, chownLikeParent, mergeLayers, sourcesOf, unitsToRestart, withSetting, withoutSetting, writeOverride, type Raw } from '../../config/layers.js'
import { writeFileAtomic } from '../../lib/atomic-file.js'
import { ConfigError } from '../../lib/errors.js'
import { configFrom, EXIT, Exit, output, printJson, type Io } from '../io.js'

/** The bearer token is a file beside the data, never a value in a configuration file. */
export const TOKEN_KEY = 'uplink.token'
export const defaultTokenFile = (dataDir: string): string => join(dataDir, 'uplink.token')

/** `config check | reference | show | set | unset`. */
export function makeConfigCommand (io: Io): Command {
  const config = new Command('config').description('check, show and change the configuration (image defaults, per-gateway override on /data, GATEWAY_* environment)')
  config.command('check')
    .description('validate the configuration (file + override + GATEWAY_* environment) and print the effective values')
    .action((_o: unknown, cmd: Command) => { printJson(io, configFrom(cmd.optsWithGlobals(), io)) })
  config.command('reference')
    .description('every field with its type, default, environment variable and meaning (Markdown)')
    .action(() => { io.out(configReference()) })

  config.command('show')
    .description('the merged configuration and where each value came from (default, image, override, env)')
    .option('--json', 'print JSON: { config, sources, files }')
    .action((opts: { json?: boolean }, cmd: Command) => {
      const { config: c, layers } = loadLayered(cmd.optsWithGlobals().config, io.env)
      const sources = sourcesOf(layers, io.env)
      output(io, opts, { config: c, sources, files: { image: layers.basePath ?? null, override: layers.overridePath } }, () =>
        `# image:    ${layers.basePath ?? '(none: defaults)'}\n# override: ${layers.overridePath}${Object.keys(layers.override).length === 0 ? ' (absent or empty)' : ''}\n` +
        Object.entries(sources).map(([key, src]) => {
          const [s, f] = key.split('.') as [string, string]
          const value = (c as unknown as Record<string, Record<string, unknown>>)[s]![f]
          return `${key} = ${JSON.stringify(value)}  (${src.source}${src.source === 'env' ? ' ' + src.from! : ''})\n`
        }).join(''))
    })

  config.command('set')
    .description(`write KEY=VALUE into this gateway's override on the data directory, after validating the whole result; ${TOKEN_KEY} writes the cloud token file (0600)`)
    .argument('<key>', 'SECTION.FIELD, e.g. uplink.url, gateway.id, wireguard.address')
    .argument('<value>', 'parsed as the GATEWAY_* variable is (a JSON array for lists)')
    .option('--restart', 'run `systemctl restart` on the units the change needs (on the gateway)')
    .action((key: string, value: string, opts: { restart?: boolean }, cmd: Command) => {
      const { config: c, layers } = loadLayered(cmd.optsWithGlobals().config, io.env)
      let restart: string[] = []
      if (key === TOKEN_KEY) {
        if (value.trim() === '' || /\s/.test(value.trim())) throw new ConfigError(key, 'must be one non-empty token without whitespace')
        const tokenFile = c.uplink.tokenFile !== '' ? c.uplink.tokenFile : defaultTokenFile(c.gateway.dataDir)
        if (c.uplink.tokenFile === '') {
          // The image set no token file: the override names one, and the gateway must restart to read it.
          const next = checkOverrideShape(layers.overridePath, withSetting(layers.override, 'uplink.tokenFile', tokenFile))
          buildConfig(mergeLayers({ base: layers.base, override: next }), io.env)
          writeFileAtomic(tokenFile, value.trim() + '\n', 0o600)
          chownLikeParent(tokenFile)
          writeOverride(layers.overridePath, next)
          restart = ['iot-gateway.service']
        } else {
          writeFileAtomic(tokenFile, value.trim() + '\n', 0o600)
          chownLikeParent(tokenFile)
        }
        io.out(`wrote the cloud token to ${tokenFile} (0600)\n`)
      } else {
        const next = setOverride(layers.overridePath, layers.base, layers.override, io.env, o => withSetting(o, key, value))
        io.out(`${key} = ${JSON.stringify(fieldValue(next, key))} written to ${layers.overridePath}\n`)
        restart = unitsToRestart(key)
      }
      restartUnits(io, restart, opts.restart === true)
    })

  config.command('unset')
    .description('remove KEY from this gateway\'s override (the image\'s value or the default applies again)')
    .argument('<key>', 'SECTION.FIELD')
    .option('--restart', 'run `systemctl restart` on the units the change needs')
    .action((key: string, opts: { restart?: boolean }, cmd: Command) => {
      const { layers } = loadLayered(cmd.optsWithGlobals().config, io.env)
      setOverride(layers.overridePath, layers.base, layers.override, io.env, o => withoutSetting(o, key))
      io.out(`${key} removed from ${layers.overridePath}\n`)
      restartUnits(io, unitsToRestart(key), opts.restart === true)
    })
  return config
}

/** Validates the whole merged configuration with the new override (the `config check` checker), then writes it. */
function setOverride (file: string, base: Raw, override: Raw, env: NodeJS.ProcessEnv, change: (o: Raw) => Raw): Raw {
  const next = checkOverrideShape(file, change(override))
  buildConfig(mergeLayers({ base, override: next }), env)
  writeOverride(file, next)
  return next
}

const fieldValue = (o: Raw, key: string): unknown => {
  const [s, f] = key.split('.') as [string, string]
  return (o[s] as Raw | undefined)?.[f]
}

function restartUnits (io: Io, units: string[], run: boolean): void {
  if (units.length === 0) { io.out('no restart needed: the gateway re-reads it\n'); return }
  const argv = ['systemctl', 'restart', ...units]
  if (!run) { io.out(`takes effect after: ${argv.join(' ')}\n`); return }
  io.out(`running: ${argv.join(' ')}\n`)
  const r = spawnSync(argv[0]!, argv.slice(1), { stdio: ['ignore', 'inherit', 'inherit'] })
  if (r.status !== 0) throw new Exit(EXIT.FAILURE, `${argv.join(' ')} failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`})`)
}
