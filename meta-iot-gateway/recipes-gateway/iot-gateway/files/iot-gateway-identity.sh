#!/bin/sh
# iot-gateway-identity - print the gateway's identity where an operator without a shell can read
# it: on the console (the Pi's serial console) and in iot-gateway-identity.txt on the boot
# partition (vfat: readable on any computer that takes the SD card).
#
# Usage: iot-gateway-identity [CONFIG]        (default /etc/iot-gateway/gateway.json)
#
# The WireGuard public key is what the hub needs before the tunnel (and so SSH) can work; the CA
# fingerprint is what devices and provisioning pin; the gateway id names it. Run at every boot
# by iot-gateway-identity.service, after the first-boot identity and the tunnel's key are made.
# The boot partition's file is rewritten only when its content changes (a reflash replaces the
# boot partition, so the next boot writes it again). Lines are "name: value", for scripts:
#   gateway-id, wireguard-public-key, ca-sha256, ssh-host-key-ed25519 (with iot-gateway-ssh),
#   machine-id, os
set -u

config=${1:-/etc/iot-gateway/gateway.json}
BOOT=${IOTGW_IDENTITY_BOOT:-/boot}                    # variables for the tests only
RUNFILE=${IOTGW_IDENTITY_RUN:-/run/iot-gateway-identity/identity.txt}
GW=${IOTGW_IDENTITY_CLI:-/usr/bin/iot-gateway}
NODE=${IOTGW_IDENTITY_NODE:-node}
SSH_KEY=${IOTGW_IDENTITY_SSH_KEY:-/data/ssh/dropbear_ed25519_host_key}

# the effective configuration (file + defaults): gateway id and where the CA certificate is; the
# SHA-256 fingerprint of the CA certificate, as `openssl x509 -fingerprint -sha256` prints it
info=$($GW config check --config "$config" 2>/dev/null | $NODE -e '
  const fs = require("fs"), path = require("path"), { X509Certificate } = require("crypto")
  let s = ""; process.stdin.on("data", d => { s += d }).on("end", () => {
    let c; try { c = JSON.parse(s) } catch { console.log("unavailable\nunavailable (the configuration does not load)"); return }
    const ca = c.mqtt && c.mqtt.caFile ? c.mqtt.caFile : path.join(c.gateway.dataDir, "pki", "ca.crt")
    let fp; try { fp = new X509Certificate(fs.readFileSync(ca)).fingerprint256 } catch (e) { fp = "unavailable (" + ca + ": " + e.code + ")" }
    console.log(c.gateway.id); console.log(fp)
  })' 2>/dev/null)
id=$(printf '%s\n' "$info" | sed -n 1p)
ca=$(printf '%s\n' "$info" | sed -n 2p)
wg=$($GW wg pubkey --config "$config" 2>/dev/null) || wg="unavailable (iot-gateway wg pubkey failed; see the journal)"
ssh=""
if [ -f "$SSH_KEY" ] && command -v dropbearkey >/dev/null 2>&1; then
    ssh=$(dropbearkey -y -f "$SSH_KEY" 2>/dev/null | sed -n 's/^Fingerprint: //p')
fi
machine=$(cat /etc/machine-id 2>/dev/null || true)
os=$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-} ${BUILD_ID:-}")

text=$(
    echo "# IoT gateway identity (iot-gateway-identity.service, every boot)"
    echo "gateway-id: ${id:-unavailable}"
    echo "wireguard-public-key: $wg"
    echo "ca-sha256: ${ca:-unavailable}"
    [ -z "$ssh" ] || echo "ssh-host-key-ed25519: $ssh"
    echo "machine-id: ${machine:-unavailable}"
    echo "os: $os"
)
# the console and the journal (StandardOutput=journal+console)
printf '%s\n' "$text"

mkdir -p "$(dirname "$RUNFILE")" && printf '%s\n' "$text" > "$RUNFILE"
# The boot partition is a file system of its own (vfat on the card). Not `mountpoint`: the unit's
# ReadWritePaths=/boot bind-mounts /boot over itself in the unit's namespace, so /boot is a mount
# point there even where it is only a folder of the read-only root (QEMU: no boot partition).
if [ -n "${IOTGW_IDENTITY_BOOT:-}" ] || { [ -d "$BOOT" ] && [ "$(stat -c %d "$BOOT")" != "$(stat -c %d /)" ]; }; then
    file=$BOOT/iot-gateway-identity.txt
    # vfat: no write at all when nothing changed; otherwise a new file renamed over the old one
    if ! printf '%s\n' "$text" | cmp -s - "$file"; then
        printf '%s\n' "$text" > "$file.tmp" && sync "$file.tmp" 2>/dev/null; mv -f "$file.tmp" "$file" && sync
    fi
fi
exit 0
