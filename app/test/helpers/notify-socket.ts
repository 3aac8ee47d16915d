import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'

/**
 * A stand-in for systemd's notification socket (AF_UNIX datagrams, which Node cannot receive): a
 * small python3 receiver that prints each message as a JSON line and answers systemd-notify's
 * BARRIER=1 by closing the file descriptor it passes, as systemd does.
 */
const RECEIVER = `
import socket, sys, os, json, array
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print(json.dumps("LISTENING"), flush=True)
while True:
    msg, anc, flags, addr = s.recvmsg(4096, socket.CMSG_SPACE(16 * 4))
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i"); fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
            for fd in fds: os.close(fd)
    print(json.dumps(msg.decode()), flush=True)
`

export class NotifySocket {
  readonly messages: string[] = []
  private proc?: ChildProcess
  constructor (readonly path: string) {}

  async start (): Promise<void> {
    const proc = this.proc = spawn('python3', ['-c', RECEIVER, this.path], { stdio: ['ignore', 'pipe', 'inherit'] })
    const lines = createInterface({ input: proc.stdout! })
    await new Promise<void>((resolve, reject) => {
      proc.once('exit', code => reject(new Error(`notify receiver exited with ${code}`)))
      lines.on('line', l => {
        const m = JSON.parse(l) as string
        if (m === 'LISTENING') resolve()
        else this.messages.push(m)
      })
    })
  }

  stop (): void { this.proc?.kill() }
}
