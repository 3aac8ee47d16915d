#!/usr/bin/env bash
# Builds the arm64 stand-in's root file system (Debian 12 packages that match what the image
# ships) as a tarball and prints its path. The tarball is cached under
# ${XDG_CACHE_HOME:-~/.cache}/iot-gateway/standin/, named by a hash of THIS file: the package list
# and the build steps below are its key, so editing either builds a new one, and nothing else
# (the layer's files are installed later, by scripts/standin.sh, in seconds).
#
# Cold, this takes about 15 minutes: every maintainer script runs under qemu-user. It needs root
# (mmdebstrap's root mode), mmdebstrap, and binfmt_misc with qemu-aarch64 (scripts/standin.sh
# registers it).
set -euo pipefail

# What the image (recipes-core/images/iot-gateway-image.bb) installs, in Debian's names:
# systemd with networkd/resolved/timesyncd (oe-core's systemd has them in one package), udev, the
# broker, the firewall and tunnel tools, hostapd (its drop-in and udev rule are the layer's; no
# Wi-Fi hardware here), sfdisk/partx for growing /data, and a kernel with modules; and
# mosquitto-clients, which conf/qemuarm64.yml adds to the testimage build for the layer's oeqa
# delivery cases (tests/oeqa-standin.test.mjs).
PACKAGES=(
  systemd systemd-sysv systemd-resolved systemd-timesyncd udev dbus kmod
  mosquitto mosquitto-clients nftables wireguard-tools iproute2 hostapd
  fdisk util-linux e2fsprogs procps
  linux-image-arm64 initramfs-tools
)
SUITE=bookworm
MIRROR=${STANDIN_MIRROR:-http://deb.debian.org/debian}

key=$(sha256sum "$0" | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/iot-gateway/standin
out=$cache/rootfs-$SUITE-arm64-$key.tar
if [ -s "$out" ]; then echo "$out"; exit 0; fi
mkdir -p "$cache"

command -v mmdebstrap >/dev/null || { echo "standin-rootfs: mmdebstrap is missing (scripts/install-deps.sh)" >&2; exit 1; }
echo "standin-rootfs: building $out (cold: ~15 min under qemu-user)" >&2

# The initramfs: MODULES=list with only what the virt machine needs to mount the root (the
# default, MODULES=most, runs for more than 10 minutes under emulation). A hook, not
# /etc/initramfs-tools/modules: that file is a conffile of initramfs-tools.
essential_hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"
echo MODULES=list > "$1/etc/initramfs-tools/conf.d/standin.conf"
cat > "$1/etc/initramfs-tools/hooks/standin" <<"EOF"
#!/bin/sh
case "$1" in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
for m in virtio_mmio virtio_pci virtio_blk virtio_net virtio_rng crc32c_generic ext4; do force_load "$m"; done
EOF
chmod 0755 "$1/etc/initramfs-tools/hooks/standin"'

# No daemons start inside the chroot; no documentation or apt lists in the image.
mmdebstrap --mode=root --architectures=arm64 --variant=minbase \
  --include="$(IFS=,; echo "${PACKAGES[*]}")" \
  --essential-hook="$essential_hook" \
  --customize-hook='rm -f "$1/etc/machine-id" && touch "$1/etc/machine-id"' \
  --customize-hook='ls "$1"/boot/vmlinuz-* "$1"/boot/initrd.img-* >/dev/null' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  "$SUITE" "$cache/partial-$key.tar" "$MIRROR" >&2
mv "$cache/partial-$key.tar" "$out"
echo "$out"
