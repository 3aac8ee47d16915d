SUMMARY = "System configuration of the IoT gateway image (networkd, hostapd, journald, /data)"
DESCRIPTION = "systemd-networkd for eth0 (WAN, DHCP) and wlan0 (IoT LAN with a DHCP server), \
the hostapd access point of the IoT LAN, a volatile journal, the /data mount point, the \
growth of the data partition to the end of the SD card, the machine id kept on /data and the \
alert when /data does not mount."
SECTION = "base"
LICENSE = "MIT"
# The repository's LICENSE; FILE_DIRNAME is in BB_BASEHASH_IGNORE_VARS, so no checkout path in signatures
LIC_FILES_CHKSUM = "file://${FILE_DIRNAME}/../../../LICENSE;md5=5bca9c920e769d83bd766aa9a54ccabf"

# Knobs (see the layer's README.md).
IOT_GATEWAY_LAN_ADDRESS ?= "192.168.100.1/24"
IOT_GATEWAY_WIFI_SSID ?= "iot-gateway"
IOT_GATEWAY_WIFI_COUNTRY ?= "DE"
IOT_GATEWAY_WIFI_CHANNEL ?= "6"
# Empty (default): no Wi-Fi secret in the image; each gateway's passphrase comes from provisioning
# (/data/wifi/iot-gateway-lan.conf, which may also set the SSID and the country) or from
# /data/hostapd/wpa_psk, and hostapd does not start until one of them exists.
IOT_GATEWAY_WIFI_PASSPHRASE ?= ""
IOT_GATEWAY_PERSISTENT_JOURNAL ?= "0"
# "1" (default): iot-gateway-grow-data.service grows the data partition to the end of the SD card
# at boot (the first boot on a bigger card; later boots find nothing to do) and systemd-growfs
# grows its ext4 (x-systemd.growfs in the wks files). "0": the unit is installed but not enabled;
# /data keeps IOT_GATEWAY_DATA_SIZE (the file system still grows to its partition).
IOT_GATEWAY_DATA_GROW ?= "1"

SRC_URI = " \
    file://10-iot-gateway-wan.network \
    file://20-iot-gateway-lan.network.in \
    file://journald-iot-gateway.conf \
    file://resolved-iot-gateway.conf \
    file://hostapd-iot-gateway.conf.in \
    file://hostapd-iot-gateway-dropin.conf.in \
    file://90-iot-gateway-hostapd.rules \
    file://iot-gateway-wifi.sh \
    file://iot-gateway-wifi.service \
    file://iot-gateway-grow-data.sh \
    file://iot-gateway-grow-data.service \
    file://iot-gateway-machine-id.sh \
    file://iot-gateway-machine-id.service \
    file://iot-gateway-data-alert.sh \
    file://iot-gateway-data-alert.service \
"
S = "${UNPACKDIR}"

inherit allarch systemd

do_configure[noexec] = "1"
do_compile[noexec] = "1"

python do_check_knobs() {
    if d.getVar('IOT_GATEWAY_DATA_GROW') not in ('0', '1'):
        bb.fatal("IOT_GATEWAY_DATA_GROW must be \"0\" or \"1\"")
    p = d.getVar('IOT_GATEWAY_WIFI_PASSPHRASE')
    if p and not (8 <= len(p) <= 63):
        bb.fatal("IOT_GATEWAY_WIFI_PASSPHRASE must have 8 to 63 characters")
    if p:
        bb.warn("IOT_GATEWAY_WIFI_PASSPHRASE puts the IoT LAN's Wi-Fi secret into the image; "
                "leave it empty to provision /data/hostapd/wpa_psk per device instead")
}
addtask check_knobs before do_install after do_unpack

