/**
 * Netlink messages: the 16-byte nlmsghdr, the rtnetlink family headers (ifinfomsg, ifaddrmsg,
 * rtmsg, ndmsg) followed by attributes, and the control messages (NLMSG_ERROR with extended
 * ACK, NLMSG_DONE). A datagram from the kernel may carry many messages; `parseMessages` splits
 * them. Pure: bytes in, values out.
 */
import { invalid } from '../lib/errors.js';
import {
  type Attr,
  type Attrs,
  align4,
  attrsLength,
  decodeAttrs,
  encodeAttrsInto,
  LITTLE_ENDIAN,
} from './attr.js';
import { NLM_F, NLMSG, NLMSGERR_ATTR } from './consts.js';

export const NLMSG_HDRLEN = 16;

export interface NlHeader {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly pid: number;
}

/** A raw message: header fields and the payload after the header. */
export interface NlMessage extends NlHeader {
  readonly payload: Uint8Array;
}

// ---- family headers -------------------------------------------------------------------------

/** A fixed-size struct that precedes the attributes of an rtnetlink message. */
export interface FixedCodec<T> {
  readonly size: number;
  encode(v: T, dv: DataView, off: number): void;
  decode(dv: DataView, off: number): T;
}

export interface IfInfoMsg {
  family: number;
  type: number; // ARPHRD_*
  index: number;
  flags: number;
  change: number;
}
export const ifinfomsg: FixedCodec<IfInfoMsg> = {
  size: 16,
  encode(v, dv, o) {
    dv.setUint8(o, v.family);
    dv.setUint8(o + 1, 0);
    dv.setUint16(o + 2, v.type, LITTLE_ENDIAN);
    dv.setInt32(o + 4, v.index, LITTLE_ENDIAN);
    dv.setUint32(o + 8, v.flags >>> 0, LITTLE_ENDIAN);
    dv.setUint32(o + 12, v.change >>> 0, LITTLE_ENDIAN);
  },
  decode: (dv, o) => ({
    family: dv.getUint8(o),
    type: dv.getUint16(o + 2, LITTLE_ENDIAN),
    index: dv.getInt32(o + 4, LITTLE_ENDIAN),
    flags: dv.getUint32(o + 8, LITTLE_ENDIAN),
    change: dv.getUint32(o + 12, LITTLE_ENDIAN),
  }),
};

export interface IfAddrMsg {
  family: number;
  prefixlen: number;
  flags: number;
  scope: number;
  index: number;
}
export const ifaddrmsg: FixedCodec<IfAddrMsg> = {
  size: 8,
  encode(v, dv, o) {
    dv.setUint8(o, v.family);
    dv.setUint8(o + 1, v.prefixlen);
    dv.setUint8(o + 2, v.flags & 0xff);
    dv.setUint8(o + 3, v.scope);
    dv.setUint32(o + 4, v.index, LITTLE_ENDIAN);
  },
  decode: (dv, o) => ({
    family: dv.getUint8(o),
    prefixlen: dv.getUint8(o + 1),
    flags: dv.getUint8(o + 2),
    scope: dv.getUint8(o + 3),
    index: dv.getUint32(o + 4, LITTLE_ENDIAN),
  }),
};

export interface RtMsg {
  family: number;
  dstLen: number;
  srcLen: number;
  tos: number;
  table: number;
  protocol: number;
  scope: number;
  type: number;
  flags: number;
}
export const rtmsg: FixedCodec<RtMsg> = {
  size: 12,
  encode(v, dv, o) {
    dv.setUint8(o, v.family);
    dv.setUint8(o + 1, v.dstLen);
    dv.setUint8(o + 2, v.srcLen);
    dv.setUint8(o + 3, v.tos);
    dv.setUint8(o + 4, v.table);
    dv.setUint8(o + 5, v.protocol);
    dv.setUint8(o + 6, v.scope);
    dv.setUint8(o + 7, v.type);
    dv.setUint32(o + 8, v.flags >>> 0, LITTLE_ENDIAN);
  },
  decode: (dv, o) => ({
    family: dv.getUint8(o),
    dstLen: dv.getUint8(o + 1),
    srcLen: dv.getUint8(o + 2),
    tos: dv.getUint8(o + 3),
    table: dv.getUint8(o + 4),
    protocol: dv.getUint8(o + 5),
    scope: dv.getUint8(o + 6),
    type: dv.getUint8(o + 7),
    flags: dv.getUint32(o + 8, LITTLE_ENDIAN),
  }),
};

export interface NdMsg {
  family: number;
  index: number;
  state: number;
  flags: number;
  type: number;
}
export const ndmsg: FixedCodec<NdMsg> = {
  size: 12,
  encode(v, dv, o) {
    dv.setUint8(o, v.family);
    dv.setUint8(o + 1, 0);
    dv.setUint16(o + 2, 0, LITTLE_ENDIAN);
    dv.setInt32(o + 4, v.index, LITTLE_ENDIAN);
    dv.setUint16(o + 8, v.state, LITTLE_ENDIAN);
    dv.setUint8(o + 10, v.flags);
    dv.setUint8(o + 11, v.type);
  },
  decode: (dv, o) => ({
    family: dv.getUint8(o),
    index: dv.getInt32(o + 4, LITTLE_ENDIAN),
    state: dv.getUint16(o + 8, LITTLE_ENDIAN),
    flags: dv.getUint8(o + 10),
    type: dv.getUint8(o + 11),
  }),
};

/** A family header plus attributes: the body of every rtnetlink message. */
export interface Body<H> {
  readonly header: H;
  readonly attrs: readonly Attr[];
}

