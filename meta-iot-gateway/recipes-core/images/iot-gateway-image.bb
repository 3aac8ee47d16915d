SUMMARY = "Read-only image of the IoT security gateway (Raspberry Pi 3, QEMU for tests)"
DESCRIPTION = "Mosquitto, nftables, WireGuard, hostapd and the gateway on a read-only root; the \
gateway's identity, outbox and keys live on the data partition that a reflash keeps."
LICENSE = "MIT"

inherit core-image

# Read-only root, no package manager (updates are reflashes of boot+root).
IMAGE_FEATURES += "read-only-rootfs"
IMAGE_FEATURES:remove = "package-management"

IMAGE_INSTALL = " \
    packagegroup-core-boot \
    ${CORE_IMAGE_EXTRA_INSTALL} \
    better-sqlite3 \
    hostapd \
    iot-gateway \
    iot-gateway-certs \
    iot-gateway-system-conf \
    kernel-modules \
    mosquitto \
    nftables \
    nodejs \
    wireguard-tools \
"
# kernel-modules: WireGuard and the nf_tables expressions are modules (the layer's kernel
# fragment), loaded on demand by wg/nft.

# Wi-Fi (the IoT LAN, wlan0): the chip's firmware and the regulatory database. IMAGE_INSTALL is
# set with "=" and no packagegroup-base, so MACHINE_EXTRA_RRECOMMENDS (where meta-raspberrypi
# lists the firmware: bcm43430 for the Pi 3 B, bcm43455 for the 3 B+) would reach nothing: take the
# machine's Wi-Fi firmware packages from there explicitly. QEMU machines list none. Bluetooth
# firmware is left out (the distro has no bluetooth). wireless-regdb-static is regulatory.db in
# /lib/firmware, which cfg80211 loads itself (no crda) to apply IOT_GATEWAY_WIFI_COUNTRY.
IOT_GATEWAY_WIFI_FIRMWARE ?= "${@' '.join(p for p in (d.getVar('MACHINE_EXTRA_RRECOMMENDS') or '').split() if p.startswith('linux-firmware-'))}"
IMAGE_INSTALL += "${IOT_GATEWAY_WIFI_FIRMWARE} wireless-regdb-static"

# The clock (timesyncd's clock file on /data, time-sync ordering): recipes-core/iot-gateway-time.
IMAGE_INSTALL += "iot-gateway-time"

# SSH for the operator: with IOT_GATEWAY_SSH_AUTHORIZED_KEYS (a file of public keys) the image gets
# dropbear, key-only, listening on the WireGuard tunnel's address, host keys on /data
# (recipes-core/iot-gateway-ssh). Without it a release image has no SSH server at all.
IOT_GATEWAY_SSH_AUTHORIZED_KEYS ?= ""
IMAGE_INSTALL += "${@'iot-gateway-ssh' if d.getVar('IOT_GATEWAY_SSH_AUTHORIZED_KEYS') else ''}"

# Partitions: boot (vfat, Pi only), root (ext4, read-only), data (ext4, /data). Fixed sizes keep
# the layout identical across releases (scripts/reflash.sh relies on it).
IOT_GATEWAY_BOOT_SIZE ?= "128M"
IOT_GATEWAY_ROOT_SIZE ?= "1024M"
IOT_GATEWAY_DATA_SIZE ?= "512M"
WKS_FILE = "iot-gateway-rpi.wks.in"
WKS_FILE:qemuall = "iot-gateway-qemu.wks.in"
IMAGE_FSTYPES:rpi = "wic.bz2 wic.bmap"
IMAGE_FSTYPES:qemuall = "wic"
