import { Command } from 'commander'
import { paths } from '../../config/load.js'
import { existsSync } from 'node:fs'
import { aclPath, writeAcl } from '../../broker/broker-files.js'
import { apiTokenPath, ensureApiToken } from '../../api/auth.js'
import { initPki } from '../../pki/pki.js'
import { configFrom, output, type Io } from '../io.js'

export function makePkiCommand (io: Io): Command {
  const pki = new Command('pki').description('the gateway\'s local certificate authority')
  pki.command('init')
    .description('create the device CA, the broker and gateway certificates, the CRL and the broker\'s ACL on the data directory (idempotent; first boot)')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }, cmd: Command) => {
      const c = configFrom(cmd.optsWithGlobals(), io)
      const r = initPki(paths(c).pkiDir, { gatewayId: c.gateway.id, brokerNames: { dns: [...c.broker.names], ip: [...c.broker.addresses] } })
      // Mosquitto will not start without its ACL; later the gateway rewrites it on enrolment and revocation.
      if (!existsSync(aclPath(c.gateway.dataDir))) {
        writeAcl(c.gateway.dataDir, { gatewayId: c.gateway.id, streams: c.mqtt.streams, revoked: [] })
        r.created.push(aclPath(c.gateway.dataDir))
      }
      // The management API's token, made here at first boot (as the gateway's user, like the rest of
      // /data) so it exists before anyone needs it; the daemon also makes it at start when missing.
      if (c.api.auth === 'token' && ensureApiToken(apiTokenPath(c)).created) r.created.push(apiTokenPath(c))
      output(io, opts, r, () => r.created.length === 0 ? 'PKI already initialised; nothing changed\n' : r.created.map(f => `created ${f}\n`).join(''))
    })
  return pki
}