do_install() {
    install -d ${D}/data

    install -d ${D}${nonarch_libdir}/systemd/network
    install -m 0644 ${UNPACKDIR}/10-iot-gateway-wan.network ${D}${nonarch_libdir}/systemd/network/
    sed -e 's,@LAN_ADDRESS@,${IOT_GATEWAY_LAN_ADDRESS},g' ${UNPACKDIR}/20-iot-gateway-lan.network.in \
        > ${D}${nonarch_libdir}/systemd/network/20-iot-gateway-lan.network

    install -d ${D}${nonarch_libdir}/systemd/journald.conf.d
    sed -e 's,@JOURNAL_STORAGE@,${@'persistent' if d.getVar('IOT_GATEWAY_PERSISTENT_JOURNAL') == '1' else 'volatile'},g' \
        ${UNPACKDIR}/journald-iot-gateway.conf > ${D}${nonarch_libdir}/systemd/journald.conf.d/10-iot-gateway.conf

    if [ -n "${IOT_GATEWAY_WIFI_PASSPHRASE}" ]; then
        psk_line="wpa_passphrase=${IOT_GATEWAY_WIFI_PASSPHRASE}"
        psk_condition=""
    else
        psk_line="wpa_psk_file=/data/hostapd/wpa_psk"
        # either ("|"): provisioning's file or a PSK file on /data
        psk_condition="ConditionPathExists=|/data/wifi/iot-gateway-lan.conf\nConditionPathExists=|/data/hostapd/wpa_psk"
    fi
    install -d -m 0755 ${D}${sysconfdir}/hostapd
    sed -e 's,@SSID@,${IOT_GATEWAY_WIFI_SSID},g' \
        -e 's,@COUNTRY@,${IOT_GATEWAY_WIFI_COUNTRY},g' \
        -e 's,@CHANNEL@,${IOT_GATEWAY_WIFI_CHANNEL},g' \
        -e "s,@PSK_LINE@,$psk_line,g" \
        ${UNPACKDIR}/hostapd-iot-gateway.conf.in > ${D}${sysconfdir}/hostapd/iot-gateway-lan.conf
    chmod 0600 ${D}${sysconfdir}/hostapd/iot-gateway-lan.conf
    # hostapd starts when wlan0 appears (not enabled for multi-user.target: no wait where there is no Wi-Fi)
    install -D -m 0644 ${UNPACKDIR}/90-iot-gateway-hostapd.rules ${D}${nonarch_base_libdir}/udev/rules.d/90-iot-gateway-hostapd.rules
    # hostapd reads the image's configuration with this gateway's Wi-Fi from /data over it, made
    # under /run by iot-gateway-wifi.service before every start of hostapd (the script's header)
    install -D -m 0755 ${UNPACKDIR}/iot-gateway-wifi.sh ${D}${libexecdir}/iot-gateway-wifi
    install -D -m 0644 ${UNPACKDIR}/iot-gateway-wifi.service ${D}${systemd_system_unitdir}/iot-gateway-wifi.service
    install -d ${D}${systemd_system_unitdir}/hostapd.service.d
    sed -e "s,@PSK_CONDITION@,$psk_condition,g" ${UNPACKDIR}/hostapd-iot-gateway-dropin.conf.in \
        > ${D}${systemd_system_unitdir}/hostapd.service.d/iot-gateway.conf

    install -D -m 0644 ${UNPACKDIR}/resolved-iot-gateway.conf ${D}${nonarch_libdir}/systemd/resolved.conf.d/10-iot-gateway.conf

    install -d ${D}${nonarch_libdir}/tmpfiles.d
    # the per-device Wi-Fi PSK file ("00:00:00:00:00:00 <passphrase>" lines) lives here
    echo "d /data/hostapd 0700 root root -" > ${D}${nonarch_libdir}/tmpfiles.d/iot-gateway-system.conf
    # this gateway's Wi-Fi (iot-gateway provision import writes iot-gateway-lan.conf here)
    echo "d /data/wifi 0700 root root -" >> ${D}${nonarch_libdir}/tmpfiles.d/iot-gateway-system.conf
    # journald keeps /var/log/journal on the data partition when asked to persist
    if [ "${IOT_GATEWAY_PERSISTENT_JOURNAL}" = "1" ]; then
        echo "d /data/journal 2755 root systemd-journal -" > ${D}${nonarch_libdir}/tmpfiles.d/iot-gateway-journal.conf
        echo "L+ /var/log/journal - - - - /data/journal" >> ${D}${nonarch_libdir}/tmpfiles.d/iot-gateway-journal.conf
    fi

    # the data partition grows to the end of the card (the script's header says how)
    install -D -m 0755 ${UNPACKDIR}/iot-gateway-grow-data.sh ${D}${sbindir}/iot-gateway-grow-data
    install -D -m 0644 ${UNPACKDIR}/iot-gateway-grow-data.service ${D}${systemd_system_unitdir}/iot-gateway-grow-data.service

    # the machine id on /data, bind-mounted over the read-only /etc/machine-id (the script's header)
    install -D -m 0755 ${UNPACKDIR}/iot-gateway-machine-id.sh ${D}${libexecdir}/iot-gateway-machine-id
    install -m 0644 ${UNPACKDIR}/iot-gateway-machine-id.service ${D}${systemd_system_unitdir}/
    # /data not mounted (fsck failed, no partition, mount failed): degraded boot with an alert
    install -m 0755 ${UNPACKDIR}/iot-gateway-data-alert.sh ${D}${libexecdir}/iot-gateway-data-alert
    install -m 0644 ${UNPACKDIR}/iot-gateway-data-alert.service ${D}${systemd_system_unitdir}/
}

FILES:${PN} = " \
    /data \
    ${sysconfdir}/hostapd \
    ${nonarch_libdir}/systemd/network \
    ${nonarch_libdir}/systemd/journald.conf.d \
    ${nonarch_libdir}/systemd/resolved.conf.d \
    ${nonarch_libdir}/tmpfiles.d \
    ${systemd_system_unitdir}/hostapd.service.d \
    ${systemd_system_unitdir}/iot-gateway-grow-data.service \
    ${sbindir}/iot-gateway-grow-data \
    ${libexecdir}/iot-gateway-machine-id \
    ${libexecdir}/iot-gateway-data-alert \
    ${libexecdir}/iot-gateway-wifi \
    ${systemd_system_unitdir}/iot-gateway-wifi.service \
    ${systemd_system_unitdir}/iot-gateway-machine-id.service \
    ${systemd_system_unitdir}/iot-gateway-data-alert.service \
    ${nonarch_base_libdir}/udev/rules.d/90-iot-gateway-hostapd.rules \
"
# WantedBy=data.mount: enabled, it runs before /data is mounted at every boot
SYSTEMD_SERVICE:${PN} = " \
    iot-gateway-data-alert.service \
    iot-gateway-machine-id.service \
    ${@'iot-gateway-grow-data.service' if d.getVar('IOT_GATEWAY_DATA_GROW') == '1' else ''} \
"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"
# sfdisk and partx: util-linux splits every program into util-linux-<name>; the file system is
# grown by systemd-growfs (systemd, EXT4_IOC_RESIZE_FS), so no e2fsprogs-resize2fs.
# util-linux-fsck + e2fsprogs-e2fsck: systemd-fsck@ runs fsck -a on /data (pass 2 in the wks
# files) before every mount. mount, mountpoint: the machine-id and alert scripts.
RDEPENDS:${PN} = " \
    e2fsprogs-e2fsck \
    hostapd \
    util-linux-fsck \
    util-linux-mount \
    util-linux-mountpoint \
    util-linux-partx \
    util-linux-sfdisk \
"
