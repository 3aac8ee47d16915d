// The gateway's WireGuard key against wireguard-tools, and `wg setup` as the boot oneshot runs it.
import { spawnSync } from 'node:child_process'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { generatePrivateKey, publicKeyOf } from '../../src/wireguard/keys.js'
import { tempDir } from '../helpers/env.js'
import { requireBundle } from '../helpers/gateway-process.js'

const wg = (args: string[], input?: string): string => {
  const r = spawnSync('wg', args, { input, encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`wg ${args.join(' ')}: ${r.stderr || r.error?.message}`)
  return r.stdout.trim()
}

if (spawnSync('sh', ['-c', 'command -v wg']).status !== 0) throw new Error('wireguard-tools (wg) is not installed')

t.test('public keys equal what `wg pubkey` derives', async t => {
  for (let i = 0; i < 16; i++) {
    const theirs = wg(['genkey'])
    t.equal(publicKeyOf(theirs), wg(['pubkey'], theirs + '\n'), 'a key from wg genkey')
    const ours = generatePrivateKey()
    t.equal(publicKeyOf(ours), wg(['pubkey'], ours + '\n'), 'a key from the gateway')
  }
  // Unclamped bytes too: both clamp in the same way.
  const raw = Buffer.alloc(32, 0xff).toString('base64')
  t.equal(publicKeyOf(raw), wg(['pubkey'], raw + '\n'))
})

t.test('the CLI: pubkey, setup for networkd, no key on stdout', async t => {
  const bundle = requireBundle()
  const dir = tempDir(t, 'iotgw-wg-')
  const hubPub = wg(['pubkey'], wg(['genkey']) + '\n')
  const file = join(dir, 'gateway.json')
  const cfg = (w: Record<string, unknown>) => JSON.stringify({ version: 1, gateway: { dataDir: join(dir, 'data') }, wireguard: w })
  const cli = (...args: string[]) => spawnSync(process.execPath, [bundle, '-c', file, ...args], { encoding: 'utf8' })

  // Not configured yet (first boot before the operator set up the hub): the key is made, nothing else.
  writeFileSync(file, cfg({}))
  const first = cli('wg', 'setup', '--dir', join(dir, 'network'), '--credstore', join(dir, 'credstore'), '--json')
  t.equal(first.status, 0, first.stderr)
  t.same(JSON.parse(first.stdout).written, [])
  const keyFile = join(dir, 'data', 'wireguard', 'private.key')
  const priv = readFileSync(keyFile, 'utf8').trim()
  t.equal(statSync(keyFile).mode & 0o777, 0o600)
  const pub = cli('wg', 'pubkey')
  t.equal(pub.status, 0)
  t.equal(pub.stdout.trim(), wg(['pubkey'], priv + '\n'))

  writeFileSync(file, cfg({ address: '10.200.0.2/24', hubPublicKey: hubPub, hubEndpoint: '198.51.100.1:51820', hubAllowedIps: ['10.200.0.0/24'] }))
  const setup = cli('wg', 'setup', '--dir', join(dir, 'network'), '--credstore', join(dir, 'credstore'))
  t.equal(setup.status, 0, setup.stderr)
  t.notMatch(setup.stdout + setup.stderr, priv, 'the private key is not printed')
  const cred = join(dir, 'credstore', 'network.wireguard.private.wg0')
  t.equal(readFileSync(cred, 'utf8').trim(), priv, 'the credential holds the key')
  t.equal(statSync(cred).mode & 0o777, 0o600)
  t.equal(statSync(join(dir, 'credstore')).mode & 0o777, 0o700)
  const netdev = readFileSync(join(dir, 'network', '50-iot-gateway-wg0.netdev'), 'utf8')
  t.notMatch(netdev, priv, 'the .netdev names the credential, not the key')
  t.match(netdev, /PrivateKey=@network\.wireguard\.private\.wg0/)
  t.match(netdev, new RegExp(`PublicKey=${hubPub.replace(/[+/]/g, c => `\\${c}`)}`))
  t.match(readFileSync(join(dir, 'network', '50-iot-gateway-wg0.network'), 'utf8'), /Address=10\.200\.0\.2\/24/)
  t.equal(cli('wg', 'pubkey').stdout.trim(), pub.stdout.trim(), 'the key survives')
})
