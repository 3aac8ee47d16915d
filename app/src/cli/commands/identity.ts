import { Command } from 'commander'
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { paths } from '../../config/load.js'
import { ensureKey, readPublicKey } from '../../wireguard/keys.js'
import { configFrom, type Io } from '../io.js'
import { keyFile } from './wg.js'

const why = (err: unknown): string => (err as NodeJS.ErrnoException).code ?? (err as Error).message

/**
 * `identity`: what an operator without a shell needs to know of this gateway, as "name: value"
 * lines (the layer's iot-gateway-identity.service prints them on the console and the boot
 * partition at every boot): the gateway id, the WireGuard public key the hub needs (made on first
 * use, as `wg pubkey`), and the SHA-256 fingerprint of the CA devices and provisioning pin (as
 * `openssl x509 -fingerprint -sha256` prints it). One process at boot where the script used three.
 * A part that cannot be read says "unavailable (why)"; a configuration that does not load exits 2.
 */
export function makeIdentityCommand (io: Io): Command {
  return new Command('identity')
    .description('print the gateway id, its WireGuard public key and the CA fingerprint ("name: value" lines)')
    .action((_o: unknown, cmd: Command) => {
      const c = configFrom(cmd.optsWithGlobals(), io)
      let wg: string
      try {
        try { wg = ensureKey(keyFile(c)).publicKey } catch { wg = readPublicKey(keyFile(c)) }
      } catch (err) { wg = `unavailable (${keyFile(c)}: ${why(err)})` }
      const ca = paths(c).caCert
      let fp: string
      try { fp = new X509Certificate(readFileSync(ca)).fingerprint256 } catch (err) { fp = `unavailable (${ca}: ${why(err)})` }
      io.out(`gateway-id: ${c.gateway.id}\nwireguard-public-key: ${wg}\nca-sha256: ${fp}\n`)
    })
}
