import type { Config } from '../config/schema.js'
import type { Registry } from '../lib/metrics.js'
import type { RejectReason } from '../pipeline/checks.js'
import type { TrustEvent } from '../devices/trust.js'

/**
 * Every refusal reason, as a record so that tsc fails here when a reason is added to RejectReason
 * and not to this list (the series would otherwise appear only at its first refusal).
 */
const REJECT_REASONS: Record<RejectReason, true> = {
  oversize: true,
  bad_json: true,
  bad_schema: true,
  bad_device_id: true,
  unknown_stream: true,
  invalid_utf8: true,
  duplicate_key: true,
  replay: true,
  duplicate: true,
  rate_limited: true,
  device_blocked: true,
  outbox_full: true,
  bad_signature: true,
  unknown_device: true,
  redelivered: true
}
const TRUST_EVENTS: Record<TrustEvent, true> = { replay: true, malformed_input: true, rate_limit_applied: true, acl_denied: true }

/**
 * The counters' known label sets, created at 0. Prometheus by the book: a series that appears only
 * at its first increment makes rate() and increase() miss that first event, and absent() alerts
 * cannot tell "never happened" from "not scraped". The counters are defined where they are counted
 * (pipeline, egress, ingress, guard, API); this list sits in one place so those modules stay as they
 * are. Only families that a running component registered are touched (a disabled CoAP or broker log
 * follower registers none), and a label set that exists is left alone (init() is a no-op then).
 * Open-ended labels (CoAP response codes) are not listed: their series appear when first used.
 */
export function initKnownSeries (metrics: Registry, config: Config): void {
  const have = new Set(metrics.names())
  const init = (name: string, ...sets: Array<Record<string, string>>): void => {
    if (have.has(name)) metrics.counter(name, '').init(...sets)
  }
  const transports = config.coap.enabled ? ['mqtt', 'coap'] : ['mqtt']
  for (const name of ['gateway_messages_received_total', 'gateway_messages_accepted_total']) init(name, ...transports.map(transport => ({ transport })))
  init('gateway_messages_rejected_total', ...transports.flatMap(transport => Object.keys(REJECT_REASONS).map(reason => ({ reason, transport }))))
  init('gateway_uplink_batches_total', ...['ok', 'retry', 'dead', 'auth'].map(result => ({ result })))
  init('gateway_api_refused_total', ...['401', '403', '415'].map(status => ({ status })))
  init('gateway_coap_dropped_total', ...['malformed', 'not_a_request', 'error_rate'].map(reason => ({ reason })))
  init('gateway_broker_acl_denials_total', ...['publish', 'subscribe', 'read'].flatMap(kind => ['device', 'own_topic', 'gateway', 'unknown'].map(client => ({ kind, client }))))
  init('gateway_security_events_total', ...Object.keys(TRUST_EVENTS).map(type => ({ type })))
  init('gateway_unauthenticated_requests_total', ...['bad_signature', 'unknown_device'].map(reason => ({ reason })))
  // Counters without labels: one series each.
  for (const name of [
    'gateway_outbox_commits_total', 'gateway_uplink_messages_delivered_total', 'gateway_uplink_messages_from_memory_total', 'gateway_uplink_dead_letters_total',
    'gateway_dead_letters_trimmed_total', 'gateway_uplink_bytes_total', 'gateway_mqtt_connects_total', 'gateway_mqtt_errors_total',
    'gateway_device_quarantines_total', 'gateway_quarantine_dropped_total', 'gateway_quarantine_held_total',
    'gateway_broker_log_follower_restarts_total', 'gateway_broker_log_lines_dropped_total'
  ]) init(name)
}
