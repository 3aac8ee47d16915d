#!/bin/sh
# iot-gateway-firewall-confirm - confirms the pending firewall change the console asked for.
#
# Usage: iot-gateway-firewall-confirm [REQUEST_DIR]     (default /data/iot-gateway/firewall-requests)
#
# Run as root by iot-gateway-firewall-confirm.service when iot-gateway-firewall-confirm.path sees
# REQUEST_DIR not empty. The unprivileged daemon writes confirm-<apply id> there when the operator
# presses "confirm" in the console (behind the API's authentication, audited). The daemon owns that
# directory, so nothing in it is trusted:
# - only the file NAME is used, never the content, and the id in it must be [A-Za-z0-9_-];
# - every entry is deleted before anything runs (a request is acted on once, and nothing left
#   behind makes the path unit start this again and again); rm -f does not follow symlinks;
# - `firewall confirm --id <id>` confirms only if that apply is still the pending one, so a
#   request made for one change can never confirm a later one. The worst a compromised daemon can
#   do is confirm a change an operator applied and has not rolled back.
# IOT_GATEWAY_CLI overrides the command (the tests run the bundle with a test configuration).
set -u

dir=${1:-/data/iot-gateway/firewall-requests}
cli=${IOT_GATEWAY_CLI:-/usr/bin/iot-gateway firewall confirm --config /etc/iot-gateway/gateway.json}
[ -d "$dir" ] || exit 0
ids=
for f in "$dir"/* "$dir"/.[!.]* "$dir"/..?*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    name=${f##*/}
    rm -f -- "$f" 2> /dev/null || echo "iot-gateway-firewall-confirm: cannot remove $name (not a plain file?)" >&2
    case $name in
        confirm-*) id=${name#confirm-} ;;
        *) echo "iot-gateway-firewall-confirm: ignoring $name (not a confirm request)" >&2; continue ;;
    esac
    case $id in
        '' | *[!A-Za-z0-9_-]*) echo "iot-gateway-firewall-confirm: ignoring $name (not an apply id)" >&2; continue ;;
    esac
    ids="$ids $id"
done
rc=0
for id in $ids; do
    echo "iot-gateway-firewall-confirm: the console asks to confirm firewall change $id"
    # shellcheck disable=SC2086 # $cli is a command line
    $cli --id "$id" || rc=1
done
exit $rc
