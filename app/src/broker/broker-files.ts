import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { writeAtomic } from '../pki/pki.js'
import { renderAcl } from './mosquitto-conf.js'

/** The ACL path the rendered mosquitto.conf names. */
export const aclPath = (dataDir: string): string => join(dataDir, 'mosquitto', 'acl')

/**
 * Writes the ACL if its content changed (atomically, 0644 for the broker). Returns true if it wrote.
 * Unchanged content is not rewritten, so a watcher (the image's path unit) reloads Mosquitto only
 * when something changed.
 */
export function writeAcl (dataDir: string, o: { gatewayId: string, streams: readonly string[], revoked: readonly string[] }): boolean {
  const file = aclPath(dataDir)
  const text = renderAcl(o)
  if (existsSync(file) && readFileSync(file, 'utf8') === text) return false
  mkdirSync(join(dataDir, 'mosquitto'), { recursive: true, mode: 0o750 })
  writeAtomic(file, text, 0o644)
  return true
}
