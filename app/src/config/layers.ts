import { chownSync, existsSync, readFileSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { envName, fromEnv, type FieldSpec } from './define.js'
import { CONFIG_VERSION, sections } from './schema.js'
import { ConfigError } from '../lib/errors.js'
import { writeFileAtomic } from '../lib/atomic-file.js'

/**
 * Layered configuration, for one image flashed onto many gateways:
 *   1. the schema's defaults;
 *   2. the image's file (/etc/iot-gateway/gateway.json, read-only root: the build's knobs);
 *   3. this gateway's override, <dataDir>/gateway.json on /data (what `config set` and first-boot
 *      provisioning write; a reflash of boot+root keeps it);
 *   4. GATEWAY_* environment variables;
 *   5. flags.
 * The override is located by gateway.dataDir as the image and the environment set it, so the
 * override itself may not move the data directory (it would be looking for itself elsewhere).
 */
export const OVERRIDE_NAME = 'gateway.json'

export type Raw = Record<string, unknown>
export type Source = 'default' | 'image' | 'override' | 'env' | 'flag'

export interface Layers {
  basePath: string | undefined
  base: Raw
  overridePath: string
  override: Raw
}

function parseJsonFile (file: string): unknown {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(file, `cannot read configuration file (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    throw new ConfigError(file, `is not valid JSON: ${(err as Error).message}`)
  }
}

const isObject = (v: unknown): v is Raw => v !== null && typeof v === 'object' && !Array.isArray(v)

/** The override's own shape: known sections and fields only, and not gateway.dataDir. Errors name the file. */
export function checkOverrideShape (file: string, raw: unknown): Raw {
  if (!isObject(raw)) throw new ConfigError(file, 'must contain a JSON object')
  for (const [name, section] of Object.entries(raw)) {
    if (name === 'version') {
      if (section !== CONFIG_VERSION) throw new ConfigError(`${file}: version`, `unsupported configuration version ${JSON.stringify(section)}`)
      continue
    }
    if (name === '$comment') continue
    const spec = (sections as Record<string, Record<string, FieldSpec>>)[name]
    if (spec === undefined) throw new ConfigError(`${file}: ${name}`, `unknown section (known: ${Object.keys(sections).join(', ')})`)
    if (!isObject(section)) throw new ConfigError(`${file}: ${name}`, 'must be an object')
    for (const k of Object.keys(section)) {
      if (k === '$comment') continue
      if (!(k in spec)) throw new ConfigError(`${file}: ${name}.${k}`, 'unknown field')
      if (name === 'gateway' && (k === 'dataDir' || k === 'overrideFile')) throw new ConfigError(`${file}: gateway.${k}`, 'cannot be set in the per-gateway override: it locates the override (set it in the image\'s file or its GATEWAY_* variable)')
    }
  }
  return raw
}

/** Reads the image's file (absent default = all defaults, as before) and the override beside the data. */
export function readLayers (path: string | undefined, env: NodeJS.ProcessEnv, defaultPath: string): Layers {
  const named = path ?? (env.GATEWAY_CONFIG !== undefined && env.GATEWAY_CONFIG !== '' ? env.GATEWAY_CONFIG : undefined)
  const basePath = named ?? defaultPath
  let base: Raw = {}
  let baseUsed: string | undefined = basePath
  if (named === undefined && !existsSync(basePath)) {
    baseUsed = undefined
  } else {
    const parsed = parseJsonFile(basePath)
    if (!isObject(parsed)) throw new ConfigError('(file)', 'must contain a JSON object')
    base = parsed
  }
  const overridePath = overridePathFor(base, env)
  let override: Raw = {}
  // A test or a hand-made setup may keep its only file where the override would be: one layer, not two.
  if (baseUsed === undefined || resolve(baseUsed) !== resolve(overridePath)) {
    // Only an absent override means "none": one the process may not read is an error, not silently skipped.
    let text: string | undefined
    try { text = readFileSync(overridePath, 'utf8') } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError(overridePath, `cannot read the per-gateway override (${(err as NodeJS.ErrnoException).code ?? String(err)})`)
    }
    if (text !== undefined) {
      let parsed: unknown
      try { parsed = JSON.parse(text) } catch (err) { throw new ConfigError(overridePath, `is not valid JSON: ${(err as Error).message}`) }
      override = checkOverrideShape(overridePath, parsed)
    }
  }
  return { basePath: baseUsed, base, overridePath, override }
}

export function overridePathFor (base: Raw, env: NodeJS.ProcessEnv): string {
  const envFile = env[envName('gateway', 'overrideFile')]
  const fileFile = isObject(base.gateway) && typeof base.gateway.overrideFile === 'string' ? base.gateway.overrideFile : undefined
  const named = envFile ?? fileFile
  if (named !== undefined && named !== '') return named
  const envDir = env[envName('gateway', 'dataDir')]
  const fileDir = isObject(base.gateway) && typeof base.gateway.dataDir === 'string' ? base.gateway.dataDir : undefined
  const dataDir = envDir ?? fileDir ?? sections.gateway.dataDir.default
  return join(dataDir, OVERRIDE_NAME)
}

/** The image's file with the override's fields laid over it (field by field; arrays are replaced whole). */
export function mergeLayers (l: Pick<Layers, 'base' | 'override'>): Raw {
  const out: Raw = { ...l.base }
  for (const [name, section] of Object.entries(l.override)) {
    if (name === 'version' || name === '$comment') continue
    out[name] = { ...(isObject(l.base[name]) ? l.base[name] : {}), ...(section as Raw) }
  }
  return out
}

/** Where each field's value came from, 'section.key' -> source (with the file or variable). */
export function sourcesOf (l: Layers, env: NodeJS.ProcessEnv): Record<string, { source: Source, from?: string }> {
  const out: Record<string, { source: Source, from?: string }> = {}
  for (const [name, spec] of Object.entries(sections) as Array<[string, Record<string, FieldSpec>]>) {
    for (const [key, field] of Object.entries(spec)) {
      const v = envName(name, key)
      const has = (r: Raw): boolean => isObject(r[name]) && (r[name] as Raw)[key] !== undefined
      if (field.env !== false && env[v] !== undefined) out[`${name}.${key}`] = { source: 'env', from: v }
      else if (has(l.override)) out[`${name}.${key}`] = { source: 'override', from: l.overridePath }
      else if (has(l.base)) out[`${name}.${key}`] = { source: 'image', from: l.basePath }
      else out[`${name}.${key}`] = { source: 'default' }
    }
  }
  return out
}

/** The field spec of a dotted key, or a ConfigError naming the known ones. */
export function fieldOf (key: string): { section: string, name: string, spec: FieldSpec } {
  const [section, name, ...rest] = key.split('.')
  const s = (sections as Record<string, Record<string, FieldSpec>>)[section ?? '']
  if (s === undefined || name === undefined || rest.length > 0) throw new ConfigError(key, `not a configuration key (SECTION.FIELD; sections: ${Object.keys(sections).join(', ')})`)
  const spec = s[name]
  if (spec === undefined) throw new ConfigError(key, `unknown field (known in ${section}: ${Object.keys(s).join(', ')})`)
  return { section: section!, name, spec }
}

/**
 * Parses VALUE for KEY as the environment variable would be parsed (a JSON literal is also taken
 * for arrays and objects), and returns the new override (not yet written).
 */
export function withSetting (override: Raw, key: string, text: string): Raw {
  const { section, name, spec } = fieldOf(key)
  if (section === 'gateway' && (name === 'dataDir' || name === 'overrideFile')) throw new ConfigError(key, 'cannot be set in the per-gateway override (it locates the override)')
  let value: unknown
  if ((spec.type === 'string[]' || spec.type === 'object[]') && text.trim().startsWith('[')) {
    try { value = JSON.parse(text) } catch { throw new ConfigError(key, 'value starts with [ but is not JSON') }
  } else {
    value = fromEnv(key, spec, text)
  }
  const next: Raw = { version: CONFIG_VERSION, ...override }
  next[section] = { ...(isObject(override[section]) ? override[section] : {}), [name]: value }
  return next
}

/** Removes KEY from the override (the image's value or the default applies again). */
export function withoutSetting (override: Raw, key: string): Raw {
  const { section, name } = fieldOf(key)
  const next: Raw = { version: CONFIG_VERSION, ...override }
  if (isObject(override[section])) {
    const s = { ...override[section] }
    delete s[name]
    if (Object.keys(s).length === 0) delete next[section]
    else next[section] = s
  }
  return next
}

/**
 * Writes the override durably (temp file, fsync, rename, fsync of the directory). Run as root
 * (over SSH), the file is handed to the owner of the data directory so the gateway reads it.
 */
export function writeOverride (file: string, override: Raw): void {
  // 0644: settings only (the token, keys and passphrases are files of their own, 0600), and the
  // root-run units without CAP_DAC_OVERRIDE must read it.
  writeFileAtomic(file, JSON.stringify(override, null, 2) + '\n', 0o644)
  chownLikeParent(file)
}

export function chownLikeParent (file: string): void {
  if (process.getuid?.() !== 0) return
  const st = statSync(join(file, '..'))
  chownSync(file, st.uid, st.gid)
}

/**
 * Systemd units whose process reads a section at start, so a change to it needs their restart. The
 * firewall opens ports it reads from other sections (broker.lanPort, wireguard.listenPort, api.port:
 * firewall.services): without its restart a moved port stays closed, the tunnel's included.
 * iot-gateway-api-tunnel.service puts the API on wireguard.address:api.port (iot-gateway-api@.socket).
 */
const RESTARTS: Record<string, string[]> = {
  gateway: ['iot-gateway.service'],
  api: ['iot-gateway.service', 'iot-gateway-firewall.service', 'iot-gateway-api-tunnel.service'],
  broker: ['iot-gateway.service', 'mosquitto.service', 'iot-gateway-firewall.service'],
  mqtt: ['iot-gateway.service'],
  firewall: ['iot-gateway-firewall.service', 'iot-gateway.service'],
  wireguard: ['iot-gateway-wireguard.service', 'iot-gateway.service', 'iot-gateway-firewall.service', 'iot-gateway-api-tunnel.service']
}
export const unitsToRestart = (key: string): string[] => RESTARTS[key.split('.')[0] ?? ''] ?? ['iot-gateway.service']
