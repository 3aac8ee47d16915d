# Argument parsing, disk safety checks and the confirmation shared by flash.sh and reflash.sh
# (sourced; needs die() and usage()).
# The whole disks that hold the running system: /, /boot, /usr, /var and active swap, followed
# through partitions, LVM, dm-crypt and RAID to the disks below them.
system_disks() {
    for m in / /boot /boot/efi /boot/firmware /usr /var; do
        findmnt -no SOURCE "$m" 2>/dev/null || true
    done
    tail -n +2 /proc/swaps 2>/dev/null | awk '{print $1}'
}
check_target_disk() { # check_target_disk DEV: refuse anything but an unused whole disk
    dev=$1
    [ -b "$dev" ] || die "$dev is not a block device"
    command -v lsblk >/dev/null 2>&1 || die "lsblk (util-linux) is needed to check $dev"
    type=$(lsblk -dno TYPE "$dev" 2>/dev/null || true)
    [ "$type" = disk ] || die "$dev is not a whole disk (lsblk type: ${type:-unknown}); give e.g. /dev/sdX or /dev/mmcblkN"
    name=$(lsblk -dno NAME "$dev")
    mounted=$(lsblk -nro NAME,MOUNTPOINT "$dev" | awk '$2 != "" {print "/dev/" $1 " on " $2}')
    [ -z "$mounted" ] || die "$dev is in use (unmount it first): $mounted"
    for src in $(system_disks); do
        case "$src" in /dev/*) ;; *) continue ;; esac
        for d in $(lsblk -nsro NAME,TYPE "$src" 2>/dev/null | awk '$2 == "disk" {print $1}'); do
            [ "$d" != "$name" ] || die "$dev holds the running system ($src): refusing to overwrite it"
        done
    done
    return 0
}
disk_description() {
    lsblk -dno SIZE,MODEL,TRAN "$1" 2>/dev/null | tr -s ' ' | sed 's/ *$//'
}

# parse_image_and_disk [-y] [IMAGE] DEVICE: sets yes, image (default: the newest kas build), dev and
# here (the repository); needs usage().
parse_image_and_disk() {
    yes=0
    while [ $# -gt 0 ]; do
        case "$1" in
            -y) yes=1; shift ;;
            -h|--help) usage 0 ;;
            --) shift; break ;;
            -*) usage ;;
            *) break ;;
        esac
    done
    case $# in
        1) image=""; dev=$1 ;;
        2) image=$1; dev=$2 ;;
        *) usage ;;
    esac
    here=$(cd "$(dirname "$0")/.." && pwd)
    if [ -z "$image" ]; then
        image=$(ls -t "$here"/build/tmp/deploy/images/*/iot-gateway-image-*.rootfs.wic.bz2 2>/dev/null | head -n 1 || true)
        [ -n "$image" ] || die "no image given and none found under build/tmp/deploy/images (run: kas build kas.yml)"
    fi
    [ -f "$image" ] || die "$image: no such image"
}

# confirm QUESTION: unless -y was given (parse_image_and_disk), ask QUESTION and go on only if the
# answer is "yes"; anything else, or no answer at all (stdin closed), aborts before a byte is written.
confirm() {
    [ "$yes" = 1 ] && return 0
    printf '%s Type "yes": ' "$1"
    answer=""
    read -r answer || true
    [ "$answer" = yes ] || die "aborted"
}
