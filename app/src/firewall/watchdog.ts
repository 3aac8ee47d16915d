import { spawn, spawnSync } from 'node:child_process'
import { closeSync, existsSync, openSync } from 'node:fs'
import { stateFiles, type WatchdogControl, type WatchdogRef } from './safe-apply.js'

/** How this program runs itself again: node + the bundle (or the installed bin). */
export const selfCommand = (): string[] => [process.execPath, ...(process.argv[1] !== undefined ? [process.argv[1]] : [])]

const watchArgs = (id: string, stateDir: string): string[] => ['firewall', 'watchdog', '--id', id, '--state-dir', stateDir]

/**
 * A detached child (its own session, so a closing SSH session's SIGHUP does not reach it) that polls
 * the pending marker and rolls back at the deadline. Works without systemd (tests, containers).
 */
export function processWatchdog (self: string[] = selfCommand()): WatchdogControl {
  return {
    async start ({ id, stateDir }) {
      const log = openSync(stateFiles(stateDir).watchdogLog, 'a', 0o600)
      try {
        const [bin, ...pre] = self
        const child = spawn(bin!, [...pre, ...watchArgs(id, stateDir)], { detached: true, stdio: ['ignore', log, log] })
        await new Promise<void>((resolve, reject) => {
          child.once('spawn', () => resolve())
          child.once('error', reject)
        })
        child.unref()
        return { kind: 'process', pid: child.pid! }
      } finally {
        closeSync(log)
      }
    },
    // The watchdog exits by itself within a poll interval once the marker is gone or replaced.
    async stop () {}
  }
}

/**
 * A transient systemd timer (systemd-run --on-active): survives the operator's logout even where
 * logind kills a session's processes, and shows up in `systemctl list-timers`.
 */
export function systemdWatchdog (self: string[] = selfCommand()): WatchdogControl {
  return {
    async start ({ id, deadline, stateDir }) {
      const unit = `iot-gateway-firewall-rollback-${id.replace(/[^A-Za-z0-9-]/g, '')}`
      const secs = Math.max(1, Math.ceil((deadline - Date.now()) / 1000))
      const r = spawnSync('systemd-run', ['--unit', unit, '--description', 'Roll back an unconfirmed iot-gateway firewall apply',
        `--on-active=${secs}s`, '--timer-property=AccuracySec=1s', '--collect', '--', ...self, ...watchArgs(id, stateDir)], { encoding: 'utf8' })
      if (r.status !== 0) throw new Error(`systemd-run failed: ${(r.stderr || r.error?.message || '').trim()}`)
      return { kind: 'systemd', unit }
    },
    async stop (ref: WatchdogRef) {
      if (ref.kind === 'systemd') spawnSync('systemctl', ['stop', `${ref.unit}.timer`], { stdio: 'ignore' })
    }
  }
}

export type WatchdogKind = 'auto' | 'process' | 'systemd'

/** systemd when PID 1 is systemd (the image), a detached process otherwise. */
export function makeWatchdog (kind: WatchdogKind): WatchdogControl {
  const systemd = kind === 'systemd' || (kind === 'auto' && existsSync('/run/systemd/system'))
  const chosen = systemd ? systemdWatchdog() : processWatchdog()
  const fallback = processWatchdog()
  return {
    start: async p => {
      try { return await chosen.start(p) } catch (err) {
        if (kind !== 'auto' || !systemd) throw err
        return await fallback.start(p)
      }
    },
    stop: async ref => { await (ref.kind === 'systemd' ? systemdWatchdog() : fallback).stop(ref) }
  }
}
