import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs'
import { dirname } from 'node:path'

/**
 * Replaces a file durably: temp file, fsync, rename, fsync of the directory. A power cut leaves the
 * old or the new content, never a torn or empty file, and the new name survives the cut.
 *
 * Local to clock/ until the shared lib/atomic-file.ts lands; then this is replaced by it.
 */
export function writeFileDurable (file: string, data: string, mode = 0o644): void {
  const tmp = `${file}.tmp-${process.pid}`
  const fd = openSync(tmp, 'w', mode)
  try {
    writeSync(fd, data)
    fsyncSync(fd)
  } catch (err) {
    closeSync(fd)
    try { unlinkSync(tmp) } catch { /* already gone */ }
    throw err
  }
  closeSync(fd)
  renameSync(tmp, file)
  const dir = openSync(dirname(file), 'r')
  try { fsyncSync(dir) } finally { closeSync(dir) }
}
