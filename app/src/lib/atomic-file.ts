import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { basename, dirname, join } from 'node:path'

/** Test seam: called after the temporary file is on disk and before the rename. */
export interface AtomicWriteHooks { beforeRename?: (tmp: string) => void }

/**
 * Replaces `file` so that after a power cut it holds either the old content or the new, whole:
 * temp file in the same directory, write, fsync, rename over the old name, fsync of the directory
 * (the rename is a change of the directory; without its fsync ext4 may come back after a power cut
 * with neither name pointing at the new inode, or, for a first write, with an empty file).
 */
export function writeFileAtomic (file: string, data: string | Uint8Array, mode = 0o644, hooks: AtomicWriteHooks = {}): void {
  const dir = dirname(file)
  const tmp = join(dir, `.${basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`)
  const buf = typeof data === 'string' ? Buffer.from(data) : data
  let renamed = false
  try {
    const fd = openSync(tmp, 'wx', mode)
    try {
      for (let off = 0; off < buf.length;) off += writeSync(fd, buf, off, buf.length - off)
      fchmodSync(fd, mode) // the umask may have narrowed `mode`; the file gets exactly what was asked
      fsyncSync(fd)
    } finally {
      closeSync(fd)
    }
    hooks.beforeRename?.(tmp)
    renameSync(tmp, file)
    renamed = true
  } finally {
    if (!renamed) rmSync(tmp, { force: true })
  }
  fsyncDir(dir)
}

/** fsync of a directory: makes the creation, rename or removal of its entries durable. */
export function fsyncDir (dir: string): void {
  const fd = openSync(dir, 'r')
  try { fsyncSync(fd) } finally { closeSync(fd) }
}
