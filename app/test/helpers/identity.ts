import { execFile } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { DeviceCreds } from './devices.js'
import { requireBundle } from './gateway-process.js'

export interface CliResult { code: number, out: string, err: string }

/** Runs our own CLI (the bundle, as an operator would) against a configuration file. */
export async function cli (configFile: string, args: string[], timeoutMs = 30000): Promise<CliResult> {
  return await new Promise(resolve => {
    execFile(process.execPath, [requireBundle(), ...args, '-c', configFile], { timeout: timeoutMs }, (err, out, errOut) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0
      resolve({ code, out, err: errOut })
    })
  })
}

export interface Enrolled extends DeviceCreds { coapKey: Buffer, p12File: string, p12Password: string, dir: string }

/** `device enroll <id>` through the CLI; the bundle's files as a device would get them. */
export async function enrollDevice (configFile: string, dir: string, id: string): Promise<Enrolled> {
  const r = await cli(configFile, ['device', 'enroll', id, '--out', dir, '--json'])
  if (r.code !== 0) throw new Error(`device enroll ${id} failed (${r.code}): ${r.err}`)
  const files = (JSON.parse(r.out) as { files: Record<string, string> }).files
  return {
    id,
    certFile: files.cert!,
    keyFile: files.key!,
    caFile: files.ca!,
    p12File: files.p12!,
    p12Password: readFileSync(files.p12Password!, 'utf8').trim(),
    coapKey: Buffer.from(readFileSync(files.coapKey!, 'utf8').trim(), 'hex'),
    dir
  }
}

/** The device side of the CoAP authentication (written out here, not imported, so the test checks the documented scheme). */
export function deviceMac (key: Buffer, id: string, stream: string, payload: string): Buffer {
  return createHmac('sha256', key).update(`iot-gateway coap v1\0${id}\0${stream}\0`).update(payload).digest()
}

export interface CoapResult { code: string | null, output: string }

/**
 * One CoAP request with libcoap's coap-client (it exits 0 even on failure, so the response code is
 * read from its verbose output: "v:1 t:ACK c:2.04 ..."). code null: no answer.
 */
export async function coapClient (port: number, path: string, payload: string, opts: { mac?: Buffer, method?: string, waitSeconds?: number } = {}): Promise<CoapResult> {
  const args = ['-v', '6', '-m', opts.method ?? 'post', '-B', String(opts.waitSeconds ?? 5)]
  if (opts.mac) args.push('-O', `65001,0x${opts.mac.toString('hex')}`)
  if (payload !== '') args.push('-e', payload)
  args.push(`coap://127.0.0.1:${port}${path}`)
  return await new Promise(resolve => {
    execFile('coap-client-notls', args, { timeout: 30000 }, (_err, out, errOut) => {
      const output = out + errOut
      const codes = [...output.matchAll(/ c:(\d\.\d\d) /g)].map(m => m[1]!)
      resolve({ code: codes.length > 0 ? codes[codes.length - 1]! : null, output })
    })
  })
}

/** POST /d/<id>/<stream> with a correct MAC. */
export async function coapSend (port: number, dev: { id: string, coapKey: Buffer }, stream: string, payload: string): Promise<CoapResult> {
  return await coapClient(port, `/d/${dev.id}/${stream}`, payload, { mac: deviceMac(dev.coapKey, dev.id, stream, payload) })
}

export const bundleDir = (dir: string, name = 'bundle'): string => join(dir, name)
