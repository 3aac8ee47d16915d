import { Command } from 'commander'
import { existsSync } from 'node:fs'
import { AuditLog, verifyAudit } from '../../audit/audit.js'
import { paths } from '../../config/load.js'
import { openDatabase } from '../../store/db.js'
import { configFrom, EXIT, Exit, output, printJson, type Io } from '../io.js'

/** `audit verify | list`: the hash-chained security log, read without writing anything. */
export function makeAuditCommand (io: Io): Command {
  const audit = new Command('audit').description('the hash-chained security audit log')
  const open = (cmd: Command): ReturnType<typeof openDatabase> => {
    const file = paths(configFrom(cmd.optsWithGlobals(), io)).db
    if (!existsSync(file)) throw new Exit(EXIT.FAILURE, `no database at ${file}`)
    return openDatabase(file, { readonly: true })
  }

  audit.command('verify')
    .description('recompute the hash chain; exits 1 and names the first row that was edited, removed or inserted')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }, cmd: Command) => {
      const db = open(cmd)
      let r
      try { r = verifyAudit(db) } finally { db.close() }
      if (r.ok) { output(io, opts, r, () => `audit log intact: ${r.rows} rows, head ${r.head}\n`); return }
      if (opts.json === true) printJson(io, r) // a broken log: the JSON too, then exit 1
      throw new Exit(EXIT.FAILURE, `audit log broken at row ${r.brokenAt}: ${r.reason} (${r.rows} rows before it verify)`)
    })

  audit.command('list')
    .description('the newest security events first')
    .option('--limit <n>', 'at most this many', '50')
    .option('--device <id>', 'only this device')
    .option('--json', 'print JSON')
    .action((opts: { limit: string, device?: string, json?: boolean }, cmd: Command) => {
      const limit = Number(opts.limit)
      if (!Number.isInteger(limit) || limit < 1) throw new Exit(EXIT.USAGE, '--limit must be a positive integer')
      const db = open(cmd)
      let rows
      try { rows = new AuditLog(db).list({ limit, ...(opts.device !== undefined ? { device: opts.device } : {}) }) } finally { db.close() }
      output(io, opts, rows.map(r => ({ ...r, detail: JSON.parse(r.detail) as unknown })), () => rows.length === 0
        ? 'no events\n'
        : rows.map(r => `${String(r.id).padStart(6)}  ${new Date(r.at).toISOString()}  ${r.type.padEnd(22)} ${(r.device ?? '-').padEnd(20)} ${r.source ?? '-'}  ${r.detail}\n`).join(''))
    })
  return audit
}
