// A sensor in Node.js (mqtt.js): publishes a reading every --interval ms over MQTT/TLS with the
// certificate `iot-gateway device enroll <id> -o <dir>` wrote, QoS 1, and prints each message once
// the broker acknowledged it (PUBACK). Run it against `scripts/demo.sh --keep` or a gateway:
//   node app/examples/sensor-mqtt.mjs --url mqtts://<gateway>:8883 --id greenhouse-1 --dir ./greenhouse-1 --count 10
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import mqtt from 'mqtt'

const { values: o } = parseArgs({
  options: {
    url: { type: 'string', default: 'mqtts://localhost:8883' },
    id: { type: 'string' },
    dir: { type: 'string', default: '.' },
    count: { type: 'string', default: '10' },
    interval: { type: 'string', default: '1000' },
    stream: { type: 'string', default: 'telemetry' }
  }
})
if (!o.id) { console.error('usage: sensor-mqtt.mjs --id <device id> [--url mqtts://host:8883] [--dir <enrolment folder>] [--count N] [--interval ms]'); process.exit(2) }

const client = await mqtt.connectAsync(o.url, {
  clientId: o.id, // the gateway knows the device by its certificate's CN; the same id here keeps the broker's log readable
  ca: readFileSync(join(o.dir, 'ca.crt')),
  cert: readFileSync(join(o.dir, `${o.id}.crt`)),
  key: readFileSync(join(o.dir, `${o.id}.key`)),
  clean: false,
  reconnectPeriod: 1000
})
// (epoch, seq) must grow strictly: this process does not keep seq across runs, so its start time is
// the epoch, in milliseconds (in seconds, a second run within the same second had its first
// messages refused as replays).
const epoch = Date.now()
for (let seq = 1; seq <= Number(o.count); seq++) {
  const reading = { epoch, seq, temp: +(20 + Math.sin(seq / 3)).toFixed(2) }
  await client.publishAsync(`devices/${o.id}/${o.stream}`, JSON.stringify(reading), { qos: 1 })
  console.log(`acknowledged ${JSON.stringify(reading)}`)
  if (seq < Number(o.count)) await new Promise(resolve => setTimeout(resolve, Number(o.interval)))
}
await client.endAsync()
