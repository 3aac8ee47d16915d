import { DEVICE_ID_PATTERN } from '../devices/device-id.js'
import { defineSection, type SectionSpec, type SectionValue } from './define.js'
import { coapSection } from '../coap-ingress/config.js'
import { devicesSection, trustSection } from '../devices/config.js'
import { firewall } from '../firewall/config.js'
import { wireguard } from '../wireguard/config.js'
import { monitorSection } from '../monitor/config.js'
import { alertsSection } from '../alerts/config.js'

/** Bumped when a field is renamed or its meaning changes; load.ts migrates older files. */
export const CONFIG_VERSION = 1

const gateway = defineSection({
  id: { type: 'string', default: 'iot-gateway', pattern: DEVICE_ID_PATTERN, description: 'This gateway\'s id: sent to the cloud with every batch and used as its MQTT client id and certificate CN.' },
  dataDir: { type: 'string', default: '/data/iot-gateway', description: 'Writable, persistent directory: SQLite database, PKI, WireGuard key. On the image this is the /data partition.' },
  logLevel: { type: 'string', default: 'info', enum: ['debug', 'info', 'warn', 'error', 'silent'], description: 'Log level; logs are JSON lines on stdout.' },
  overrideFile: { type: 'string', default: '', description: 'This gateway\'s configuration override (what `config set` and provisioning write; it wins over this file, GATEWAY_* over both). Empty: <dataDir>/gateway.json. The image sets /data/iot-gateway.json: outside the 0710 data directory, so the root-run units without CAP_DAC_OVERRIDE (firewall, WireGuard) read it too. Not settable in the override itself.' }
})

const mqtt = defineSection({
  url: { type: 'string', default: 'mqtts://127.0.0.1:8884', pattern: /^mqtts?:\/\/[^/]+$/, description: 'The broker as the gateway reaches it: Mosquitto\'s loopback-only listener, never the LAN one.' },
  caFile: { type: 'string', default: '', description: 'CA that signed the broker certificate. Empty: <dataDir>/pki/ca.crt.' },
  certFile: { type: 'string', default: '', description: 'The gateway\'s MQTT client certificate. Empty: <dataDir>/pki/gateway.crt.' },
  keyFile: { type: 'string', default: '', description: 'Its key. Empty: <dataDir>/pki/gateway.key.' },
  streams: { type: 'string[]', default: ['telemetry', 'events'], pattern: /^[a-z][a-z0-9_-]{0,31}$/, description: 'Uplink topics devices/<id>/<stream> the gateway subscribes to. "commands" is downlink and may not be listed.' },
  keepaliveSeconds: { type: 'integer', default: 30, min: 5, max: 3600, description: 'MQTT keepalive.' },
  reconnectMinMs: { type: 'integer', default: 500, min: 50, max: 60000, description: 'First reconnect delay; doubles (with jitter) up to reconnectMaxMs.' },
  reconnectMaxMs: { type: 'integer', default: 30000, min: 100, max: 600000, description: 'Largest reconnect delay.' }
})

const limits = defineSection({
  maxPayloadBytes: { type: 'integer', default: 16384, min: 64, max: 1048576, description: 'Larger messages are rejected (reason "oversize").' },
  ratePerSecond: { type: 'number', default: 20, min: 0.01, max: 100000, description: 'Sustained messages per second allowed per device (token bucket).' },
  rateBurst: { type: 'integer', default: 100, min: 1, max: 1000000, description: 'Token bucket size: messages a device may send at once after being idle.' }
})

