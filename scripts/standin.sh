#!/usr/bin/env bash
# The arm64 stand-in of the image: the layer's units, configuration and the gateway booted together
# on a real arm64 kernel and systemd under qemu-system-aarch64 (what differs from the image:
# tests/STANDIN.md).
#
# Usage:
#   scripts/standin.sh build --out DIR [--set VAR=VALUE ...]
#       DIR/disk.img (the image's QEMU layout, from its wks file), DIR/vmlinuz, DIR/initrd.img.
#       --set: a knob of the layer's recipes, as local.conf would set it (IOT_GATEWAY_CLOUD_URL,
#       IOT_GATEWAY_TRUST_DIR, ...).
#   scripts/standin.sh boot --out DIR [--disk FILE] [--wan-fwd tcp::HOSTPORT-:PORT ...] [--lan-fwd tcp::HOSTPORT-:PORT ...]
#       execs QEMU (its PID is this process's: a SIGKILL is a power cut); the serial console is
#       stdin/stdout (root is logged in on it), QEMU's own messages go to stderr. Two NICs, each
#       on a QEMU user-mode network: eth0 (the WAN: DHCP, the host is 10.0.2.2) and wlan0 (the IoT
#       LAN in place of the Wi-Fi access point: the LAN knob's /24, the host is its .2). A
#       forward reaches the gateway on that interface, so the firewall sees it in that zone.
#       --disk: another copy of DIR/disk.img (e.g. one with a broken /data). timesyncd asks the
#       host (10.0.2.2, UDP 123) for the time, as a site's NTP server; without an answer the
#       first boot waits the layer's 2 minutes for a sync.
#   scripts/standin.sh check      exit 0 if this machine can build and boot it, else say why (exit 1)
#
# Needs root (mmdebstrap's root mode, file owners in the disk image), mmdebstrap, qemu-system-arm,
# qemu-user-static with binfmt_misc, e2fsprogs, fdisk (scripts/install-deps.sh installs them).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
layer=$repo/meta-iot-gateway
log() { echo "standin: [${SECONDS}s] $*" >&2; }
die() { log "error: $*"; exit 1; }

# binfmt_misc with qemu-aarch64: only the cold root file system build runs arm64 programs on the host.
binfmt() {
    local m=/proc/sys/fs/binfmt_misc
    [ -e $m/status ] || mount -t binfmt_misc binfmt_misc $m 2>/dev/null || return 1
    [ -e $m/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || return 1
    grep -q enabled $m/qemu-aarch64
}

check() {
    local missing=() t
    [ "$(id -u)" = 0 ] || { echo "needs root (file owners in the disk image, mmdebstrap's root mode)"; return 1; }
    for t in qemu-system-aarch64 mke2fs sfdisk python3 systemctl; do command -v $t >/dev/null || missing+=("$t"); done
    [ ${#missing[@]} = 0 ] || { echo "missing: ${missing[*]} (scripts/install-deps.sh)"; return 1; }
    # with a cached root file system, qemu-user and binfmt are not needed
    if ! ls "${XDG_CACHE_HOME:-$HOME/.cache}"/iot-gateway/standin/rootfs-*-"$(sha256sum "$here/standin-rootfs.sh" | cut -c1-16)".tar >/dev/null 2>&1; then
        command -v mmdebstrap >/dev/null || { echo "missing: mmdebstrap (scripts/install-deps.sh)"; return 1; }
        binfmt || { echo "binfmt_misc with qemu-aarch64 is not available (mount binfmt_misc; qemu-user-static, binfmt-support)"; return 1; }
    fi
    return 0
}

cmd=${1:-}; shift || true
out="" disk="" sets=() fwds=() lanfwds=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=${2:?}; shift 2 ;;
        --disk) disk=${2:?}; shift 2 ;;
        --set) sets+=("${2:?}"); shift 2 ;;
        --wan-fwd) fwds+=("${2:?}"); shift 2 ;;
        --lan-fwd) lanfwds+=("${2:?}"); shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done

