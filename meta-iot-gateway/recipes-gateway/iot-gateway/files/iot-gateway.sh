#!/bin/sh
# iot-gateway: run the bundled gateway (one CommonJS file) with the system's Node.js.
exec node @LIBDIR@/iot-gateway/gateway.cjs "$@"
