#!/bin/sh
# reflash.sh - update a gateway's SD card in place: write the boot partition and the active root
# slot of a new image and keep the data partition (/data: the device's identity, keys, queued
# messages).
#
# Usage: scripts/reflash.sh [-y] [IMAGE.wic[.bz2|.gz|.xz|.zst]] /dev/sdX
#   IMAGE defaults to the newest build/tmp/deploy/images/*/iot-gateway-image-*.rootfs.wic.bz2.
#   -y  do not ask for confirmation.
# The layout (meta-iot-gateway's wks files): 1 boot, 2 root A, 3 root B (reserved for A/B
# updates), 4 data, all primary. The card must have the image's layout: partitions 1-3 must start
# and end where the image's do (the wks files give them fixed sizes for this), and partition 4
# (data) must start where the image's does (it may have grown). Otherwise nothing is written: use
# scripts/flash.sh (which also overwrites the data partition).
# Writes partition 1 (boot) and partition 2 (root A). The image's boot partition boots root A, so
# root A is the active slot after the reflash, whichever slot an A/B update engine had made active
# before; root B and the data partition are not touched.
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

# the layouts must agree: p1, p2 and p3 identical, p4 (data) at the same start
set -- $(mbr_part "$raw" 1) $(mbr_part "$raw" 2) $(mbr_part "$raw" 3) $(mbr_part "$raw" 4)
i1s=$1 i1n=$2 i2s=$3 i2n=$4 i3s=$5 i3n=$6 i4s=$7
set -- $(mbr_part "$dev" 1) $(mbr_part "$dev" 2) $(mbr_part "$dev" 3) $(mbr_part "$dev" 4)
d1s=$1 d1n=$2 d2s=$3 d2n=$4 d3s=$5 d3n=$6 d4s=$7 d4n=$8
[ "$i1n" -gt 0 ] && [ "$i2n" -gt 0 ] && [ "$i3n" -gt 0 ] && [ "$i4s" -gt 0 ] || die "$image does not have the partitions boot, root A, root B and data (an image from before the A/B layout?)"
[ "$d4n" -gt 0 ] || die "$dev has no data partition (4): a card from before the A/B layout, or not a gateway's; flash it with scripts/flash.sh (erases /data)"
if [ "$i1s $i1n $i2s $i2n $i3s $i3n $i4s" != "$d1s $d1n $d2s $d2n $d3s $d3n $d4s" ]; then
    die "the partition layout of $dev (boot $d1s+$d1n, root A $d2s+$d2n, root B $d3s+$d3n, data at $d4s) differs from the image's (boot $i1s+$i1n, root A $i2s+$i2n, root B $i3s+$i3n, data at $i4s): a reflash would damage the data partition; use scripts/flash.sh (erases /data)"
fi

echo "image:  $image"
echo "device: $dev"
echo "writes: partition 1 (boot, $((i1n / 2048)) MiB) and 2 (root A, $((i2n / 2048)) MiB, active after the reflash); keeps 3 (root B) and 4 (data)"
confirm "Overwrite boot and root A of $dev?"
for p in "$i1s $i1n" "$i2s $i2n"; do
    set -- $p
    dd if="$raw" of="$dev" bs=4M iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc,fsync \
        skip=$(($1 * 512)) seek=$(($1 * 512)) count=$(($2 * 512)) status=none
done
sync
echo "done: $dev (data partition kept)"
