import { run } from './cli/index.js'

run(process.argv).then(code => { process.exitCode = code }, err => { console.error(err); process.exitCode = 1 })
