# The gateway daemon. The version follows app/package.json.
require iot-gateway.inc
require iot-gateway-npm.inc
