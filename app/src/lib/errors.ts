/**
 * One base class with a stable `code`, subclasses per area, and one guard per error (undici/fastify
 * style). Codes are `GW_ERR_<AREA>_<WHAT>` and never change once released: scripts match on them.
 */
export class GatewayError extends Error {
  readonly code: string
  constructor (code: string, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'GatewayError'
    this.code = code
  }
}

export class ConfigError extends GatewayError {
  /** The dotted path of the offending field, e.g. `uplink.url`. */
  readonly field: string
  constructor (field: string, reason: string) {
    super('GW_ERR_CONFIG_INVALID', `${field}: ${reason}`)
    this.name = 'ConfigError'
    this.field = field
  }
}

export class StoreError extends GatewayError {
  constructor (what: string, message: string, options?: { cause?: unknown }) {
    super(`GW_ERR_STORE_${what}`, message, options)
    this.name = 'StoreError'
  }
}

export class PkiError extends GatewayError {
  constructor (what: string, message: string, options?: { cause?: unknown }) {
    super(`GW_ERR_PKI_${what}`, message, options)
    this.name = 'PkiError'
  }
}

export class UsageError extends GatewayError {
  constructor (message: string) {
    super('GW_ERR_USAGE', message)
    this.name = 'UsageError'
  }
}

export class FirewallError extends GatewayError {
  constructor (what: string, message: string, options?: { cause?: unknown }) {
    super(`GW_ERR_FIREWALL_${what}`, message, options)
    this.name = 'FirewallError'
  }
}

export class WireguardError extends GatewayError {
  constructor (what: string, message: string, options?: { cause?: unknown }) {
    super(`GW_ERR_WIREGUARD_${what}`, message, options)
    this.name = 'WireguardError'
  }
}

export const isGatewayError = (e: unknown): e is GatewayError => e instanceof GatewayError
export const isConfigError = (e: unknown): e is ConfigError => e instanceof ConfigError
export const isStoreError = (e: unknown): e is StoreError => e instanceof StoreError
export const isPkiError = (e: unknown): e is PkiError => e instanceof PkiError
export const isFirewallError = (e: unknown): e is FirewallError => e instanceof FirewallError
export const isWireguardError = (e: unknown): e is WireguardError => e instanceof WireguardError
export const isUsageError = (e: unknown): e is UsageError => e instanceof UsageError
