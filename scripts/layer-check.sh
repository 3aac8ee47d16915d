#!/bin/sh
# layer-check.sh - parse meta-iot-gateway with BitBake against the upstream wrynose layers (no build):
# bitbake -p, show-recipes (none skipped), bitbake -e / -g of iot-gateway-image, the oeqa import,
# for every machine; optionally yocto-check-layer (slow, ~40 min).
#
# Usage: scripts/layer-check.sh [--ycl] [MACHINE...]      (default: raspberrypi3-64 qemuarm64)
# Parsed with the knobs of an image with operator SSH and a tunnel (IOT_GATEWAY_SSH_AUTHORIZED_KEYS,
# IOT_GATEWAY_WG_ADDRESS), as tests/layer-parse.test.mjs does: iot-gateway-ssh skips itself
# without keys, and the checker counts a skipped recipe as a failure.
# Needs the parse checker of the shared tools (PARSE_CHECK, default ../shared/tools/
# yocto-parse-check.sh beside this checkout) and either clones of the layers in $LAB or snapshots
# in $MIRROR (see the checker's header).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
checker=${PARSE_CHECK:-$here/../shared/tools/yocto-parse-check.sh}
[ -f "$checker" ] || { echo "layer-check.sh: no parse checker at $checker (set PARSE_CHECK)" >&2; exit 2; }
ycl=""
if [ "${1:-}" = --ycl ]; then ycl=--ycl; shift; fi
[ $# -gt 0 ] || set -- raspberrypi3-64 qemuarm64
rc=0
for machine in "$@"; do
    echo "=== $machine"
    bash "$checker" -d iot-gateway-os -m "$machine" $ycl \
        -c 'IOT_GATEWAY_SSH_AUTHORIZED_KEYS = "${TOPDIR}/operators.pub"' \
        -c 'IOT_GATEWAY_WG_ADDRESS = "10.200.0.2/24"' \
        "$here/meta-iot-gateway" || rc=1
    ycl=""   # yocto-check-layer once is enough
done
exit $rc
