import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import type { Registry } from '../lib/metrics.js'

export interface WgPeer {
  interface: string
  publicKey: string
  /** host:port as WireGuard last saw it; null before any packet. */
  endpoint: string | null
  allowedIps: string[]
  /** Unix ms of the latest handshake; null when there was none. */
  latestHandshake: number | null
  rxBytes: number
  txBytes: number
}

export interface WgSnapshot {
  /** When the privileged stats unit wrote it (the file's mtime, ms). */
  at: number
  peers: WgPeer[]
}

/** The file the privileged stats unit writes next to nft.json (iot-gateway-firewall-stats). */
export const WG_STATS_FILE = 'wg.tsv'

/**
 * Parses what iot-gateway-firewall-stats writes: the peer lines of `wg show all dump` with the
 * preshared key left out (the unit drops it, and the interface lines with the private key, before
 * writing): interface, public key, endpoint, allowed IPs, latest handshake (Unix s, 0 = never),
 * received bytes, sent bytes; tab-separated, one peer a line. Malformed lines are skipped. Pure.
 */
export function parseWgStats (text: string, at: number): WgSnapshot {
  const peers: WgPeer[] = []
  for (const line of text.split('\n')) {
    const f = line.split('\t')
    if (f.length !== 7) continue
    const [iface, key, endpoint, allowed, hs, rx, tx] = f as [string, string, string, string, string, string, string]
    const n = [hs, rx, tx].map(Number)
    if (!/^[A-Za-z0-9+/]{43}=$/.test(key) || n.some(x => !Number.isSafeInteger(x) || x < 0)) continue
    peers.push({
      interface: iface,
      publicKey: key,
      endpoint: endpoint === '(none)' ? null : endpoint,
      allowedIps: allowed === '(none)' ? [] : allowed.split(','),
      latestHandshake: n[0]! > 0 ? n[0]! * 1000 : null,
      rxBytes: n[1]!,
      txBytes: n[2]!
    })
  }
  return { at, peers }
}

/**
 * The WireGuard peers as the privileged stats unit last saw them. The daemon has no CAP_NET_ADMIN,
 * so it cannot ask the kernel (or wireguard-go) itself; it reads the unit's file, at most once per
 * change of its mtime. Only the gateway's own tunnel interface is reported.
 */
export class WireguardStats {
  snapshot: WgSnapshot | null = null
  private mtime = -1
  private readonly file: string

  constructor (stateDir: string, readonly iface: string) {
    this.file = join(stateDir, WG_STATS_FILE)
  }

  /** One stat() when nothing changed. A missing file: no snapshot (the series are absent). */
  refresh (): WgSnapshot | null {
    let mtime: number
    try { mtime = statSync(this.file).mtimeMs } catch { this.snapshot = null; this.mtime = -1; return null }
    if (mtime === this.mtime) return this.snapshot
    let text: string
    try { text = readFileSync(this.file, 'utf8') } catch { return this.snapshot }
    this.mtime = mtime
    const all = parseWgStats(text, Math.round(mtime))
    this.snapshot = { at: all.at, peers: all.peers.filter(p => p.interface === this.iface) }
    return this.snapshot
  }

  /** For the console: the peers, or why there are none to show. */
  view (): { available: true, at: number, peers: WgPeer[] } | { available: false, why: string } {
    const s = this.refresh()
    if (s === null) return { available: false, why: 'no WireGuard figures from iot-gateway-firewall-stats yet (the privileged timer writes them every 15 s)' }
    if (s.peers.length === 0) return { available: false, why: `no peer on ${this.iface} (is the tunnel configured? see wireguard.* and \`iot-gateway wg setup\`)` }
    return { available: true, at: s.at, peers: s.peers }
  }

  register (metrics: Registry): void {
    const each = (value: (p: WgPeer) => number | null) => (): Array<[Record<string, string>, number]> =>
      (this.refresh()?.peers ?? []).flatMap(p => { const v = value(p); return v === null ? [] : [[{ interface: p.interface, peer: p.publicKey }, v]] })
    // A timestamp (absent before the first handshake), not an age: `time() - x` in the query.
    metrics.gauge('gateway_wireguard_last_handshake_timestamp_seconds', 'Latest WireGuard handshake with the peer (Unix seconds), as the privileged stats unit saw it; absent before the first.', each(p => p.latestHandshake === null ? null : p.latestHandshake / 1000))
    metrics.gauge('gateway_wireguard_received_bytes_total', 'Bytes received from the WireGuard peer (reset when the interface is recreated).', each(p => p.rxBytes), 'counter')
    metrics.gauge('gateway_wireguard_sent_bytes_total', 'Bytes sent to the WireGuard peer (reset when the interface is recreated).', each(p => p.txBytes), 'counter')
  }
}
