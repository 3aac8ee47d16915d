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
#   not loaded (nft fails), which the daemon reads as "no firewall".
# The daemon reads the counters; it cannot run nft itself (no CAP_NET_ADMIN).
set -u

dir=${1:-/run/iot-gateway-firewall}
[ -d "$dir" ] || { echo "iot-gateway-firewall-stats: $dir does not exist (the firewall unit makes it)" >&2; exit 1; }
tmp=$dir/nft.json.$$.tmp
umask 022
if ! nft -j list table inet iot_gateway > "$tmp" 2>/dev/null; then
    : > "$tmp"
fi
chmod 0644 "$tmp" && mv -f "$tmp" "$dir/nft.json" || { rm -f "$tmp"; exit 1; }
