#!/bin/sh
# provision.sh - per-gateway provisioning files for one image flashed onto many cards.
#
# Usage:
#   scripts/provision.sh make CSV OUTDIR    one OUTDIR/<id>.json per CSV line, WireGuard key pairs,
#                                           and OUTDIR/hub-peers.conf for the operator's hub
#   scripts/provision.sh write TARGET FILE  copy FILE onto the boot (FAT) partition of TARGET (a card
#                                           or an image file) as iot-gateway-provision.json, with
#                                           mtools, without mounting anything (flash.sh --provision)
#
# CSV (a header line, then one gateway a line; empty fields are left out):
#   id,wg_address,uplink_url,token,wifi_ssid,wifi_passphrase,wifi_country,ssh_keys_file,pki_backup,pki_passphrase_file
# Options of make (environment): HUB_ENDPOINT (host:port the gateways dial), HUB_PUBLIC_KEY (the
# hub's key), HUB_ALLOWED_IPS (what the gateways route to the hub; default: the hub's /24).
# The files hold secrets (token, WireGuard private key, Wi-Fi passphrase): OUTDIR is made 0700.
set -eu
NAME=iot-gateway-provision.json
die() { echo "provision.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit "${1:-2}"; }

# The byte offset of the boot partition: the first FAT partition of an MBR (type b, c or e) or GPT
# (Microsoft basic data) table, else the first partition (wic puts boot first).
boot_offset() {
    command -v sfdisk >/dev/null 2>&1 || die "sfdisk is not installed (Debian/Ubuntu: apt install fdisk)"
    dump=$(sfdisk --dump "$1" 2>/dev/null) || die "$1: no partition table (is it the image?)"
    ss=$(printf '%s\n' "$dump" | sed -n 's/^sector-size: *\([0-9]*\).*/\1/p'); ss=${ss:-512}
    line=$(printf '%s\n' "$dump" | grep -E 'type=(b|c|e|EBD0A0A2-B9E5-4433-87C0-68B6B72699C7)(,|$)' | head -n 1)
    [ -n "$line" ] || line=$(printf '%s\n' "$dump" | grep 'start=' | head -n 1)
    start=$(printf '%s\n' "$line" | sed -n 's/.*start= *\([0-9]*\).*/\1/p')
    [ -n "$start" ] || die "$1: no boot partition found"
    echo $((start * ss))
}

write() {
    target=$1 file=$2
    [ -e "$target" ] || die "$target: no such card or image"
    [ -f "$file" ] || die "$file: no such provisioning file"
    command -v mcopy >/dev/null 2>&1 || die "mcopy is not installed (Debian/Ubuntu: apt install mtools)"
    off=$(boot_offset "$target")
    # -o: a card flashed again gets the new file; MTOOLS_SKIP_CHECK: wic's FAT geometry is fine
    MTOOLS_SKIP_CHECK=1 mcopy -o -i "$target@@$off" "$file" "::$NAME" || die "could not write $NAME onto $target"
    sync
    echo "provisioning: $file -> $target (boot partition at byte $off) as $NAME"
}

case "${1:-}" in
    write) [ $# -eq 3 ] || usage; write "$2" "$3" ;;
    make) [ $# -eq 3 ] || usage; shift; make "$@" ;;
    -h|--help) usage 0 ;;
    *) usage ;;
esac
