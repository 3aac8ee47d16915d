import { createHmac, timingSafeEqual } from 'node:crypto'

/**
 * CoAP request authentication. node-coap has no DTLS, so each request carries an HMAC-SHA256 made
 * with the device's key from enrolment (`<id>.coap-key`), in CoAP option 65001 (the experimental
 * range; odd, so "critical": a CoAP node that does not know it must refuse the request instead of
 * ignoring it). The MAC covers a version label, the device id, the stream and the exact payload
 * bytes. The payload carries the device's (epoch, seq), which the pipeline requires to grow, so a
 * captured request sent again is refused as a replay, and a request cannot be moved to another
 * device or stream. What it does not give: confidentiality (the LAN is WPA2-protected Wi-Fi on the
 * image) and protection of the response. See docs in the README for the device side.
 *
 *   mac = HMAC-SHA256(key, "iot-gateway coap v1\0" || id || "\0" || stream || "\0" || payload)
 */
export const COAP_MAC_OPTION = 65001
export const COAP_MAC_LABEL = 'iot-gateway coap v1'

export function coapMac (key: Buffer, id: string, stream: string, payload: Buffer | string): Buffer {
  return createHmac('sha256', key).update(`${COAP_MAC_LABEL}\0${id}\0${stream}\0`).update(payload).digest()
}

export function verifyCoapMac (key: Buffer, id: string, stream: string, payload: Buffer, mac: Buffer | undefined): boolean {
  if (!mac || mac.length !== 32) return false
  return timingSafeEqual(coapMac(key, id, stream, payload), mac)
}
