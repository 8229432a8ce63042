/**
 * IP addresses and prefixes as small immutable values. IPv4 is a branded uint32 number, IPv6 a
 * branded bigint, so arithmetic (next address, containment) is exact and cheap. Parsing is
 * strict: what does not parse is an INVALID error naming the input, never a silent default.
 */
import { invalid } from './errors.js';

declare const v4brand: unique symbol;
declare const v6brand: unique symbol;
export type IPv4 = number & { readonly [v4brand]: true };
export type IPv6 = bigint & { readonly [v6brand]: true };

export type Family = 4 | 6;
export interface IPv4Addr {
  readonly family: 4;
  readonly value: IPv4;
}
export interface IPv6Addr {
  readonly family: 6;
  readonly value: IPv6;
}
export type IPAddr = IPv4Addr | IPv6Addr;

/** An address with a prefix length; host bits may be set (an interface address, 10.0.0.1/24). */
export interface IPNet {
  readonly ip: IPAddr;
  readonly len: number;
}

const V4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export const bitsOf = (f: Family): number => (f === 4 ? 32 : 128);

export function v4(value: number): IPv4Addr {
  return { family: 4, value: (value >>> 0) as IPv4 };
}
export function v6(value: bigint): IPv6Addr {
  return { family: 6, value: BigInt.asUintN(128, value) as IPv6 };
}

function parseV4(s: string): IPv4Addr | undefined {
  const m = V4_RE.exec(s);
  if (!m) return undefined;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const part = m[i]!;
    if (part.length > 1 && part.startsWith('0')) return undefined; // no octal ambiguity
    const o = Number(part);
    if (o > 255) return undefined;
    n = n * 256 + o;
  }
  return v4(n);
}

