import { spawn } from 'node:child_process'

export interface RunResult { code: number, stdout: string, stderr: string }

/**
 * Runs a program to completion and collects its output (no shell). Rejects only when it cannot be
 * started; a non-zero exit is a result, for the caller to judge.
 */
export function runProcess (bin: string, args: string[], input?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, args, { stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    p.stdout!.on('data', (b: Buffer) => out.push(b))
    p.stderr!.on('data', (b: Buffer) => err.push(b))
    p.once('error', reject)
    p.once('close', code => resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }))
    if (p.stdin) {
      p.stdin.on('error', () => {})
      p.stdin.end(input)
    }
  })
}