case "$cmd" in
check) why=$(check) || { echo "$why"; exit 1; }; exit 0 ;;
build) ;;
boot)
    [ -n "$out" ] && [ -s "$out/disk.img" ] || die "boot: no $out/disk.img (run build first)"
    disk=${disk:-$out/disk.img}
    net="user,id=n0"
    for f in "${fwds[@]}"; do net+=",hostfwd=$f"; done
    lan=$(cat "$out/lan-address")  # e.g. 192.168.100.1/24
    lannet="user,id=n1,restrict=on,net=${lan%.*/*}.0/${lan#*/},host=${lan%.*/*}.2"
    for f in "${lanfwds[@]}"; do lannet+=",hostfwd=${f%-:*}-${lan%/*}:${f##*-:}"; done
    # net.ifnames=0: the layer's networkd files name eth0 (the Pi's); ro: the image's read-only root;
    # quiet: the kernel's and systemd's status lines cost time on an emulated UART (failures and
    # the units' own console output still show)
    exec qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 1024 -accel tcg,thread=multi \
        -display none -monitor none -serial stdio -no-reboot \
        -kernel "$out/vmlinuz" -initrd "$out/initrd.img" \
        -append "root=LABEL=$(cat "$out/root-label") ro rootwait console=ttyAMA0 quiet loglevel=4 net.ifnames=0 panic=-1" \
        -drive "file=$disk,format=raw,if=none,id=hd,cache=none" -device virtio-blk-pci,drive=hd \
        -netdev "$net" -device virtio-net-pci,netdev=n0,romfile=,mac=52:54:00:12:34:10 \
        -netdev "$lannet" -device virtio-net-pci,netdev=n1,romfile=,mac=52:54:00:12:34:20 \
        -object rng-random,filename=/dev/urandom,id=rng -device virtio-rng-pci,rng=rng
    ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

[ -n "$out" ] || die "build needs --out DIR"
why=$(check) || die "$why"
binfmt || true
rootfs=$("$here/standin-rootfs.sh")
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$out/work
rm -rf "$work"; mkdir -p "$work"
root=$work/root
log "extracting $(basename "$rootfs")"
mkdir -p "$root" && tar -xpf "$rootfs" -C "$root" --numeric-owner

# The gateway: its bundle (the recipe's do_compile is `npm run build`), Node 22 for arm64, the
# cross-built better-sqlite3 where the better-sqlite3 recipe installs it.
node_x64=$("$here/node22.sh")
(cd "$repo/app" && PATH="$node_x64:$PATH" npm run --silent build >&2)
node_arm64=$(NODE22_ARCH=arm64 "$here/node22.sh")
install -m 0755 "$node_arm64/node" "$root/usr/bin/node"
log "bundle and node done; the addon"
"$here/build-sqlite-addon.sh" --arch arm64 --stage "$root/usr/lib/iot-gateway" >/dev/null

# The layer's recipes, each with its own do_install (scripts/standin-layer.py).
knobs=(IOT_GATEWAY_SSH_FROM_WAN=0 "${sets[@]}")
log "installing the layer's recipes"
manifest=$(python3 "$here/standin-layer.py" "$layer" "$repo" "$root" "${knobs[@]}")
echo "$manifest" > "$out/manifest.json"
log "$manifest"

# Static users and groups (files/passwd, files/group of the layer: useradd-staticids). Debian's
# packages made some of them already (mosquitto) with other IDs: those get the layer's IDs and
# their files follow.
python3 - "$layer/files" "$root" "$manifest" <<'PY'
import json, os, sys
files, root, manifest = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def table(path):
    return [l.rstrip('\n').split(':') for l in open(path) if l.strip() and not l.startswith('#')]