const outbox = defineSection({
  synchronous: { type: 'string', default: 'FULL', enum: ['FULL', 'NORMAL'], description: 'SQLite synchronous mode. FULL: every commit is fsynced before devices are acknowledged (survives power cuts). NORMAL: faster and fewer SD-card writes, but the last commits before a power cut can be lost.' },
  maxMessages: { type: 'integer', default: 1000000, min: 10, max: 100000000, description: 'Outbox capacity in messages. When full the gateway stops acknowledging (backpressure); nothing is dropped.' },
  maxBytes: { type: 'integer', default: 268435456, min: 65536, max: 17179869184, description: 'Outbox capacity in payload bytes; same policy as maxMessages.' },
  commitMaxMessages: { type: 'integer', default: 2000, min: 1, max: 100000, description: 'Most messages committed in one transaction (group commit).' },
  commitLingerMs: { type: 'integer', default: 250, min: 0, max: 5000, description: 'Longest wait of an MQTT message for its group commit. The device has the broker\'s PUBACK already; this delays only the gateway\'s PUBACK to the broker (the egress sends the message to the cloud from memory meanwhile). Longer: more messages per commit, fewer bytes written to the SD card (app/docs/write-path.md).' },
  coapCommitLingerMs: { type: 'integer', default: 50, min: 0, max: 5000, description: 'Longest wait of a CoAP message for its group commit (its 2.04 waits for the commit).' },
  commitEarlyMessages: { type: 'integer', default: 256, min: 1, max: 100000, description: 'A group is committed as soon as it has this many messages, before its linger is over. The uplink sends from memory and does not wait for the commit; larger groups mean fewer fsyncs and fewer bytes written per message (at 1,000 msg/s, 256 against 64: about 3 fsyncs a second against 13, 250 against 400 bytes per message), while the gateway\'s PUBACK to the broker waits a little longer.' },
  commitMinIntervalMs: { type: 'integer', default: 50, min: 0, max: 5000, description: 'Least time between two group commits unless commitMaxMessages are waiting: at most 1000/this fsyncs per second at any rate.' },
  minFreeBytes: { type: 'integer', default: 33554432, min: 0, max: 1099511627776, description: 'Free space the data directory keeps: below it the gateway stops acknowledging and reading devices (as when SQLite reports the disk full), /health answers 503 "disk_full", and it resumes by itself when space returns.' },
  trafficLogRetentionHours: { type: 'integer', default: 72, min: 1, max: 8760, description: 'Traffic log rollups (per device, per minute) older than this are deleted.' },
  trafficLogMaxRows: { type: 'integer', default: 500000, min: 1000, max: 100000000, description: 'The per-message traffic log of releases before the rollups keeps at most this many rows (it is no longer written).' },
  deadLetterMax: { type: 'integer', default: 100000, min: 10, max: 10000000, description: 'Dead letters kept at most (oldest removed first, and counted).' }
})

const uplink = defineSection({
  url: { type: 'string', default: '', pattern: /^https?:\/\/[^\s]+$/, description: 'Cloud ingest endpoint (HTTPS). Required by `run`. http:// only with allowInsecureHttp.' },
  allowInsecureHttp: { type: 'boolean', default: false, description: 'Accept an http:// uplink.url (the bearer token and the data would cross the network in clear): for tests against a local sink only.' },
  tokenFile: { type: 'string', default: '', description: 'File holding the bearer token for the cloud (kept off the config file so the image carries no secret).' },
  caFile: { type: 'string', default: '', description: 'Extra CA bundle to trust for the cloud (PEM). Empty: the system store.' },
  certFile: { type: 'string', default: '', description: 'Client certificate toward the cloud (optional mutual TLS).' },
  keyFile: { type: 'string', default: '', description: 'Its key.' },
  batchMaxMessages: { type: 'integer', default: 1000, min: 1, max: 100000, description: 'Most messages per HTTPS request.' },
  batchMaxBytes: { type: 'integer', default: 1048576, min: 1024, max: 67108864, description: 'Most payload bytes per request (before gzip).' },
  lingerMs: { type: 'integer', default: 50, min: 0, max: 60000, description: 'How long a partial batch waits for more messages.' },
  gzip: { type: 'boolean', default: true, description: 'Compress request bodies (Content-Encoding: gzip).' },
  timeoutMs: { type: 'integer', default: 15000, min: 100, max: 600000, description: 'Request timeout.' },
  backoffBaseMs: { type: 'integer', default: 500, min: 1, max: 600000, description: 'First retry delay after a failure; doubles with jitter.' },
  backoffMaxMs: { type: 'integer', default: 60000, min: 1, max: 3600000, description: 'Largest retry delay.' }
})

