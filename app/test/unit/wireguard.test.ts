import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { buildConfig } from '../../src/config/load.js'
import { isWireguardError } from '../../src/lib/errors.js'
import { decodeKey, ensureKey, generatePrivateKey, publicKeyOf, readPublicKey } from '../../src/wireguard/keys.js'
import { WgLink, type CmdRunner } from '../../src/wireguard/link.js'
import { extraRoutes, renderNetdev, renderNetwork, tunnelSpec } from '../../src/wireguard/networkd.js'
import { tempDir } from '../helpers/temp.js'

const dir = (t: { teardown: (fn: () => void) => void }): string => {
  const d = tempDir(t, 'iotgw-wg-unit-')
  return d
}
const hex2b64 = (h: string): string => Buffer.from(h, 'hex').toString('base64')
const HUB = hex2b64('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f')

t.test('X25519 as WireGuard does it (RFC 7748 section 6.1 vectors)', async t => {
  t.equal(publicKeyOf(hex2b64('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a')), hex2b64('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a'))
  t.equal(publicKeyOf(hex2b64('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb')), HUB)
  const k = Buffer.from(generatePrivateKey(), 'base64')
  t.equal(k.length, 32)
  t.equal(k[0]! & 7, 0, 'clamped like wg genkey')
  t.equal(k[31]! & 0xc0, 0x40)
  t.not(generatePrivateKey(), generatePrivateKey())
  t.throws(() => decodeKey('not a key'), /not a WireGuard key/)
  t.throws(() => decodeKey(Buffer.alloc(31).toString('base64')))
})

t.test('the key file: made once, 0600 in a 0700 directory, public half readable', async t => {
  const d = dir(t)
  const file = join(d, 'data', 'wireguard', 'private.key')
  const a = ensureKey(file)
  t.ok(a.created)
  t.equal(statSync(file).mode & 0o777, 0o600)
  t.equal(statSync(join(d, 'data', 'wireguard')).mode & 0o777, 0o700)
  t.equal(statSync(join(d, 'data', 'wireguard', 'public.key')).mode & 0o777, 0o644)
  t.equal(publicKeyOf(readFileSync(file, 'utf8').trim()), a.publicKey)
  const b = ensureKey(file)
  t.notOk(b.created, 'second use keeps the key')
  t.equal(b.publicKey, a.publicKey)
  t.equal(readPublicKey(file), a.publicKey)
})

const configured = (d: string, w: Record<string, unknown> = {}) => buildConfig({
  gateway: { dataDir: d },
  wireguard: { address: '10.200.0.2/24', hubPublicKey: HUB, hubEndpoint: 'hub.example.net:51820', hubAllowedIps: ['10.200.0.0/24', '10.50.0.0/16'], ...w }
})

t.test('configuration checks', async t => {
  t.throws(() => buildConfig({ wireguard: { hubPublicKey: HUB } }), /hubPublicKey and hubEndpoint go together/)
  t.throws(() => buildConfig({ wireguard: { hubPublicKey: 'abc' } }), /wireguard\.hubPublicKey/)
  t.throws(() => buildConfig({ wireguard: { address: '10.200.0.2' } }), /wireguard\.address: "10\.200\.0\.2" is not an address with a prefix/)
  t.throws(() => buildConfig({ wireguard: { hubAllowedIps: ['10.0.0.0/40'] } }), /wireguard\.hubAllowedIps\[0\]/)
  t.throws(() => buildConfig({ wireguard: { hubEndpoint: 'hub:99999', hubPublicKey: HUB } }), /port out of range/)
  t.throws(() => tunnelSpec(buildConfig({})), { code: 'GW_ERR_CONFIG_MISSING', message: /wireguard\.address: is not set/ })
})

t.test('systemd-networkd files', async t => {
  const spec = tunnelSpec(configured('/data/iot-gateway'))
  const netdev = renderNetdev(spec)
  t.match(netdev, /\[NetDev\]\nName=wg0\nKind=wireguard\n/)
  t.match(netdev, /\[WireGuard\]\nPrivateKey=@network\.wireguard\.private\.wg0\nListenPort=51820\n/)
  t.match(netdev, /\[WireGuardPeer\]\nPublicKey=3p7bfXt9wbTTW2HC7OQ1Nz\+DQ8hbeGdNrfx\+FG\+IK08=\nEndpoint=hub\.example\.net:51820\nAllowedIPs=10\.200\.0\.0\/24,10\.50\.0\.0\/16\nPersistentKeepalive=25\n/)
  t.match(renderNetdev(spec, 'file'), /PrivateKeyFile=\/data\/iot-gateway\/wireguard\/private\.key/)
  const network = renderNetwork(spec)
  t.match(network, /\[Match\]\nName=wg0\n/)
  t.match(network, /Address=10\.200\.0\.2\/24/)
  t.same(extraRoutes(spec), ['10.50.0.0/16'], 'only networks the address does not cover get a route')
  t.match(network, /\[Route\]\nDestination=10\.50\.0\.0\/16\n/)
  t.notMatch(network, /Destination=10\.200\.0\.0/)
})

t.test('wg up/down with ip and wg: the key goes by path, never in arguments', async t => {
  const d = dir(t)
  const c = configured(d, { mtu: 1380 })
  const spec = tunnelSpec(c, { interface: 'wgtest0' })
  const key = ensureKey(spec.privateKeyFile)
  const calls: string[][] = []
  let exists = false
  const run: CmdRunner = async (bin, args) => {
    calls.push([bin, ...args])
    if (args[0] === 'link' && args[1] === 'show') return { code: exists ? 0 : 1, stdout: '', stderr: '' }
    if (args[0] === 'link' && args[1] === 'add') exists = true
    return { code: 0, stdout: '', stderr: '' }
  }
  await new WgLink(run).up(spec)
  t.same(calls, [
    ['ip', 'link', 'show', 'dev', 'wgtest0'],
    ['ip', 'link', 'add', 'dev', 'wgtest0', 'type', 'wireguard'],
    ['wg', 'set', 'wgtest0', 'listen-port', '51820', 'private-key', spec.privateKeyFile, 'peer', HUB, 'endpoint', 'hub.example.net:51820', 'persistent-keepalive', '25', 'allowed-ips', '10.200.0.0/24,10.50.0.0/16'],
    ['ip', 'address', 'replace', '10.200.0.2/24', 'dev', 'wgtest0'],
    ['ip', 'link', 'set', 'dev', 'wgtest0', 'mtu', '1380', 'up'],
    ['ip', 'route', 'replace', '10.50.0.0/16', 'dev', 'wgtest0']
  ])
  const secret = readFileSync(spec.privateKeyFile, 'utf8').trim()
  t.notOk(calls.flat().includes(secret), 'the private key is not an argument')
  t.not(key.publicKey, secret)
  // Without kernel support the error says what to do.
  const noKernel: CmdRunner = async (_bin, args) => ({ code: 1, stdout: '', stderr: args[1] === 'add' ? 'Error: Unknown device type.' : '' })
  const err = await new WgLink(noKernel).up(spec).catch(e => e)
  t.ok(isWireguardError(err))
  t.match(err.message, /start a userspace implementation first \(wireguard-go wgtest0\)/)
})
