#!/bin/sh
# flash.sh - write the gateway's SD-card image to a card with bmaptool.
#
# Usage: scripts/flash.sh [-y] [--provision FILE] [IMAGE.wic.bz2] /dev/sdX
#   IMAGE defaults to the newest build/tmp/deploy/images/*/iot-gateway-image-*.rootfs.wic.bz2 of a
#   kas build (kas keeps its build directory in ./build). The .wic.bmap beside it is used.
#   -y  do not ask for confirmation.
#   --provision FILE  also write this gateway's settings (scripts/provision.sh make) onto the card's
#       boot partition, without mounting it; the first boot imports them into /data and deletes them.
# Refuses a device that is mounted (or has a mounted partition), that holds the running system
# (/ or /boot or swap), or that is not a whole block device. This overwrites the whole card,
# including the data partition: to update a device and keep its data use scripts/reflash.sh.
set -eu

die() { echo "flash.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }

# shellcheck source=disk-checks.sh
. "$(dirname "$0")/disk-checks.sh"
# --provision FILE is taken out before the image and the device are parsed
provision=""; n=$#
while [ "$n" -gt 0 ]; do
    a=$1; shift; n=$((n - 1))
    if [ "$a" = --provision ]; then
        [ "$n" -gt 0 ] || die "--provision needs a FILE"
        provision=$1; shift; n=$((n - 1))
        [ -f "$provision" ] || die "$provision: no such provisioning file"
    else set -- "$@" "$a"; fi
done
parse_image_and_disk "$@"

bmap="${image%.bz2}"; bmap="${bmap%.gz}"; bmap="${bmap%.xz}"; bmap="${bmap%.zst}.bmap"
[ -f "$bmap" ] || die "$bmap: the block map is missing (IMAGE_FSTYPES must contain wic.bmap)"
check_target_disk "$dev"
command -v bmaptool >/dev/null 2>&1 || die "bmaptool is not installed (Debian/Ubuntu: apt install bmap-tools)"

echo "image:  $image"
echo "device: $dev ($(disk_description "$dev"))"
confirm "Everything on $dev will be overwritten, including the data partition."
bmaptool copy --bmap "$bmap" "$image" "$dev"
sync
[ -z "$provision" ] || "$(dirname "$0")/provision.sh" write "$dev" "$provision"
echo "done: $dev"