function parseV6(s: string): IPv6Addr | undefined {
  if (s.length < 2 || s.length > 45 || s.includes('%')) return undefined;
  let groups: number[] = [];
  let text = s;
  // An embedded IPv4 tail (::ffff:1.2.3.4) is two groups.
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.', lastColon)) {
    const tail = parseV4(text.slice(lastColon + 1));
    if (!tail) return undefined;
    text = `${text.slice(0, lastColon + 1)}${(tail.value >>> 16).toString(16)}:${(tail.value & 0xffff).toString(16)}`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return undefined;
  const parse = (h: string): number[] | undefined => {
    if (h === '') return [];
    const out: number[] = [];
    for (const g of h.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
      out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const head = parse(halves[0]!);
  if (!head) return undefined;
  if (halves.length === 2) {
    const tail = parse(halves[1]!);
    if (!tail || head.length + tail.length > 7) return undefined;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  } else {
    if (head.length !== 8) return undefined;
    groups = head;
  }
  let n = 0n;
  for (const g of groups) n = (n << 16n) | BigInt(g);
  return v6(n);
}

/** Parse an IPv4 or IPv6 address; throws INVALID. */
export function parseIP(s: string): IPAddr {
  const ip = tryParseIP(s);
  if (!ip) throw invalid(`"${s}" is not an IP address`, { input: s });
  return ip;
}
export function tryParseIP(s: string): IPAddr | undefined {
  return s.includes(':') ? parseV6(s) : parseV4(s);
}
export function parseIPv4(s: string): IPv4Addr {
  const ip = parseV4(s);
  if (!ip) throw invalid(`"${s}" is not an IPv4 address`, { input: s });
  return ip;
}

export function formatIP(ip: IPAddr): string {
  if (ip.family === 4) {
    const n = ip.value;
    return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
  }
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((ip.value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (≥2) of zero groups, leftmost on ties.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (a: number[]) => a.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(g);
  return `${hex(g.slice(0, best))}::${hex(g.slice(best + bestLen))}`;
}

export function ipToBytes(ip: IPAddr): Uint8Array {
  if (ip.family === 4) {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, ip.value, false);
    return b;
  }
  const b = new Uint8Array(16);
  let n: bigint = ip.value;
  for (let i = 15; i >= 0; i--) {
    b[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return b;
}

export function ipFromBytes(b: Uint8Array): IPAddr {
  if (b.length === 4) return v4(new DataView(b.buffer, b.byteOffset, 4).getUint32(0, false));
  if (b.length === 16) {
    let n = 0n;
    for (const x of b) n = (n << 8n) | BigInt(x);
    return v6(n);
  }
  throw invalid(`an IP address has 4 or 16 bytes, not ${b.length}`);
}

export const ipEqual = (a: IPAddr, b: IPAddr): boolean => a.family === b.family && a.value === b.value;

function maskBig(family: Family, len: number): bigint {
  const bits = BigInt(bitsOf(family));
  return ((1n << BigInt(len)) - 1n) << (bits - BigInt(len));
}

/** The address with the host bits of a /len cleared. */
export function maskIP(ip: IPAddr, len: number): IPAddr {
  if (ip.family === 4) return v4(len === 0 ? 0 : (ip.value & (0xffffffff << (32 - len))) >>> 0);
  return v6(ip.value & maskBig(6, len));
}

/** Add an integer offset to an address (wraps within the family). */
export function addIP(ip: IPAddr, n: number | bigint): IPAddr {
  if (ip.family === 4) return v4(ip.value + Number(n));
  return v6(ip.value + BigInt(n));
}

export function compareIP(a: IPAddr, b: IPAddr): number {
  if (a.family !== b.family) return a.family - b.family;
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}

/** Parse `ADDR/LEN` allowing host bits (an interface address); a bare address gets /32 or /128. */
export function parseIPNet(s: string): IPNet {
  const slash = s.indexOf('/');
  const ip = parseIP(slash < 0 ? s : s.slice(0, slash));
  if (slash < 0) return { ip, len: bitsOf(ip.family) };
  const lenText = s.slice(slash + 1);
  const len = Number(lenText);
  if (!/^\d{1,3}$/.test(lenText) || len > bitsOf(ip.family)) {
    throw invalid(`"${s}" has an invalid prefix length`, { input: s });
  }
  return { ip, len };
}

/** Parse a network prefix in canonical form (host bits must be zero), e.g. 10.244.0.0/16. */
export function parseCidr(s: string): IPNet {
  if (!s.includes('/')) throw invalid(`"${s}" is not a CIDR (expected ADDR/LEN)`, { input: s });
  const n = parseIPNet(s);
  if (!ipEqual(maskIP(n.ip, n.len), n.ip)) {
    throw invalid(`"${s}" has host bits set; did you mean ${formatIPNet(networkOf(n))}?`, { input: s });
  }
  return n;
}

export const formatIPNet = (n: IPNet): string => `${formatIP(n.ip)}/${n.len}`;
export const networkOf = (n: IPNet): IPNet => ({ ip: maskIP(n.ip, n.len), len: n.len });

export function containsIP(n: IPNet, ip: IPAddr): boolean {
  return n.ip.family === ip.family && ipEqual(maskIP(ip, n.len), maskIP(n.ip, n.len));
}
export function overlaps(a: IPNet, b: IPNet): boolean {
  if (a.ip.family !== b.ip.family) return false;
  const len = Math.min(a.len, b.len);
  return ipEqual(maskIP(a.ip, len), maskIP(b.ip, len));
}
/** True when `inner` lies entirely inside `outer`. */
export function containsNet(outer: IPNet, inner: IPNet): boolean {
  return inner.len >= outer.len && containsIP(outer, inner.ip);
}

/** The last address of a prefix (the broadcast address for IPv4). */
export function lastIP(n: IPNet): IPAddr {
  const hostBits = bitsOf(n.ip.family) - n.len;
  const base = maskIP(n.ip, n.len);
  if (base.family === 4) return v4(base.value + (hostBits === 32 ? 0xffffffff : 2 ** hostBits - 1));
  return v6(base.value + ((1n << BigInt(hostBits)) - 1n));
}

/** The prefix of the same length right after this one (e.g. for walking subnets). */
export function nextNet(n: IPNet): IPNet {
  return { ip: addIP(lastIP(n), 1), len: n.len };
}

/** Number of addresses in a prefix, as a bigint (IPv6 prefixes are large). */
export const sizeOf = (n: IPNet): bigint => 1n << BigInt(bitsOf(n.ip.family) - n.len);

export const familyOf = (s: string): Family => parseIP(s).family;
