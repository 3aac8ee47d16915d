import { Command } from 'commander'
import { renderAcl, renderMosquittoConf } from '../../broker/mosquitto-conf.js'
import type { Config } from '../../config/schema.js'
import { configFrom, type Io } from '../io.js'

export const brokerOptions = (c: Config) => ({
  dataDir: c.gateway.dataDir,
  lanPort: c.broker.lanPort,
  lanBind: c.broker.lanBind,
  gatewayPort: c.broker.gatewayPort,
  maxQueuedMessages: c.broker.maxQueuedMessages,
  maxQueuedBytes: c.broker.maxQueuedBytes,
  memoryLimitBytes: c.broker.memoryLimitBytes,
  autosaveIntervalSeconds: c.broker.autosaveIntervalSeconds,
  sysIntervalSeconds: c.broker.sysIntervalSeconds,
  streams: c.mqtt.streams,
  gatewayId: c.gateway.id,
  logDenials: c.broker.denialLogCommand.length > 0
})

/** `render <what>`: prints the files the image's services read, made from the same configuration. */
export function makeRenderCommand (io: Io): Command {
  const render = new Command('render').description('print a configuration file rendered from the gateway configuration')
  render.command('mosquitto').description('mosquitto.conf').action((_o: unknown, cmd: Command) => {
    io.out(renderMosquittoConf(brokerOptions(configFrom(cmd.optsWithGlobals(), io))))
  })
  render.command('acl').description('the Mosquitto ACL').action((_o: unknown, cmd: Command) => {
    const c = configFrom(cmd.optsWithGlobals(), io)
    io.out(renderAcl({ gatewayId: c.gateway.id, streams: c.mqtt.streams }))
  })
  return render
}
