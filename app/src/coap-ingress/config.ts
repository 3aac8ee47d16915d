import { defineSection } from '../config/define.js'

/**
 * CoAP ingress (UDP, no DTLS: node-coap has none). Bound to the IoT LAN address only; each request
 * carries an HMAC made with the device's enrolment key (see coap-ingress/auth.ts).
 */
export const coapSection = defineSection({
  enabled: { type: 'boolean', default: true, description: 'Accept CoAP requests (POST /d/<device id>/<stream>).' },
  bind: { type: 'string', default: '192.168.100.1', pattern: /^[0-9a-fA-F.:]+$/, description: 'Address to bind, the gateway\'s IoT LAN address: never a wildcard. Until the address exists (interface not up yet) binding is retried.' },
  port: { type: 'integer', default: 5683, min: 0, max: 65535, description: 'UDP port (0: any free port, for tests).' },
  piggybackMs: { type: 'integer', default: 1000, min: 0, max: 10000, description: 'How long the answer may take and still ride on the ACK (a group commit with fsync fits in it); later answers are sent separately.' },
  retryBindMs: { type: 'integer', default: 2000, min: 100, max: 600000, description: 'Delay between attempts to bind while the LAN address is missing.' }
})
