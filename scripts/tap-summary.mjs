// Reads tap's TAP output (a file, or standard input as it arrives) and prints one line per test file
// as soon as tap reports it, with the time since the run started, then the closing line
// "N passed, N failed[, N skipped]". A failed file also gets its failing assertions and their
// diagnostics. Lines are written as they come (no block buffering: this runs in CI logs too).
// A test is a subtest of a test file (t.test); a file that failed outside its subtests (a crash, a
// timeout) counts as one more failure, and a file without subtests counts as one test.
import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'

const source = process.argv[2] ? createReadStream(process.argv[2]) : process.stdin
const started = Date.now()
let passed = 0; let failed = 0; let skipped = 0
let filePassed = 0; let fileFailed = 0; let fileSkipped = 0
let fileLines = []
const failures = []

const clock = () => {
  const s = Math.round((Date.now() - started) / 1000)
  return `${String(Math.floor(s / 60)).padStart(2)}m${String(s % 60).padStart(2, '0')}s`
}
const out = s => { process.stdout.write(s + '\n') }

/** The failing assertions of a file and their YAML diagnostics, at most `max` lines. */
function failureDetail (lines, max = 80) {
  const picked = []
  for (let i = 0; i < lines.length && picked.length < max; i++) {
    if (!/^\s*not ok /.test(lines[i])) continue
    picked.push(lines[i])
    const indent = /^\s*/.exec(lines[i])[0].length
    if (lines[i + 1]?.trim() === '---') {
      for (let j = i + 1; j < lines.length && picked.length < max; j++) {
        picked.push(lines[j])
        if (lines[j].trim() === '...' && /^\s*/.exec(lines[j])[0].length >= indent) { i = j; break }
      }
    }
  }
  return picked
}

for await (const line of createInterface({ input: source, crlfDelay: Infinity })) {
  fileLines.push(line)
  const sub = /^ {4}(not ok|ok) \d+ - (.*)$/.exec(line)
  if (sub) {
    if (/# SKIP/i.test(sub[2])) { skipped++; fileSkipped++ } else if (sub[1] === 'ok') { passed++; filePassed++ } else { failed++; fileFailed++; failures.push(sub[2]) }
    continue
  }
  const top = /^(not ok|ok) \d+ - (.*?)(?: # time=([\d.]+)ms)?$/.exec(line)
  if (!top) continue
  const name = top[2]
  if (filePassed + fileFailed + fileSkipped === 0) {
    if (/# SKIP/i.test(name)) { skipped++; fileSkipped++ } else if (top[1] === 'ok') { passed++; filePassed++ } else { failed++; fileFailed++; failures.push(name) }
  } else if (top[1] === 'not ok' && fileFailed === 0) { failed++; fileFailed++; failures.push(`${name} (outside its subtests)`) }
  const took = top[3] ? ` in ${(Number(top[3]) / 1000).toFixed(1)} s` : ''
  const counts = `${filePassed} passed${fileFailed ? `, ${fileFailed} failed` : ''}${fileSkipped ? `, ${fileSkipped} skipped` : ''}`
  out(`[${clock()}] ${fileFailed ? 'FAIL' : 'ok  '} ${name.replace(/ # (SKIP|time=).*$/i, '')}: ${counts}${took}`)
  if (fileFailed) for (const l of failureDetail(fileLines)) out(`    ${l}`)
  filePassed = 0; fileFailed = 0; fileSkipped = 0; fileLines = []
}
for (const f of failures) out(`FAILED: ${f}`)
out(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`)
process.exitCode = failed > 0 || passed === 0 ? 1 : 0
