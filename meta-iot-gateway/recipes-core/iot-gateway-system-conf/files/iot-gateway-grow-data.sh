#!/bin/sh
# iot-gateway-grow-data - grow the data partition (/data, label "data") to the end of its disk.
#
# Usage: iot-gateway-grow-data [PARTITION]    (default: the device of /dev/disk/by-label/data)
#
# The image's data partition has the size IOT_GATEWAY_DATA_SIZE; the SD card it is flashed to is
# bigger. iot-gateway-grow-data.service runs this script at every boot, before /data is mounted:
#  - the partition must be the last primary partition of an msdos (MBR) table, like the image's;
#    anything else is refused and nothing is written (exit 2);
#  - when less than 1 MiB (sfdisk's alignment grain) is unused after it, it is grown already:
#    nothing is written, exit 0 (cheap: a few sysfs reads and one read of the partition table);
#  - otherwise sfdisk moves the partition's END to the end of the disk. Its START never moves, so
#    the file system and every byte on it stay where they are, and scripts/reflash.sh (which only
#    checks that the data partition starts where the image's does) still accepts the card;
#  - partx tells the kernel the new size of this one partition (the disk's other partitions are
#    mounted, so a re-read of the whole table would fail with EBUSY).
#
# The FILE SYSTEM is grown by systemd, not here: the data partition's fstab entry (the wks files
# of meta-iot-gateway) has x-systemd.growfs, so systemd-growfs@data.service grows the mounted ext4
# online (the kernel's EXT4_IOC_RESIZE_FS: journaled, safe against power loss) right after
# data.mount, and does nothing when it already fills the partition. An offline resize2fs here
# would insist on a fresh full `e2fsck -f` of the data partition first (slow on a big card, and a
# second tool to ship); systemd-growfs needs neither. Growing the partition alone is harmless:
# ext4 does not care about space after its end until it is told to use it.
#
# Exit status: 0 grown or nothing to do, 1 error (the data partition is unchanged unless the
# message says otherwise), 2 refused (a layout this script does not handle; nothing written).
set -eu

prog=iot-gateway-grow-data
say() { echo "$prog: $*" >&2; }
die() { say "$*"; exit 1; }
refuse() { say "$*; nothing changed"; exit 2; }

# Less than this many unused 512-byte sectors after the partition: it counts as grown (sfdisk
# may leave the rest of its 1 MiB alignment grain unused, up to 2047 sectors).
SLACK=2048
# An msdos table cannot address sectors beyond 2^32 - 1.
MBR_LIMIT=4294967295

