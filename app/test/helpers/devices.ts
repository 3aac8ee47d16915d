import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import mqtt, { type MqttClient } from 'mqtt'
import type { Config } from '../../src/config/schema.js'
import { loadIssuer, pkiPaths } from '../../src/pki/pki.js'
import { createCertificate, keyToPem, newKeyPair } from '../../src/pki/x509.js'

const exec = promisify(execFile)

export interface DeviceCreds { id: string, certFile: string, keyFile: string, caFile: string }

/** Issues a device certificate from the gateway's CA (what enrolment does), into files for the clients. */
export function deviceCreds (config: Config, id: string, dir = config.gateway.dataDir): DeviceCreds {
  const p = pkiPaths(join(config.gateway.dataDir, 'pki'))
  const k = newKeyPair()
  const cert = createCertificate({ subject: { CN: id }, publicKey: k.publicKey, issuer: loadIssuer(p), days: 30, clientAuth: true })
  const certFile = join(dir, `${id}.crt`)
  const keyFile = join(dir, `${id}.key`)
  writeFileSync(certFile, cert)
  writeFileSync(keyFile, keyToPem(k.privateKey), { mode: 0o600 })
  return { id, certFile, keyFile, caFile: p.caCert }
}

/** Publishes with Debian's mosquitto_pub (QoS 1, TLS, client certificate). Resolves with its exit code and output. */
export async function mosquittoPub (port: number, creds: DeviceCreds, topic: string, messages: string[]): Promise<{ code: number, output: string }> {
  const args = ['-h', 'localhost', '-p', String(port), '--cafile', creds.caFile, '--cert', creds.certFile, '--key', creds.keyFile,
    '-q', '1', '-t', topic, '-i', `${creds.id}-pub-${process.hrtime.bigint()}`]
  if (messages.length === 1) args.push('-m', messages[0]!)
  else args.push('-l')
  return await new Promise(resolve => {
    const child = execFile('mosquitto_pub', args, { timeout: 30000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof (err as any).code === 'number' ? (err as any).code : 1) : 0, output: stdout + stderr })
    })
    if (messages.length > 1) { child.stdin!.end(messages.join('\n') + '\n') } else child.stdin!.end()
  })
}

/** An mqtt.js device with a client certificate; QoS 1 publishes resolve on the broker's PUBACK. */
export async function mqttDevice (port: number, creds: DeviceCreds, opts: { clean?: boolean } = {}): Promise<MqttClient> {
  const { readFileSync } = await import('node:fs')
  const client = await mqtt.connectAsync(`mqtts://localhost:${port}`, {
    clientId: `${creds.id}-${process.hrtime.bigint()}`,
    ca: readFileSync(creds.caFile),
    cert: readFileSync(creds.certFile),
    key: readFileSync(creds.keyFile),
    reconnectPeriod: 0,
    clean: opts.clean ?? true,
    protocolVersion: 4
  })
  return client
}

export { exec }
