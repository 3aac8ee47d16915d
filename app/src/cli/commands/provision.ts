import { chownSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { Command } from 'commander'
import { writeAcl } from '../../broker/broker-files.js'
import { buildConfig, loadLayered, paths } from '../../config/load.js'
import { checkOverrideShape, chownLikeParent, mergeLayers, writeOverride, type Raw } from '../../config/layers.js'
import { writeFileAtomic } from '../../lib/atomic-file.js'
import { ConfigError } from '../../lib/errors.js'
import { decryptBackup, importBackup } from '../../pki/backup.js'
import { openDatabase } from '../../store/db.js'
import { output, type Io } from '../io.js'
import { defaultTokenFile } from './config.js'

/**
 * One gateway's settings, written onto the card's boot partition by `scripts/flash.sh --provision`
 * and imported once by the first boot (iot-gateway-provision.service):
 *   { "version": 1,
 *     "config": { ...a per-gateway override: gateway.id, uplink.url, wireguard.address/hub... },
 *     "uplinkToken": "...", "wireguardPrivateKey": "base64",
 *     "wifi": { "ssid": "...", "passphrase": "...", "country": "DE" },
 *     "sshAuthorizedKeys": ["ssh-ed25519 AAAA... op@laptop"],
 *     "pkiBackup": { "backup": "<pki export file's text>", "passphrase": "..." } }
 * Everything is checked before anything is written (the config with the `config check` checker).
 */
export interface Provision {
  version: 1
  config?: Raw
  uplinkToken?: string
  wireguardPrivateKey?: string
  wifi?: { ssid: string, passphrase: string, country: string }
  sshAuthorizedKeys?: string[]
  pkiBackup?: { backup: string, passphrase: string }
}

const KNOWN = new Set(['version', '$comment', 'config', 'uplinkToken', 'wireguardPrivateKey', 'wifi', 'sshAuthorizedKeys', 'pkiBackup'])
const SSH_KEY = /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\n]*)?$/
const WG_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw480]=$/

export function checkProvision (file: string, raw: unknown): Provision {
  const bad = (field: string, why: string): never => { throw new ConfigError(`${file}: ${field}`, why) }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) bad('(file)', 'must contain a JSON object')
  const p = raw as Record<string, unknown>
  for (const k of Object.keys(p)) if (!KNOWN.has(k)) bad(k, `unknown field (known: ${[...KNOWN].join(', ')})`)
  if (p.version !== 1) bad('version', 'must be 1')
  if (p.config !== undefined) checkOverrideShape(`${file}: config`, p.config)
  if (p.uplinkToken !== undefined && (typeof p.uplinkToken !== 'string' || !/^\S+$/.test(p.uplinkToken))) bad('uplinkToken', 'must be one non-empty token without whitespace')
  if (p.wireguardPrivateKey !== undefined && (typeof p.wireguardPrivateKey !== 'string' || !WG_KEY.test(p.wireguardPrivateKey))) bad('wireguardPrivateKey', 'must be a WireGuard key (wg genkey: 44 characters of base64)')
  if (p.wifi !== undefined) {
    const w = p.wifi as Record<string, unknown>
    if (typeof w !== 'object' || w === null) bad('wifi', 'must be an object')
    if (typeof w.ssid !== 'string' || Buffer.byteLength(w.ssid) < 1 || Buffer.byteLength(w.ssid) > 32) bad('wifi.ssid', 'must be 1 to 32 bytes')
    if (typeof w.passphrase !== 'string' || w.passphrase.length < 8 || w.passphrase.length > 63 || !/^[\x20-\x7e]+$/.test(w.passphrase)) bad('wifi.passphrase', 'must be 8 to 63 printable ASCII characters (WPA2-PSK)')
    if (typeof w.country !== 'string' || !/^[A-Z]{2}$/.test(w.country)) bad('wifi.country', 'must be an ISO 3166 country code such as DE (the radio\'s regulatory domain)')
  }
  if (p.sshAuthorizedKeys !== undefined) {
    if (!Array.isArray(p.sshAuthorizedKeys) || p.sshAuthorizedKeys.length === 0) bad('sshAuthorizedKeys', 'must be a non-empty array of public keys')
    ;(p.sshAuthorizedKeys as unknown[]).forEach((k, i) => { if (typeof k !== 'string' || !SSH_KEY.test(k)) bad(`sshAuthorizedKeys[${i}]`, 'is not an SSH public key line (ssh-ed25519 AAAA... comment)') })
  }
  if (p.pkiBackup !== undefined) {
    const b = p.pkiBackup as Record<string, unknown>
    if (typeof b?.backup !== 'string' || typeof b.passphrase !== 'string') bad('pkiBackup', 'must be { "backup": "<pki export text>", "passphrase": "..." }')
  }
  return p as unknown as Provision
}

