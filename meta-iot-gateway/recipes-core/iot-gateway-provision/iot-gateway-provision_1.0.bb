SUMMARY = "One image, many gateways: the per-gateway token file on /data"
DESCRIPTION = "The empty, gateway-only bearer-token file on /data that the image's gateway.json \
names (uplink.tokenFile). Each gateway's settings (id, cloud token, ...) live in its override on \
/data, written by `iot-gateway config set`. See app/docs/fleet.md."
HOMEPAGE = "https://github.com/iot-gateway/meta-iot-gateway"
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/MIT;md5=0835ade698e0bcf8506ecda2f7b4f302"

SRC_URI = "file://iot-gateway-provision.tmpfiles"
S = "${UNPACKDIR}"

inherit allarch

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -D -m 0644 ${UNPACKDIR}/iot-gateway-provision.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/iot-gateway-provision.conf
}

FILES:${PN} = "${nonarch_libdir}/tmpfiles.d/iot-gateway-provision.conf"
