import { Command, Option } from 'commander'
import { chmodSync, mkdirSync, renameSync, writeFileSync } from 'node:fs'
import { buildConfig } from '../../config/load.js'
import type { Config } from '../../config/schema.js'
import { Nft } from '../../firewall/nft.js'
import { parseNftJson } from '../../firewall/monitor.js'
import { firewallPolicy } from '../../firewall/policy.js'
import { renderRuleset } from '../../firewall/ruleset.js'
import { SafeApply, stateFiles } from '../../firewall/safe-apply.js'
import { makeWatchdog, type WatchdogKind } from '../../firewall/watchdog.js'
import { isConfigError } from '../../lib/errors.js'
import { configFrom, EXIT, Exit, output, type Io } from '../io.js'

export const rulesetFor = (c: Config): string => renderRuleset(firewallPolicy(c, true))

/**
 * `firewall ...`: the small privileged part (CAP_NET_ADMIN) for the oneshot units and for operators.
 * The daemon never runs these; it reads what `stats` and `apply` leave in the state directory.
 */
export function makeFirewallCommand (io: Io, nft: Nft = new Nft()): Command {
  const fw = new Command('firewall').description('render, check and apply the nftables ruleset (table inet iot_gateway) with commit-confirm')
  const manager = (stateDir: string, kind: WatchdogKind = 'auto'): SafeApply => new SafeApply(nft, stateDir, makeWatchdog(kind))

  fw.command('render').description('print the ruleset rendered from the configuration').action((_o: unknown, cmd: Command) => {
    io.out(rulesetFor(configFrom(cmd.optsWithGlobals(), io)))
  })

  fw.command('check').description('render the ruleset and validate it with `nft -c` (changes nothing)').action(async (_o: unknown, cmd: Command) => {
    await nft.check(rulesetFor(configFrom(cmd.optsWithGlobals(), io)))
    io.out('ruleset OK\n')
  })

  fw.command('apply')
    .description('apply the ruleset atomically; it rolls back by itself unless `firewall confirm` follows within the timeout')
    .option('--confirm-timeout <seconds>', 'seconds to wait for `firewall confirm` (default: firewall.confirmTimeoutSeconds)', v => Number(v))
    .option('--boot', 'for the boot oneshot: no confirmation; an invalid configuration falls back to the built-in default policy (and exits 1)')
    .addOption(new Option('--watchdog <kind>', 'what rolls back: a transient systemd timer or a detached process').choices(['auto', 'systemd', 'process']).default('auto'))
    .option('--json', 'print JSON')
    .action(async (opts: { confirmTimeout?: number, boot?: boolean, watchdog: WatchdogKind, json?: boolean }, cmd: Command) => {
      let c: Config
      let fallback: string | null = null
      try {
        c = configFrom(cmd.optsWithGlobals(), io)
        firewallPolicy(c, true)
      } catch (err) {
        if (opts.boot !== true || !isConfigError(err)) throw err
        // At boot an open gateway is worse than a default one: load the shipped policy, and fail the unit.
        fallback = err.message
        c = buildConfig({})
      }
      const seconds = opts.boot === true ? null : (opts.confirmTimeout ?? c.firewall.confirmTimeoutSeconds)
      if (seconds !== null && (!Number.isInteger(seconds) || seconds < 1 || seconds > 86400)) throw new Exit(EXIT.USAGE, '--confirm-timeout must be a whole number of seconds (1-86400)')
      const r = await manager(c.firewall.stateDir, opts.watchdog).apply(rulesetFor(c), seconds, { boot: opts.boot === true, ...(fallback !== null ? { fallback } : {}) })
      const pending = r.pending
      output(io, opts, { id: r.id, pending }, () => pending === null
        ? `applied ruleset ${r.id}\n`
        : `applied ruleset ${r.id}; run \`iot-gateway firewall confirm\` within ${seconds}s or it is rolled back at ${new Date(pending.deadline).toISOString()}\n`)
      if (fallback !== null) throw new Exit(EXIT.FAILURE, `configuration invalid (${fallback}); the built-in default policy was applied instead`)
    })

  fw.command('confirm').description('keep the ruleset applied by the last `firewall apply`')
    .option('--id <id>', 'only if the pending apply is this one (iot-gateway-firewall-confirm, for the console)')
    .action(async (opts: { id?: string }, cmd: Command) => {
      const c = configFrom(cmd.optsWithGlobals(), io)
      const p = await manager(c.firewall.stateDir).confirm(opts.id)
      io.out(`confirmed ruleset ${p.id}\n`)
    })

  fw.command('rollback').description('restore the ruleset from before an unconfirmed apply, now').action(async (_o: unknown, cmd: Command) => {
    const c = configFrom(cmd.optsWithGlobals(), io)
    const r = await manager(c.firewall.stateDir).rollback({ reason: 'operator' })
    if (!r.rolledBack) throw new Exit(EXIT.FAILURE, 'nothing to roll back: no apply is waiting for confirmation')
    io.out(`rolled back ruleset ${r.id}\n`)
  })

  fw.command('status').description('pending confirmation, drop counters and blocklist').option('--json', 'print JSON').action(async (opts: { json?: boolean }, cmd: Command) => {
    const c = configFrom(cmd.optsWithGlobals(), io)
    const m = manager(c.firewall.stateDir)
    const pending = m.pending()
    const text = await nft.listJson()
    const snap = text === null ? null : parseNftJson(text, Date.now())
    const body = {
      loaded: snap !== null,
      pending: pending === null ? null : { ...pending, secondsLeft: Math.max(0, Math.round((pending.deadline - Date.now()) / 1000)) },
      counters: snap?.counters ?? [],
      blocklist: snap?.blocklist ?? [],
      rateLimited: snap?.rateLimited ?? []
    }
    output(io, opts, body, () => [
      `table inet iot_gateway: ${body.loaded ? 'loaded' : 'absent'}\n`,
      body.pending === null ? 'no apply waiting for confirmation\n' : `apply ${body.pending.id} waits for confirmation: ${body.pending.secondsLeft}s left\n`,
      ...body.counters.map(x => `  ${x.name.padEnd(20)} ${x.packets} packets\n`),
      ...body.blocklist.map(b => `  blocklisted ${b.address} (${b.expiresSeconds}s left)\n`)
    ].join(''))
  })

  fw.command('stats')
    .description('write `nft -j list table inet iot_gateway` to <stateDir>/nft.json for the daemon\'s /metrics (for the stats timer)')
    .option('--stdout', 'print it instead')
    .action(async (opts: { stdout?: boolean }, cmd: Command) => {
      const c = configFrom(cmd.optsWithGlobals(), io)
      const text = await nft.listJson() ?? ''
      if (opts.stdout === true) { io.out(text); return }
      const file = stateFiles(c.firewall.stateDir).stats
      mkdirSync(c.firewall.stateDir, { recursive: true, mode: 0o755 })
      const tmp = `${file}.${process.pid}.tmp`
      writeFileSync(tmp, text)
      chmodSync(tmp, 0o644)
      renameSync(tmp, file)
    })

  fw.command('watchdog', { hidden: true })
    .description('internal: wait for the deadline of apply <id> and roll it back unless confirmed')
    .requiredOption('--id <id>')
    .requiredOption('--state-dir <dir>')
    .action(async (opts: { id: string, stateDir: string }) => {
      const r = await new SafeApply(nft, opts.stateDir, makeWatchdog('process')).watch(opts.id)
      io.out(`${new Date().toISOString()} apply ${opts.id}: ${r}\n`)
    })
  return fw
}
