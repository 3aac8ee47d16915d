SUMMARY = "One image, many gateways: first-boot import of a gateway's provisioning file"
DESCRIPTION = "scripts/flash.sh --provision FILE writes iot-gateway-provision.json onto the card's \
boot partition. At first boot iot-gateway-provision.service validates it (the gateway's own \
configuration checker), imports it into /data with mode 0600 (the per-gateway override, the cloud \
token, the WireGuard key, SSH keys, Wi-Fi, a PKI backup), logs what it took and deletes it. Also \
the empty, gateway-only token file on /data that the image's gateway.json names. See app/docs/fleet.md."
HOMEPAGE = "https://github.com/iot-gateway/meta-iot-gateway"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = " \
    file://iot-gateway-provision.sh \
    file://iot-gateway-provision.service \
    file://iot-gateway-provision.tmpfiles \
"
S = "${UNPACKDIR}"

inherit allarch systemd

do_configure[noexec] = "1"
do_compile[noexec] = "1"

SYSTEMD_SERVICE:${PN} = "iot-gateway-provision.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install() {
    install -D -m 0755 ${UNPACKDIR}/iot-gateway-provision.sh ${D}${libexecdir}/iot-gateway-provision
    install -D -m 0644 ${UNPACKDIR}/iot-gateway-provision.service ${D}${systemd_system_unitdir}/iot-gateway-provision.service
    install -D -m 0644 ${UNPACKDIR}/iot-gateway-provision.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/iot-gateway-provision.conf
}

FILES:${PN} = " \
    ${libexecdir}/iot-gateway-provision \
    ${systemd_system_unitdir} \
    ${nonarch_libdir}/tmpfiles.d/iot-gateway-provision.conf \
"
# The gateway's CLI does the import (node: the way in taken from a rejected file); mtools only when
# the source is a device rather than /boot.
RDEPENDS:${PN} = "nodejs systemd"
