/**
 * Netlink attributes (struct nlattr: u16 len, u16 type, payload, padded to 4 bytes) as a tree.
 * Encoding computes lengths bottom-up; decoding is lazy for nested payloads: a decoded
 * attribute keeps its bytes and `Attrs.nested(type)` parses them on demand, because the codec
 * cannot know which payloads are nested without the caller's schema.
 * Integers are in host byte order except where the kernel says network order (ports: be16).
 */
import { invalid } from '../lib/errors.js';
import { type IPAddr, ipFromBytes, ipToBytes } from '../lib/ip.js';

export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
const NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xffff;
const NLA_HDRLEN = 4;

export const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export const align4 = (n: number): number => (n + 3) & ~3;

/** An attribute to encode: raw bytes, or children (a nested attribute). */
export type Attr =
  | { readonly type: number; readonly value: Uint8Array; readonly flags?: number }
  | { readonly type: number; readonly nested: readonly Attr[]; readonly flags?: number };

export function attrLength(a: Attr): number {
  if ('value' in a) return NLA_HDRLEN + a.value.length;
  let n = NLA_HDRLEN;
  for (const c of a.nested) n += align4(attrLength(c));
  return n;
}

export function attrsLength(list: readonly Attr[]): number {
  let n = 0;
  for (const a of list) n += align4(attrLength(a));
  return n;
}

/** Write attributes into `out` at `offset`; returns the offset after the last (aligned). */
export function encodeAttrsInto(list: readonly Attr[], out: Uint8Array, offset: number): number {
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  let off = offset;
  for (const a of list) {
    const len = attrLength(a);
    if (len > 0xffff) throw invalid(`netlink attribute ${a.type} is too long (${len} bytes)`);
    dv.setUint16(off, len, LITTLE_ENDIAN);
    dv.setUint16(off + 2, (a.type & NLA_TYPE_MASK) | (a.flags ?? 0), LITTLE_ENDIAN);
    if ('value' in a) {
      out.set(a.value, off + NLA_HDRLEN);
      out.fill(0, off + len, off + align4(len));
    } else {
      encodeAttrsInto(a.nested, out, off + NLA_HDRLEN);
    }
    off += align4(len);
  }
  return off;
}

export function encodeAttrs(list: readonly Attr[]): Uint8Array {
  const out = new Uint8Array(attrsLength(list));
  encodeAttrsInto(list, out, 0);
  return out;
}

/** One decoded attribute: its type (flags split off) and its payload bytes. */
export interface RawAttr {
  readonly type: number;
  readonly flags: number;
  readonly value: Uint8Array;
}

/** Parse a run of attributes. Truncated or malformed input is an INVALID error. */
export function decodeAttrs(buf: Uint8Array): Attrs {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: RawAttr[] = [];
  let off = 0;
  while (off + NLA_HDRLEN <= buf.length) {
    const len = dv.getUint16(off, LITTLE_ENDIAN);
    const t = dv.getUint16(off + 2, LITTLE_ENDIAN);
    if (len < NLA_HDRLEN || off + len > buf.length) {
      throw invalid(`malformed netlink attribute at offset ${off} (len ${len}, ${buf.length - off} left)`);
    }
    out.push({
      type: t & NLA_TYPE_MASK,
      flags: t & ~NLA_TYPE_MASK,
      value: buf.subarray(off + NLA_HDRLEN, off + len),
    });
    off += align4(len);
  }
  if (off < buf.length)
    throw invalid(`truncated netlink attribute at offset ${off} (${buf.length - off} bytes)`);
  return new Attrs(out);
}

const td = new TextDecoder();
const te = new TextEncoder();

/** Decoded attributes with typed getters. Getters return undefined when the attribute is absent. */
export class Attrs {
  constructor(readonly list: readonly RawAttr[]) {}

