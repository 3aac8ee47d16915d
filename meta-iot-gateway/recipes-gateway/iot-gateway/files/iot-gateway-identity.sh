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
SSH_KEY=${IOTGW_IDENTITY_SSH_KEY:-/data/ssh/dropbear_ed25519_host_key}

# gateway id, WireGuard public key (made on first use) and the CA's SHA-256 fingerprint, as
# "name: value" lines, from one process (`iot-gateway identity`); a configuration that does not
# load leaves them unavailable
info=$($GW identity --config "$config" 2>/dev/null) || info=""
field() { printf '%s\n' "$info" | sed -n "s/^$1: //p"; }
id=$(field gateway-id)
wg=$(field wireguard-public-key)
ca=$(field ca-sha256)
[ -n "$info" ] || { wg="unavailable (iot-gateway identity failed; see the journal)"; ca="unavailable (the configuration does not load)"; }
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
