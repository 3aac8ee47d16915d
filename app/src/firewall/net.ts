import { isIPv4, isIPv6 } from 'node:net'

/** An IP network in CIDR form, parsed: family, address bytes (host bits cleared) and prefix length. */
export interface Cidr { family: 4 | 6, bytes: Uint8Array, prefix: number, text: string }

function v4Bytes (s: string): Uint8Array {
  return Uint8Array.from(s.split('.').map(Number))
}

function v6Bytes (s: string): Uint8Array {
  let text = s
  const out = new Uint8Array(16)
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (v4) {
    const b = v4Bytes(v4[1]!)
    text = text.slice(0, -v4[1]!.length) + `${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`
  }
  const [head, tail] = text.includes('::') ? text.split('::') as [string, string] : [text, undefined]
  const h = head === '' ? [] : head.split(':')
  const t = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? h : [...h, ...new Array<string>(8 - h.length - t.length).fill('0'), ...t]
  groups.forEach((g, i) => { const n = parseInt(g, 16); out[i * 2] = n >> 8; out[i * 2 + 1] = n & 0xff })
  return out
}

function format (family: 4 | 6, bytes: Uint8Array): string {
  if (family === 4) return [...bytes].join('.')
  const groups: number[] = []
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!)
  // Longest run of zero groups becomes "::" (RFC 5952).
  let best = -1; let bestLen = 1
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) { i++; continue }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) { best = i; bestLen = j - i }
    i = j
  }
  const hex = groups.map(g => g.toString(16))
  if (best < 0) return hex.join(':')
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`
}

/** Parses "a.b.c.d/n", "x::y/n" or a bare address (a host network). Returns null if it is not one. */
export function parseCidr (text: string): Cidr | null {
  const [addr, len, extra] = text.split('/')
  if (addr === undefined || extra !== undefined) return null
  const family = isIPv4(addr) ? 4 : isIPv6(addr) ? 6 : 0
  if (family === 0) return null
  const max = family === 4 ? 32 : 128
  if (len !== undefined && !/^\d{1,3}$/.test(len)) return null
  const prefix = len === undefined ? max : Number(len)
  if (prefix > max) return null
  const bytes = family === 4 ? v4Bytes(addr) : v6Bytes(addr)
  return { family, bytes, prefix, text }
}

/** The network itself (host bits cleared), as nft and systemd want it: "192.168.100.0/24". */
export function networkOf (c: Cidr): string {
  const b = Uint8Array.from(c.bytes)
  for (let bit = c.prefix; bit < b.length * 8; bit++) b[bit >> 3]! &= ~(0x80 >> (bit & 7))
  return `${format(c.family, b)}/${c.prefix}`
}

/** The address part, normalised. */
export const addressOf = (c: Cidr): string => format(c.family, c.bytes)

/** True when one network contains the other (or they are equal): CIDR blocks never partially overlap. */
export function overlaps (a: Cidr, b: Cidr): boolean {
  if (a.family !== b.family) return false
  const n = Math.min(a.prefix, b.prefix)
  for (let bit = 0; bit < n; bit++) {
    const m = 0x80 >> (bit & 7)
    if ((a.bytes[bit >> 3]! & m) !== (b.bytes[bit >> 3]! & m)) return false
  }
  return true
}

/** True when `inner` lies inside `outer`. */
export const contains = (outer: Cidr, inner: Cidr): boolean => outer.prefix <= inner.prefix && overlaps(outer, inner)
