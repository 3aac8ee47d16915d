import { Command } from 'commander'
import { Gateway } from '../../gateway.js'
import { configFrom, type Io } from '../io.js'

export interface RunHandle { gateway: Gateway, stopped: Promise<void> }

/** `run`: the daemon. SIGTERM/SIGINT stop it in order; a forced exit follows if stopping hangs. */
export function makeRunCommand (io: Io, onStarted?: (h: RunHandle) => void): Command {
  return new Command('run')
    .description('run the gateway (under systemd: Type=notify, READY=1 once listening)')
    .option('--stop-timeout <ms>', 'time allowed for a clean stop before a forced exit', '8000')
    .action(async (opts: { stopTimeout: string }, cmd: Command) => {
      const config = configFrom(cmd.optsWithGlobals(), io)
      const gateway = new Gateway(config)
      let resolveStopped!: () => void
      const stopped = new Promise<void>(resolve => { resolveStopped = resolve })
      const shutdown = (signal: string): void => {
        gateway.log.info('stopping', { signal })
        const timeout = Number(opts.stopTimeout)
        const force = setTimeout(() => { gateway.log.error('stop timed out; exiting'); process.exit(1) }, timeout)
        force.unref()
        void gateway.stop(Math.max(0, timeout - 3000)).then(resolveStopped)
      }
      process.once('SIGTERM', () => shutdown('SIGTERM'))
      process.once('SIGINT', () => shutdown('SIGINT'))
      try {
        await gateway.start()
      } catch (err) {
        gateway.log.error('start failed', { err })
        await gateway.stop(0)
        throw err
      }
      onStarted?.({ gateway, stopped })
      await stopped
    })
}
