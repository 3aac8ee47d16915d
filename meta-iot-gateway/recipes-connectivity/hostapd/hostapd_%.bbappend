# IoT gateway distro only: hostapd runs the IoT LAN's access point (configured by
# iot-gateway-system-conf), so it starts at boot.
SYSTEMD_AUTO_ENABLE:${PN}:iot-gateway-os = "enable"
