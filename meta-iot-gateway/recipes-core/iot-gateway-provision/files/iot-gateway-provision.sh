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
# the tunnel start with the image's settings. A fleet's image has no tunnel address of its own, so
# the way in is taken from the rejected file when that part is valid by itself: its WireGuard
# settings and key and its SSH keys are imported alone (checked like a whole file), and nothing else.
set -u
NAME=iot-gateway-provision.json
src="${1:?usage: iot-gateway-provision SOURCE}"
conf="${IOT_GATEWAY_CONFIG:-/etc/iot-gateway/gateway.json}"
gw="${IOT_GATEWAY_BIN:-/usr/bin/iot-gateway}"
node="${IOT_GATEWAY_NODE:-node}"
rejected="${IOT_GATEWAY_PROVISION_REJECTED:-/data/iot-gateway-provision.rejected.json}"
say() { echo "iot-gateway-provision: $*"; }

umask 077
tmp=$(mktemp "${TMPDIR:-/run}/iot-gateway-provision.XXXXXX") || exit 1
zeros="$tmp.zeros"
trap 'rm -f "$tmp" "$zeros" "$tmp.way-in"' EXIT

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
# The way in alone: wireguard (config and key) and the SSH keys; exit 3 when the file has neither.
way_in="$tmp.way-in"
if "$node" -e '
    let p; try { p = JSON.parse(require("fs").readFileSync(0, "utf8")) } catch { process.exit(3) }
    const o = { version: 1 };
    if (p && p.config && p.config.wireguard !== undefined) o.config = { wireguard: p.config.wireguard };
    if (p && p.wireguardPrivateKey !== undefined) o.wireguardPrivateKey = p.wireguardPrivateKey;
    if (p && p.sshAuthorizedKeys !== undefined) o.sshAuthorizedKeys = p.sshAuthorizedKeys;
    if (Object.keys(o).length === 1) process.exit(3);
    process.stdout.write(JSON.stringify(o));' < "$tmp" > "$way_in" 2>/dev/null &&
    out=$("$gw" provision import "$way_in" --config "$conf" 2>&1); then
    printf '%s\n' "$out" | sed 's/^/iot-gateway-provision: /'
    rm -f "$way_in"
    say "error: $NAME was REJECTED: only its tunnel and SSH keys (above) were imported, so that the gateway can be reached; the rest of the gateway runs with the image's settings."
else
    rm -f "$way_in"
    say "error: $NAME was REJECTED (nothing imported). The gateway runs with the image's settings."
fi
say "Fix it over SSH: edit $rejected, then: iot-gateway provision import $rejected"
exit 1