  get(type: number): Uint8Array | undefined {
    for (const a of this.list) if (a.type === type) return a.value;
    return undefined;
  }
  has(type: number): boolean {
    return this.get(type) !== undefined;
  }
  all(type: number): Uint8Array[] {
    return this.list.filter((a) => a.type === type).map((a) => a.value);
  }
  #dv(type: number, size: number): DataView | undefined {
    const v = this.get(type);
    if (v === undefined) return undefined;
    if (v.length < size) throw invalid(`netlink attribute ${type} has ${v.length} bytes, expected ${size}`);
    return new DataView(v.buffer, v.byteOffset, v.length);
  }
  u8(type: number): number | undefined {
    return this.#dv(type, 1)?.getUint8(0);
  }
  u16(type: number): number | undefined {
    return this.#dv(type, 2)?.getUint16(0, LITTLE_ENDIAN);
  }
  be16(type: number): number | undefined {
    return this.#dv(type, 2)?.getUint16(0, false);
  }
  u32(type: number): number | undefined {
    return this.#dv(type, 4)?.getUint32(0, LITTLE_ENDIAN);
  }
  s32(type: number): number | undefined {
    return this.#dv(type, 4)?.getInt32(0, LITTLE_ENDIAN);
  }
  u64(type: number): bigint | undefined {
    return this.#dv(type, 8)?.getBigUint64(0, LITTLE_ENDIAN);
  }
  /** A NUL-terminated string (the terminator and anything after it dropped). */
  str(type: number): string | undefined {
    const v = this.get(type);
    if (v === undefined) return undefined;
    const nul = v.indexOf(0);
    return td.decode(nul < 0 ? v : v.subarray(0, nul));
  }
  ip(type: number): IPAddr | undefined {
    const v = this.get(type);
    return v === undefined ? undefined : ipFromBytes(v);
  }
  mac(type: number): string | undefined {
    const v = this.get(type);
    return v === undefined ? undefined : formatMac(v);
  }
  nested(type: number): Attrs | undefined {
    const v = this.get(type);
    return v === undefined ? undefined : decodeAttrs(v);
  }
}

// ---- builders -------------------------------------------------------------------------------

function num(size: number, write: (dv: DataView) => void): Uint8Array {
  const b = new Uint8Array(size);
  write(new DataView(b.buffer));
  return b;
}

export const a = {
  bytes: (type: number, value: Uint8Array): Attr => ({ type, value }),
  flag: (type: number): Attr => ({ type, value: new Uint8Array(0) }),
  u8: (type: number, v: number): Attr => ({ type, value: Uint8Array.of(v & 0xff) }),
  u16: (type: number, v: number): Attr => ({ type, value: num(2, (d) => d.setUint16(0, v, LITTLE_ENDIAN)) }),
  be16: (type: number, v: number): Attr => ({ type, value: num(2, (d) => d.setUint16(0, v, false)) }),
  u32: (type: number, v: number): Attr => ({
    type,
    value: num(4, (d) => d.setUint32(0, v >>> 0, LITTLE_ENDIAN)),
  }),
  s32: (type: number, v: number): Attr => ({ type, value: num(4, (d) => d.setInt32(0, v, LITTLE_ENDIAN)) }),
  u64: (type: number, v: bigint): Attr => ({
    type,
    value: num(8, (d) => d.setBigUint64(0, v, LITTLE_ENDIAN)),
  }),
  /** NUL-terminated string, as the kernel expects for names. */
  str: (type: number, s: string): Attr => {
    const enc = te.encode(s);
    const b = new Uint8Array(enc.length + 1);
    b.set(enc);
    return { type, value: b };
  },
  ip: (type: number, ip: IPAddr): Attr => ({ type, value: ipToBytes(ip) }),
  mac: (type: number, mac: string): Attr => ({ type, value: parseMac(mac) }),
  nest: (type: number, children: readonly Attr[], flags = 0): Attr => ({ type, nested: children, flags }),
};

// ---- MAC addresses --------------------------------------------------------------------------

const MAC_RE = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

export function parseMac(s: string): Uint8Array {
  if (!MAC_RE.test(s))
    throw invalid(`"${s}" is not a MAC address (expected aa:bb:cc:dd:ee:ff)`, { input: s });
  return Uint8Array.from(s.split(':').map((h) => Number.parseInt(h, 16)));
}

export function formatMac(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

export const isMac = (s: string): boolean => MAC_RE.test(s);
