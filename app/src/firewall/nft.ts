import { spawn } from 'node:child_process'
import { FirewallError } from '../lib/errors.js'
import { TABLE_FAMILY, TABLE_NAME } from './ruleset.js'

export interface RunResult { code: number, stdout: string, stderr: string }

/** Runs nft with arguments and optional stdin. The one privileged side effect; tests inject a fake. */
export type NftRunner = (args: string[], input?: string) => Promise<RunResult>

export function spawnRunner (bin = process.env.IOTGW_NFT ?? 'nft'): NftRunner {
  return (args, input) => new Promise((resolve, reject) => {
    const p = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    p.stdout.on('data', (b: Buffer) => out.push(b))
    p.stderr.on('data', (b: Buffer) => err.push(b))
    p.once('error', e => reject(new FirewallError('NFT_MISSING', `cannot run ${bin}: ${e.message}`, { cause: e })))
    p.once('close', code => resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }))
    p.stdin.on('error', () => {})
    p.stdin.end(input ?? '')
  })
}

const absent = (r: RunResult): boolean => r.code !== 0 && /No such file or directory|does not exist/i.test(r.stderr)

/** The adaptor the firewall commands use: check, load, list our table. */
export class Nft {
  constructor (private readonly run: NftRunner = spawnRunner()) {}

  /** `nft -c -f -`: parses and validates against the kernel without changing anything. */
  async check (text: string): Promise<void> {
    const r = await this.run(['-c', '-f', '-'], text)
    if (r.code !== 0) throw new FirewallError('REJECTED', `nft rejected the ruleset: ${r.stderr.trim()}`)
  }

  /** `nft -f -`: one transaction; on error nothing changes. */
  async load (text: string): Promise<void> {
    const r = await this.run(['-f', '-'], text)
    if (r.code !== 0) throw new FirewallError('APPLY_FAILED', `nft could not load the ruleset: ${r.stderr.trim()}`)
  }

  /** Our table as nft prints it (with counter values and set elements), or null if it does not exist. */
  async listTable (): Promise<string | null> {
    const r = await this.run(['list', 'table', TABLE_FAMILY, TABLE_NAME])
    if (absent(r)) return null
    if (r.code !== 0) throw new FirewallError('LIST_FAILED', `nft list failed: ${r.stderr.trim()}`)
    return r.stdout
  }

  /** `nft -j list table`: what the stats timer writes for the daemon. */
  async listJson (): Promise<string | null> {
    const r = await this.run(['-j', 'list', 'table', TABLE_FAMILY, TABLE_NAME])
    if (absent(r)) return null
    if (r.code !== 0) throw new FirewallError('LIST_FAILED', `nft list failed: ${r.stderr.trim()}`)
    return r.stdout
  }
}
