import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, openSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import { renderAcl, renderMosquittoConf } from '../../src/broker/mosquitto-conf.js'
import { brokerOptions } from '../../src/cli/commands/render.js'
import type { Config } from '../../src/config/schema.js'
import { initPki } from '../../src/pki/pki.js'
import { waitFor } from './ports.js'

const canConnect = (port: number): Promise<boolean> => new Promise(resolve => {
  const s = connect(port, '127.0.0.1')
  s.once('connect', () => { s.destroy(); resolve(true) })
  s.once('error', () => resolve(false))
})

/**
 * A real Mosquitto, started with the configuration the gateway renders for the image (and the ACL),
 * with the PKI made by the gateway's own `pki init` code. Only `user root` is added, so that a
 * broker started by root in CI keeps reading the 0600 keys of the test directory.
 */
/** Where the helper's broker writes its log (stdout and stderr) for a gateway data directory. */
export const mosquittoLogFile = (dataDir: string): string => join(dataDir, 'mosquitto.log')

export class Mosquitto {
  proc?: ChildProcess
  readonly confFile: string
  readonly logFile: string
  /** `extraConf`: lines appended to the rendered configuration (a test's own logging settings). */
  constructor (readonly config: Config, readonly extraConf: readonly string[] = []) {
    this.confFile = join(config.gateway.dataDir, 'mosquitto.conf')
    this.logFile = mosquittoLogFile(config.gateway.dataDir)
  }

  get lanPort (): number { return this.config.broker.lanPort }

  async start (): Promise<void> {
    const c = this.config
    initPki(join(c.gateway.dataDir, 'pki'), { gatewayId: c.gateway.id, brokerNames: { dns: ['localhost'], ip: ['127.0.0.1'] } })
    mkdirSync(join(c.gateway.dataDir, 'mosquitto'), { recursive: true })
    writeFileSync(join(c.gateway.dataDir, 'mosquitto', 'acl'), renderAcl({ gatewayId: c.gateway.id, streams: c.mqtt.streams }))
    const conf = renderMosquittoConf(brokerOptions(c))
    writeFileSync(this.confFile, (process.getuid?.() === 0 ? 'user root\n' : '') + conf + this.extraConf.map(l => `${l}\n`).join(''))
    const log = openSync(this.logFile, 'a')
    this.proc = spawn('mosquitto', ['-c', this.confFile], { stdio: ['ignore', log, log] })
    const proc = this.proc
    let exited = false
    proc.once('exit', () => { exited = true })
    await waitFor(async () => {
      if (exited) throw new Error(`mosquitto exited; see ${this.logFile}`)
      return await canConnect(c.broker.lanPort) && await canConnect(c.broker.gatewayPort)
    }, 'mosquitto to listen', 15000)
  }

  /** SIGHUP: Mosquitto reloads its ACL (and, from 2.0, its TLS files). */
  reload (): void { this.proc?.kill('SIGHUP') }

  async stop (signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const p = this.proc
    if (!p || p.exitCode !== null || p.signalCode !== null) return
    const exited = new Promise(resolve => p.once('exit', resolve))
    p.kill(signal)
    await exited
  }
}
