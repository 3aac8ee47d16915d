#!/bin/sh
# First boot only (the unit's condition: no CA on /data yet): waits, at most $1 seconds, for a real
# time sync, so that the gateway's CA, certificates and CRL are dated from the right time. Without
# a sync (a site that blocks NTP) it logs why and lets the first boot go on with the clock as it
# is: the certificates are backdated 60 days, and the gateway refuses to issue more later while the
# clock is unsynchronised and earlier than a time it has seen (docs/time.md).
# IOTGW_TIME_WAIT_SYNC (tests): the waiting program instead of systemd-time-wait-sync.
set -u
limit=${1:-120}
wait_sync=
for w in ${IOTGW_TIME_WAIT_SYNC:-} /usr/lib/systemd/systemd-time-wait-sync /lib/systemd/systemd-time-wait-sync; do
    if [ -x "$w" ]; then wait_sync=$w; break; fi
done
if [ -n "$wait_sync" ] && timeout "$limit" "$wait_sync"; then
    echo "clock synchronised: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    exit 0
fi
# <4>: journald's warning priority
echo "<4>no time sync within ${limit} s (is UDP 123 blocked?): the first certificates are dated from the clock as it is, $(date -u +%Y-%m-%dT%H:%M:%SZ); see docs/time.md"
exit 0
