SUMMARY = "Public trust anchors of the IoT gateway (the cloud CA bundle)"
DESCRIPTION = "Installs the CA bundle that the gateway uses to verify its cloud endpoint. Only \
public certificates go into the image: the gateway's own CA, broker and client keys are made on the \
data partition at first boot (iot-gateway pki init), or restored there from a pki export backup."
SECTION = "net"
LICENSE = "MIT"
# The repository's LICENSE; FILE_DIRNAME is in BB_BASEHASH_IGNORE_VARS, so no checkout path in signatures
LIC_FILES_CHKSUM = "file://${FILE_DIRNAME}/../../../LICENSE;md5=5bca9c920e769d83bd766aa9a54ccabf"

# A folder on the build host with cloud-ca.pem. Empty: the placeholder of this recipe is installed
# and the build warns.
IOT_GATEWAY_TRUST_DIR ?= ""
FILESEXTRAPATHS:prepend := "${@'%s:' % d.getVar('IOT_GATEWAY_TRUST_DIR') if d.getVar('IOT_GATEWAY_TRUST_DIR') else ''}"

SRC_URI = "file://cloud-ca.pem"

S = "${UNPACKDIR}"

inherit allarch

do_configure[noexec] = "1"
do_compile[noexec] = "1"

python do_check_trust_anchors() {
    import os
    for name in ['cloud-ca.pem']:
        path = os.path.join(d.getVar('UNPACKDIR'), name)
        with open(path) as f:
            text = f.read()
        if 'PRIVATE KEY' in text:
            bb.fatal("%s contains a private key; only public certificates may go into the image" % name)
        if 'IOT-GATEWAY-PLACEHOLDER-CA-BUNDLE' in text:
            bb.warn("*** %s is still the PLACEHOLDER of meta-iot-gateway: the gateway cannot verify "
                    "its cloud endpoint. Set IOT_GATEWAY_TRUST_DIR to a folder with your cloud-ca.pem. ***" % name)
        elif 'BEGIN CERTIFICATE' not in text:
            bb.fatal("%s has no PEM certificate" % name)
}
addtask check_trust_anchors after do_unpack before do_install

do_install() {
    install -d ${D}${sysconfdir}/iot-gateway
    install -m 0644 ${UNPACKDIR}/cloud-ca.pem ${D}${sysconfdir}/iot-gateway/cloud-ca.pem
}

FILES:${PN} = "${sysconfdir}/iot-gateway"
