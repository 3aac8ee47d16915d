import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A temp directory removed at teardown (the one helper for this; tests/ *.mjs have their own world). */
export function tempDir (t: { teardown: (fn: () => void) => void }, prefix = 'iotgw-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  // IOTGW_KEEP_TEST_DIRS=1 keeps logs and databases for a post-mortem.
  if (process.env.IOTGW_KEEP_TEST_DIRS !== '1') t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}
