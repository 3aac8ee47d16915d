import { Command } from 'commander'
import { apiBase, apiRequest } from '../api-client.js'
import { configFrom, EXIT, Exit, output, type Io } from '../io.js'

/** `status`: asks the running gateway's management API. */
export function makeStatusCommand (io: Io): Command {
  return new Command('status')
    .description('show the running gateway\'s status (from its management API)')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }, cmd: Command) => {
      const c = configFrom(cmd.optsWithGlobals(), io)
      let body: Record<string, any>
      try {
        const r = await apiRequest(c, 'GET', '/status')
        if (r.status !== 200 || typeof r.body !== 'object') throw new Error(`HTTP ${r.status}: ${JSON.stringify(r.body)}`)
        body = r.body as Record<string, any>
      } catch (err) {
        if (err instanceof Exit) throw err
        throw new Exit(EXIT.UNREACHABLE, `gateway not reachable at ${apiBase(c)}: ${(err as Error).message}`)
      }
      const o = body.outbox ?? {}
      output(io, opts, body, () => [
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
