#!/bin/sh
# iot-gateway-firewall-stats - snapshot of the gateway's nftables table for the daemon's /metrics.
#
# Usage: iot-gateway-firewall-stats [STATE_DIR]     (default /run/iot-gateway-firewall)
#
# Run by iot-gateway-firewall-stats.timer every 15 s. Writes what `iot-gateway firewall stats`
# writes, byte for byte the same contract, without starting Node.js every 15 s on a Cortex-A53:
#   STATE_DIR/nft.json = the output of `nft -j list table inet iot_gateway` (counters, the
#   blocklist and rate-limit sets), mode 0644, replaced atomically (rename), so the unprivileged
#   daemon (app/src/firewall/monitor.ts) never reads half a file; an EMPTY file when the table is
#   not loaded, which the daemon reads as "no firewall". Any other failure of nft leaves the last
#   snapshot in place and fails the unit (the daemon shows the snapshot's age), as the CLI does.
#   STATE_DIR/wg.tsv = the WireGuard peers for the console and /metrics (app/src/wireguard/stats.ts):
#   the peer lines of `wg show all dump`, tab-separated: interface, peer public key, endpoint,
#   allowed IPs, latest handshake (Unix s, 0 = never), bytes received, bytes sent. The dump also
#   holds the interfaces' private keys and the preshared keys: awk drops those lines and that field
#   before anything is written, so no secret reaches the world-readable file. No wg, or no tunnel:
#   an empty file.
# The daemon reads both; it cannot run nft or wg itself (no CAP_NET_ADMIN).
set -u

dir=${1:-/run/iot-gateway-firewall}
[ -d "$dir" ] || { echo "iot-gateway-firewall-stats: $dir does not exist (the firewall unit makes it)" >&2; exit 1; }
umask 022

# WireGuard first: a failing nft below must not also take the tunnel's figures away.
wtmp=$dir/wg.tsv.$$.tmp
if command -v wg > /dev/null 2>&1; then
    # A peer line has 9 fields: interface, public key, preshared key, endpoint, allowed IPs,
    # latest handshake, rx, tx, keepalive; an interface line has 5 (with the private key).
    wg show all dump 2> /dev/null | awk -F '\t' 'NF == 9 { print $1 "\t" $2 "\t" $4 "\t" $5 "\t" $6 "\t" $7 "\t" $8 }' > "$wtmp"
else
    : > "$wtmp"
fi
chmod 0644 "$wtmp" && mv -f "$wtmp" "$dir/wg.tsv" || rm -f "$wtmp"

tmp=$dir/nft.json.$$.tmp
if ! nft -j list table inet iot_gateway > "$tmp" 2> "$tmp.err"; then
    if grep -qiE 'No such file or directory|does not exist' "$tmp.err"; then
        : > "$tmp"
    else
        echo "iot-gateway-firewall-stats: nft list failed: $(cat "$tmp.err")" >&2
        rm -f "$tmp" "$tmp.err"
        exit 1
    fi
fi
rm -f "$tmp.err"
chmod 0644 "$tmp" && mv -f "$tmp" "$dir/nft.json" || { rm -f "$tmp"; exit 1; }
