# The gateway daemon. PV follows app/package.json and the git history of app/ (iot-gateway.inc).
require iot-gateway.inc
require iot-gateway-npm.inc
