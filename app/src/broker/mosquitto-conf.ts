import { join } from 'node:path'

/** Mosquitto's count of messages it dropped (queue limits): the gateway reads it so no loss is silent. */
export const BROKER_DROPPED_TOPIC = '$SYS/broker/publish/messages/dropped'

export interface BrokerOptions {
  dataDir: string
  /** The devices' listener (TLS, client certificates). */
  lanPort: number
  /** Address for the devices' listener; '' = all addresses (the firewall limits it to the LAN). */
  lanBind: string
  /** The gateway's own listener: loopback only. */
  gatewayPort: number
  /** The per-client queue for the gateway's persistent session: when it is full Mosquitto drops. */
  maxQueuedMessages: number
  /** Payload bytes queued for one client (the gateway's session): beyond it Mosquitto drops, counted. */
  maxQueuedBytes: number
  /** The broker's whole heap, a backstop: at it Mosquitto disconnects whoever needs memory, the gateway too. */
  memoryLimitBytes: number
  autosaveIntervalSeconds: number
  /** How often Mosquitto publishes $SYS (the gateway reads the dropped-messages count there). */
  sysIntervalSeconds: number
  streams: readonly string[]
  gatewayId: string
  /** The gateway follows the broker's log for ACL denials (broker.denialLogCommand): debug lines on. */
  logDenials: boolean
}

/**
 * The broker configuration the image runs. Devices: TLS on 8883, a client certificate from our CA is
 * required and its CN becomes the username (use_identity_as_username), checked against the CRL; no
 * anonymous access. The ACL lets a device write only devices/<its CN>/<stream> and read only
 * devices/<its CN>/commands; the gateway (its own loopback listener) reads every device's streams and
 * writes their commands.
 */
export function renderMosquittoConf (o: BrokerOptions): string {
  const pki = join(o.dataDir, 'pki')
  const tls = [
    `cafile ${join(pki, 'ca.crt')}`,
    `certfile ${join(pki, 'broker.crt')}`,
    `keyfile ${join(pki, 'broker.key')}`,
    `crlfile ${join(pki, 'crl.pem')}`,
    'tls_version tlsv1.2',
    'require_certificate true',
    'use_identity_as_username true',
    // The client id a client sends is replaced by its username, i.e. its certificate's CN: a client
    // can only ever open or take over the session of its own certificate, never the gateway's or
    // another device's (a second connection with the same certificate replaces the first, as MQTT
    // says). An empty client id gets the CN too.
    'use_username_as_clientid true',
    'allow_anonymous false',
    `acl_file ${join(o.dataDir, 'mosquitto', 'acl')}`
  ]
  return [
    '# Mosquitto configuration for meta-iot-gateway (rendered by `iot-gateway render mosquitto`).',
    'per_listener_settings true',
    '',
    '# Persistence on /data: the gateway\'s queued messages survive a broker restart. Mosquitto writes',
    '# its database every autosave_interval seconds and at shutdown, not per message: after a power',
    '# cut, messages that were only in the broker (not yet in the gateway\'s outbox) can be lost.',
    'persistence true',
    `persistence_location ${join(o.dataDir, 'mosquitto')}/`,
    `autosave_interval ${o.autosaveIntervalSeconds}`,
    '',
    '# The gateway is the only subscriber that matters; while it restarts its session queues here.',
    '# Beyond this many messages Mosquitto drops for that session (counted by the gateway from $SYS).',
    `max_queued_messages ${o.maxQueuedMessages}`,
    'max_inflight_messages 1000',
    '# RAM (a 1 GB Pi): the backlog for the gateway is bounded in bytes too; beyond it Mosquitto still',
    '# acknowledges devices and drops for the gateway (counted). memory_limit is the backstop for the whole',
    '# heap: at it Mosquitto 2.0.11 disconnects any client it cannot allocate for, the gateway included,',
    '# which then cannot drain the backlog (measured); hence max_queued_bytes at most half of it. Resident',
    '# size measured: the heap plus about 10 MB (TLS, code).',
    `max_queued_bytes ${o.maxQueuedBytes}`,
    `memory_limit ${o.memoryLimitBytes}`,
    `sys_interval ${o.sysIntervalSeconds}`,
    '# Retained messages stay available: `retain_available false` would also stop the retained $SYS',
    '# values, and the gateway reads the dropped count from them after it reconnects. A device\'s retained',
    '# message delivered again at a re-subscription is recognised by the gateway (retain flag) instead.',
    '# stderr, not stdout: Mosquitto before 2.0.16 block-buffers stdout when it is not a terminal, so',
    '# journald would get its lines kilobytes late.',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type notice',
    ...(o.logDenials
      ? ['# ACL denials ("Denied PUBLISH from <client id> ...") are logged only at debug level; the gateway',
          '# reads them from the journal (broker.denialLogCommand) and maps client ids to devices by the',
          '# connection lines. Debug also logs every packet, about 3.4 lines per QoS 1 message (journal',
          '# space and CPU; see the mosquitto.service drop-in). broker.denialLogCommand [] turns it off.',
          'log_type debug']
      : []),
    'log_timestamp false',
    'connection_messages true',
    '',
    '# Devices (LAN).',
    `listener ${o.lanPort}${o.lanBind !== '' ? ` ${o.lanBind}` : ''}`,
    ...tls,
    '',
    '# The gateway itself: loopback only.',
    `listener ${o.gatewayPort} 127.0.0.1`,
    ...tls,
    ''
  ].join('\n')
}

/**
 * The ACL file (re-rendered on revocation and release; Mosquitto reloads it on SIGHUP).
 * Revoked devices get a `topic deny #` block: on Mosquitto 2.0 a deny entry wins over the patterns,
 * and a reload applies it to connections that are already open (their next PUBLISH is refused and
 * nothing more is delivered to them), while the reloaded CRL refuses their next connection.
 */
export function renderAcl (o: { gatewayId: string, streams: readonly string[], revoked?: readonly string[] }): string {
  const revoked = [...new Set(o.revoked ?? [])].filter(id => id !== o.gatewayId).sort()
  return [
    '# Mosquitto ACL for meta-iot-gateway (rendered by the gateway; do not edit).',
    `user ${o.gatewayId}`,
    ...o.streams.map(s => `topic read devices/+/${s}`),
    'topic write devices/+/commands',
    `topic read ${BROKER_DROPPED_TOPIC}`,
    '',
    '# Every device, by the CN of its certificate (%u):',
    ...o.streams.map(s => `pattern write devices/%u/${s}`),
    'pattern read devices/%u/commands',
    '',
    ...(revoked.length > 0 ? ['# Revoked devices: nothing, even on a connection opened before the revocation.'] : []),
    ...revoked.flatMap(id => [`user ${id}`, 'topic deny #', '']),
  ].join('\n')
}
