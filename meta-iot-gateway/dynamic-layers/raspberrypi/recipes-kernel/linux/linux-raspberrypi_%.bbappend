# IoT gateway distro only: WireGuard and nf_tables as a config fragment, not left to the
# Raspberry Pi defconfig (the way meta-raspberrypi ships its own .cfg fragments).
FILESEXTRAPATHS:prepend:iot-gateway-os := "${THISDIR}/files:"
SRC_URI:append:iot-gateway-os = " file://iot-gateway.cfg"
