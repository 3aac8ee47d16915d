import { execFile } from 'node:child_process'

/**
 * sd_notify(3) without a native module: Node has no AF_UNIX datagram sockets, so the message goes
 * through systemd's own `systemd-notify` (the unit sets NotifyAccess=all so systemd accepts a message
 * from a child of the main process). Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
 */
export class SdNotify {
  private watchdog?: NodeJS.Timeout
  constructor (private readonly env: NodeJS.ProcessEnv = process.env, private readonly bin = 'systemd-notify') {}

  get enabled (): boolean { return typeof this.env.NOTIFY_SOCKET === 'string' && this.env.NOTIFY_SOCKET !== '' }

  send (...assignments: string[]): Promise<void> {
    if (!this.enabled) return Promise.resolve()
    return new Promise(resolve => {
      execFile(this.bin, assignments, { env: this.env, timeout: 5000 }, () => resolve())
    })
  }

  ready (status?: string): Promise<void> {
    return this.send('--ready', ...(status ? [`--status=${status}`] : []))
  }

  stopping (): Promise<void> { return this.send('STOPPING=1') }

  /** Pings WATCHDOG=1 at half of WATCHDOG_USEC when systemd asked for a watchdog. */
  startWatchdog (healthy: () => boolean): void {
    const usec = Number(this.env.WATCHDOG_USEC)
    if (!this.enabled || !Number.isFinite(usec) || usec <= 0) return
    const pid = this.env.WATCHDOG_PID
    if (pid !== undefined && pid !== String(process.pid)) return
    this.watchdog = setInterval(() => { if (healthy()) void this.send('WATCHDOG=1') }, Math.max(1000, usec / 2000))
    this.watchdog.unref()
  }

  stopWatchdog (): void { if (this.watchdog) clearInterval(this.watchdog) }
}
