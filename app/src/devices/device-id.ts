/**
 * Device ids: what the broker takes from the certificate CN, and what goes into topics and paths.
 * 1 to 64 characters from A-Z a-z 0-9 _ . - starting with a letter or digit: no MQTT wildcards (+ #),
 * no '/', no whitespace, no '..' path component. Case matters. The gateway's own id is not a device id.
 *
 * One module with no imports, so the configuration schema (gateway.id), the pipeline, CoAP, the
 * broker's denial log and the device commands share the rule without importing each other.
 */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/

/** Why `id` cannot be a device's id on the gateway `gatewayId`, or undefined when it can. */
export function deviceIdProblem (id: string, gatewayId: string): string | undefined {
  if (id === gatewayId) return `"${id}" is the gateway's own id (its certificate would get the gateway's broker rights)`
  if (!DEVICE_ID_PATTERN.test(id)) {
    return `"${id.slice(0, 80)}" is not a valid device id: 1 to 64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit (no MQTT wildcards + #, no /, no spaces)`
  }
  return undefined
}