/** Encode one full message (nlmsghdr, family header, attributes). */
export function encodeMessage<H>(h: NlHeader, codec: FixedCodec<H>, body: Body<H>): Uint8Array {
  const fixed = align4(codec.size);
  const len = NLMSG_HDRLEN + fixed + attrsLength(body.attrs);
  const out = new Uint8Array(len);
  const dv = new DataView(out.buffer);
  writeHeader(dv, len, h);
  codec.encode(body.header, dv, NLMSG_HDRLEN);
  encodeAttrsInto(body.attrs, out, NLMSG_HDRLEN + fixed);
  return out;
}

/** Encode a message whose payload is given as bytes (e.g. a nested struct such as a veth peer). */
export function encodeRaw(h: NlHeader, payload: Uint8Array): Uint8Array {
  const len = NLMSG_HDRLEN + payload.length;
  const out = new Uint8Array(align4(len));
  writeHeader(new DataView(out.buffer), len, h);
  out.set(payload, NLMSG_HDRLEN);
  return out;
}

function writeHeader(dv: DataView, len: number, h: NlHeader): void {
  dv.setUint32(0, len, LITTLE_ENDIAN);
  dv.setUint16(4, h.type, LITTLE_ENDIAN);
  dv.setUint16(6, h.flags, LITTLE_ENDIAN);
  dv.setUint32(8, h.seq >>> 0, LITTLE_ENDIAN);
  dv.setUint32(12, h.pid >>> 0, LITTLE_ENDIAN);
}

/** Encode a family header and attributes without the nlmsghdr (for nested structs). */
export function encodeBody<H>(codec: FixedCodec<H>, body: Body<H>): Uint8Array {
  const fixed = align4(codec.size);
  const out = new Uint8Array(fixed + attrsLength(body.attrs));
  codec.encode(body.header, new DataView(out.buffer), 0);
  encodeAttrsInto(body.attrs, out, fixed);
  return out;
}

/** Decode a family header and its attributes from a message payload. */
export function decodeBody<H>(codec: FixedCodec<H>, payload: Uint8Array): { header: H; attrs: Attrs } {
  if (payload.length < codec.size) {
    throw invalid(`netlink payload of ${payload.length} bytes is shorter than its header (${codec.size})`);
  }
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  return { header: codec.decode(dv, 0), attrs: decodeAttrs(payload.subarray(align4(codec.size))) };
}

/** Split a datagram into messages. Truncated input is an INVALID error. */
export function parseMessages(buf: Uint8Array): NlMessage[] {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: NlMessage[] = [];
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = dv.getUint32(off, LITTLE_ENDIAN);
    if (len < NLMSG_HDRLEN || off + len > buf.length) {
      throw invalid(`malformed netlink message at offset ${off} (len ${len}, ${buf.length - off} left)`);
    }
    out.push({
      type: dv.getUint16(off + 4, LITTLE_ENDIAN),
      flags: dv.getUint16(off + 6, LITTLE_ENDIAN),
      seq: dv.getUint32(off + 8, LITTLE_ENDIAN),
      pid: dv.getUint32(off + 12, LITTLE_ENDIAN),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  if (off < buf.length)
    throw invalid(`truncated netlink message at offset ${off} (${buf.length - off} bytes)`);
  return out;
}

/** The content of an NLMSG_ERROR message: errno 0 is an ACK. */
export interface NlError {
  /** Positive errno (the kernel sends it negated), 0 for an ACK. */
  readonly errno: number;
  /** The header of the request this answers. */
  readonly request: NlHeader | undefined;
  /** Extended ACK text (NETLINK_EXT_ACK), e.g. "Nexthop has invalid gateway". */
  readonly message: string | undefined;
  /** Offset in the request of the attribute the kernel blamed. */
  readonly offset: number | undefined;
}

export function parseError(m: NlMessage): NlError {
  if (m.type !== NLMSG.ERROR || m.payload.length < 4) throw invalid('not an NLMSG_ERROR message');
  const dv = new DataView(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength);
  const errno = -dv.getInt32(0, LITTLE_ENDIAN) || 0; // || 0: an ACK is 0, not -0
  let request: NlHeader | undefined;
  let message: string | undefined;
  let offset: number | undefined;
  if (m.payload.length >= 4 + NLMSG_HDRLEN) {
    const reqLen = dv.getUint32(4, LITTLE_ENDIAN);
    request = {
      type: dv.getUint16(8, LITTLE_ENDIAN),
      flags: dv.getUint16(10, LITTLE_ENDIAN),
      seq: dv.getUint32(12, LITTLE_ENDIAN),
      pid: dv.getUint32(16, LITTLE_ENDIAN),
    };
    if (m.flags & NLM_F.ACK_TLVS) {
      // With NLM_F_CAPPED the request payload is omitted; otherwise it is echoed in full.
      const skip = m.flags & NLM_F.CAPPED ? NLMSG_HDRLEN : align4(reqLen);
      const start = 4 + skip;
      if (start <= m.payload.length) {
        const tlvs = decodeAttrs(m.payload.subarray(start));
        message = tlvs.str(NLMSGERR_ATTR.MSG);
        offset = tlvs.u32(NLMSGERR_ATTR.OFFS);
      }
    }
  }
  return { errno, request, message, offset };
}

/** The error code carried by NLMSG_DONE (0 normally; negative errno if the dump failed). */
export function parseDone(m: NlMessage): number {
  if (m.payload.length < 4) return 0;
  return -new DataView(m.payload.buffer, m.payload.byteOffset, 4).getInt32(0, LITTLE_ENDIAN) || 0;
}
