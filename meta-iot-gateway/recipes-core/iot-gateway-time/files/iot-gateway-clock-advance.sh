#!/bin/sh
# Moves the system clock forward to the latest time known on /data, before anything that checks
# certificates runs. A Raspberry Pi 3 has no RTC: without this its clock starts at systemd's build
# time (or wherever the boot left it) and Mosquitto refuses every device whose certificate or CRL
# is "not yet valid" until NTP syncs, which at a site that blocks UDP 123 never happens.
#
# The latest known time is the newest of:
#   <data>/iot-gateway/clock/latest-known  whole seconds since the epoch, saved by the gateway
#                                          (every 15 min and whenever it issues a certificate/CRL)
#   <data>/timesync/clock                  the modification time of systemd-timesyncd's clock file
#   <data>/iot-gateway/pki/*.crt, crl.pem  their modification times: written when issued, so never
#                                          earlier than their notBefore/thisUpdate
# The clock only ever moves forward here; NTP corrects it later, in either direction.
#
# Environment (for tests): IOTGW_CLOCK_DATA (default /data); IOTGW_CLOCK_SET, a command run with
# "@SECONDS" instead of `date -u -s @SECONDS`.
set -eu
data=${IOTGW_CLOCK_DATA:-/data}
target=0
source=none

consider () {
    case "$1" in '' | *[!0-9]*) return 0 ;; esac
    if [ "$1" -gt "$target" ]; then target=$1; source=$2; fi
}

f="$data/iot-gateway/clock/latest-known"
if [ -r "$f" ]; then
    consider "$(head -c 32 "$f" | tr -d ' \n')" "$f"
fi
for f in "$data/timesync/clock" "$data"/iot-gateway/pki/*.crt "$data/iot-gateway/pki/crl.pem"; do
    if [ -e "$f" ]; then consider "$(stat -c %Y "$f")" "$f"; fi
done

now=$(date +%s)
if [ "$target" -le "$now" ]; then
    echo "clock $(date -u +%Y-%m-%dT%H:%M:%SZ) is not behind the latest known time ($source); left alone"
    exit 0
fi
echo "clock $(date -u +%Y-%m-%dT%H:%M:%SZ) is $((target - now)) s behind the latest known time ($source): moving it forward to @$target"
if [ -n "${IOTGW_CLOCK_SET:-}" ]; then
    $IOTGW_CLOCK_SET "@$target"
else
    date -u -s "@$target" >/dev/null
fi
