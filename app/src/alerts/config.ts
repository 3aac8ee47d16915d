import { defineSection } from '../config/define.js'

/** The rules every gateway evaluates; see app/docs/operations.md for what each means. */
export const RULES = [
  'cpu_high', 'memory_high', 'temperature_high', 'throttled', 'disk_low', 'outbox_stale', 'uplink_failing',
  'cloud_auth_refused', 'broker_unreachable', 'clock_unsynchronised', 'clock_behind_pki', 'device_quarantined', 'device_silent', 'device_anomaly'
] as const
export type RuleName = typeof RULES[number]

/**
 * Alert rules: a threshold and a duration ("for") per rule, one hysteresis ratio for all, where the
 * alerts go. Durations are how long a condition must hold before the alert fires: a compile job
 * that pins the CPU for a minute is not an incident, two minutes of a full CPU on a gateway is.
 */
export const alertsSection = defineSection({
  enabled: { type: 'boolean', default: true, description: 'Evaluate alert rules (at every monitor sample, monitor.intervalSeconds).' },
  disabled: { type: 'string[]', default: [], pattern: new RegExp(`^(${RULES.join('|')})$`), description: `Rules switched off, by name: ${RULES.join(', ')}.` },
  hysteresisRatio: { type: 'number', default: 0.1, min: 0, max: 0.9, description: 'A firing threshold alert resolves only once the value is this fraction back on the good side (CPU 80 % fires above 80, resolves below 72), so a value hovering at the line does not flap.' },
  cpuPercent: { type: 'number', default: 80, min: 1, max: 100, description: 'cpu_high: total CPU busy above this percentage…' },
  cpuForSeconds: { type: 'integer', default: 120, min: 0, max: 86400, description: '…for this long.' },
  memoryPercent: { type: 'number', default: 85, min: 1, max: 100, description: 'memory_high: memory in use (1 - MemAvailable/MemTotal) above this percentage…' },
  memoryForSeconds: { type: 'integer', default: 120, min: 0, max: 86400, description: '…for this long.' },
  temperatureCelsius: { type: 'number', default: 70, min: 0, max: 150, description: 'temperature_high: hottest thermal zone above this (°C; a Pi 3 starts soft throttling at 60-80 °C, hard at 85 °C)…' },
  temperatureForSeconds: { type: 'integer', default: 60, min: 0, max: 86400, description: '…for this long.' },
  throttledForSeconds: { type: 'integer', default: 10, min: 0, max: 86400, description: 'throttled: the firmware reports under-voltage, throttling, a frequency cap or the soft temperature limit now, for this long (Raspberry Pi kernels only).' },
  diskFreeMinBytes: { type: 'integer', default: 209715200, min: 0, max: 1099511627776, description: 'disk_low: space available on the data directory\'s file system below this (bytes)…' },
  diskFreeMinInodes: { type: 'integer', default: 1000, min: 0, max: 100000000, description: '…or free inodes below this…' },
  diskForSeconds: { type: 'integer', default: 0, min: 0, max: 86400, description: '…for this long.' },
  outboxOldestSeconds: { type: 'integer', default: 3600, min: 1, max: 31536000, description: 'outbox_stale: the oldest message in the outbox is older than this (seconds).' },
  outboxHighWaterRatio: { type: 'number', default: 0.9, min: 0.1, max: 1, description: '/health answers 503 once the outbox holds this fraction of outbox.maxMessages or outbox.maxBytes.' },
  uplinkFailingSeconds: { type: 'integer', default: 600, min: 0, max: 86400, description: 'uplink_failing: the cloud has not accepted a batch for this long while messages wait.' },
  cloudAuthForSeconds: { type: 'integer', default: 0, min: 0, max: 86400, description: 'cloud_auth_refused: the cloud answers 401/403, for this long.' },
  brokerUnreachableSeconds: { type: 'integer', default: 30, min: 0, max: 86400, description: 'broker_unreachable: the gateway has had no connection to Mosquitto for this long (also the grace before /health reports it).' },
  clockUnsynchronisedSeconds: { type: 'integer', default: 3600, min: 0, max: 604800, description: 'clock_unsynchronised: systemd-timesyncd has not synchronised the clock for this long (a Pi has no RTC; at a site that blocks NTP the clock only moves forward from the latest known time).' },
  deviceSilentFactor: { type: 'number', default: 5, min: 1.5, max: 1000, description: 'device_silent: no message from a device for this many times its own usual interval (learned per device)…' },
  deviceSilentMinSeconds: { type: 'integer', default: 300, min: 1, max: 604800, description: '…and at least this long (a device sending every second is not silent after 5 s).' },
  deviceSilentWarmup: { type: 'integer', default: 5, min: 1, max: 10000, description: 'Intervals a device must have shown before its silence is judged.' },
  anomalyZ: { type: 'number', default: 6, min: 1, max: 1000, description: 'device_anomaly: a numeric field of a device\'s telemetry more than this many standard deviations from its rolling mean.' },
  anomalyWarmup: { type: 'integer', default: 30, min: 2, max: 100000, description: 'Samples of a field before it is judged.' },
  anomalyMinSpread: { type: 'number', default: 0.5, min: 0, max: 1e12, description: 'The standard deviation used is at least this (in the field\'s own unit) and 1 % of the mean, so a constant sensor does not alarm on its first wiggle.' },
  anomalyMaxFields: { type: 'integer', default: 16, min: 0, max: 1000, description: 'Numeric fields tracked per device (the first seen; 0 turns value anomalies off).' },
  url: { type: 'string', default: '', pattern: /^https?:\/\/[^\s]+$/, description: 'Where alerts are POSTed. Empty: uplink.url (the envelope has "alerts" where a batch has "messages"). Same token, CA and client certificate as the uplink.' },
  webhookUrl: { type: 'string', default: '', pattern: /^https?:\/\/[^\s]+$/, description: 'A second receiver for the same envelope (its own queue; no token is sent to it).' }
})
