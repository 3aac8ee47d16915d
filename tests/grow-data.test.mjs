// iot-gateway-grow-data (the data partition grows to the end of the SD card at boot) on real
// disks: a sparse file with the wks layout scaled down (msdos table, boot, root A, root B and data
// at the 4 MiB alignment of iot-gateway-rpi.wks.in, ext4 "data" last), attached as a loop device
// with partitions. The "card" is then made bigger than the image, the script grows partition 4 (its
// start stays), the kernel sees the new size, the file system grows like systemd-growfs grows it
// (x-systemd.growfs in the wks files) and the file on it is intact; a second run changes nothing;
// a partition that is not the last, a whole disk and a GPT disk are refused. Finally
// scripts/reflash.sh writes an image of the original layout onto the grown card: boot and root A
// are replaced, root B, the grown data partition and its file survive.
// Needs root and loop devices (skipped otherwise); every loop device is detached in teardown.
import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { t, REPO, LAYER, run, which, isRoot } from './helpers.mjs'

const FILES = join(LAYER, 'recipes-core', 'iot-gateway-system-conf', 'files')
const SCRIPT = join(FILES, 'iot-gateway-grow-data.sh')
const UNIT = join(FILES, 'iot-gateway-grow-data.service')
const REFLASH = join(REPO, 'scripts', 'reflash.sh')
const S = 512
const MIB = 2048 // sectors
// iot-gateway-rpi.wks.in scaled down: --align 4096 (KiB) puts every partition on a 4 MiB
// (8192-sector) boundary; boot and the root slots have fixed sizes, data is last. The image ends
// with it.
const LAYOUT = [
  { start: 8192, size: 16384, type: 'c' }, // boot, 8 MiB (vfat)
  { start: 24576, size: 32768, type: '83' }, // root A, 16 MiB
  { start: 57344, size: 32768, type: '83' }, // root B, 16 MiB (reserved, empty)
  { start: 90112, size: 65536, type: '83' } // data, 32 MiB (ext4, label data)
]
const DATA = 3 // index in LAYOUT; partition 4
const IMAGE_SECTORS = LAYOUT[DATA].start + LAYOUT[DATA].size
// The bigger card: 1 GiB + 300 KiB (not a multiple of sfdisk's 1 MiB grain).
const CARD_SECTORS = 1024 * MIB + 600
const TOOLS = ['sfdisk', 'partx', 'losetup', 'mkfs.ext4', 'e2fsck', 'resize2fs', 'debugfs', 'dumpe2fs']
const SBIN_PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin:/usr/bin:/bin`
const env = { ...process.env, PATH: SBIN_PATH }

const missing = TOOLS.filter(x => !which(x))
const skip = !isRoot
  ? 'needs root (loop devices, partition tables)'
  : missing.length
    ? `missing tools: ${missing.join(' ')} (Debian: fdisk, e2fsprogs, util-linux, mount)`
    : !existsSync('/dev/loop-control')
        ? 'no /dev/loop-control: loop devices cannot be created here'
        : false

const sh = (args, opts = {}) => run(which(args[0]), args.slice(1), { env, ...opts })
/** A command's output for an assertion message, only when it failed. */
const out = r => r.status === 0 ? '' : `: ${r.stdout}${r.stderr}`.trim()

function readAt (file, offset, length) {
  const fd = openSync(file, 'r')
  try {
    const buf = Buffer.alloc(length)
    const n = readSync(fd, buf, 0, length, offset)
    return buf.subarray(0, n)
  } finally { closeSync(fd) }
}
function fill (file, startSector, sectors, byte) {
  const fd = openSync(file, 'r+')
  try {
    const chunk = Buffer.alloc(MIB * S, byte)
    for (let done = 0; done < sectors * S; done += chunk.length) {
      writeSync(fd, chunk, 0, Math.min(chunk.length, sectors * S - done), startSector * S + done)
    }
  } finally { closeSync(fd) }
}
/** The four primary entries of the MBR as written in the file: { type, start, size, end }. */
function mbr (file) {
  const b = readAt(file, 0, S)
  if (b[510] !== 0x55 || b[511] !== 0xaa) return null
  return [0, 1, 2, 3].map(i => {
    const e = 446 + 16 * i
    const start = b.readUInt32LE(e + 8)
    const size = b.readUInt32LE(e + 12)
    return { type: b[e + 4], start, size, end: start + size - 1 }
  })
}
/** A sparse disk file of `sectors` with the partition table written by sfdisk. */
function makeDisk (file, label, parts, sectors) {
  writeFileSync(file, '')
  truncateSync(file, sectors * S)
  const script = [`label: ${label}`, ...parts.map(p => `start=${p.start}, size=${p.size}` + (label === 'dos' ? `, type=${p.type}` : ''))].join('\n') + '\n'
  const r = sh(['sfdisk', '-q', '--no-reread', '--no-tell-kernel', file], { input: script })
  if (r.status !== 0) throw new Error(`sfdisk ${file}: ${r.stderr}`)
}
const sysfs = (name, attr) => readFileSync(`/sys/class/block/${name}/${attr}`, 'utf8').trim()
/** dumpe2fs -h of a device as { 'Block count': '...', ... } */
function superblock (dev) {
  const r = sh(['dumpe2fs', '-h', dev])
  return Object.fromEntries(r.stdout.split('\n').map(l => /^([^:]+):\s*(.*)$/.exec(l)).filter(Boolean).map(m => [m[1], m[2]]))
}
const fsBytes = sb => Number(sb['Block count']) * Number(sb['Block size'])

/**
 * Cleanup for one test, in the right order however far the test got: unmount, detach the loop
 * devices this test attached (only while they still show our backing file: a detached number may
 * belong to someone else by now), remove the scratch folder.
 */
function scratch (t) {
  const st = { dir: mkdtempSync(join(tmpdir(), 'iotgw-grow-')), loops: new Map(), mounts: [] }
  t.teardown(() => {
    for (const m of st.mounts.splice(0)) sh(['umount', m])
    for (const dev of [...st.loops.keys()]) detach(st, dev)
    rmSync(st.dir, { recursive: true, force: true })
  })
  return st
}
function detach (st, dev) {
  const file = st.loops.get(dev)
  if (!file) return
  st.loops.delete(dev)
  const back = sh(['losetup', '-n', '-O', 'BACK-FILE', dev]).stdout.trim()
  if (back === file || back.startsWith(file)) sh(['losetup', '-d', dev])
}
/**
 * Attach `file` with partitions; returns the loop device or a reason it cannot be used. A kernel
 * without the msdos/GPT parsers (CONFIG_MSDOS_PARTITION off, e.g. some VM kernels) scans nothing:
 * then partx -a adds the partitions from user space (BLKPG, what the script's partx -u also uses).
 */
function attach (st, file, nparts) {
  const r = sh(['losetup', '-P', '--find', '--show', file])
  if (r.status !== 0) return { reason: `loop devices cannot be created here: ${r.stderr.trim()}` }
  const dev = r.stdout.trim()
  st.loops.set(dev, file)
  const name = dev.replace('/dev/', '')
  const have = () => [...Array(nparts).keys()].every(i => existsSync(`/sys/class/block/${name}p${i + 1}`) && existsSync(`${dev}p${i + 1}`))
  if (!have()) sh(['partx', '-a', dev])
  if (!have()) return { reason: `the partitions of ${dev} do not appear (no ${dev}p1..p${nparts})` }
  return { dev, name }
}

t.test('grow-data grows the last msdos partition to the end of a bigger card; reflash keeps it', { skip }, t => {
  const st = scratch(t)
  const card = join(st.dir, 'card.img')
  makeDisk(card, 'dos', LAYOUT, IMAGE_SECTORS)
  fill(card, LAYOUT[0].start, LAYOUT[0].size, 0xa1)
  fill(card, LAYOUT[1].start, LAYOUT[1].size, 0xa2)
  fill(card, LAYOUT[2].start, LAYOUT[2].size, 0xa3)
  const a = attach(st, card, 4)
  if (!a.dev) { t.skip(a.reason); return t.end() }
  const { dev, name } = a
  const data = `${dev}p4`

  // the data file system as wic makes it (4 KiB blocks at the real 512M size), with a file on it
  let r = sh(['mkfs.ext4', '-q', '-F', '-b', '4096', '-i', '8192', '-L', 'data', data])
  t.equal(r.status, 0, `mkfs.ext4${out(r)}`)
  const payload = randomBytes(300 * 1024)
  writeFileSync(join(st.dir, 'payload.bin'), payload)
  r = sh(['debugfs', '-w', '-R', `write ${join(st.dir, 'payload.bin')} payload.bin`, data])
  t.equal(r.status, 0, `debugfs write${out(r)}`)
  const sb0 = superblock(data)
  t.equal(sb0['Filesystem volume name'], 'data', 'mkfs: label data')
  t.equal(fsBytes(sb0), LAYOUT[DATA].size * S, 'the file system fills the 32 MiB partition of the image')

  // a bigger card: the backing file grows, the loop device follows (losetup -c)
  truncateSync(card, CARD_SECTORS * S)
  r = sh(['losetup', '-c', dev])
  t.equal(r.status, 0, `losetup -c${out(r)}`)
  t.equal(Number(sysfs(name, 'size')), CARD_SECTORS, 'the loop device has the card\'s size')
  const mbr0 = readAt(card, 0, S)
  t.same(mbr(card).map(p => [p.start, p.size]), LAYOUT.map(p => [p.start, p.size]), 'table of the image')

  // refused: a partition that is not the last one (root B, the reserved slot), and a whole disk;
  // nothing written
  r = run('sh', [SCRIPT, `${dev}p3`], { env })
  t.equal(r.status, 2, 'partition 3: refused (exit 2)')
  t.match(r.stderr, /is not the last partition .*nothing changed/, 'partition 3: says why')
  r = run('sh', [SCRIPT, dev], { env })
  t.equal(r.status, 2, 'whole disk: refused (exit 2)')
  t.match(r.stderr, /is not a partition/, 'whole disk: says why')
  t.ok(readAt(card, 0, S).equals(mbr0), 'the MBR is unchanged after the refusals')
  t.equal(Number(sysfs(`${name}p3`, 'size')), LAYOUT[2].size, 'kernel: partition 3 unchanged')
  t.equal(Number(sysfs(`${name}p4`, 'size')), LAYOUT[DATA].size, 'kernel: partition 4 unchanged')

  // grow, with no capability but the unit's CapabilityBoundingSet (partx -u needs CAP_SYS_ADMIN)
  const caps = /^CapabilityBoundingSet=(.*)$/m.exec(readFileSync(UNIT, 'utf8'))[1].trim().split(/\s+/)
  const bounding = ['-all', ...caps.map(c => '+' + c.replace(/^CAP_/, '').toLowerCase())].join(',')
  const setpriv = which('setpriv')
  if (!setpriv) t.comment('setpriv is not installed: the script runs with all of root\'s capabilities')
  r = setpriv
    ? run(setpriv, ['--bounding-set', bounding, '--no-new-privs', 'sh', SCRIPT, data], { env })
    : run('sh', [SCRIPT, data], { env })
  t.equal(r.status, 0, `grow, capability bounding set ${bounding}${out(r)}`)
  t.match(r.stderr, /keeps its start at sector 90112[^]*grown: /, 'grow: says what it did')

  // the table on the "card", read back from the file
  const parts = mbr(card)
  t.same(parts.slice(0, 3).map(p => [p.type, p.start, p.size]), LAYOUT.slice(0, 3).map(p => [parseInt(p.type, 16), p.start, p.size]), 'boot, root A and root B entries unchanged')
  const dp = parts[DATA]
  t.equal(dp.start, LAYOUT[DATA].start, 'data partition keeps its start')
  t.equal(dp.type, 0x83, 'data partition keeps its type')
  t.ok(dp.end <= CARD_SECTORS - 1, `data partition ends inside the card (${dp.end} < ${CARD_SECTORS})`)
  t.ok(CARD_SECTORS - 1 - dp.end < MIB, `data partition ends at the card's end (within 1 MiB: ${CARD_SECTORS - 1 - dp.end} sectors left)`)
  const mbr1 = readAt(card, 0, S)
  // entry 4 may change its end (CHS, bytes 5-7) and its size (LBA, bytes 12-15), nothing else
  const e4 = 446 + 48
  const rest = b => Buffer.concat([b.subarray(0, e4 + 5), b.subarray(e4 + 8, e4 + 12), b.subarray(e4 + 16)])
  t.ok(rest(mbr1).equals(rest(mbr0)), 'no other byte of the MBR changed (boot code, disk id, the other entries, the start of partition 4)')
  t.equal(Number(sysfs(`${name}p4`, 'start')), LAYOUT[DATA].start, 'kernel: partition 4 starts where it did')
  t.equal(Number(sysfs(`${name}p4`, 'size')), dp.size, 'kernel: partition 4 has the new size')

  // the file system grows to the partition as systemd-growfs grows it after data.mount
  growFs(t, st, data)
  const sb1 = superblock(data)
  const partBytes = dp.size * S
  const group = Number(sb1['Blocks per group']) * Number(sb1['Block size'])
  t.ok(fsBytes(sb1) <= partBytes && partBytes - fsBytes(sb1) < group,
    `the file system fills the partition (${fsBytes(sb1)} of ${partBytes} bytes; less than a block group left)`)
  t.ok(fsBytes(sb1) > 20 * fsBytes(sb0), 'the file system is much bigger than in the image')
  r = sh(['e2fsck', '-f', '-n', data])
  t.equal(r.status, 0, `e2fsck -fn after the growth${out(r)}`)
  t.ok(readBack(st, data).equals(payload), 'the file on /data is intact')

  // a second run: nothing to do, nothing written, exit 0
  r = run('sh', [SCRIPT, data], { env })
  t.equal(r.status, 0, `second run: exit 0${out(r)}`)
  t.match(r.stderr, /already reaches the end .*nothing to do/, 'second run: says so')
  t.ok(readAt(card, 0, S).equals(mbr1), 'second run: MBR unchanged')
  t.equal(Number(sysfs(`${name}p4`, 'size')), dp.size, 'second run: kernel size unchanged')

  // reflash an image of the original layout onto the grown card (a file: REFLASH_ALLOW_FILE=1)
  detach(st, dev)
  const image = join(st.dir, 'new.wic')
  makeDisk(image, 'dos', LAYOUT, IMAGE_SECTORS)
  fill(image, LAYOUT[0].start, LAYOUT[0].size, 0xb1)
  fill(image, LAYOUT[1].start, LAYOUT[1].size, 0xb2)
  fill(image, LAYOUT[DATA].start, 4 * MIB, 0xee) // whatever the image's data holds must never land on the card
  r = run('sh', [REFLASH, '-y', image, card], { env: { ...env, REFLASH_ALLOW_FILE: '1' } })
  t.equal(r.status, 0, `reflash.sh onto the grown card${out(r)}`)
  t.ok(readAt(card, LAYOUT[0].start * S, LAYOUT[0].size * S).every(b => b === 0xb1), 'reflash: boot from the image')
  t.ok(readAt(card, LAYOUT[1].start * S, LAYOUT[1].size * S).every(b => b === 0xb2), 'reflash: root A from the image')
  t.ok(readAt(card, LAYOUT[2].start * S, LAYOUT[2].size * S).every(b => b === 0xa3), 'reflash: root B untouched')
  t.ok(readAt(card, 0, S).equals(mbr1), 'reflash: the card keeps its (grown) partition table')
  t.equal(statSync(card).size, CARD_SECTORS * S, 'reflash: card size unchanged')
  const b = attach(st, card, 4)
  if (!b.dev) { t.fail(`re-attach after the reflash: ${b.reason}`); return t.end() }
  const data2 = `${b.dev}p4`
  t.equal(Number(sysfs(`${b.name}p4`, 'size')), dp.size, 'after the reflash: partition 4 still grown')
  r = sh(['e2fsck', '-f', '-n', data2])
  t.equal(r.status, 0, `after the reflash: e2fsck -fn${out(r)}`)
  const sb2 = superblock(data2)
  t.equal(sb2['Filesystem volume name'], 'data', 'after the reflash: label data')
  t.equal(fsBytes(sb2), fsBytes(sb1), 'after the reflash: the grown file system')
  t.ok(readBack(st, data2).equals(payload), 'after the reflash: the file on /data is intact')
  t.end()
})