remap = {}
for kind, idx in (('group', 2), ('passwd', 2)):
    mine = table(os.path.join(files, kind))
    theirs = table(os.path.join(root, 'etc', kind))
    names = {e[0]: e for e in theirs}
    for e in mine:
        if e[0] in names:
            old = names[e[0]]
            if old[idx] != e[idx]:
                remap[(kind, int(old[idx]))] = int(e[idx])
                old[idx] = e[idx]
                if kind == 'passwd':
                    old[3] = e[3]; old[5] = e[5]; old[6] = e[6]
        else:
            theirs.append(e)
            shadow = os.path.join(root, 'etc', 'gshadow' if kind == 'group' else 'shadow')
            with open(shadow, 'a') as f:
                f.write(('%s:!::\n' % e[0]) if kind == 'group' else ('%s:!:19000:0:99999:7:::\n' % e[0]))
    if kind == 'group':
        for user, group in manifest['members']:
            for g in theirs:
                if g[0] == group and user not in g[3].split(','):
                    g[3] = ','.join([m for m in g[3].split(',') if m] + [user])
    with open(os.path.join(root, 'etc', kind), 'w') as f:
        f.write(''.join(':'.join(e) + '\n' for e in theirs))
for dirpath, dirs, fnames in os.walk(root):
    for n in dirs + fnames:
        p = os.path.join(dirpath, n)
        st = os.lstat(p)
        uid = remap.get(('passwd', st.st_uid), st.st_uid)
        gid = remap.get(('group', st.st_gid), st.st_gid)
        if (uid, gid) != (st.st_uid, st.st_gid):
            os.lchown(p, uid, gid)
PY

# Units: what the recipes enable (SYSTEMD_SERVICE with SYSTEMD_AUTO_ENABLE), plus what oe-core's
# systemd enables and Debian does not (networkd, resolved).
# shellcheck disable=SC2046
systemctl --root="$root" enable --quiet systemd-networkd.service systemd-resolved.service \
    $(python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["enable"]))' <<<"$manifest")

