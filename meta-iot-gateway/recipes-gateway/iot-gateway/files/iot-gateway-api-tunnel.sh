#!/bin/sh
# iot-gateway-api-tunnel CONFIG ENVFILE: puts the management API on the tunnel's address as the
# configuration has it now (the image's gateway.json merged with this gateway's override on /data):
# starts iot-gateway-api@ADDRESS:PORT.socket and stops any instance for another address. Without a
# tunnel address, the API stays on loopback. ENVFILE gets the proxy's target (its EnvironmentFile=).
set -eu
config=$1
envfile=$2

# IOT_GATEWAY_API_LISTEN=10.200.0.42:8080 and IOT_GATEWAY_API_TARGET=127.0.0.1:8080 (or empty).
# A configuration the gateway rejects fails the unit here, before anything is stopped: the socket
# already running stays, and with it the operator's way in.
assignments=$(iot-gateway wg api-listen --config "$config")
listen=$(printf '%s\n' "$assignments" | sed -n 's/^IOT_GATEWAY_API_LISTEN=//p')
printf '%s\n' "$assignments" > "$envfile.tmp"
mv "$envfile.tmp" "$envfile"

# An old address (changed by `config set`) must not stay bound: stop every instance, then start the
# one of the current address. Stopping first also frees the port if only api.port changed.
systemctl stop 'iot-gateway-api@*.socket' 'iot-gateway-api@*.service'
if [ -z "$listen" ]; then
    echo "no tunnel address (wireguard.address) or api.host is not loopback: the API is not put on the tunnel"
    exit 0
fi
unit=$(systemd-escape --template=iot-gateway-api@.socket "$listen")
systemctl start "$unit"
echo "the management API listens on $listen ($unit)"
