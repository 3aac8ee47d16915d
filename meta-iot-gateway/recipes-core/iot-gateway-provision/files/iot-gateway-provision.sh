#!/bin/sh
# iot-gateway-provision SOURCE - first boot: import this gateway's provisioning file, then delete it.
#   SOURCE: a directory (the mounted boot partition, /boot on the board), or an mtools drive spec
#   (a FAT partition's device, or IMAGE@@OFFSET) read and changed without mounting anything.
# The file (iot-gateway-provision.json, written by `scripts/flash.sh --provision`) is checked and
# written onto /data by `iot-gateway provision import` (the `config check` checker; modes 0600).
# It is deleted from the FAT partition whatever the outcome: secrets do not stay on a partition
# anyone with the card can read. Deleting a FAT file only marks its directory entry, and its
# clusters keep the bytes (any undelete tool reads them), so the file is first overwritten with
# zeros in place, the same size (the same clusters), and flushed. (The SD card's own wear levelling
# may still keep an old copy of those blocks where only chip-level forensics reads them: a card that
# leaves your hands should be wiped or destroyed.) A rejected file is kept for a fix as
# <data>/iot-gateway-provision.rejected.json (root, 0600); the error goes to the console and the
# journal, exit status 1 marks the unit failed, and nothing else waits for it: the gateway, SSH and
# the tunnel start with the image's settings, so the box stays reachable.
set -u
NAME=iot-gateway-provision.json
src="${1:?usage: iot-gateway-provision SOURCE}"
conf="${IOT_GATEWAY_CONFIG:-/etc/iot-gateway/gateway.json}"
gw="${IOT_GATEWAY_BIN:-/usr/bin/iot-gateway}"
rejected="${IOT_GATEWAY_PROVISION_REJECTED:-/data/iot-gateway-provision.rejected.json}"
say() { echo "iot-gateway-provision: $*"; }

umask 077
tmp=$(mktemp "${TMPDIR:-/run}/iot-gateway-provision.XXXXXX") || exit 1
zeros="$tmp.zeros"
trap 'rm -f "$tmp" "$zeros"' EXIT

if [ -d "$src" ]; then
    [ -f "$src/$NAME" ] || { say "no $NAME on $src: nothing to import"; exit 0; }
    fetch() { cat "$src/$NAME"; }
    # conv=notrunc: written over the file's own clusters (a truncate would free them, data and all)
    remove() {
        size=$(wc -c < "$src/$NAME") &&
            head -c "$size" /dev/zero | dd of="$src/$NAME" conv=notrunc,fsync 2>/dev/null &&
            rm -f "$src/$NAME" && sync
    }
else
    mdir -i "$src" "::$NAME" >/dev/null 2>&1 || { say "no $NAME on $src: nothing to import"; exit 0; }
    fetch() { mtype -i "$src" "::$NAME"; }
    # mcopy -o of a file of the same size rewrites the clusters it frees (mtools allocates the
    # first free ones)
    remove() {
        size=$(mtype -i "$src" "::$NAME" | wc -c) &&
            head -c "$size" /dev/zero > "$zeros" &&
            mcopy -o -i "$src" "$zeros" "::$NAME" && mdel -i "$src" "::$NAME"
    }
fi

if ! fetch > "$tmp"; then
    say "error: cannot read $NAME from $src"
    exit 1
fi
if out=$("$gw" provision import "$tmp" --config "$conf" 2>&1); then
    printf '%s\n' "$out"
    remove || { say "error: could not delete $NAME from $src: delete it by hand (it holds secrets)"; exit 1; }
    say "imported and deleted $NAME from $src"
    exit 0
fi
printf '%s\n' "$out" | sed 's/^/iot-gateway-provision: /'
cp "$tmp" "$rejected" && chmod 0600 "$rejected"
remove || say "error: could not delete $NAME from $src: delete it by hand (it holds secrets)"
say "error: $NAME was REJECTED (nothing imported). The gateway runs with the image's settings."
say "Fix it over SSH: edit $rejected, then: iot-gateway provision import $rejected"
exit 1
