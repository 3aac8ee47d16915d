import { readFileSync } from 'node:fs'
import { Command } from 'commander'
import { aclPath, writeAcl } from '../../broker/broker-files.js'
import { paths } from '../../config/load.js'
import { writeFileAtomic } from '../../lib/atomic-file.js'
import { decryptBackup, exportBackup, importBackup, readPassphrase } from '../../pki/backup.js'
import { openDatabase } from '../../store/db.js'
import { becomeDataOwner, configFrom, output, type Io } from '../io.js'

/** `pki export --out FILE --passphrase-file P` / `pki import FILE --passphrase-file P [--force]`. */
export function addPkiBackupCommands (pki: Command, io: Io): Command {
  pki.command('export')
    .description('write an encrypted backup (scrypt + AES-256-GCM) of the device CA, the CRL, the CoAP secret and the device registry')
    .requiredOption('--out <file>', 'backup file to write (0600)')
    .requiredOption('--passphrase-file <file>', 'file holding the passphrase (at least 12 characters)')
    .option('--json', 'print JSON')
    .action((opts: { out: string, passphraseFile: string, json?: boolean }, cmd: Command) => {
      const c = configFrom(cmd.optsWithGlobals(), io)
      const passphrase = readPassphrase(opts.passphraseFile)
      becomeDataOwner(c.gateway.dataDir)
      const db = openDatabase(paths(c).db, { synchronous: c.outbox.synchronous })
      let r
      try { r = exportBackup(paths(c).pkiDir, db, c.gateway.id, passphrase) } finally { db.close() }
      writeFileAtomic(opts.out, r.text, 0o600)
      output(io, opts, { out: opts.out, files: r.files, devices: r.devices }, () => `wrote ${opts.out}: ${r.files.length} PKI files, ${r.devices} device(s)\n`)
    })
  pki.command('import')
    .description('restore an encrypted PKI backup onto this data directory (a new card); then restart mosquitto and the gateway')
    .argument('<file>', 'backup made by `pki export`')
    .requiredOption('--passphrase-file <file>', 'file holding the passphrase')
    .option('--force', 'replace a registry that already has devices')
    .option('--json', 'print JSON')
    .action((file: string, opts: { passphraseFile: string, force?: boolean, json?: boolean }, cmd: Command) => {
      const c = configFrom(cmd.optsWithGlobals(), io)
      const payload = decryptBackup(readFileSync(file, 'utf8'), readPassphrase(opts.passphraseFile))
      becomeDataOwner(c.gateway.dataDir)
      const db = openDatabase(paths(c).db, { synchronous: c.outbox.synchronous })
      let r
      try { r = importBackup(paths(c).pkiDir, db, payload, opts.force === true) } finally { db.close() }
      // The broker's ACL denies revoked devices too (beside the CRL): it must list them now.
      writeAcl(c.gateway.dataDir, { gatewayId: c.gateway.id, streams: c.mqtt.streams, revoked: r.revoked })
      output(io, opts, { ...r, acl: aclPath(c.gateway.dataDir), from: payload.gatewayId }, () => `restored ${r.files.length} PKI files and ${r.devices} device(s) (${r.revoked.length} revoked) from the backup of ${payload.gatewayId} made ${payload.createdAt}\ntakes effect after: systemctl restart mosquitto.service iot-gateway.service\n`)
    })
  return pki
}