[ $# -le 1 ] || { echo "usage: $prog [PARTITION]" >&2; exit 2; }
arg=${1:-/dev/disk/by-label/data}
[ -e "$arg" ] || die "$arg does not exist (no partition with the label \"data\"?)"
part=$(readlink -f "$arg")
[ -b "$part" ] || die "$part is not a block device"
name=${part##*/}
sys=/sys/class/block/$name
[ -r "$sys/partition" ] || refuse "$part is not a partition (no $sys/partition)"
nr=$(cat "$sys/partition")
kstart=$(cat "$sys/start")
ksize=$(cat "$sys/size")
diskname=$(readlink -f "$sys/..")
diskname=${diskname##*/}
disk=/dev/$diskname
[ -b "$disk" ] && [ -r "/sys/class/block/$diskname/size" ] || die "cannot find the disk of $part (sysfs parent: $diskname)"
disksize=$(cat "/sys/class/block/$diskname/size")

# The partition table as written on the disk (not the kernel's view). libblkid (partx) counts in
# 512-byte sectors like sysfs, whatever the disk's sector size.
table() {
    partx -g -o NR,START,END,SCHEME "$disk" 2>/dev/null
}
tab=$(table) || refuse "$disk has no partition table that partx can read"
scheme=$(printf '%s\n' "$tab" | awk -v n="$nr" '$1 == n {print $4}')
[ -n "$scheme" ] || die "partition $nr of $disk ($part) is not in the partition table on the disk"
[ "$scheme" = dos ] || refuse "$disk has a $scheme partition table; only msdos (MBR, like the image) is handled"
[ "$nr" -le 4 ] || refuse "$part is a logical partition ($nr); only a primary partition is grown"
set -- $(printf '%s\n' "$tab" | awk -v n="$nr" '$1 == n {print $2, $3}')
start=$1 end=$2
[ "$start" = "$kstart" ] || die "the kernel has $part at sector $kstart, the table on $disk at $start: reboot first"
after=$(printf '%s\n' "$tab" | awk -v n="$nr" -v s="$start" '$1 != n && $2 >= s {print $1}' | tr '\n' ' ')
[ -z "$after" ] || refuse "$part (partition $nr) is not the last partition of $disk (partition(s) ${after% } follow it)"

usable=$disksize
[ "$usable" -le "$MBR_LIMIT" ] || usable=$MBR_LIMIT
[ "$end" -lt "$usable" ] || die "partition $nr of $disk ends at sector $end, beyond the disk's $disksize sectors"

# the kernel's view follows the table (a previous run may have stopped after writing the table)
sync_kernel() {
    want=$(( $2 - $1 + 1 ))
    [ "$(cat "$sys/size")" != "$want" ] || return 0
    partx -u --nr "$nr" "$disk" || die "partition $nr of $disk now ends at sector $2 on the disk, but the kernel was not told (partx -u failed): the next boot picks it up; the data is intact"
    got=$(cat "$sys/size")
    [ "$got" = "$want" ] || die "the kernel reports $got sectors for $part after partx -u, the table $want; the data is intact"
    # The new table makes udev re-probe the disk's partitions (its inotify watch on the disk sees
    # sfdisk's write), and while it does, /dev/disk/by-label/data can be briefly gone. This unit
    # runs just before systemd-fsck@ of that link, which is bound to it: starting the fsck in that
    # moment fails it, and with it data.mount, for the whole first boot (the arm64 stand-in boot
    # showed it). Wait until udev has handled the change.
    udevadm settle --timeout=60 || say "warning: udev has not settled after 60 s"
}

free=$(( usable - end - 1 ))
if [ "$free" -lt "$SLACK" ]; then
    sync_kernel "$start" "$end"
    say "$part (partition $nr of $disk) already reaches the end of the disk ($free sectors unused after it): nothing to do"
    exit 0
fi

say "growing $part (partition $nr of $disk) from $(( (end - start + 1) / 2048 )) MiB to the end of the disk ($(( free / 2048 )) MiB more); it keeps its start at sector $start"
old=$(sfdisk --dump "$disk") || die "sfdisk cannot read the partition table of $disk"
say "partition table before (restore with: sfdisk --no-reread $disk < this dump):"
printf '%s\n' "$old" >&2

# ", +": keep the start (empty field), size "+" = all the space up to the end of the disk.
# --no-reread: the disk's other partitions are in use; --no-tell-kernel: partx does that below,
# for this partition only; --wipe*: never touch a signature (the ext4 superblock stays put anyway);
# --lock: udev does not probe the disk in between.
SFDISK="sfdisk --no-reread --no-tell-kernel --lock --wipe never --wipe-partitions never"
if ! echo ', +' | $SFDISK -N "$nr" "$disk" >&2; then
    die "sfdisk could not grow partition $nr of $disk; the data is intact"
fi

tab=$(table) || die "cannot read the partition table of $disk after the change"
set -- $(printf '%s\n' "$tab" | awk -v n="$nr" '$1 == n {print $2, $3}') "" ""
if [ "$1" != "$start" ]; then
    # never expected (sfdisk keeps an omitted start); put the old table back before anything
    # reads the partition
    say "partition $nr of $disk moved from sector $start to ${1:-nowhere}: restoring the old table"
    printf '%s\n' "$old" | $SFDISK "$disk" >&2 || die "restoring the partition table of $disk failed; restore it from the dump above before mounting /data"
    die "partition $nr of $disk was not grown (the old table is back); the data is intact"
fi
newend=$2
[ $(( usable - newend - 1 )) -lt "$SLACK" ] || die "partition $nr of $disk ends at sector $newend after sfdisk, not at the end of the disk ($usable sectors); the data is intact"
sync_kernel "$start" "$newend"
say "grown: $part has $(( (newend - start + 1) / 2048 )) MiB now (was $(( ksize / 2048 )) MiB); systemd-growfs grows the file system after /data is mounted"
