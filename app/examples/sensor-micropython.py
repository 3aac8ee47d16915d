# A sensor in MicroPython (ESP32, MicroPython 1.23 or later, umqtt.simple): one reading a minute over
# MQTT/TLS with the device's certificate. Shown as text in the README; not run in CI (no ESP32 there).
#
# Copy to the board (mpremote cp ...), after converting the enrolment files to DER on your PC:
#   openssl x509 -in ca.crt -outform DER -out ca.der
#   openssl x509 -in greenhouse-3.crt -outform DER -out cert.der
#   openssl ec -in greenhouse-3.key -outform DER -out key.der
import json, machine, network, ssl, time
from umqtt.simple import MQTTClient

DEVICE_ID = "greenhouse-3"          # = the certificate's CN (iot-gateway device enroll greenhouse-3 -o ...)
GATEWAY = "192.168.100.1"           # the gateway's LAN address (the broker's certificate names it)
WIFI = ("iot-gateway-lan", "your-wpa2-passphrase")

# (epoch, seq) must grow strictly across reboots: a boot counter in flash is the epoch.
try:
    epoch = int(open("epoch").read()) + 1
except OSError:
    epoch = 1
open("epoch", "w").write(str(epoch))

wlan = network.WLAN(network.STA_IF)
wlan.active(True)
wlan.connect(*WIFI)
while not wlan.isconnected():
    time.sleep(1)

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(cafile="ca.der")
ctx.load_cert_chain("cert.der", "key.der")
client = MQTTClient(DEVICE_ID, GATEWAY, port=8883, ssl=ctx, keepalive=60)
client.connect(clean_session=False)

adc = machine.ADC(machine.Pin(34))
seq = 0
while True:
    seq += 1
    reading = {"epoch": epoch, "seq": seq, "raw": adc.read_u16()}
    client.publish("devices/%s/telemetry" % DEVICE_ID, json.dumps(reading), qos=1)  # returns after the PUBACK
    time.sleep(60)
