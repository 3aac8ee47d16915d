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
# The daemon reads the counters; it cannot run nft itself (no CAP_NET_ADMIN).
set -u

dir=${1:-/run/iot-gateway-firewall}
[ -d "$dir" ] || { echo "iot-gateway-firewall-stats: $dir does not exist (the firewall unit makes it)" >&2; exit 1; }
tmp=$dir/nft.json.$$.tmp
umask 022
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
