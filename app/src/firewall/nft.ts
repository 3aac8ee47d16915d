import { FirewallError } from '../lib/errors.js'
import { runProcess, type RunResult } from '../lib/run-process.js'
import { TABLE_FAMILY, TABLE_NAME } from './ruleset.js'

export type { RunResult }

/** Runs nft with arguments and optional stdin. The one privileged side effect; tests inject a fake. */
export type NftRunner = (args: string[], input?: string) => Promise<RunResult>

export function spawnRunner (bin = process.env.IOTGW_NFT ?? 'nft'): NftRunner {
  return (args, input) => runProcess(bin, args, input ?? '').catch((e: Error) => {
    throw new FirewallError('GW_ERR_FIREWALL_NFT_MISSING', `cannot run ${bin}: ${e.message}`, { cause: e })
  })
}

const absent = (r: RunResult): boolean => r.code !== 0 && /No such file or directory|does not exist/i.test(r.stderr)

/** The adaptor the firewall commands use: check, load, list our table. */
export class Nft {
  constructor (private readonly run: NftRunner = spawnRunner()) {}

  /** `nft -c -f -`: parses and validates against the kernel without changing anything. */
  async check (text: string): Promise<void> {
    const r = await this.run(['-c', '-f', '-'], text)
    if (r.code !== 0) throw new FirewallError('GW_ERR_FIREWALL_REJECTED', `nft rejected the ruleset: ${r.stderr.trim()}`)
  }

  /** `nft -f -`: one transaction; on error nothing changes. */
  async load (text: string): Promise<void> {
    const r = await this.run(['-f', '-'], text)
    if (r.code !== 0) throw new FirewallError('GW_ERR_FIREWALL_APPLY_FAILED', `nft could not load the ruleset: ${r.stderr.trim()}`)
  }

  /** Our table as nft prints it (with counter values and set elements), or null if it does not exist. */
  async listTable (): Promise<string | null> {
    const r = await this.run(['list', 'table', TABLE_FAMILY, TABLE_NAME])
    if (absent(r)) return null
    if (r.code !== 0) throw new FirewallError('GW_ERR_FIREWALL_LIST_FAILED', `nft list failed: ${r.stderr.trim()}`)
    return r.stdout
  }

  /** `nft -j list table`: what the stats timer writes for the daemon. */
  async listJson (): Promise<string | null> {
    const r = await this.run(['-j', 'list', 'table', TABLE_FAMILY, TABLE_NAME])
    if (absent(r)) return null
    if (r.code !== 0) throw new FirewallError('GW_ERR_FIREWALL_LIST_FAILED', `nft list failed: ${r.stderr.trim()}`)
    return r.stdout
  }
}
