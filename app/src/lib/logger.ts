/**
 * JSON lines on stdout (journald captures them; no in-process transports in a bundle). Child loggers
 * carry a `cap` field; keys named like key material are redacted wherever they appear.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error' | 'silent'
const LEVELS: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 }
const REDACT = /^(key|privateKey|private_key|token|password|secret|psk|authorization)$/i

export interface Logger {
  debug (msg: string, fields?: Record<string, unknown>): void
  info (msg: string, fields?: Record<string, unknown>): void
  warn (msg: string, fields?: Record<string, unknown>): void
  error (msg: string, fields?: Record<string, unknown>): void
  child (bindings: Record<string, unknown>): Logger
}

function redact (value: unknown, depth = 0): unknown {
  if (depth > 4 || value === null || typeof value !== 'object') return value
  if (value instanceof Error) {
    const code = (value as { code?: unknown }).code
    return { message: value.message, ...(code !== undefined ? { code } : {}) }
  }
  if (Array.isArray(value)) return value.map(v => redact(v, depth + 1))
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) out[k] = REDACT.test(k) ? '[redacted]' : redact(v, depth + 1)
  return out
}

export function createLogger (
  level: Level = 'info',
  bindings: Record<string, unknown> = {},
  write: (line: string) => void = line => { process.stdout.write(line) }
): Logger {
  const min = LEVELS[level]
  const emit = (lvl: Exclude<Level, 'silent'>, msg: string, fields?: Record<string, unknown>): void => {
    if (LEVELS[lvl] < min) return
    const rec = { time: new Date().toISOString(), level: lvl, ...bindings, msg, ...(fields ? redact(fields) as object : {}) }
    write(JSON.stringify(rec) + '\n')
  }
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: b => createLogger(level, { ...bindings, ...b }, write)
  }
}

export const silentLogger = createLogger('silent')
