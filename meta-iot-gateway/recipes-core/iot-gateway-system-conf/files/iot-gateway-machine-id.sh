#!/bin/sh
# iot-gateway-machine-id - keep /etc/machine-id the same across boots and reflashes, on /data.
#
# The root file system is read-only and ships /etc/machine-id EMPTY (oe-core does that for a
# read-only rootfs). systemd then makes up a new id at every boot and mounts it over the empty file
# (machine-id(5), "stateless" systems); systemd-machine-id-commit.service would save it only into
# a writable /etc, which this image never has. A new id at every boot means a new DHCP client id
# and DUID on the WAN (systemd-networkd derives both from it) and, with a persistent journal, a new
# journal directory each time.
#
# iot-gateway-machine-id.service runs this early at every boot, once /data is mounted and before
# systemd-networkd and the journal flush:
#  - /data/machine-id holds a valid id: bind-mount it (read-only) over /etc/machine-id;
#  - otherwise (first boot, or a wiped /data): commit the id this boot already runs with (the one
#    systemd put on /etc/machine-id), written atomically (temporary file, fsync, rename), then
#    bind-mount it as above. That is what systemd-machine-id-setup --commit does on a writable /etc.
# When the id this boot started with differs from the saved one (every boot after the first),
# journald, which read the id at its start, is restarted so that it files the journal under the
# saved id. (PID 1 keeps its copy; it only uses it for things that do not outlive the boot.)
#
# Exit status: 0 done or nothing to do; 1 error (/etc/machine-id then keeps this boot's id).
set -eu

prog=iot-gateway-machine-id
ETC_ID=${IOTGW_MACHINE_ID_ETC:-/etc/machine-id}       # variables for the tests only
SAVED=${IOTGW_MACHINE_ID_SAVED:-/data/machine-id}
RESTART_JOURNALD=${IOTGW_MACHINE_ID_RESTART_JOURNALD:-1}

say() { echo "$prog: $*" >&2; }
die() { say "$*"; exit 1; }
# 32 lowercase hex digits, not all zero: what systemd accepts in /etc/machine-id
valid() { printf '%s\n' "$1" | grep -qxE '[0-9a-f]{32}' && [ "$1" != 00000000000000000000000000000000 ]; }

current=$(cat "$ETC_ID" 2>/dev/null || true)
saved=""
[ -f "$SAVED" ] && saved=$(cat "$SAVED" 2>/dev/null || true)

if ! valid "$saved"; then
    [ -z "$saved" ] || say "$SAVED holds no valid machine id (\"$saved\"): committing a new one"
    id=$current
    if ! valid "$id"; then
        # systemd always provides one; this is only for a manual run on an odd system
        id=$(tr -d '-' < /proc/sys/kernel/random/uuid)
    fi
    tmp=$SAVED.tmp.$$
    (umask 0333; printf '%s\n' "$id" > "$tmp") || die "cannot write $tmp"
    # the id must be on the card before anything depends on it (power may fail at any time)
    sync "$tmp" 2>/dev/null || sync
    mv -f "$tmp" "$SAVED" || { rm -f "$tmp"; die "cannot rename $tmp to $SAVED"; }
    sync "$(dirname "$SAVED")" 2>/dev/null || sync
    say "committed machine id $id to $SAVED"
    saved=$id
fi

# a bind mount shows the device and inode of its source
if [ "$(stat -c %d:%i "$ETC_ID")" = "$(stat -c %d:%i "$SAVED")" ]; then
    say "$ETC_ID is already $SAVED ($saved)"
    exit 0
fi
# on top of systemd's own (tmpfs) bind mount: /etc/machine-id never shows an empty file meanwhile
mount --bind "$SAVED" "$ETC_ID" || die "cannot bind-mount $SAVED on $ETC_ID"
mount -o remount,bind,ro "$ETC_ID" || say "warning: could not make $ETC_ID read-only"
say "$ETC_ID is $saved (from $SAVED)"

if [ "$current" != "$saved" ] && [ "$RESTART_JOURNALD" = 1 ] && systemctl -q is-active systemd-journald.service 2>/dev/null; then
    # journald keeps the id it read at start in memory and names its files after it
    systemctl restart systemd-journald.service || say "warning: journald was not restarted; it keeps this boot's id $current until the next boot"
fi
