// The user-facing documents hold together: every relative link in README.md, tests/README.md and
// app/docs/*.md names a file that exists (and an anchor that exists, within README.md), and the
// README's quick start gives the two commands and the truth about `kas build` before anything else.
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { REPO, t } from './helpers.mjs'

const docs = ['README.md', 'tests/README.md', ...readdirSync(join(REPO, 'app', 'docs')).filter(f => f.endsWith('.md')).map(f => `app/docs/${f}`)]
/** GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes. */
const anchors = text => new Set([...text.matchAll(/^#+ (.*)$/gm)].map(m => m[1].toLowerCase().replace(/[^a-z0-9 _-]/g, '').replace(/ /g, '-')))

t.test('relative links resolve', async t => {
  for (const doc of docs) {
    const text = readFileSync(join(REPO, doc), 'utf8')
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue
      const [path, anchor] = target.split('#')
      const file = path ? join(REPO, dirname(doc), path) : join(REPO, doc)
      t.ok(existsSync(file), `${doc}: ${target}`)
      if (anchor && file.endsWith('.md') && existsSync(file)) t.ok(anchors(readFileSync(file, 'utf8')).has(anchor), `${doc}: #${anchor} in ${path || doc}`)
    }
  }
})

t.test('the quick start comes first and says what kas build needs', async t => {
  const lines = readFileSync(join(REPO, 'README.md'), 'utf8').split('\n')
  const quick = lines.findIndex(l => l === '## Quick start')
  t.ok(quick > 0 && quick <= 12, 'a short "what it is" before the quick start')
  const block = lines.slice(quick, quick + 10).join('\n')
  t.match(block, /^kas build kas\.yml /m)
  t.match(block, /^scripts\/test\.sh /m)
  t.match(block, /^`kas build` needs internet.*not been run to completion in our CI/m, 'the truth about kas build, in one line of the quick start')
})