# --- Where the stand-in differs from the image (tests/STANDIN.md) ---
# The disk layout of the image's wks file for QEMU.
mapfile -t parts < <(python3 "$here/standin-layer.py" wks "$layer" "${knobs[@]}")
{
    echo "# the image's partitions (its wks file), by label as wic writes them"
    for p in "${parts[@]}"; do
        read -r mnt label fstype _ opts _ passno <<<"$p"
        if [ "$mnt" = / ]; then
            echo "LABEL=$label / $fstype ro 0 1"; echo "$label" > "$out/root-label"
        elif [ "$mnt" != - ]; then
            [ "$opts" = - ] && opts=defaults
            echo "LABEL=$label $mnt $fstype $opts 0 $passno"
        fi
    done
    # read-only-rootfs: oe-core's volatile folders (tmpfs /var/volatile, /var/log and /var/tmp
    # point into it, /var/lib copied into it and bound over itself) and a tmpfs /tmp
    echo "tmpfs /var/volatile tmpfs mode=0755,nodev,nosuid 0 0"
    echo "tmpfs /tmp tmpfs mode=1777,nodev,nosuid 0 0"
} > "$root/etc/fstab"
for v in log tmp; do rm -rf "${root:?}/var/$v"; ln -s volatile/$v "$root/var/$v"; done
mkdir -p "$root/var/volatile" "$root/data"
echo "d /var/volatile/log 0755 root root -" > "$root/usr/lib/tmpfiles.d/00-standin-volatile.conf"
echo "d /var/volatile/tmp 1777 root root -" >> "$root/usr/lib/tmpfiles.d/00-standin-volatile.conf"
cat > "$root/usr/lib/systemd/system/standin-var-lib.service" <<'EOF'
[Unit]
Description=Stand-in: /var/lib copied to /var/volatile and bound over itself (oe-core's volatile-binds)
DefaultDependencies=no
RequiresMountsFor=/var/volatile
Before=local-fs.target systemd-tmpfiles-setup.service systemd-random-seed.service systemd-journal-flush.service

[Service]
Type=oneshot
RemainAfterExit=yes
# dpkg's and apt's databases stay behind: the image has no package manager
ExecStart=/bin/sh -c 'mkdir -p /var/volatile/lib /var/volatile/log /var/volatile/tmp && chmod 1777 /var/volatile/tmp && for d in /var/lib/*; do case $d in */dpkg|*/apt) ;; *) cp -a "$d" /var/volatile/lib/ ;; esac; done && mount --bind /var/volatile/lib /var/lib'

[Install]
WantedBy=local-fs.target
EOF
systemctl --root="$root" enable --quiet standin-var-lib.service
# The serial console: root is logged in (the test drives the gateway's CLI there).
mkdir -p "$root/etc/systemd/system/serial-getty@ttyAMA0.service.d"
cat > "$root/etc/systemd/system/serial-getty@ttyAMA0.service.d/standin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,38400,9600 %I linux
EOF
echo standin > "$root/etc/hostname"
# The site's NTP server is the host (QEMU's user network: 10.0.2.2); the test answers there, so
# the first boot's wait for a time sync (iot-gateway-time-wait.service) ends at once.
mkdir -p "$root/etc/systemd/timesyncd.conf.d"
printf '[Time]\nNTP=10.0.2.2\n' > "$root/etc/systemd/timesyncd.conf.d/standin.conf"
# The two NICs get the Pi's names: eth0 the WAN, wlan0 the IoT LAN (no Wi-Fi here: hostapd's
# condition keeps it off, as on a board without /data/hostapd/wpa_psk).
for n in eth0:10 wlan0:20; do
    printf '[Match]\nMACAddress=52:54:00:12:34:%s\n\n[Link]\nName=%s\n' "${n#*:}" "${n%:*}" \
        > "$root/etc/systemd/network/10-standin-${n%:*}.link"
done
printf '%s\n' "$(grep -h '^Address=' "$root/usr/lib/systemd/network/"*lan*.network | head -1 | cut -d= -f2)" > "$out/lan-address"
grep -q / "$out/lan-address" || die "no Address= in the layer's LAN .network file"
# oe-core's default target; Debian's units that the image does not have are not started
systemctl --root="$root" set-default multi-user.target >/dev/null 2>&1
# (Debian's package maintenance timers, and a getty on a VT that QEMU here has no display for)
systemctl --root="$root" disable --quiet nftables.service e2scrub_reap.service e2scrub_all.timer \
    apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer fstrim.timer getty@tty1.service 2>/dev/null || true

# The disk: partitions as the wks file says, each file system made from a folder (no loop device).
log "making the disk"
cp "$root"/boot/vmlinuz-* "$out/vmlinuz"
cp "$root"/boot/initrd.img-* "$out/initrd.img"
rm -f "$out/disk.img"
offset=1  # MiB; wic's --align 1024
table="label: dos"$'\n'
imgs=()
for p in "${parts[@]}"; do
    read -r mnt label fstype mib _ _ _ <<<"$p"
    if [ "$fstype" = none ]; then
        # root B: reserved for A/B updates, no file system, left as zeros (sparse) like wic leaves it
        table+="start=$((offset * 2048)), size=$((mib * 2048)), type=83"$'\n'
        offset=$((offset + mib))
        continue
    fi
    [ "$fstype" = ext4 ] || die "partition $label: only ext4 is made here ($fstype)"
    src=$work/empty-$label; mkdir -p "$src"
    if [ "$mnt" = / ]; then src=$root; fi
    used=$(du -sm "$src" | cut -f1)
    [ "$used" -lt $((mib * 9 / 10)) ] || die "partition $label: $used MiB of files do not fit into $mib MiB"
    mke2fs -q -F -t ext4 -L "$label" -d "$src" "$work/$label.ext4" "${mib}M" >/dev/null
    table+="start=$((offset * 2048)), size=$((mib * 2048)), type=83"$'\n'
    imgs+=("$offset:$work/$label.ext4")
    offset=$((offset + mib))
done
truncate -s $(((offset + 1) * 1024 * 1024)) "$out/disk.img"
sfdisk -q "$out/disk.img" <<<"$table" >/dev/null
for i in "${imgs[@]}"; do
    dd if="${i#*:}" of="$out/disk.img" bs=1M seek="${i%%:*}" conv=notrunc,sparse status=none
done
rm -rf "$work"
log "built $out/disk.img ($(du -sh --apparent-size "$out/disk.img" | cut -f1), partitions: $(printf '%s; ' "${parts[@]}"))"
