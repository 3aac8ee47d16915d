import { loadConfig } from '../config/load.js'
import type { Config } from '../config/schema.js'

/** Where a command writes; tests pass their own. */
export interface Io {
  out: (text: string) => void
  err: (text: string) => void
  env: NodeJS.ProcessEnv
}

export const processIo = (): Io => ({
  out: t => { process.stdout.write(t) },
  err: t => { process.stderr.write(t) },
  env: process.env
})

/** Exit codes, stable for scripts. */
export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2, UNREACHABLE: 3 } as const

/** Thrown by a command to end with a message and an exit code. */
export class Exit extends Error {
  constructor (readonly code: number, message = '') { super(message) }
}

export function configFrom (opts: { config?: string }, io: Io): Config {
  return loadConfig(opts.config, io.env)
}

export const printJson = (io: Io, v: unknown): void => io.out(JSON.stringify(v, null, 2) + '\n')
