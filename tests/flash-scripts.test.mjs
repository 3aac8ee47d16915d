// scripts/flash.sh refuses what it must never overwrite, and scripts/reflash.sh rewrites boot and
// root A of a card with the image's A/B layout (boot, root A, root B, data) while root B and the
// data partition keep every byte. The "card" is
// a regular file with an MBR (REFLASH_ALLOW_FILE=1, the script's test mode): no root, no loop
// devices needed.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, run } from './helpers.mjs'

const FLASH = join(REPO, 'scripts', 'flash.sh')
const REFLASH = join(REPO, 'scripts', 'reflash.sh')
const S = 512

/** A disk image: MBR with partitions [start, size] (sectors), each filled with its fill byte. */
function disk (parts, fills, totalSectors) {
  const buf = Buffer.alloc(totalSectors * S)
  parts.forEach(([start, size], i) => {
    const e = 446 + 16 * i
    buf[e + 4] = i === 0 ? 0x0c : 0x83
    buf.writeUInt32LE(start, e + 8)
    buf.writeUInt32LE(size, e + 12)
    buf.fill(fills[i], start * S, (start + size) * S)
  })
  buf[510] = 0x55; buf[511] = 0xaa
  return buf
}
// boot, root A, root B (reserved, same size as A), data
const LAYOUT = [[8, 16], [24, 32], [56, 32], [88, 40]]
const part = (buf, [start, size]) => buf.subarray(start * S, (start + size) * S)

t.test('reflash.sh writes boot and root A and keeps root B and data', t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-reflash-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const image = join(dir, 'new.wic')
  const card = join(dir, 'card.img')
  writeFileSync(image, disk(LAYOUT, [0xb1, 0xb2, 0x00, 0x00], 128))
  // root B holds what an A/B engine wrote there; the data partition has grown on the card
  const grown = [...LAYOUT.slice(0, 3), [88, 72]]
  writeFileSync(card, disk(grown, [0xa1, 0xa2, 0xa3, 0xda], 160))
  const r = run('sh', [REFLASH, '-y', image, card], { env: { ...process.env, REFLASH_ALLOW_FILE: '1' } })
  t.equal(r.status, 0, r.stderr)
  t.match(r.stdout, /root A.*active after the reflash.*keeps 3 \(root B\) and 4 \(data\)/)
  const after = readFileSync(card)
  t.ok(part(after, LAYOUT[0]).every(b => b === 0xb1), 'boot from the image')
  t.ok(part(after, LAYOUT[1]).every(b => b === 0xb2), 'root A from the image')
  t.ok(part(after, LAYOUT[2]).every(b => b === 0xa3), 'root B untouched')
  t.ok(part(after, grown[3]).every(b => b === 0xda), 'data partition untouched')
  t.equal(after.length, 160 * S, 'card size unchanged')
  t.end()
})

t.test('reflash.sh refuses a card of the old layout (boot, root, data) and an old image', t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-reflash-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const old = [[8, 16], [24, 32], [56, 40]]
  const env = { ...process.env, REFLASH_ALLOW_FILE: '1' }
  const image = join(dir, 'new.wic')
  const card = join(dir, 'card.img')
  writeFileSync(image, disk(LAYOUT, [0xb1, 0xb2, 0x00, 0x00], 128))
  const before = disk(old, [0xa1, 0xa2, 0xda], 120)
  writeFileSync(card, before)
  let r = run('sh', [REFLASH, '-y', image, card], { env })
  t.not(r.status, 0)
  t.match(r.stderr, /no data partition \(4\).*flash\.sh/)
  t.ok(readFileSync(card).equals(before), 'old card: nothing written')
  const oldImage = join(dir, 'old.wic')
  writeFileSync(oldImage, disk(old, [0xb1, 0xb2, 0x00], 96))
  const card2 = join(dir, 'card2.img')
  const before2 = disk(LAYOUT, [0xa1, 0xa2, 0xa3, 0xda], 128)
  writeFileSync(card2, before2)
  r = run('sh', [REFLASH, '-y', oldImage, card2], { env })
  t.not(r.status, 0)
  t.match(r.stderr, /does not have the partitions boot, root A, root B and data/)
  t.ok(readFileSync(card2).equals(before2), 'old image: nothing written')
  t.end()
})