/** The payload as the data file system holds it (debugfs dump). */
function readBack (st, dev) {
  const out = join(st.dir, `readback-${Date.now()}.bin`)
  const r = sh(['debugfs', '-R', `dump payload.bin ${out}`, dev])
  return r.status === 0 && existsSync(out) ? readFileSync(out) : Buffer.alloc(0)
}

/**
 * Grow the data file system as the image does: systemd-growfs on the mounted file system (the
 * kernel's online resize, EXT4_IOC_RESIZE_FS, needs CAP_SYS_RESOURCE). Where that cannot run
 * (no systemd-growfs, a container without CAP_SYS_RESOURCE, no mount) the same growth offline:
 * e2fsck -f, then resize2fs.
 */
function growFs (t, st, dev) {
  const capEff = BigInt('0x' + (/^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0'))
  const growfs = ['/usr/lib/systemd/systemd-growfs', '/lib/systemd/systemd-growfs'].find(p => existsSync(p))
  let why = !growfs
    ? 'systemd-growfs is not installed'
    : !(capEff & (1n << 24n))
        ? 'no CAP_SYS_RESOURCE here (container), which the online resize needs'
        : null
  if (!why) {
    const mnt = join(st.dir, 'data')
    mkdirSync(mnt)
    const m = sh(['mount', '-t', 'ext4', '-o', 'nodev,nosuid,noexec', dev, mnt])
    if (m.status === 0) {
      st.mounts.push(mnt)
      const r = run(growfs, [mnt], { env })
      t.equal(r.status, 0, `systemd-growfs ${mnt}${out(r)}`)
      st.mounts.splice(st.mounts.indexOf(mnt), 1)
      const u = sh(['umount', mnt])
      t.equal(u.status, 0, `umount${out(u)}`)
      return
    }
    why = `mount failed: ${m.stderr.trim()}`
  }
  t.comment(`file system grown offline with resize2fs (${why})`)
  let r = sh(['e2fsck', '-f', '-y', dev])
  t.equal(r.status, 0, `e2fsck -fy before resize2fs${out(r)}`)
  r = sh(['resize2fs', dev])
  t.equal(r.status, 0, `resize2fs${out(r)}`)
}

t.test('grow-data refuses a GPT disk and writes nothing', { skip }, t => {
  const st = scratch(t)
  const disk = join(st.dir, 'gpt.img')
  // the same layout in a GPT (the data partition ends before the backup table)
  const gpt = [LAYOUT[0], LAYOUT[1], LAYOUT[2], { start: LAYOUT[DATA].start, size: LAYOUT[DATA].size - 8192 }]
  makeDisk(disk, 'gpt', gpt, IMAGE_SECTORS)
  truncateSync(disk, CARD_SECTORS * S)
  const head = readAt(disk, 0, 34 * S)
  const tail = readAt(disk, (IMAGE_SECTORS - 33) * S, 33 * S)
  const a = attach(st, disk, 4)
  if (!a.dev) { t.skip(a.reason); return t.end() }
  const before = Number(sysfs(`${a.name}p4`, 'size'))
  t.equal(before, gpt[DATA].size, 'kernel: partition 4 as in the table')
  const r = run('sh', [SCRIPT, `${a.dev}p4`], { env })
  t.equal(r.status, 2, 'refused (exit 2)')
  t.match(r.stderr, /has a gpt partition table; only msdos .*nothing changed/, 'says why')
  t.ok(readAt(disk, 0, 34 * S).equals(head), 'protective MBR and primary GPT unchanged')
  t.ok(readAt(disk, (IMAGE_SECTORS - 33) * S, 33 * S).equals(tail), 'backup GPT unchanged')
  t.equal(Number(sysfs(`${a.name}p4`, 'size')), before, 'kernel: partition 4 unchanged')
  t.end()
})

t.test('the unit runs the script before data.mount, after the data device', t => {
  const u = readFileSync(UNIT, 'utf8')
  t.match(u, /^DefaultDependencies=no$/m, 'DefaultDependencies=no')
  t.match(u, /^After=dev-disk-by\\x2dlabel-data\.device$/m, 'after the device of LABEL=data (systemd-escape --path)')
  t.match(u, /^Before=.*\bdata\.mount\b/m, 'before data.mount')
  t.match(u, /^Type=oneshot$/m, 'oneshot')
  t.match(u, /^ExecStart=\/usr\/sbin\/iot-gateway-grow-data /m, 'runs the installed script')
  const esc = which('systemd-escape') && run(which('systemd-escape'), ['--path', '/dev/disk/by-label/data'])
  if (esc && esc.status === 0) t.equal(esc.stdout.trim() + '.device', 'dev-disk-by\\x2dlabel-data.device', 'escaping as systemd-escape does it')
  for (const wks of ['iot-gateway-rpi.wks.in', 'iot-gateway-qemu.wks.in']) {
    const line = readFileSync(join(LAYER, 'files', 'wic', wks), 'utf8').split('\n').find(l => l.startsWith('part /data '))
    t.match(line, /--fsoptions "[^"]*\bx-systemd\.growfs\b[^"]*"/, `${wks}: x-systemd.growfs on /data`)
    // the unit is ordered before the fsck the fstab generator makes for a pass number > 0
    t.match(line, /--fspassno 2\b/, `${wks}: /data is checked by systemd-fsck@ (pass 2)`)
  }
  t.end()
})