const api = defineSection({
  host: { type: 'string', default: '127.0.0.1', description: 'Management API address (/health, /status, /metrics). Loopback by default; the image exposes it only through WireGuard.' },
  port: { type: 'integer', default: 8080, min: 0, max: 65535, description: 'Management API port (0: any free port, for tests).' },
  auth: { type: 'string', default: 'token', enum: ['token', 'none'], description: 'token: every request but GET /health and GET /metrics needs `Authorization: Bearer <the token in api.tokenFile>` (the CLI reads the file). none: no token (the Host, Origin and content-type checks stay); for a listener nobody else can reach.' },
  tokenFile: { type: 'string', default: '', description: 'The API token, made by `pki init` or at the daemon\'s start when missing (32 random bytes, mode 0640: the gateway\'s group and root read it). Empty: <dataDir>/api-token.' },
  allowedHosts: { type: 'string[]', default: [], pattern: /^[A-Za-z0-9.:[\]-]{1,255}$/, description: 'Names (or addresses) besides the listener\'s own addresses that a request\'s Host header may carry, e.g. the gateway\'s name on the management network. Any other Host is refused (403), so a web page cannot rebind its DNS name to the gateway.' }
})

const broker = defineSection({
  lanPort: { type: 'integer', default: 8883, min: 1, max: 65535, description: 'Mosquitto\'s device listener (MQTT over TLS with client certificates).' },
  lanBind: { type: 'string', default: '', description: 'Address of the device listener; empty: all addresses (the firewall admits it from the LAN only).' },
  gatewayPort: { type: 'integer', default: 8884, min: 1, max: 65535, description: 'Mosquitto\'s loopback listener for the gateway itself.' },
  maxQueuedMessages: { type: 'integer', default: 200000, min: 100, max: 10000000, description: 'Messages Mosquitto queues for the gateway\'s session while it is down or slow.' },
  maxQueuedBytes: { type: 'integer', default: 100663296, min: 65536, max: 8589934592, description: 'Payload bytes Mosquitto queues for one client, the gateway\'s session above all (max_queued_bytes). Beyond it the broker still acknowledges devices and drops for the gateway (counted in gateway_broker_messages_dropped_total). At most half of memoryLimitBytes: the broker needs as much again to send the backlog.' },
  memoryLimitBytes: { type: 'integer', default: 268435456, min: 4194304, max: 17179869184, description: 'The broker\'s heap limit (memory_limit): a backstop behind maxQueuedBytes. At it Mosquitto disconnects any client whose packet it cannot allocate ("disconnected due to out of memory"), the gateway too, which then cannot drain the backlog: hence maxQueuedBytes at most half of it. The default (256 MiB; resident measured as the heap plus about 10 MB) fits a 1 GB Pi with the gateway.' },
  sysIntervalSeconds: { type: 'integer', default: 10, min: 1, max: 3600, description: 'How often Mosquitto publishes its $SYS statistics; the gateway reads the count of dropped messages there.' },
  autosaveIntervalSeconds: { type: 'integer', default: 10, min: 1, max: 3600, description: 'How often Mosquitto writes its persistence file on /data.' },
  names: { type: 'string[]', default: ['iot-gateway.local', 'localhost'], description: 'DNS names in the broker certificate (devices connect to one of these).' },
  addresses: { type: 'string[]', default: ['192.168.100.1', '127.0.0.1'], description: 'IP addresses in the broker certificate.' },
  denialLogCommand: { type: 'string[]', default: ['journalctl', '--namespace=mosquitto', '--follow', '--lines=all', '--boot', '--all', '--output=short-unix', '--unit=mosquitto.service'], description: 'Command (no shell) whose standard output is Mosquitto\'s log. The gateway follows it and turns each ACL denial into an `acl_denied` security event of the device (trust penalty, audit row). Mosquitto logs denials only at debug level, so a non-empty command also makes `render mosquitto` add `log_type debug` (about 3.4 log lines per message: journal space and CPU). Lines with a journal time from before the gateway started only teach it which client id is which device. Restarted with backoff when it exits. `[]`: off.' }
})

export const sections = { gateway, mqtt, limits, outbox, uplink, api, broker, coap: coapSection, devices: devicesSection, trust: trustSection, firewall, wireguard, monitor: monitorSection, alerts: alertsSection } as const satisfies Record<string, SectionSpec>

export type Config = { readonly version: number } & { readonly [K in keyof typeof sections]: SectionValue<(typeof sections)[K]> }
