SUMMARY = "Time on a board without an RTC: the clock moved forward at boot, before the broker"
DESCRIPTION = "A Raspberry Pi 3 has no real-time clock. This moves the clock forward at boot to the \
latest time known on /data (saved by the gateway, systemd-timesyncd's clock file, the PKI's files) \
before Mosquitto, the gateway, the first-boot identity and the WireGuard tunnel start; keeps \
timesyncd's clock file on /data; and makes the first boot wait, at most 2 minutes, for a time sync \
before the gateway's CA and certificates are made. See app/docs/time.md."
SECTION = "base"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://${FILE_DIRNAME}/../../../LICENSE;md5=5bca9c920e769d83bd766aa9a54ccabf"

SRC_URI = " \
    file://iot-gateway-clock-advance.sh \
    file://iot-gateway-clock-advance.service \
    file://iot-gateway-time-wait.sh \
    file://iot-gateway-time-wait.service \
    file://mosquitto-iot-gateway-time.conf \
    file://iot-gateway-firstboot-time.conf \
    file://iot-gateway-service-time.conf \
    file://timesyncd-iot-gateway.conf \
    file://iot-gateway-time.tmpfiles \
"
S = "${UNPACKDIR}"

inherit allarch systemd

do_configure[noexec] = "1"
do_compile[noexec] = "1"

# iot-gateway-time-wait.service has no [Install]: the first-boot unit's drop-in pulls it in.
SYSTEMD_SERVICE:${PN} = "iot-gateway-clock-advance.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install() {
    install -D -m 0755 ${UNPACKDIR}/iot-gateway-clock-advance.sh ${D}${libexecdir}/iot-gateway-clock-advance
    install -D -m 0755 ${UNPACKDIR}/iot-gateway-time-wait.sh ${D}${libexecdir}/iot-gateway-time-wait
    install -D -m 0644 ${UNPACKDIR}/iot-gateway-clock-advance.service ${D}${systemd_system_unitdir}/iot-gateway-clock-advance.service
    install -D -m 0644 ${UNPACKDIR}/iot-gateway-time-wait.service ${D}${systemd_system_unitdir}/iot-gateway-time-wait.service
    # Drop-ins of units other recipes own (Mosquitto's, the gateway's, systemd's): only ordering,
    # and timesyncd's state on /data.
    install -D -m 0644 ${UNPACKDIR}/mosquitto-iot-gateway-time.conf ${D}${systemd_system_unitdir}/mosquitto.service.d/iot-gateway-time.conf
    install -D -m 0644 ${UNPACKDIR}/iot-gateway-firstboot-time.conf ${D}${systemd_system_unitdir}/iot-gateway-firstboot.service.d/iot-gateway-time.conf
    install -D -m 0644 ${UNPACKDIR}/iot-gateway-service-time.conf ${D}${systemd_system_unitdir}/iot-gateway.service.d/iot-gateway-time.conf
    install -D -m 0644 ${UNPACKDIR}/timesyncd-iot-gateway.conf ${D}${systemd_system_unitdir}/systemd-timesyncd.service.d/iot-gateway.conf
    install -D -m 0644 ${UNPACKDIR}/iot-gateway-time.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/iot-gateway-time.conf
}

FILES:${PN} = " \
    ${libexecdir}/iot-gateway-clock-advance \
    ${libexecdir}/iot-gateway-time-wait \
    ${systemd_system_unitdir} \
    ${nonarch_libdir}/tmpfiles.d/iot-gateway-time.conf \
"
# systemd-timesyncd (oe-core builds it into the systemd package with PACKAGECONFIG timesyncd, the
# default); date, stat, head, tr and timeout come from busybox or coreutils, whichever the image has.
RDEPENDS:${PN} = "systemd"
