import { runProcess, type RunResult } from '../lib/run-process.js'
import { WireguardError } from '../lib/errors.js'
import { extraRoutes, type TunnelSpec } from './networkd.js'

export type CmdResult = RunResult
/** Runs `ip` or `wg`; tests inject a recorder. Keys are passed as file paths, never as arguments. */
export type CmdRunner = (bin: string, args: string[]) => Promise<CmdResult>

export const spawnCmd: CmdRunner = (bin, args) => runProcess(bin, args).catch((e: Error) => {
  throw new WireguardError('GW_ERR_WIREGUARD_TOOL_MISSING', `cannot run ${bin}: ${e.message}`, { cause: e })
})

/** The same settings as the networkd files, applied directly with `ip` and `wg` (tests, images without networkd). */
export class WgLink {
  constructor (private readonly run: CmdRunner = spawnCmd) {}

  private async must (bin: string, args: string[]): Promise<string> {
    const r = await this.run(bin, args)
    if (r.code !== 0) throw new WireguardError('GW_ERR_WIREGUARD_COMMAND_FAILED', `${bin} ${args.join(' ')} failed: ${r.stderr.trim()}`)
    return r.stdout
  }

  async exists (iface: string): Promise<boolean> {
    return (await this.run('ip', ['link', 'show', 'dev', iface])).code === 0
  }

  /**
   * Creates the link if it is missing (kernel WireGuard), or configures the one a userspace
   * implementation (wireguard-go) already made, then sets key, port, peer, address and routes.
   * Idempotent: running it twice gives the same state.
   */
  async up (t: TunnelSpec): Promise<void> {
    if (!await this.exists(t.interface)) {
      const r = await this.run('ip', ['link', 'add', 'dev', t.interface, 'type', 'wireguard'])
      if (r.code !== 0) {
        throw new WireguardError('GW_ERR_WIREGUARD_NO_KERNEL_SUPPORT', `cannot create ${t.interface} (${r.stderr.trim()}); without the kernel module start a userspace implementation first (wireguard-go ${t.interface}) and run this again`)
      }
    }
    const set = ['set', t.interface, 'listen-port', String(t.listenPort), 'private-key', t.privateKeyFile]
    if (t.hub !== null) {
      set.push('peer', t.hub.publicKey, 'endpoint', t.hub.endpoint, 'persistent-keepalive', t.hub.keepalive > 0 ? String(t.hub.keepalive) : 'off')
      if (t.hub.allowedIps.length > 0) set.push('allowed-ips', t.hub.allowedIps.join(','))
      if (t.presharedKeyFile !== '') set.push('preshared-key', t.presharedKeyFile)
    }
    await this.must('wg', set)
    await this.must('ip', ['address', 'replace', t.address, 'dev', t.interface])
    await this.must('ip', ['link', 'set', 'dev', t.interface, ...(t.mtu > 0 ? ['mtu', String(t.mtu)] : []), 'up'])
    for (const net of extraRoutes(t)) await this.must('ip', ['route', 'replace', net, 'dev', t.interface])
  }

  async down (iface: string): Promise<boolean> {
    if (!await this.exists(iface)) return false
    await this.must('ip', ['link', 'del', 'dev', iface])
    return true
  }
}
