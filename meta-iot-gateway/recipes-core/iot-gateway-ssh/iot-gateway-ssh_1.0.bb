SUMMARY = "SSH for the operator of the IoT gateway: public keys only, on the management tunnel"
DESCRIPTION = "Drop-ins that turn the image's dropbear into the operator's door: root logs in with \
a key from /data/ssh/authorized_keys (written by provisioning; while it is absent, the image's keys \
from IOT_GATEWAY_SSH_AUTHORIZED_KEYS) and never with a password, the gateway's firewall admits it \
through the WireGuard tunnel only, and the host keys are made on first boot on /data, so a reflash \
keeps the gateway's SSH identity. The image installs this package when the knob is set."
SECTION = "net"
LICENSE = "MIT"
# The repository's LICENSE; FILE_DIRNAME is in BB_BASEHASH_IGNORE_VARS, so no checkout path in signatures
LIC_FILES_CHKSUM = "file://${FILE_DIRNAME}/../../../LICENSE;md5=5bca9c920e769d83bd766aa9a54ccabf"

# Knobs (see the layer's README.md), normally set in local.conf or the kas file:
# - IOT_GATEWAY_SSH_AUTHORIZED_KEYS: a file of OpenSSH public keys (authorized_keys format), on the
#   build host; relative paths are relative to the build directory (TOPDIR). Required.
# - IOT_GATEWAY_SSH_FROM_WAN = "1": the gateway's firewall admits SSH from the WAN too (conf/debug.yml
#   and conf/qemuarm64.yml; never in a release). Without it, SSH is reachable through the tunnel
#   only: its address is IOT_GATEWAY_WG_ADDRESS or, per gateway, provisioning's wireguard.address.
IOT_GATEWAY_SSH_AUTHORIZED_KEYS ?= ""
IOT_GATEWAY_SSH_FROM_WAN ?= "0"

SRC_URI = " \
    file://dropbear-socket-iot-gateway.conf \
    file://dropbear-service-iot-gateway.conf \
    file://dropbearkey-iot-gateway.conf \
    file://iot-gateway-ssh-hostkeys.sh \
    file://iot-gateway-ssh.tmpfiles \
"
S = "${UNPACKDIR}"

inherit allarch

do_configure[noexec] = "1"
do_compile[noexec] = "1"

def iot_gateway_ssh_keys_path(d):
    path = d.getVar('IOT_GATEWAY_SSH_AUTHORIZED_KEYS') or ''
    if path and not os.path.isabs(path):
        path = os.path.join(d.getVar('TOPDIR'), path)
    return os.path.normpath(path) if path else ''

# Unconfigured, the recipe skips itself (a `bitbake world` or yocto-check-layer builds everything
# it can, and this package exists only for images with operator keys): the image adds it only
# when IOT_GATEWAY_SSH_AUTHORIZED_KEYS is set. Asking for it without the knob says why.
python __anonymous() {
    if not iot_gateway_ssh_keys_path(d):
        raise bb.parse.SkipRecipe("IOT_GATEWAY_SSH_AUTHORIZED_KEYS is not set: iot-gateway-ssh needs the "
                                  "file of the operators' public SSH keys (an image without the knob has "
                                  "no SSH server)")
}

# A changed key file rebuilds the package (it is not in SRC_URI: it is the user's, outside the layer).
do_install[file-checksums] += "${@'%s:True' % iot_gateway_ssh_keys_path(d) if iot_gateway_ssh_keys_path(d) else ''}"
do_install[vardeps] += "IOT_GATEWAY_SSH_AUTHORIZED_KEYS IOT_GATEWAY_SSH_FROM_WAN"

# Public keys only: every line an OpenSSH public key (optionally with options before it); a private
# key or anything else stops the build with the line number.
python iot_gateway_ssh_prepare() {
    import re
    path = iot_gateway_ssh_keys_path(d)
    if not os.path.isfile(path):
        bb.fatal("IOT_GATEWAY_SSH_AUTHORIZED_KEYS: %s is not a file" % path)
    key_re = re.compile(r'(?:^|\s)(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)|'
                        r'sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)\s+[A-Za-z0-9+/]+={0,3}(?:\s|$)')
    keys = []
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            if 'PRIVATE KEY' in line:
                bb.fatal("IOT_GATEWAY_SSH_AUTHORIZED_KEYS: %s:%d is a PRIVATE key; give the public "
                         "key (the .pub file) instead, and treat that private key as exposed" % (path, n))
            if not key_re.search(line):
                bb.fatal("IOT_GATEWAY_SSH_AUTHORIZED_KEYS: %s:%d is not an OpenSSH public key line" % (path, n))
            keys.append(line)
    if not keys:
        bb.fatal("IOT_GATEWAY_SSH_AUTHORIZED_KEYS: %s holds no public key" % path)

    if d.getVar('IOT_GATEWAY_SSH_FROM_WAN') == '1':
        bb.warn("IOT_GATEWAY_SSH_FROM_WAN = \"1\": the firewall admits SSH from the WAN; for the bench "
                "and test images only")

    workdir = d.getVar('WORKDIR')
    with open(os.path.join(workdir, 'authorized_keys'), 'w') as f:
        f.write('# The operators of this gateway (IOT_GATEWAY_SSH_AUTHORIZED_KEYS at build time).\n')
        f.write('\n'.join(keys) + '\n')
}
do_install[prefuncs] += "iot_gateway_ssh_prepare"

do_install() {
    # The image's keys, the fleet's default. Dropbear reads root's ~/.ssh/authorized_keys, which is a
    # link to the gateway's own list on /data (provisioning and the operators write it there: the
    # root file system is read-only). tmpfiles.d links that to the image's keys while the gateway has
    # no list of its own. Dropbear stat()s ~, ~/.ssh and the file the link ends at: all root's, none
    # writable by group or others (it refuses the keys otherwise). A link rather than dropbear's -D
    # DIR: -D exists only since dropbear 2025.87.
    install -D -m 0600 ${WORKDIR}/authorized_keys ${D}${datadir}/iot-gateway-ssh/authorized_keys
    install -d -m 0700 ${D}${ROOT_HOME}/.ssh
    ln -sf /data/ssh/authorized_keys ${D}${ROOT_HOME}/.ssh/authorized_keys

    install -D -m 0644 ${UNPACKDIR}/dropbear-socket-iot-gateway.conf ${D}${systemd_system_unitdir}/dropbear.socket.d/iot-gateway.conf
    install -D -m 0644 ${UNPACKDIR}/dropbear-service-iot-gateway.conf ${D}${systemd_system_unitdir}/dropbear@.service.d/iot-gateway.conf
    install -D -m 0644 ${UNPACKDIR}/dropbearkey-iot-gateway.conf ${D}${systemd_system_unitdir}/dropbearkey.service.d/iot-gateway.conf
    install -D -m 0755 ${UNPACKDIR}/iot-gateway-ssh-hostkeys.sh ${D}${libexecdir}/iot-gateway-ssh-hostkeys
    install -D -m 0644 ${UNPACKDIR}/iot-gateway-ssh.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/iot-gateway-ssh.conf
}

FILES:${PN} = " \
    ${ROOT_HOME}/.ssh \
    ${datadir}/iot-gateway-ssh \
    ${systemd_system_unitdir}/dropbear.socket.d \
    ${systemd_system_unitdir}/dropbear@.service.d \
    ${systemd_system_unitdir}/dropbearkey.service.d \
    ${libexecdir}/iot-gateway-ssh-hostkeys \
    ${nonarch_libdir}/tmpfiles.d/iot-gateway-ssh.conf \
"
RDEPENDS:${PN} = "dropbear"
