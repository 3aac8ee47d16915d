import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { Command } from 'commander'
import { configReference } from '../../config/reference.js'
import { buildConfig, loadLayered, paths } from '../../config/load.js'
import type { Config } from '../../config/schema.js'
import { renderMosquittoConf } from '../../broker/mosquitto-conf.js'
import { pkiPaths } from '../../pki/pki.js'
import { checkOverrideShape, chownLikeParent, mergeLayers, sourcesOf, unitsToRestart, withSetting, withoutSetting, writeOverride, type Raw } from '../../config/layers.js'
import { writeFileAtomic } from '../../lib/atomic-file.js'
import { ConfigError } from '../../lib/errors.js'
import { configFrom, EXIT, Exit, output, printJson, type Io } from '../io.js'
import { brokerOptions } from './render.js'

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
        const next = setOverride(layers.overridePath, layers.base, layers.override, io.env, o => withSetting(o, key, value), key)
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
      setOverride(layers.overridePath, layers.base, layers.override, io.env, o => withoutSetting(o, key), key)
      io.out(`${key} removed from ${layers.overridePath}\n`)
      restartUnits(io, unitsToRestart(key), opts.restart === true)
    })
  return config
}

/**
 * Where the image's Mosquitto reads its configuration: rendered at build time by `iot-gateway render
 * mosquitto` into the read-only root (meta-iot-gateway's mosquitto bbappend). IOT_GATEWAY_BROKER_CONF
 * names another file (tests; a system that renders it elsewhere).
 */
export const imageBrokerConf = (env: NodeJS.ProcessEnv): string => env.IOT_GATEWAY_BROKER_CONF ?? '/etc/mosquitto/iot-gateway.conf'

/**
 * Validates the whole merged configuration with the new override (the `config check` checker), and
 * refuses a change the running system cannot apply, then writes it. Mosquitto's configuration is
 * part of the image, so a setting that would change it (a port, a queue limit) would be taken by the
 * gateway and the firewall and not by the broker: devices would find the port closed. Likewise the
 * broker's certificate is issued once, at the first boot, for broker.names and broker.addresses.
 * Those are set at build time (or in the provisioning file, before the first boot).
 */
function setOverride (file: string, base: Raw, override: Raw, env: NodeJS.ProcessEnv, change: (o: Raw) => Raw, key: string): Raw {
  const next = checkOverrideShape(file, change(override))
  const after = buildConfig(mergeLayers({ base, override: next }), env)
  const before = buildConfig(mergeLayers({ base, override }), env)
  refuseFixedBroker(key, before, after, env)
  writeOverride(file, next)
  return next
}

function refuseFixedBroker (key: string, before: Config, after: Config, env: NodeJS.ProcessEnv): void {
  const conf = imageBrokerConf(env)
  if (existsSync(conf) && renderMosquittoConf(brokerOptions(before)) !== renderMosquittoConf(brokerOptions(after))) {
    throw new ConfigError(key, `would change the broker's configuration, which is fixed in this image (${conf}, rendered at build time): the broker would not follow it. Set it at build time (the image's gateway.json) and reflash`)
  }
  const cert = pkiPaths(paths(before).pkiDir).brokerCert
  const names = (c: Config): string => JSON.stringify([c.broker.names, c.broker.addresses])
  if (existsSync(cert) && names(before) !== names(after)) {
    throw new ConfigError(key, `the broker's certificate (${cert}) was issued at the first boot for ${names(before)}; it is not issued again, so devices would not find these names in it. Set broker.names and broker.addresses at build time or in the provisioning file, before the first boot`)
  }
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
