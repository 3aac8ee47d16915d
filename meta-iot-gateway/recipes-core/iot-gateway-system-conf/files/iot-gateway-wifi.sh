#!/bin/sh
# iot-gateway-wifi IMAGE_CONF WIFI_CONF OUT - the IoT LAN access point's hostapd configuration:
# the image's (IMAGE_CONF, /etc/hostapd/iot-gateway-lan.conf, from the build's IOT_GATEWAY_WIFI_*
# knobs) with this gateway's Wi-Fi from the data partition (WIFI_CONF, /data/wifi/iot-gateway-lan.conf,
# written by `iot-gateway provision import`) put over it, written to OUT (under /run: tmpfs, so a
# secret never lands on the read-only root and the SD card is not written at every boot).
# WIFI_CONF holds hostapd lines, but only these (anyone who can write /data must not be able to
# slip other hostapd settings in): ssid= (printable ASCII) or ssid2= (hex), country_code= (the
# regulatory domain: hostapd sets it in the kernel, with ieee80211d=1 from the image), and
# wpa_passphrase=. A bad line fails the unit with the file and line number on the console and in the
# journal; hostapd then does not start and the gateway's other services do not depend on it.
# No passphrase anywhere (not in the image, not in WIFI_CONF, no /data/hostapd/wpa_psk): nothing is
# written and the exit status is 0; hostapd's own condition keeps it off until one is provisioned.
set -u
export LC_ALL=C
image="${1:?usage: iot-gateway-wifi IMAGE_CONF WIFI_CONF OUT}"
wifi="${2:?usage: iot-gateway-wifi IMAGE_CONF WIFI_CONF OUT}"
out="${3:?usage: iot-gateway-wifi IMAGE_CONF WIFI_CONF OUT}"
say() { echo "iot-gateway-wifi: $*"; }
fail() { say "error: $*"; exit 1; }
printable() { case "$1" in *[!\ -~]*) return 1 ;; esac; return 0; }
# length VALUE MIN MAX: whether VALUE has MIN to MAX bytes
length() { [ ${#1} -ge "$2" ] && [ ${#1} -le "$3" ]; }

[ -r "$image" ] || fail "cannot read the image's configuration $image"
keys=
if [ -e "$wifi" ]; then
    [ -r "$wifi" ] || fail "cannot read $wifi"
    n=0
    while IFS= read -r line || [ -n "$line" ]; do
        n=$((n + 1))
        case "$line" in '' | '#'*) continue ;; esac
        case "$line" in *=*) ;; *) fail "$wifi:$n: not a setting (KEY=VALUE)" ;; esac
        key=${line%%=*}
        val=${line#*=}
        case "$key" in
            ssid)
                if ! length "$val" 1 32 || ! printable "$val"; then fail "$wifi:$n: ssid must be 1 to 32 printable ASCII characters (ssid2=HEX for any other bytes)"; fi ;;
            ssid2)
                case "$val" in *[!0-9a-fA-F]*) val=x ;; esac
                if ! length "$val" 2 64 || [ $((${#val} % 2)) -ne 0 ]; then fail "$wifi:$n: ssid2 must be the SSID's 1 to 32 bytes in hex"; fi ;;
            country_code)
                case "$val" in [A-Z][A-Z]) ;; *) fail "$wifi:$n: country_code must be an ISO 3166 code such as DE (the radio's regulatory domain)" ;; esac ;;
            wpa_passphrase)
                if ! length "$val" 8 63 || ! printable "$val"; then fail "$wifi:$n: wpa_passphrase must be 8 to 63 printable ASCII characters (WPA2-PSK)"; fi ;;
            *) fail "$wifi:$n: '$key' may not be set here (only ssid, ssid2, country_code, wpa_passphrase)" ;;
        esac
        # ssid and ssid2 are one setting in two spellings
        [ "$key" = ssid2 ] && key=ssid
        case " $keys " in *" $key "*) fail "$wifi:$n: $key is set twice" ;; esac
        keys="$keys $key"
    done < "$wifi"
fi

# The image's lines that this gateway's settings replace (an SSID in either form, the passphrase in
# either form).
drop=
for k in $keys; do
    case "$k" in
        ssid) drop="$drop -e /^ssid=/d -e /^ssid2=/d" ;;
        country_code) drop="$drop -e /^country_code=/d" ;;
        wpa_passphrase) drop="$drop -e /^wpa_passphrase=/d -e /^wpa_psk_file=/d" ;;
    esac
done

umask 077
tmp="$out.tmp"
{
    # shellcheck disable=SC2086 # $drop is a list of sed arguments without spaces inside them
    if [ -n "$drop" ]; then sed $drop "$image"; else cat "$image"; fi || exit 1
    if [ -n "$keys" ]; then
        echo "# This gateway's Wi-Fi, from $wifi"
        grep -E '^(ssid|ssid2|country_code|wpa_passphrase)=' "$wifi"
    fi
} > "$tmp" || { rm -f "$tmp"; fail "cannot write $tmp"; }

psk_file=$(sed -n 's/^wpa_psk_file=//p' "$tmp")
if ! grep -q '^wpa_passphrase=' "$tmp" && { [ -z "$psk_file" ] || [ ! -s "$psk_file" ]; }; then
    rm -f "$tmp"
    say "no Wi-Fi passphrase (provision one: wifi in the provisioning file): the IoT LAN's access point stays off"
    exit 0
fi
mv -f "$tmp" "$out" || fail "cannot write $out"
ssid=$(sed -n 's/^ssid=//p; s/^ssid2=/(hex) /p' "$out")
country=$(sed -n 's/^country_code=//p' "$out")
say "access point \"$ssid\", country $country${keys:+ (from $wifi:$keys)}"