/** `provision import FILE`: validate everything, then write it onto the data partition. */
export function makeProvisionCommand (io: Io): Command {
  const prov = new Command('provision').description('per-gateway settings from a provisioning file (first boot)')
  prov.command('import')
    .description('validate a provisioning file (the `config check` checker) and write its settings onto /data: the override, the token, the WireGuard key, SSH keys, Wi-Fi, a PKI backup; prints what it took (never the secrets)')
    .argument('<file>', 'provisioning JSON (scripts/provision.sh makes them)')
    .option('--json', 'print JSON')
    .action((file: string, opts: { json?: boolean }, cmd: Command) => {
      let raw: unknown
      try { raw = JSON.parse(readFileSync(file, 'utf8')) } catch (err) { throw new ConfigError(file, `is not a readable JSON file: ${(err as Error).message}`) }
      const p = checkProvision(file, raw)
      const { config: now, layers } = loadLayered(cmd.optsWithGlobals().config, io.env)
      const override: Raw = { version: 1, ...layers.override }
      for (const [s, v] of Object.entries(p.config ?? {})) {
        if (s === 'version' || s === '$comment') continue
        override[s] = { ...(override[s] as Raw | undefined), ...(v as Raw) }
      }
      const tokenFile = now.uplink.tokenFile !== '' ? now.uplink.tokenFile : defaultTokenFile(now.gateway.dataDir)
      if (p.uplinkToken !== undefined && now.uplink.tokenFile === '') override.uplink = { ...(override.uplink as Raw | undefined), tokenFile }
      checkOverrideShape(layers.overridePath, override)
      const c = buildConfig(mergeLayers({ base: layers.base, override }), io.env)
      const payload = p.pkiBackup !== undefined ? decryptBackup(p.pkiBackup.backup, p.pkiBackup.passphrase) : undefined

      // All checked: write. The data partition's root (/data) holds the system's parts (wireguard/, ssh/, wifi/).
      const took: string[] = []
      const dataRoot = dirname(c.gateway.dataDir)
      mkdirSync(c.gateway.dataDir, { recursive: true })
      writeOverride(layers.overridePath, override)
      took.push(`override ${layers.overridePath}: ${Object.entries(override).filter(([k]) => k !== 'version').flatMap(([s, v]) => Object.keys(v as Raw).map(f => `${s}.${f}`)).join(', ')}`)
      if (p.uplinkToken !== undefined) {
        writeFileAtomic(tokenFile, p.uplinkToken + '\n', 0o600)
        chownLikeParent(tokenFile)
        took.push(`cloud token -> ${tokenFile} (${p.uplinkToken.length} characters)`)
      }
      if (p.wireguardPrivateKey !== undefined) {
        mkdirSync(dirname(c.wireguard.privateKeyFile), { recursive: true, mode: 0o700 })
        writeFileAtomic(c.wireguard.privateKeyFile, p.wireguardPrivateKey + '\n', 0o600)
        took.push(`WireGuard private key -> ${c.wireguard.privateKeyFile}`)
      }
      if (p.sshAuthorizedKeys !== undefined) {
        const f = join(dataRoot, 'ssh', 'authorized_keys')
        mkdirSync(dirname(f), { recursive: true, mode: 0o700 })
        writeFileAtomic(f, p.sshAuthorizedKeys.join('\n') + '\n', 0o600)
        took.push(`${p.sshAuthorizedKeys.length} SSH key(s) -> ${f}`)
      }
      if (p.wifi !== undefined) {
        // hostapd lines, the only ones the image's iot-gateway-wifi.service accepts over the image's
        // access point configuration. hostapd takes the rest of the line as the SSID: an SSID that is
        // not plain printable ASCII (or has spaces at its ends) goes as hex (ssid2=).
        const f = join(dataRoot, 'wifi', 'iot-gateway-lan.conf')
        mkdirSync(dirname(f), { recursive: true, mode: 0o700 })
        const ssid = /^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/.test(p.wifi.ssid) ? `ssid=${p.wifi.ssid}` : `ssid2=${Buffer.from(p.wifi.ssid).toString('hex')}`
        writeFileAtomic(f, `# The IoT LAN's Wi-Fi of this gateway (iot-gateway provision import)\n${ssid}\ncountry_code=${p.wifi.country}\nwpa_passphrase=${p.wifi.passphrase}\n`, 0o600)
        took.push(`Wi-Fi "${p.wifi.ssid}" (${p.wifi.country}) -> ${f}`)
      }
      if (payload !== undefined) {
        const db = openDatabase(paths(c).db, { synchronous: c.outbox.synchronous })
        let r
        try { r = importBackup(paths(c).pkiDir, db, payload, false) } finally { db.close() }
        mkdirSync(join(c.gateway.dataDir, 'mosquitto'), { recursive: true })
        writeAcl(c.gateway.dataDir, { gatewayId: c.gateway.id, streams: c.mqtt.streams, revoked: r.revoked })
        // Written as root at first boot: hand the database and the PKI to the gateway's user (the
        // setgid pki/ directory already gave them its group).
        giveToDataOwner(c.gateway.dataDir, [paths(c).db, `${paths(c).db}-wal`, `${paths(c).db}-shm`, ...r.files.map(f => join(paths(c).pkiDir, f)), join(c.gateway.dataDir, 'mosquitto', 'acl')])
        took.push(`PKI backup of ${payload.gatewayId}: ${r.files.length} files, ${r.devices} device(s), ${r.revoked.length} revoked`)
      }
      output(io, opts, { gatewayId: c.gateway.id, took }, () => `provisioned ${c.gateway.id}:\n${took.map(s => `  ${s}\n`).join('')}`)
    })
  return prov
}

function giveToDataOwner (dataDir: string, files: string[]): void {
  if (process.getuid?.() !== 0) return
  const uid = statSync(dataDir).uid
  for (const f of files) if (existsSync(f)) chownSync(f, uid, -1)
}
