# IoT gateway distro only: the gateway's broker configuration and a hardening drop-in.
FILESEXTRAPATHS:prepend:iot-gateway-os := "${THISDIR}/files:"
SRC_URI:append:iot-gateway-os = " file://iot-gateway.conf file://mosquitto-iot-gateway.conf file://journald-mosquitto.conf"

do_install:append:iot-gateway-os() {
    install -m 0644 ${UNPACKDIR}/iot-gateway.conf ${D}${sysconfdir}/mosquitto/iot-gateway.conf
    # IOT_GATEWAY_ACL_DENIALS = "0" (knob of the iot-gateway recipe): the gateway does not follow the
    # broker's log, so no debug lines (what `iot-gateway render mosquitto` prints for that config)
    if [ "${@d.getVar('IOT_GATEWAY_ACL_DENIALS') or '1'}" = "0" ]; then
        sed -i -e '/^# ACL denials (/,/^log_type debug$/d' ${D}${sysconfdir}/mosquitto/iot-gateway.conf
    fi
    install -D -m 0644 ${UNPACKDIR}/mosquitto-iot-gateway.conf \
        ${D}${systemd_system_unitdir}/mosquitto.service.d/iot-gateway.conf
    install -D -m 0644 ${UNPACKDIR}/journald-mosquitto.conf ${D}${nonarch_libdir}/systemd/journald@mosquitto.conf.d/10-iot-gateway.conf
}

FILES:${PN}:append:iot-gateway-os = " ${systemd_system_unitdir}/mosquitto.service.d ${nonarch_libdir}/systemd/journald@mosquitto.conf.d"
