import { Command } from 'commander'
import { paths } from '../../config/load.js'
import { openDatabase } from '../../store/db.js'
import { Store } from '../../store/store.js'
import { configFrom, EXIT, Exit, output, type Io } from '../io.js'

function withStore<T> (cmd: Command, io: Io, fn: (s: Store) => T): T {
  const c = configFrom(cmd.optsWithGlobals(), io)
  const db = openDatabase(paths(c).db, { synchronous: c.outbox.synchronous })
  try { return fn(new Store(db)) } finally { db.close() }
}

/** `outbox stats | dead-letters | retry`: works on the database directly (WAL lets it run beside the daemon). */
export function makeOutboxCommand (io: Io): Command {
  const outbox = new Command('outbox').description('inspect the outbox and its dead letters')
  outbox.command('stats')
    .description('messages waiting, bytes, oldest, dead letters')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }, cmd: Command) => {
      const s = withStore(cmd, io, st => st.stats())
      output(io, opts, s, () => `depth ${s.depth}\nbytes ${s.bytes}\noldest ${s.oldestReceivedAt === null ? '-' : new Date(s.oldestReceivedAt).toISOString()}\ndead-letters ${s.deadLetters}\n`)
    })
  outbox.command('dead-letters')
    .description('list messages the cloud refused, with the reason')
    .option('--limit <n>', 'at most this many', '100')
    .option('--json', 'print JSON')
    .action((opts: { limit: string, json?: boolean }, cmd: Command) => {
      const limit = Number(opts.limit)
      if (!Number.isInteger(limit) || limit < 1) throw new Exit(EXIT.USAGE, '--limit must be a positive integer')
      const rows = withStore(cmd, io, st => st.listDeadLetters(limit))
      output(io, opts, rows, () => rows.length === 0 ? 'no dead letters\n' : rows.map(r => `${r.id}\t${r.device}\t${r.stream}\tseq=${r.seq}\tstatus=${r.status}\t${r.reason}\n`).join(''))
    })
  outbox.command('retry')
    .description('put dead letters back at the end of the outbox')
    .argument('[ids...]', 'dead-letter ids (see dead-letters)')
    .option('--all', 'all dead letters')
    .option('--json', 'print JSON')
    .action((ids: string[], opts: { all?: boolean, json?: boolean }, cmd: Command) => {
      if (opts.all !== true && ids.length === 0) throw new Exit(EXIT.USAGE, 'name dead-letter ids or pass --all')
      const nums = ids.map(Number)
      if (nums.some(n => !Number.isInteger(n) || n < 1)) throw new Exit(EXIT.USAGE, 'ids must be positive integers')
      const moved = withStore(cmd, io, st => st.retryDeadLetters(opts.all === true ? undefined : nums))
      output(io, opts, { moved }, () => `${moved} message(s) back in the outbox\n`)
    })
  return outbox
}
