/** The gateway's version (--version, /metrics gateway_build_info); with package.json's. */
export const VERSION = '0.1.0'
