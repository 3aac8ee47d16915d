#!/bin/sh
# reflash.sh - update a gateway's SD card in place: write the boot and root partitions of a new
# image and keep the data partition (/data: the device's identity, keys, queued messages).
#
# Usage: scripts/reflash.sh [-y] [IMAGE.wic[.bz2|.gz|.xz|.zst]] /dev/sdX
#   IMAGE defaults to the newest build/tmp/deploy/images/*/iot-gateway-image-*.rootfs.wic.bz2.
#   -y  do not ask for confirmation.
# The card must have the layout of the image (the wks file of meta-iot-gateway gives boot and
# root fixed sizes for this): partitions 1 (boot) and 2 (root) must start and end where the
# image's do, and partition 3 (data) must start where the image's does. Otherwise nothing is
# written: use scripts/flash.sh (which also overwrites the data partition).
# Refuses a device that is mounted or holds the running system, like flash.sh.
# For tests only: REFLASH_ALLOW_FILE=1 accepts a regular file as the target "disk".
set -eu

die() { echo "reflash.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }

# shellcheck source=disk-checks.sh
. "$(dirname "$0")/disk-checks.sh"

# mbr_part FILE N: "START SIZE" (512-byte sectors) of primary partition N of an MBR (msdos) table
mbr_part() {
    sig=$(od -An -tx1 -j 510 -N 2 "$1" | tr -d ' \n')
    [ "$sig" = 55aa ] || die "$1 has no MBR partition table"
    ptype=$(od -An -tx1 -j $((446 + 16 * ($2 - 1) + 4)) -N 1 "$1" | tr -d ' \n')
    [ "$ptype" != ee ] || die "$1 has a GPT partition table; the gateway's images use msdos"
    od -An -tu4 -j $((446 + 16 * ($2 - 1) + 8)) -N 8 "$1" | awk '{print $1, $2}'
}

parse_image_and_disk "$@"


if [ "${REFLASH_ALLOW_FILE:-0}" = 1 ] && [ -f "$dev" ]; then
    echo "reflash.sh: REFLASH_ALLOW_FILE=1: writing to the regular file $dev (test mode)" >&2
else
    check_target_disk "$dev"
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
case "$image" in
    *.bz2) bzip2 -dc "$image" > "$tmp/image.wic" ;;
    *.gz) gzip -dc "$image" > "$tmp/image.wic" ;;
    *.xz) xz -dc "$image" > "$tmp/image.wic" ;;
    *.zst) zstd -qdc "$image" > "$tmp/image.wic" ;;
    *) ln -s "$(cd "$(dirname "$image")" && pwd)/$(basename "$image")" "$tmp/image.wic" ;;
esac
raw=$tmp/image.wic

# the layouts must agree: p1 and p2 identical, p3 (data) at the same start
set -- $(mbr_part "$raw" 1) $(mbr_part "$raw" 2) $(mbr_part "$raw" 3)
i1s=$1 i1n=$2 i2s=$3 i2n=$4 i3s=$5
set -- $(mbr_part "$dev" 1) $(mbr_part "$dev" 2) $(mbr_part "$dev" 3)
d1s=$1 d1n=$2 d2s=$3 d2n=$4 d3s=$5 d3n=$6
[ "$i1n" -gt 0 ] && [ "$i2n" -gt 0 ] && [ "$i3s" -gt 0 ] || die "$image does not have boot, root and data partitions"
[ "$d3n" -gt 0 ] || die "$dev has no data partition (3): flash it with scripts/flash.sh"
if [ "$i1s $i1n $i2s $i2n $i3s" != "$d1s $d1n $d2s $d2n $d3s" ]; then
    die "the partition layout of $dev (boot $d1s+$d1n, root $d2s+$d2n, data at $d3s) differs from the image's (boot $i1s+$i1n, root $i2s+$i2n, data at $i3s): a reflash would damage the data partition; use scripts/flash.sh (erases /data)"
fi

echo "image:  $image"
echo "device: $dev"
echo "writes: partition 1 (boot, $((i1n / 2048)) MiB) and 2 (root, $((i2n / 2048)) MiB); keeps 3 (data)"
if [ "$yes" != 1 ]; then
    printf 'Overwrite boot and root of %s? Type "yes": ' "$dev"
    read -r answer
    [ "$answer" = yes ] || die "aborted"
fi
for p in "$i1s $i1n" "$i2s $i2n"; do
    set -- $p
    dd if="$raw" of="$dev" bs=4M iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc,fsync \
        skip=$(($1 * 512)) seek=$(($1 * 512)) count=$(($2 * 512)) status=none
done
sync
echo "done: $dev (data partition kept)"
