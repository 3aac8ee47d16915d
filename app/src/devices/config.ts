import { defineSection } from '../config/define.js'

/** The device registry as the daemon sees it. */
export const devicesSection = defineSection({
  registryPollMs: { type: 'integer', default: 1000, min: 50, max: 60000, description: 'How often the daemon looks for registry changes made by the CLI (revocation, release). The CLI also tells a running daemon at once through the management API.' },
  certDays: { type: 'integer', default: 3650, min: 1, max: 36500, description: 'Validity of device certificates issued by `device enroll` and `device sign-csr`.' },
  holdMaxPerDevice: { type: 'integer', default: 10000, min: 0, max: 10000000, description: 'Messages of a quarantined device kept back for the operator; beyond this they are dropped (and counted).' }
})

/**
 * Trust scores: every security event lowers a device's score, accepted messages slowly restore it;
 * below `floor` the device is quarantined until an operator runs `device release`.
 */
export const trustSection = defineSection({
  initial: { type: 'number', default: 100, min: 1, max: 1000, description: 'Score of a new or released device, and the most it can reach.' },
  floor: { type: 'number', default: 40, min: 0, max: 1000, description: 'Below this the device is quarantined: its data is held back and an alert raised.' },
  recoverPerMessage: { type: 'number', default: 0.2, min: 0, max: 100, description: 'Points an accepted message gives back.' },
  penaltyBadSignature: { type: 'number', default: 20, min: 0, max: 1000, description: 'Ignored (kept so that older files load): a CoAP request with a wrong or missing MAC is unauthenticated, anyone on the LAN can claim any id, so it is counted per source address (gateway_unauthenticated_by_source, audit `unauthenticated_request`) and never charged to a device.' },
  penaltyReplay: { type: 'number', default: 10, min: 0, max: 1000, description: 'Replayed or duplicate sequence number. Over MQTT (the device\'s own TLS session) each one; over CoAP at most one per replayPenaltyWindowSeconds.' },
  replayPenaltyWindowSeconds: { type: 'integer', default: 300, min: 1, max: 86400, description: 'CoAP replays are refused (4.01) and counted every time but charged to the device at most once per this many seconds: anyone on the LAN can send a captured request again.' },
  penaltyMalformed: { type: 'number', default: 1, min: 0, max: 1000, description: 'Bad JSON, bad schema, oversize, unknown stream. Low: a device sending the wrong schema is misconfigured, not hostile; at 1 point it takes 60 such messages in a row (10 minutes at one message every 10 s) to reach the default floor, time for its owner to see the refusal reason in /status and the log, while an attack (replay 10, ACL denial 15) still costs 10 to 15 times more.' },
  penaltyRateLimited: { type: 'number', default: 1, min: 0, max: 1000, description: 'A message refused by the rate limit.' },
  penaltyAclDenied: { type: 'number', default: 15, min: 0, max: 1000, description: 'An ACL denial reported for the device.' }
})
