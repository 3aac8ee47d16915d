// Reads tap's TAP output (a file, or standard input as it arrives) and prints one line per test file
// as soon as that file has finished, with the time since the run started, then the closing line
// "N passed, N failed[, N skipped]". A failed file also gets its failing assertions and their
// diagnostics. Lines are written as they come (no block buffering: this runs in CI logs too).
//
// tap's own stream keeps the files in order, so one slow file would hold back the lines of every
// file after it. With `--results <dir>` (tap's --output-dir, by default app/.tap/test-results), the
// per-file results tap writes there when a file ends are watched too, and a file's line is printed
// as soon as its result is complete; the stream still decides the counts (it also sees a file that
// crashed after its last subtest, and then says FAIL even if the early line said ok).
//
// A test is a subtest of a test file (t.test); a file that failed outside its subtests (a crash, a
// timeout) counts as one more failure, and a file without subtests counts as one test.
import { createReadStream, readdirSync, readFileSync, statSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { dirname, join, relative, resolve } from 'node:path'

const args = process.argv.slice(2)
const ri = args.indexOf('--results')
const resultsDir = ri >= 0 ? resolve(args.splice(ri, 2)[1]) : undefined
const source = args[0] ? createReadStream(args[0]) : process.stdin
const started = Date.now()
let passed = 0; let failed = 0; let skipped = 0
let filePassed = 0; let fileFailed = 0; let fileSkipped = 0
let fileLines = []
const failures = []
/** Result files already reported early (absolute path -> whether that line said FAIL). */
const early = new Map()

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

const fileLine = (name, counts, took, fail) => {
  const c = `${counts.passed} passed${counts.failed ? `, ${counts.failed} failed` : ''}${counts.skipped ? `, ${counts.skipped} skipped` : ''}`
  return `[${clock()}] ${fail ? 'FAIL' : 'ok  '} ${name}: ${c}${took}`
}

// ------------------------------------------------------------------ early lines from the result files
function * tapFiles (dir) {
  let entries = []
  try { entries = readdirSync(dir, { withFileTypes: true }) } catch { return }
  for (const e of entries) {
    if (e.isDirectory() && e.name !== 'processinfo' && e.name !== 'node_modules') yield * tapFiles(join(dir, e.name))
    else if (e.isFile() && e.name.endsWith('.tap')) yield join(dir, e.name)
  }
}
function scanResults () {
  // tap writes "<outputDir>/<test file as named>.tap": for ../tests/x that is beside the folder.
  for (const file of tapFiles(dirname(resultsDir))) {
    if (early.has(file)) continue
    let text
    // A result older than this run is an earlier run's.
    try { if (statSync(file).mtimeMs < started) continue; text = readFileSync(file, 'utf8') } catch { continue }
    const lines = text.trimEnd().split('\n')
    const time = /^# time=([\d.]+)ms$/.exec(lines[lines.length - 1] ?? '')
    if (!time || !lines.some(l => /^1\.\.\d+/.test(l))) continue // still running
    const counts = { passed: 0, failed: 0, skipped: 0 }
    for (const l of lines) {
      const m = /^(not ok|ok) \d+ - (.*)$/.exec(l)
      if (!m) continue
      if (/# SKIP/i.test(m[2])) counts.skipped++; else if (m[1] === 'ok') counts.passed++; else counts.failed++
    }
    if (counts.passed + counts.failed + counts.skipped === 0 && /^1\.\.0 # SKIP/m.test(text)) counts.skipped = 1
    const name = relative(resultsDir, file).replace(/\.tap$/, '')
    early.set(file, counts.failed > 0)
    out(fileLine(name, counts, ` in ${(Number(time[1]) / 1000).toFixed(1)} s`, counts.failed > 0))
    if (counts.failed > 0) for (const l of failureDetail(lines)) out(`    ${l}`)
  }
}
const timer = resultsDir ? setInterval(scanResults, 500) : undefined

// ------------------------------------------------------------------ the stream: counts and the rest
for await (const line of createInterface({ input: source, crlfDelay: Infinity })) {
  fileLines.push(line)
  const sub = /^ {4}(not ok|ok) \d+ - (.*)$/.exec(line)
  if (sub) {
    if (/# SKIP/i.test(sub[2])) { skipped++; fileSkipped++ } else if (sub[1] === 'ok') { passed++; filePassed++ } else { failed++; fileFailed++; failures.push(sub[2]) }
    continue
  }
  const top = /^(not ok|ok) \d+ - (.*?)(?: # time=([\d.]+)ms)?$/.exec(line)
  if (!top) continue
  const name = top[2].replace(/ # (SKIP|time=).*$/i, '')
  if (filePassed + fileFailed + fileSkipped === 0) {
    if (/# SKIP/i.test(top[2])) { skipped++; fileSkipped++ } else if (top[1] === 'ok') { passed++; filePassed++ } else { failed++; fileFailed++; failures.push(name) }
  } else if (top[1] === 'not ok' && fileFailed === 0) { failed++; fileFailed++; failures.push(`${name} (outside its subtests)`) }
  const key = resultsDir ? resolve(resultsDir, `${name}.tap`) : undefined
  if (resultsDir) scanResults()
  const said = key !== undefined ? early.get(key) : undefined
  // Printed early with the same verdict: nothing to add.
  if (said === undefined || (said === false && fileFailed > 0)) {
    out(fileLine(name, { passed: filePassed, failed: fileFailed, skipped: fileSkipped }, top[3] ? ` in ${(Number(top[3]) / 1000).toFixed(1)} s` : '', fileFailed > 0))
    if (fileFailed) for (const l of failureDetail(fileLines)) out(`    ${l}`)
  }
  if (key !== undefined) early.set(key, fileFailed > 0)
  filePassed = 0; fileFailed = 0; fileSkipped = 0; fileLines = []
}
if (timer) clearInterval(timer)
for (const f of failures) out(`FAILED: ${f}`)
out(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`)
process.exitCode = failed > 0 || passed === 0 ? 1 : 0
