/**
 * One base class with a stable `code`, subclasses per area, and one guard per error (undici/fastify
 * style). Codes are `GW_ERR_<AREA>_<WHAT>` and never change once released: scripts match on them.
 *
 * Every code is written out here as a literal, and each class takes only the codes of its area, so
 * a code can be found with grep (its definition and every place that throws it) and the list below
 * is complete. app/docs/errors.md documents each one; test/unit/errors.test.ts checks that the page
 * lists exactly these codes and that the source uses no other. A new code: add it to its area's list
 * and a row to the page.
 */
export const CONFIG_CODES = [
  'GW_ERR_CONFIG_INVALID',
  'GW_ERR_CONFIG_MISSING'
] as const

export const USAGE_CODES = ['GW_ERR_USAGE'] as const

export const STORE_CODES = [
  'GW_ERR_STORE_OPEN',
  'GW_ERR_STORE_VERSION'
] as const

export const PKI_CODES = [
  'GW_ERR_PKI_BACKUP_DECRYPT',
  'GW_ERR_PKI_BACKUP_FORMAT',
  'GW_ERR_PKI_BACKUP_NOT_EMPTY',
  'GW_ERR_PKI_BACKUP_NO_CA',
  'GW_ERR_PKI_BACKUP_PASSPHRASE',
  'GW_ERR_PKI_CLOCK_BEHIND',
  'GW_ERR_PKI_COAP_MASTER',
  'GW_ERR_PKI_CSR',
  'GW_ERR_PKI_ISSUER',
  'GW_ERR_PKI_NO_CA',
  'GW_ERR_PKI_PEM',
  'GW_ERR_PKI_PKCS12'
] as const

export const FIREWALL_CODES = [
  'GW_ERR_FIREWALL_APPLY_FAILED',
  'GW_ERR_FIREWALL_LIST_FAILED',
  'GW_ERR_FIREWALL_NFT_MISSING',
  'GW_ERR_FIREWALL_NOT_PENDING',
  'GW_ERR_FIREWALL_NO_PREVIOUS',
  'GW_ERR_FIREWALL_REJECTED',
  'GW_ERR_FIREWALL_WATCHDOG'
] as const

export const WIREGUARD_CODES = [
  'GW_ERR_WIREGUARD_BAD_KEY',
  'GW_ERR_WIREGUARD_COMMAND_FAILED',
  'GW_ERR_WIREGUARD_KEY_READ',
  'GW_ERR_WIREGUARD_KEY_WRITE',
  'GW_ERR_WIREGUARD_NO_KERNEL_SUPPORT',
  'GW_ERR_WIREGUARD_TOOL_MISSING'
] as const

/** An HTTP status carried as an error (the cloud's answer, or the management API's refusal of a body). */
export const HTTP_CODES = [
  'GW_ERR_HTTP_BAD_REQUEST',
  'GW_ERR_HTTP_STATUS',
  'GW_ERR_HTTP_TOO_LARGE',
  'GW_ERR_HTTP_UNAVAILABLE'
] as const

export type ConfigCode = typeof CONFIG_CODES[number]
export type UsageCode = typeof USAGE_CODES[number]
export type StoreCode = typeof STORE_CODES[number]
export type PkiCode = typeof PKI_CODES[number]
export type FirewallCode = typeof FIREWALL_CODES[number]
export type WireguardCode = typeof WIREGUARD_CODES[number]
export type HttpCode = typeof HTTP_CODES[number]
export type ErrorCode = ConfigCode | UsageCode | StoreCode | PkiCode | FirewallCode | WireguardCode | HttpCode

/** Every code, in the order of the areas above. */
export const ERROR_CODES: readonly ErrorCode[] = [...CONFIG_CODES, ...USAGE_CODES, ...STORE_CODES, ...PKI_CODES, ...FIREWALL_CODES, ...WIREGUARD_CODES, ...HTTP_CODES]

export class GatewayError<C extends ErrorCode = ErrorCode> extends Error {
  readonly code: C
  constructor (code: C, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'GatewayError'
    this.code = code
  }
}

/** A configuration the gateway cannot run with; the CLI exits 2 on it (as on any bad usage). */
export class ConfigError extends GatewayError<ConfigCode> {
  /** The dotted path of the offending field, e.g. `uplink.url`. */
  readonly field: string
  /** INVALID: a value is wrong. MISSING: a field the command needs is empty (e.g. `uplink.url` for `run`). */
  constructor (field: string, reason: string, code: ConfigCode = 'GW_ERR_CONFIG_INVALID') {
    super(code, `${field}: ${reason}`)
    this.name = 'ConfigError'
    this.field = field
  }
}

export class StoreError extends GatewayError<StoreCode> {
  constructor (code: StoreCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'StoreError'
  }
}

export class PkiError extends GatewayError<PkiCode> {
  constructor (code: PkiCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'PkiError'
  }
}

export class UsageError extends GatewayError<UsageCode> {
  constructor (message: string) {
    super('GW_ERR_USAGE', message)
    this.name = 'UsageError'
  }
}

export class FirewallError extends GatewayError<FirewallCode> {
  constructor (code: FirewallCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'FirewallError'
  }
}

export class WireguardError extends GatewayError<WireguardCode> {
  constructor (code: WireguardCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options)
    this.name = 'WireguardError'
  }
}

const HTTP_CODE_OF: Record<number, HttpCode> = { 400: 'GW_ERR_HTTP_BAD_REQUEST', 413: 'GW_ERR_HTTP_TOO_LARGE', 503: 'GW_ERR_HTTP_UNAVAILABLE' }

/** An HTTP status as an error: `status` is what is answered (or was received); one fixed code per class. */
export class HttpError extends GatewayError<HttpCode> {
  constructor (readonly status: number, message: string) {
    super(HTTP_CODE_OF[status] ?? 'GW_ERR_HTTP_STATUS', message)
    this.name = 'HttpError'
  }
}

export const isGatewayError = (e: unknown): e is GatewayError => e instanceof GatewayError
export const isConfigError = (e: unknown): e is ConfigError => e instanceof ConfigError
export const isStoreError = (e: unknown): e is StoreError => e instanceof StoreError
export const isPkiError = (e: unknown): e is PkiError => e instanceof PkiError
export const isFirewallError = (e: unknown): e is FirewallError => e instanceof FirewallError
export const isWireguardError = (e: unknown): e is WireguardError => e instanceof WireguardError
export const isUsageError = (e: unknown): e is UsageError => e instanceof UsageError
