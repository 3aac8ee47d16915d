# IoT gateway distro only (QEMU machines): the same WireGuard/nf_tables fragment as for the Pi.
FILESEXTRAPATHS:prepend:iot-gateway-os := "${THISDIR}/files:"
SRC_URI:append:iot-gateway-os = " file://iot-gateway.cfg"
