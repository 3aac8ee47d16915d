#!/bin/sh
# iot-gateway-ssh-hostkeys DIR - make the SSH host keys of the gateway in DIR (the data partition)
# unless they exist. Idempotent: runs before every SSH session and changes nothing once the keys
# are there, so the host's identity (the operator's known_hosts) survives reboots and reflashes.
# A key is written under a temporary name and renamed, so a power cut never leaves half a key.
set -eu
dir=${1:?usage: iot-gateway-ssh-hostkeys DIR}
umask 077
mkdir -p "$dir"
for type in ed25519 ecdsa; do
    key=$dir/dropbear_${type}_host_key
    [ -s "$key" ] && continue
    rm -f "$key.tmp"
    dropbearkey -t "$type" -f "$key.tmp" >/dev/null
    sync "$key.tmp" 2>/dev/null || sync
    mv "$key.tmp" "$key"
    echo "iot-gateway-ssh-hostkeys: made the $type host key: $(dropbearkey -y -f "$key" | sed -n 's/^Fingerprint: //p')"
done
