#!/bin/sh
# iot-gateway-data-alert - say loudly that the data partition is not mounted, where an operator
# without a shell sees it. Run by iot-gateway-data-alert.service when /data is not a mount point
# after local-fs.target (fsck could not repair it, the partition is missing, the mount failed).
#
# /data has `nofail` in fstab, so such a failure does not stop the boot in emergency mode with a
# locked root: the system comes up degraded. The firewall, the WAN and the serial console work;
# everything that lives on /data (the gateway's identity and outbox, the WireGuard and SSH keys)
# does not start. This script
#  - prints the alert to the journal at priority "crit" and, through the unit's
#    StandardOutput=journal+console, to the console (the serial console on the Pi);
#  - writes it to IOT-GATEWAY-ALERT.txt on the boot partition (vfat: readable on any computer);
#  - leaves /run/iot-gateway-data-failed for tools and runtime tests.
# Exit status 1, so the unit shows as failed (systemctl --failed, `systemctl is-system-running`
# says "degraded").
set -u

BOOT=${IOTGW_ALERT_BOOT:-/boot}       # variables for the tests only
RUN=${IOTGW_ALERT_RUN:-/run}
DATA=${IOTGW_ALERT_DATA:-/data}
unit='systemd-fsck@dev-disk-by\x2dlabel-data.service'

# The unit is ordered after the fsck and the mount, but a partition that appears late (udev under
# load: the boot test saw it) can have its fsck queued or still running when that ordering is met,
# and the boot test once saw the fsck running again after the alert had read it as done. So the
# states the alert reports are read until they are settled: no job queued for the device, the fsck
# or the mount, none of them starting or stopping, and the same reading twice, a second apart.
# Bounded (the device timeout is 120 s); nothing is said if /data gets mounted meanwhile.
fsck_state='' mount_state='' settled=0 waited=0
while [ "$waited" -lt 300 ]; do
    if grep -qs " $DATA " /proc/self/mounts; then exit 0; fi
    f=$(systemctl show -p ActiveState,Result --value "$unit" 2>/dev/null | tr '\n' ' ')
    m=$(systemctl show -p ActiveState,Result --value data.mount 2>/dev/null | tr '\n' ' ')
    busy=0
    case " $f $m " in *" activating "*|*" deactivating "*|*" reloading "*) busy=1 ;; esac
    if systemctl list-jobs --no-legend 2>/dev/null | grep -qF -e "$unit" -e data.mount -e 'dev-disk-by\x2dlabel-data.device'; then busy=1; fi
    if [ "$busy" = 0 ] && [ "$f|$m" = "$fsck_state|$mount_state" ]; then settled=$((settled + 1)); else settled=0; fi
    fsck_state=$f mount_state=$m
    [ "$settled" -ge 1 ] && break
    sleep 1; waited=$((waited + 1))
done
if grep -qs " $DATA " /proc/self/mounts; then exit 0; fi

device=$(readlink -f /dev/disk/by-label/data 2>/dev/null || echo "none (no partition labelled \"data\")")
msg="IOT-GATEWAY ALERT: the data partition is not mounted on $DATA.
The gateway, its broker, the WireGuard tunnel and SSH need it and did not start; the firewall and
the serial console work. Device: $device. fsck: ${fsck_state:-unknown}. mount: ${mount_state:-unknown}.
Repair: meta-iot-gateway README, \"When /data fails\" (e2fsck -f -y on the partition, from the
serial console or on another computer; a reflash keeps the data partition)."

printf '%s\n' "$msg" | sed 's/^/<2>/'          # journal priority crit (SyslogLevelPrefix=)
mkdir -p "$RUN" && printf '%s\n' "$msg" > "$RUN/iot-gateway-data-failed"
# The boot partition is a file system of its own (vfat on the card). Not `mountpoint`: the unit's
# ReadWritePaths=/boot bind-mounts /boot over itself in the unit's namespace, so /boot is a mount
# point there even where it is only a folder of the read-only root (QEMU: no boot partition).
if [ -n "${IOTGW_ALERT_BOOT:-}" ] || { [ -d "$BOOT" ] && [ "$(stat -c %d "$BOOT")" != "$(stat -c %d /)" ]; }; then
    { date -u '+%Y-%m-%dT%H:%M:%SZ (clock may be wrong before the first time sync)'; printf '%s\n' "$msg"; } \
        > "$BOOT/IOT-GATEWAY-ALERT.txt.tmp" && mv -f "$BOOT/IOT-GATEWAY-ALERT.txt.tmp" "$BOOT/IOT-GATEWAY-ALERT.txt" && sync
fi
exit 1
