import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir } from '../helpers/env.js'

const lib = join(import.meta.dirname, '..', '..', 'src', 'lib', 'atomic-file.ts')

/** Runs `body` in a child Node (tap's TypeScript loader) with writeFileAtomic imported. */
function child (dir: string, body: string, wrap: string[] = []): { run: () => Promise<{ code: number | null, signal: string | null, stderr: string }> } {
  const script = join(dir, `child-${Math.random().toString(16).slice(2)}.mts`)
  writeFileSync(script, `import { writeFileAtomic } from ${JSON.stringify(lib)}\n${body}\n`)
  const argv = [...process.execArgv, script]
  return {
    run: () => new Promise(resolve => {
      const p = wrap.length > 0 ? spawn(wrap[0]!, [...wrap.slice(1), process.execPath, ...argv]) : spawn(process.execPath, argv)
      let stderr = ''
      p.stderr.on('data', d => { stderr += String(d) })
      p.on('exit', (code, signal) => resolve({ code, signal, stderr }))
    })
  }
}

t.test('a crash between the write and the rename leaves the old file whole', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'ca.key')
  writeFileSync(file, 'old key\n')
  const r = await child(dir, `writeFileAtomic(${JSON.stringify(file)}, 'new key that is much longer\\n'.repeat(1000), 0o600, { beforeRename: () => process.kill(process.pid, 'SIGKILL') })`).run()
  t.equal(r.signal, 'SIGKILL', `the writer died where the test wanted it (${r.stderr.slice(0, 300)})`)
  t.equal(readFileSync(file, 'utf8'), 'old key\n', 'old content, whole')
  // The next successful write replaces it and sets the mode exactly.
  const ok = await child(dir, `writeFileAtomic(${JSON.stringify(file)}, 'new key\\n', 0o600)`).run()
  t.equal(ok.code, 0, ok.stderr)
  t.equal(readFileSync(file, 'utf8'), 'new key\n')
  t.equal(statSync(file).mode & 0o777, 0o600)
})

t.test('the file is fsynced before the rename and the directory after it (strace)', async t => {
  if (spawnSync('strace', ['-V']).status !== 0) { t.fail('strace is not installed (scripts/install-deps.sh installs it)'); return }
  const dir = tempDir(t)
  const file = join(dir, 'gateway.key')
  const log = join(dir, 'strace.log')
  const r = await child(dir, `writeFileAtomic(${JSON.stringify(file)}, 'k\\n', 0o600)`,
    ['strace', '-f', '-qq', '-o', log, '-e', 'trace=openat,fsync,fdatasync,rename,renameat,renameat2']).run()
  t.equal(r.code, 0, r.stderr)
  const lines = readFileSync(log, 'utf8').split('\n')
  // Follow the file descriptors: which one is the temp file, which one the directory.
  const fdOf = (re: RegExp): string | undefined => lines.map(l => re.exec(l)).find(m => m !== null)?.[1]
  const tmpFd = fdOf(/openat\(.*\.gateway\.key\.[^"]*\.tmp", [^)]*\) = (\d+)/)
  const dirFd = fdOf(new RegExp(`openat\\(AT_FDCWD, "${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}", O_RDONLY[^)]*\\) = (\\d+)`))
  t.ok(tmpFd, 'the temp file was opened')
  t.ok(dirFd, 'the directory was opened')
  const at = (re: RegExp): number => lines.findIndex(l => re.test(l))
  const syncTmp = at(new RegExp(`f(data)?sync\\(${tmpFd}\\)`))
  const rename = at(/rename(at2?)?\(.*\.gateway\.key\.[^"]*\.tmp".*gateway\.key"/)
  const lastSyncDir = lines.map((l, i) => new RegExp(`fsync\\(${dirFd}\\)`).test(l) ? i : -1).filter(i => i >= 0).pop() ?? -1
  t.ok(syncTmp >= 0 && rename > syncTmp, 'data fsynced before the rename')
  t.ok(lastSyncDir > rename, 'directory fsynced after the rename')
})
