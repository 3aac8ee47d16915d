import { run } from './cli/index.js'

// Exit explicitly: once a command (or the daemon's orderly stop) is done, nothing left behind (a
// reconnect timer, a socket) may keep the process alive. stdout/stderr are synchronous for files and
// pipes on Linux, so nothing written is lost.
run(process.argv).then(code => process.exit(code), err => { console.error(err); process.exit(1) })
