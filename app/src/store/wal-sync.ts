import { closeSync, fdatasyncSync, fstatSync, openSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { dirname } from 'node:path'
import { fsyncDir } from '../lib/atomic-file.js'

/** What the store needs to make its commits durable itself (a seam for the tests). */
export interface WalSyncer {
  /** Everything written to the WAL so far is on the disk when this resolves. Runs off the event loop. */
  sync: () => Promise<void>
  /** The same, blocking (at shutdown). */
  syncNow: () => void
}

/**
 * fdatasync of an SQLite WAL file on libuv's thread pool (app/docs/write-path.md, "The fsync off
 * the event loop"). The outbox's group commits run at synchronous=NORMAL, so a commit only writes
 * the WAL into the page cache. This makes it durable without blocking the event loop for the
 * card's sync latency. The file is opened by name for each sync, so a WAL file that SQLite made
 * again is never missed. The first time a WAL file (an inode) is synced, its directory is synced
 * too, so the file itself survives a power cut as SQLite's own first sync of a new WAL would make it.
 * Linux syncs a file's data through any descriptor of it, a read-only one included.
 */
export class WalSync implements WalSyncer {
  private dirSynced = -1

  constructor (readonly walFile: string) {}

  async sync (): Promise<void> {
    const fh = await open(this.walFile, 'r')
    try {
      await fh.datasync()
      const { ino } = await fh.stat()
      if (ino !== this.dirSynced) {
        const dir = await open(dirname(this.walFile), 'r')
        try { await dir.sync() } finally { await dir.close() }
        this.dirSynced = ino
      }
    } finally {
      await fh.close()
    }
  }

  syncNow (): void {
    const fd = openSync(this.walFile, 'r')
    try {
      fdatasyncSync(fd)
      const { ino } = fstatSync(fd)
      if (ino !== this.dirSynced) {
        fsyncDir(dirname(this.walFile))
        this.dirSynced = ino
      }
    } finally {
      closeSync(fd)
    }
  }
}
