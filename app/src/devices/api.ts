import type { IncomingMessage } from 'node:http'
import type { Config } from '../config/schema.js'
import { DEVICE_ID_PATTERN } from './device-id.js'
import type { DeviceGuard } from './guard.js'

type Handler = (body: unknown, req: IncomingMessage) => Promise<[number, unknown]>

export const COMMAND_MAX_BYTES = 4096

/** Topic of a device's commands (the ACL lets only that device read it). */
export const commandTopic = (id: string): string => `devices/${id}/commands`

/**
 * Management API routes of the identity layer:
 *  - POST /commands {"device": id, "command": {...}}: publishes the JSON object to devices/<id>/commands
 *    with QoS 1 on the gateway's own broker connection; 202 once the broker has it (PUBACK).
 *    A device gets it while subscribed (or queued by the broker on its persistent session).
 *  - POST /registry/reload: the CLI tells the daemon the registry changed (revocation takes effect at once).
 */
export function deviceRoutes (config: Config, guard: DeviceGuard, publish: (topic: string, payload: string) => Promise<void>): Map<string, Handler> {
  const routes = new Map<string, Handler>()
  routes.set('POST /registry/reload', async () => [200, { version: guard.reload() }])
  routes.set('POST /commands', async body => {
    const b = body as { device?: unknown, command?: unknown } | undefined
    const device = b?.device
    if (typeof device !== 'string' || !DEVICE_ID_PATTERN.test(device) || device === config.gateway.id) return [400, { error: '"device" must be a device id' }]
    const command = b?.command
    if (command === null || typeof command !== 'object' || Array.isArray(command)) return [400, { error: '"command" must be a JSON object, e.g. {"action":"read_now"} or {"action":"set_interval","seconds":60}' }]
    const payload = JSON.stringify(command)
    if (Buffer.byteLength(payload) > COMMAND_MAX_BYTES) return [413, { error: `command larger than ${COMMAND_MAX_BYTES} bytes` }]
    guard.check()
    const status = guard.status(device)
    if (status === undefined) return [404, { error: `no device "${device}"` }]
    if (status === 'revoked') return [409, { error: `device "${device}" is revoked` }]
    await publish(commandTopic(device), payload)
    guard.audit.record({ type: 'command_sent', device, source: 'api', detail: { bytes: Buffer.byteLength(payload) } })
    return [202, { device, topic: commandTopic(device), qos: 1, bytes: Buffer.byteLength(payload) }]
  })
  return routes
}