t.test('reflash.sh refuses a card whose layout differs (data would be damaged)', t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-reflash-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const image = join(dir, 'new.wic')
  const card = join(dir, 'card.img')
  // root B of another size: the data partition would start elsewhere
  writeFileSync(image, disk([[8, 16], [24, 32], [56, 40], [96, 32]], [0xb1, 0xb2, 0x00, 0x00], 128))
  const before = disk(LAYOUT, [0xa1, 0xa2, 0xa3, 0xda], 128)
  writeFileSync(card, before)
  const r = run('sh', [REFLASH, '-y', image, card], { env: { ...process.env, REFLASH_ALLOW_FILE: '1' } })
  t.not(r.status, 0)
  t.match(r.stderr, /layout .* differs/)
  t.ok(readFileSync(card).equals(before), 'nothing written')
  t.end()
})

t.test('reflash.sh and flash.sh refuse what is not an unused whole disk', t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-flash-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const image = join(dir, 'x.wic.bz2')
  writeFileSync(image, '')
  writeFileSync(join(dir, 'x.wic.bmap'), '')
  for (const script of [FLASH, REFLASH]) {
    const r = run('sh', [script, '-y', image, join(dir, 'x.wic.bmap')], { env: { ...process.env, REFLASH_ALLOW_FILE: '' } })
    t.not(r.status, 0, `${script.split('/').pop()}: refuses a regular file`)
    t.match(r.stderr, /not a block device/)
    const nul = run('sh', [script, '-y', image, '/dev/null'])
    t.not(nul.status, 0)
  }
  // the disk that holds / is mounted: refused (where lsblk can see it)
  const src = run('findmnt', ['-no', 'SOURCE', '/']).stdout.trim()
  const disk = src.startsWith('/dev/') ? run('lsblk', ['-nsro', 'NAME,TYPE', src]).stdout.split('\n').map(l => l.split(' ')).find(([, ty]) => ty === 'disk') : null
  if (!disk) {
    t.skip(`the root file system (${src || 'unknown'}) is not on a disk lsblk knows (container?)`)
  } else {
    const r = run('sh', [FLASH, '-y', image, `/dev/${disk[0]}`])
    t.not(r.status, 0, `flash.sh refuses /dev/${disk[0]}`)
    t.match(r.stderr, /in use|running system/)
  }
  t.end()
})

// The "type yes" question of both scripts is one function (disk-checks.sh `confirm`): anything but
// "yes", or a closed stdin, aborts before a byte is written; -y skips it.
t.test('the confirmation: only "yes" writes, in one place for both scripts', t => {
  const dir = mkdtempSync(join(tmpdir(), 'iotgw-confirm-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const image = join(dir, 'new.wic')
  const card = join(dir, 'card.img')
  writeFileSync(image, disk(LAYOUT, [0xb1, 0xb2, 0x00, 0x00], 128))
  const original = disk(LAYOUT, [0xa1, 0xa2, 0xa3, 0xda], 128)
  const env = { ...process.env, REFLASH_ALLOW_FILE: '1' }
  for (const [what, input] of [['"no"', 'no\n'], ['"YES"', 'YES\n'], ['no answer (stdin closed)', '']]) {
    writeFileSync(card, original)
    const r = run('sh', [REFLASH, image, card], { env, input })
    t.equal(r.status, 1, `${what}: refused`)
    t.match(r.stdout, /Overwrite boot and root A of .*card\.img\? Type "yes": $/, `${what}: the question was asked`)
    t.match(r.stderr, /reflash\.sh: aborted/, `${what}: says so`)
    t.ok(readFileSync(card).equals(original), `${what}: the card is untouched`)
  }
  writeFileSync(card, original)
  const yes = run('sh', [REFLASH, image, card], { env, input: 'yes\n' })
  t.equal(yes.status, 0, yes.stderr)
  t.ok(part(readFileSync(card), LAYOUT[1]).every(b => b === 0xb2), '"yes": written')

  // flash.sh asks through the same function (it needs a real disk before the question, so the
  // function is run here as flash.sh sources it)
  const checks = join(REPO, 'scripts', 'disk-checks.sh')
  const ask = (yesFlag, input) => run('sh', ['-c', `die() { echo "flash.sh: $*" >&2; exit 1; }; . "${checks}"; yes=${yesFlag}; confirm "Everything on /dev/sdz will be overwritten, including the data partition."; echo went-on`], { input })
  t.match(ask(0, 'no\n').stderr, /flash\.sh: aborted/)
  t.equal(ask(0, 'yes\n').stdout.trim().split(' ').pop(), 'went-on')
  t.equal(ask(1, '').stdout.trim(), 'went-on', '-y: no question')
  for (const script of [FLASH, REFLASH]) {
    const text = readFileSync(script, 'utf8')
    t.match(text, /^confirm "/m, `${script}: asks with confirm`)
    t.notMatch(text, /\bread -r\b|Type "yes"/, `${script}: no question of its own`)
  }
  t.end()
})
