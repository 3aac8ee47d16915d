// Reads tap's TAP output and prints the closing line "N passed, N failed[, N skipped]".
// A test is a subtest of a test file (t.test); a file that failed outside its subtests (a crash, a
// timeout) counts as one more failure, and a file without subtests counts as one test.
import { readFileSync } from 'node:fs'

const lines = readFileSync(process.argv[2] ?? 0, 'utf8').split('\n')
let passed = 0; let failed = 0; let skipped = 0
let fileFails = 0; let filePoints = 0
const failures = []
for (const line of lines) {
  const sub = /^ {4}(not ok|ok) \d+ - (.*)$/.exec(line)
  if (sub) {
    filePoints++
    if (/# SKIP/i.test(sub[2])) skipped++
    else if (sub[1] === 'ok') passed++
    else { failed++; fileFails++; failures.push(sub[2]) }
    continue
  }
  const top = /^(not ok|ok) \d+ - (.*)$/.exec(line)
  if (top) {
    if (top[1] === 'not ok' && fileFails === 0) { failed++; failures.push(`${top[2]} (outside its subtests)`) }
    else if (filePoints === 0) { if (/# SKIP/i.test(top[2])) skipped++; else if (top[1] === 'ok') passed++ }
    fileFails = 0; filePoints = 0
  }
}
for (const f of failures) console.log(`FAILED: ${f}`)
console.log(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`)
process.exitCode = failed > 0 || passed === 0 ? 1 : 0
