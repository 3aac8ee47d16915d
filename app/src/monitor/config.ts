import { defineSection } from '../config/define.js'

/** System health sampling (app/src/monitor). */
export const monitorSection = defineSection({
  intervalSeconds: { type: 'integer', default: 5, min: 1, max: 3600, description: 'How often CPU, memory, temperature, throttling, disk and clock are read from /proc and /sys (a few small file reads; well under 1 % of a Pi 3 core at 5 s).' },
  root: { type: 'string', default: '/', description: 'Directory under which proc/ and sys/ and run/ are read. Only tests change it (a fake tree).' },
  mosquittoProcess: { type: 'string', default: 'mosquitto', description: 'Process name (/proc/<pid>/comm) whose resident memory is reported as Mosquitto\'s.' },
  units: { type: 'string[]', default: ['iot-gateway.service', 'mosquitto.service', 'iot-gateway-firewall.service', 'iot-gateway-wireguard.service'], description: 'systemd units whose state is reported (`systemctl show`, every unitsIntervalSeconds). Skipped where systemd is not running.' },
  unitsIntervalSeconds: { type: 'integer', default: 30, min: 5, max: 3600, description: 'How often the units\' state is read (one `systemctl show` process).' }
})
