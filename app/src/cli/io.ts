import { statSync } from 'node:fs'
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

/**
 * A command's result: `value` as JSON with --json (what scripts read), else the text `human()`
 * makes for a person. The one place for that choice: every command that prints a result offers
 * `--json` and ends with this.
 */
export function output (io: Io, opts: { json?: boolean }, value: unknown, human: () => string): void {
  if (opts.json === true) printJson(io, value)
  else io.out(human())
}

/**
 * Run as root (an operator over SSH), the CLI becomes the owner of the data directory before it
 * touches anything, so the database, its WAL and the PKI files stay the daemon's.
 */
export function becomeDataOwner (dataDir: string): void {
  if (process.getuid?.() !== 0) return
  let st
  try { st = statSync(dataDir) } catch { return }
  if (st.uid === 0) return
  process.setgid!(st.gid)
  process.setuid!(st.uid)
}
