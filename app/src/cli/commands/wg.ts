import { Command, Option } from 'commander'
import { chmodSync, copyFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Config } from '../../config/schema.js'
import { apiTunnelListen } from '../../wireguard/api-listen.js'
import { defaultKeyFile, ensureKey, readPrivateKey, readPublicKey } from '../../wireguard/keys.js'
import { WgLink } from '../../wireguard/link.js'
import { keyCredential, pskCredential, renderNetdev, renderNetwork, tunnelSpec, unitBaseName, type KeyMode } from '../../wireguard/networkd.js'
import { configFrom, output, type Io } from '../io.js'

export const keyFile = (c: Config): string => c.wireguard.privateKeyFile !== '' ? c.wireguard.privateKeyFile : defaultKeyFile(c.gateway.dataDir)

function writeFile (file: string, text: string, mode: number): void {
  writeFileSync(`${file}.tmp`, text, { mode })
  chmodSync(`${file}.tmp`, mode)
  renameSync(`${file}.tmp`, file)
}

const keyModeOption = (): Option => new Option('--key-mode <mode>', 'how networkd gets the private key: a systemd credential (key stays 0600 root) or PrivateKeyFile=').choices(['credential', 'file']).default('credential')

/** `wg ...`: the gateway's WireGuard key and tunnel. `setup`, `up` and `down` need CAP_NET_ADMIN / root. */
export function makeWgCommand (io: Io, link: WgLink = new WgLink()): Command {
  const wg = new Command('wg').description('the WireGuard management tunnel to the operator hub')

  wg.command('pubkey').description('print the gateway\'s public key (makes the key pair on first use)').action((_o: unknown, cmd: Command) => {
    const c = configFrom(cmd.optsWithGlobals(), io)
    let pub: string
    try { pub = ensureKey(keyFile(c)).publicKey } catch { pub = readPublicKey(keyFile(c)) }
    io.out(pub + '\n')
  })

  wg.command('render').description('print the systemd-networkd .netdev and .network files')
    .addOption(keyModeOption())
    .option('--json', 'print JSON ({netdev, network})')
    .action((opts: { keyMode: KeyMode, json?: boolean }, cmd: Command) => {
      const t = tunnelSpec(configFrom(cmd.optsWithGlobals(), io))
      const netdev = renderNetdev(t, opts.keyMode)
      const network = renderNetwork(t)
      output(io, opts, { netdev, network }, () => `# ${unitBaseName(t.interface)}.netdev\n${netdev}\n# ${unitBaseName(t.interface)}.network\n${network}`)
    })

  // For iot-gateway-api-tunnel.service: shell assignments it keeps as the proxy's EnvironmentFile=.
  wg.command('api-listen').description('print where the management API listens on the tunnel (IOT_GATEWAY_API_LISTEN, empty without a tunnel address) and where that forwards (IOT_GATEWAY_API_TARGET)')
    .option('--json', 'print JSON ({listen, target}, or null)')
    .action((opts: { json?: boolean }, cmd: Command) => {
      const l = apiTunnelListen(configFrom(cmd.optsWithGlobals(), io))
      output(io, opts, l, () => `IOT_GATEWAY_API_LISTEN=${l?.listen ?? ''}\nIOT_GATEWAY_API_TARGET=${l?.target ?? ''}\n`)
    })

  wg.command('setup').description('for the oneshot before systemd-networkd: make the key if needed, write the .netdev/.network files and the key credential')
    .option('--dir <dir>', 'where networkd reads runtime units', '/run/systemd/network')
    .option('--credstore <dir>', 'where networkd imports credentials from (ImportCredential=network.wireguard.*)', '/run/credstore')
    .addOption(keyModeOption())
    .option('--json', 'print JSON')
    .action((opts: { dir: string, credstore: string, keyMode: KeyMode, json?: boolean }, cmd: Command) => {
      const c = configFrom(cmd.optsWithGlobals(), io)
      if (c.wireguard.address === '') {
        // First boot before the operator has configured the hub: make the key so that its public
        // half can be read (journal, `wg pubkey`), but bring no tunnel up.
        const key = ensureKey(keyFile(c))
        output(io, opts, { publicKey: key.publicKey, keyCreated: key.created, written: [] }, () => `wireguard.address is not set: no tunnel configured; public key ${key.publicKey}\n`)
        return
      }
      const t = tunnelSpec(c)
      const key = ensureKey(t.privateKeyFile)
      const written: string[] = []
      if (opts.keyMode === 'credential') {
        mkdirSync(opts.credstore, { recursive: true, mode: 0o700 })
        const cred = join(opts.credstore, keyCredential(t.interface))
        writeFile(cred, readPrivateKey(t.privateKeyFile) + '\n', 0o600)
        written.push(cred)
        if (t.presharedKeyFile !== '') {
          const psk = join(opts.credstore, pskCredential(t.interface))
          copyFileSync(t.presharedKeyFile, `${psk}.tmp`)
          chmodSync(`${psk}.tmp`, 0o600)
          renameSync(`${psk}.tmp`, psk)
          written.push(psk)
        }
      }
      mkdirSync(opts.dir, { recursive: true, mode: 0o755 })
      const base = join(opts.dir, unitBaseName(t.interface))
      writeFile(`${base}.netdev`, renderNetdev(t, opts.keyMode), 0o644)
      writeFile(`${base}.network`, renderNetwork(t), 0o644)
      written.push(`${base}.netdev`, `${base}.network`)
      output(io, opts, { publicKey: key.publicKey, keyCreated: key.created, written }, () => written.map(f => `wrote ${f}\n`).join('') + `public key ${key.publicKey}\n`)
    })

  wg.command('up').description('create/configure the tunnel with ip and wg (kernel WireGuard, or a link wireguard-go already made)')
    .option('--interface <name>', 'interface name (default: wireguard.interface)')
    .action(async (opts: { interface?: string }, cmd: Command) => {
      const c = configFrom(cmd.optsWithGlobals(), io)
      const t = tunnelSpec(c, opts.interface !== undefined ? { interface: opts.interface } : {})
      ensureKey(t.privateKeyFile)
      await link.up(t)
      io.out(`${t.interface} up: ${t.address}, listening on ${t.listenPort}${t.hub ? `, hub ${t.hub.endpoint}` : ''}\n`)
    })

  wg.command('down').description('remove the tunnel interface')
    .option('--interface <name>', 'interface name (default: wireguard.interface)')
    .action(async (opts: { interface?: string }, cmd: Command) => {
      const c = configFrom(cmd.optsWithGlobals(), io)
      const iface = opts.interface ?? c.wireguard.interface
      io.out(await link.down(iface) ? `${iface} removed\n` : `${iface} does not exist\n`)
    })
  return wg
}
