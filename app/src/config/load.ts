import { join } from 'node:path'
import { checkField, envName, fromEnv, type FieldSpec } from './define.js'
import { crossCheck } from './checks.js'
import { CONFIG_VERSION, sections, type Config } from './schema.js'
import { ConfigError } from '../lib/errors.js'
import { mergeLayers, readLayers, sourcesOf, type Layers } from './layers.js'

export const DEFAULT_CONFIG_PATH = '/etc/iot-gateway/gateway.json'

function deepFreeze<T> (o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o)
    for (const v of Object.values(o)) deepFreeze(v)
  }
  return o
}

/**
 * Builds the configuration: defaults, then the file, then GATEWAY_* environment variables, then
 * explicit overrides (flags). Validated once; the result is frozen. Any problem is a ConfigError that
 * names the field and the reason.
 */
export function buildConfig (file: unknown, env: NodeJS.ProcessEnv = {}, overrides: Record<string, Record<string, unknown>> = {}): Config {
  if (file === null || typeof file !== 'object' || Array.isArray(file)) throw new ConfigError('(file)', 'must contain a JSON object')
  const raw = file as Record<string, unknown>
  const version = raw.version ?? CONFIG_VERSION
  if (version !== CONFIG_VERSION) throw new ConfigError('version', `unsupported configuration version ${JSON.stringify(version)} (this gateway reads version ${CONFIG_VERSION})`)
  const known = new Set(['version', '$comment', ...Object.keys(sections)])
  for (const k of Object.keys(raw)) if (!known.has(k)) throw new ConfigError(k, `unknown section (known: ${Object.keys(sections).join(', ')})`)

  const out: Record<string, unknown> = { version: CONFIG_VERSION }
  for (const [name, spec] of Object.entries(sections) as Array<[string, Record<string, FieldSpec>]>) {
    const given = raw[name] ?? {}
    if (given === null || typeof given !== 'object' || Array.isArray(given)) throw new ConfigError(name, 'must be an object')
    for (const k of Object.keys(given)) if (!(k in spec) && k !== '$comment') throw new ConfigError(`${name}.${k}`, 'unknown field')
    const section: Record<string, unknown> = {}
    for (const [key, field] of Object.entries(spec)) {
      const path = `${name}.${key}`
      let value: unknown = (given as Record<string, unknown>)[key] ?? field.default
      const envText = field.env === false ? undefined : env[envName(name, key)]
      if (envText !== undefined) value = fromEnv(`${path} (from ${envName(name, key)})`, field, envText)
      const over = overrides[name]?.[key]
      if (over !== undefined) value = over
      section[key] = checkField(path, field, value)
    }
    out[name] = section
  }
  const config = deepFreeze(out) as Config
  crossCheck(config)
  return config
}

export function loadConfig (path: string | undefined, env: NodeJS.ProcessEnv = process.env, overrides: Record<string, Record<string, unknown>> = {}): Config {
  return loadLayered(path, env, overrides).config
}

/**
 * The image's file, the per-gateway override on the data directory (layers.ts), the environment
 * and the flags, merged and validated by the one checker. An invalid value that came from the
 * override names the override's file, so an operator knows which file to fix.
 */
export function loadLayered (path: string | undefined, env: NodeJS.ProcessEnv = process.env, overrides: Record<string, Record<string, unknown>> = {}): { config: Config, layers: Layers } {
  const layers = readLayers(path, env, DEFAULT_CONFIG_PATH)
  try {
    return { config: buildConfig(mergeLayers(layers), env, overrides), layers }
  } catch (err) {
    if (err instanceof ConfigError) {
      const src = sourcesOf(layers, env)[err.field]
      if (src?.source === 'override') throw new ConfigError(`${err.field} (from ${layers.overridePath})`, err.message.slice(err.field.length + 2))
    }
    throw err
  }
}

/** Paths derived from dataDir, in one place. */
export const paths = (c: Config) => ({
  db: join(c.gateway.dataDir, 'gateway.db'),
  pkiDir: join(c.gateway.dataDir, 'pki'),
  caCert: c.mqtt.caFile !== '' ? c.mqtt.caFile : join(c.gateway.dataDir, 'pki', 'ca.crt'),
  mqttCert: c.mqtt.certFile !== '' ? c.mqtt.certFile : join(c.gateway.dataDir, 'pki', 'gateway.crt'),
  mqttKey: c.mqtt.keyFile !== '' ? c.mqtt.keyFile : join(c.gateway.dataDir, 'pki', 'gateway.key')
})
