import { ConfigError } from '../lib/errors.js'

/**
 * The configuration is declared once as field specs with defaults; the TypeScript types are inferred
 * from the specs, so the schema, the defaults, the validation and the types cannot drift apart.
 */
interface Base { description: string, env?: false }
export type FieldSpec =
  | Base & { type: 'string', default: string, pattern?: RegExp, enum?: readonly string[] }
  | Base & { type: 'integer' | 'number', default: number, min?: number, max?: number }
  | Base & { type: 'boolean', default: boolean }
  | Base & { type: 'string[]', default: readonly string[], pattern?: RegExp }
  | Base & { type: 'object[]', default: readonly object[], item: (value: unknown, path: string) => object }

export type SectionSpec = Record<string, FieldSpec>

type FieldValue<F> =
  F extends { type: 'string', enum: readonly (infer E)[] } ? E
    : F extends { type: 'string' } ? string
      : F extends { type: 'integer' | 'number' } ? number
        : F extends { type: 'boolean' } ? boolean
          : F extends { type: 'string[]' } ? readonly string[]
            : F extends { type: 'object[]', item: (v: unknown, p: string) => infer O } ? readonly O[]
              : never

export type SectionValue<S extends SectionSpec> = { readonly [K in keyof S]: FieldValue<S[K]> }

export const defineSection = <const S extends SectionSpec>(spec: S): S => spec

function describe (v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v
}

export function checkField (path: string, spec: FieldSpec, value: unknown): unknown {
  switch (spec.type) {
    case 'string':
      if (typeof value !== 'string') throw new ConfigError(path, `must be a string, got ${describe(value)}`)
      if (spec.enum && !spec.enum.includes(value)) throw new ConfigError(path, `must be one of ${spec.enum.join(', ')}, got "${value}"`)
      if (spec.pattern && value !== '' && !spec.pattern.test(value)) throw new ConfigError(path, `"${value}" does not match ${spec.pattern}`)
      return value
    case 'integer':
    case 'number':
      if (typeof value !== 'number' || !Number.isFinite(value)) throw new ConfigError(path, `must be a number, got ${describe(value)}`)
      if (spec.type === 'integer' && !Number.isInteger(value)) throw new ConfigError(path, `must be an integer, got ${value}`)
      if (spec.min !== undefined && value < spec.min) throw new ConfigError(path, `must be >= ${spec.min}, got ${value}`)
      if (spec.max !== undefined && value > spec.max) throw new ConfigError(path, `must be <= ${spec.max}, got ${value}`)
      return value
    case 'boolean':
      if (typeof value !== 'boolean') throw new ConfigError(path, `must be true or false, got ${describe(value)}`)
      return value
    case 'string[]':
      if (!Array.isArray(value)) throw new ConfigError(path, `must be an array of strings, got ${describe(value)}`)
      return Object.freeze(value.map((v, i) => checkField(`${path}[${i}]`, { type: 'string', default: '', description: '', ...(spec.pattern ? { pattern: spec.pattern } : {}) }, v)))
    case 'object[]':
      if (!Array.isArray(value)) throw new ConfigError(path, `must be an array, got ${describe(value)}`)
      return Object.freeze(value.map((v, i) => Object.freeze(spec.item(v, `${path}[${i}]`))))
  }
}

/** Parses an environment variable's text into the field's type. */
export function fromEnv (path: string, spec: FieldSpec, text: string): unknown {
  switch (spec.type) {
    case 'string': return text
    case 'integer':
    case 'number': {
      const n = Number(text)
      if (text.trim() === '' || Number.isNaN(n)) throw new ConfigError(path, `environment value "${text}" is not a number`)
      return n
    }
    case 'boolean':
      if (/^(1|true|yes|on)$/i.test(text)) return true
      if (/^(0|false|no|off)$/i.test(text)) return false
      throw new ConfigError(path, `environment value "${text}" is not a boolean`)
    case 'string[]': return text.split(',').map(s => s.trim()).filter(s => s !== '')
    case 'object[]':
      try { return JSON.parse(text) } catch { throw new ConfigError(path, 'environment value is not JSON') }
  }
}

/** GATEWAY_<SECTION>_<KEY>, camelCase turned into SNAKE_CASE: uplink.batchMaxMessages -> GATEWAY_UPLINK_BATCH_MAX_MESSAGES. */
export const envName = (section: string, key: string): string =>
  `GATEWAY_${section}_${key}`.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()
