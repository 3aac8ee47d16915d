# IoT gateway distro only (QEMU machines): the same WireGuard/nf_tables fragment as for the Pi.
FILESEXTRAPATHS:prepend:iot-gateway := "${THISDIR}/files:"
SRC_URI:append:iot-gateway = " file://iot-gateway.cfg"
