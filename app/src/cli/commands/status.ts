import { Command } from 'commander'
import { request } from 'undici'
import { configFrom, EXIT, Exit, printJson, type Io } from '../io.js'

/** `status`: asks the running gateway's management API. */
export function makeStatusCommand (io: Io): Command {
  return new Command('status')
    .description('show the running gateway\'s status (from its management API)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const c = configFrom(cmd.optsWithGlobals(), io)
      const host = c.api.host === '0.0.0.0' ? '127.0.0.1' : c.api.host
      let body: Record<string, any>
      try {
        const res = await request(`http://${host.includes(':') ? `[${host}]` : host}:${c.api.port}/status`, { signal: AbortSignal.timeout(5000) })
        body = await res.body.json() as Record<string, any>
      } catch (err) {
        throw new Exit(EXIT.UNREACHABLE, `gateway not reachable at ${host}:${c.api.port}: ${(err as Error).message}`)
      }
      if (opts.json === true) { printJson(io, body); return }
      const o = body.outbox ?? {}
      io.out([
        `gateway   ${body.gateway} (up ${body.uptimeSeconds}s, ${body.ready === true ? 'ready' : 'not ready'})`,
        `broker    ${body.broker?.connected === true ? 'connected' : 'disconnected'} ${body.broker?.url}`,
        `uplink    ${body.uplink?.state} ${body.uplink?.url}${body.uplink?.lastError ? ` (last error: ${body.uplink.lastError})` : ''}`,
        `outbox    ${o.depth} messages, ${o.bytes} bytes, ${o.deadLetters} dead letters`,
        `messages  received ${body.messages?.received}, accepted ${body.messages?.accepted}, rejected ${body.messages?.rejected}, delivered ${body.messages?.delivered}`,
        // Alerts (app/src/alerts): the same reasons as /health's 503, and what is firing.
        `health    ${Array.isArray(body.problems) && body.problems.length > 0 ? `NOT OK: ${body.problems.join('; ')}` : 'ok'}`,
        ...(Array.isArray(body.alerts?.firing) ? body.alerts.firing.map((a: { rule: string, summary: string }) => `alert     ${a.rule}: ${a.summary}`) : []),
        ''
      ].join('\n'))
    })
}
