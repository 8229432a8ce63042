/**
 * Connection tracking entries and their ctnetlink codec (NETLINK_NETFILTER, subsystem
 * NFNL_SUBSYS_CTNETLINK), so that weft can list and delete conntrack entries in-process instead
 * of spawning the `conntrack` tool (a process start costs ~6 ms, and the tool's exit releases a
 * netfilter netlink socket, which makes the kernel finish nf_tables' pending clean-up there and
 * then: see kernel/conntrack.ts).
 *
 * The layout, from the kernel's uapi headers (linux/netfilter/nfnetlink.h and
 * nfnetlink_conntrack.h):
 * - the netlink message type is `(NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_*`;
 * - the family header is struct nfgenmsg: u8 family (AF_INET / AF_INET6 / AF_UNSPEC), u8 version
 *   (NFNETLINK_V0), be16 res_id;
 * - an entry carries two nested tuples, CTA_TUPLE_ORIG (what the first packet looked like) and
 *   CTA_TUPLE_REPLY (what an answer looks like: after a DNAT its source is the real target),
 *   each with CTA_TUPLE_IP (CTA_IP_V4_* or CTA_IP_V6_* src and dst) and CTA_TUPLE_PROTO
 *   (CTA_PROTO_NUM, then ports or ICMP id/type/code);
 * - every integer of ctnetlink is in network byte order (ports, zone, mark, id, status, timeout),
 *   unlike rtnetlink's host-order ones.
 *
 * Deleting by tuple: IPCTNL_MSG_CT_DELETE with CTA_TUPLE_ORIG (and CTA_ZONE when the entry is not
 * in the default zone) removes that one entry. A delete request *without* a tuple flushes the
 * whole table, so the only delete encoder here always writes one. Pure: values to bytes and back.
 */
import { invalid } from '../lib/errors.js';
import type { Family, IPAddr } from '../lib/ip.js';
import { afOf, familyOfAf } from './addr.js';
import { type Attr, type Attrs, a, NLA_F_NESTED } from './attr.js';
import { AF } from './consts.js';
import type { Body, FixedCodec } from './message.js';

/** The netlink protocol number of nfnetlink (socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER)). */
export const NETLINK_NETFILTER = 12;
export const NFNETLINK_V0 = 0;
export const NFNL_SUBSYS_CTNETLINK = 1;

/** enum cntl_msg_types. */
export const IPCTNL_MSG = {
  CT_NEW: 0,
  CT_GET: 1,
  CT_DELETE: 2,
  CT_GET_CTRZERO: 3,
  CT_GET_STATS_CPU: 4,
  CT_GET_STATS: 5,
} as const;

/** The nlmsg_type of a ctnetlink message. */
export const ctnlType = (msg: number): number => (NFNL_SUBSYS_CTNETLINK << 8) | msg;

/**
 * Full nlmsg_type values: a dump entry is CT_NEW, a dump request CT_GET, a deletion CT_DELETE;
 * GET_STATS asks for (and answers with) the namespace's entry count.
 */
export const CT_MSG = {
  NEW: ctnlType(IPCTNL_MSG.CT_NEW),
  GET: ctnlType(IPCTNL_MSG.CT_GET),
  DELETE: ctnlType(IPCTNL_MSG.CT_DELETE),
  GET_STATS: ctnlType(IPCTNL_MSG.CT_GET_STATS),
} as const;

/** enum ctattr_type (only what weft reads or writes). */
export const CTA = {
  TUPLE_ORIG: 1,
  TUPLE_REPLY: 2,
  STATUS: 3,
  PROTOINFO: 4,
  TIMEOUT: 7,
  MARK: 8,
  ID: 12,
  ZONE: 18,
} as const;

/** enum ctattr_tuple. */
export const CTA_TUPLE = { IP: 1, PROTO: 2, ZONE: 3 } as const;

/** enum ctattr_ip. */
export const CTA_IP = { V4_SRC: 1, V4_DST: 2, V6_SRC: 3, V6_DST: 4 } as const;

/** enum ctattr_l4proto. */
export const CTA_PROTO = {
  NUM: 1,
  SRC_PORT: 2,
  DST_PORT: 3,
  ICMP_ID: 4,
  ICMP_TYPE: 5,
  ICMP_CODE: 6,
  ICMPV6_ID: 7,
  ICMPV6_TYPE: 8,
  ICMPV6_CODE: 9,
} as const;

/** enum ctattr_stats_global: the answer to IPCTNL_MSG_CT_GET_STATS. */
export const CTA_STATS_GLOBAL = { ENTRIES: 1, MAX_ENTRIES: 2 } as const;

/** IP protocol numbers of the protocols weft names. */
export const IPPROTO = { ICMP: 1, TCP: 6, UDP: 17, ICMPV6: 58 } as const;

// ---- the family header ----------------------------------------------------------------------

export interface NfGenMsg {
  /** AF_INET, AF_INET6, or AF_UNSPEC (a dump of both families). */
  family: number;
  /** NFNETLINK_V0. */
  version: number;
  /** Resource id (big-endian on the wire); 0 for ctnetlink requests. */
  resId: number;
}

export const nfgenmsg: FixedCodec<NfGenMsg> = {
  size: 4,
  encode(v, dv, o) {
    dv.setUint8(o, v.family);
    dv.setUint8(o + 1, v.version);
    dv.setUint16(o + 2, v.resId, false);
  },
  decode: (dv, o) => ({
    family: dv.getUint8(o),
    version: dv.getUint8(o + 1),
    resId: dv.getUint16(o + 2, false),
  }),
};

// ---- entries --------------------------------------------------------------------------------

/** One direction of a connection as the kernel tracks it. */
export interface CtTuple {
  readonly src: IPAddr;
  readonly dst: IPAddr;
  /** Source port (tcp, udp, sctp, dccp, udplite; the GRE key travels here too). */
  readonly sport?: number;
  /** Destination port. */
  readonly dport?: number;
  /** ICMP / ICMPv6 identifier, type and code (CTA_PROTO_ICMP_* or CTA_PROTO_ICMPV6_*). */
  readonly icmpId?: number;
  readonly icmpType?: number;
  readonly icmpCode?: number;
}

/** A conntrack entry, as `conntrack -L` shows it. */
export interface CtEntry {
  readonly family: Family;
  /** IP protocol number (IPPROTO.TCP, IPPROTO.UDP, …). */
  readonly proto: number;
  /** The connection as its first packet saw it (for a published port: client → host:port). */
  readonly orig: CtTuple;
  /** The answer's direction (after a DNAT, its source is the real target: container:port). */
  readonly reply: CtTuple;
  /** Conntrack zone (absent: the default zone 0). */
  readonly zone?: number;
  readonly mark?: number;
  /** The kernel's id of the entry. */
  readonly id?: number;
  /** IPS_* status bits (ASSURED, SEEN_REPLY, DST_NAT, …). */
  readonly status?: number;
  /** Seconds left before the entry expires. */
  readonly timeout?: number;
}

/** What a deletion needs: the entry's identity (its original tuple and zone). */
export type CtKey = Pick<CtEntry, 'family' | 'proto' | 'orig' | 'zone'>;

const u32be = (v: number): Uint8Array => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, false);
  return b;
};

function checkU(v: number, bits: 8 | 16 | 32, what: string): number {
  const max = 2 ** bits - 1;
  if (!Number.isInteger(v) || v < 0 || v > max)
    throw invalid(`conntrack ${what} ${v} is out of range (0-${max})`);
  return v;
}

const icmpAttrs = (family: Family) =>
  family === 4
    ? { id: CTA_PROTO.ICMP_ID, type: CTA_PROTO.ICMP_TYPE, code: CTA_PROTO.ICMP_CODE }
    : { id: CTA_PROTO.ICMPV6_ID, type: CTA_PROTO.ICMPV6_TYPE, code: CTA_PROTO.ICMPV6_CODE };

function encodeTuple(type: number, family: Family, proto: number, t: CtTuple): Attr {
  if (t.src.family !== family || t.dst.family !== family) {
    throw invalid(`conntrack tuple addresses must be IPv${family} like the entry`);
  }
  const ip =
    family === 4 ? { src: CTA_IP.V4_SRC, dst: CTA_IP.V4_DST } : { src: CTA_IP.V6_SRC, dst: CTA_IP.V6_DST };
  const l4: Attr[] = [a.u8(CTA_PROTO.NUM, checkU(proto, 8, 'protocol'))];
  if (t.sport !== undefined) l4.push(a.be16(CTA_PROTO.SRC_PORT, checkU(t.sport, 16, 'port')));
  if (t.dport !== undefined) l4.push(a.be16(CTA_PROTO.DST_PORT, checkU(t.dport, 16, 'port')));
  const icmp = icmpAttrs(family);
  if (t.icmpId !== undefined) l4.push(a.be16(icmp.id, checkU(t.icmpId, 16, 'ICMP id')));
  if (t.icmpType !== undefined) l4.push(a.u8(icmp.type, checkU(t.icmpType, 8, 'ICMP type')));
  if (t.icmpCode !== undefined) l4.push(a.u8(icmp.code, checkU(t.icmpCode, 8, 'ICMP code')));
  return a.nest(
    type,
    [
      a.nest(CTA_TUPLE.IP, [a.ip(ip.src, t.src), a.ip(ip.dst, t.dst)], NLA_F_NESTED),
      a.nest(CTA_TUPLE.PROTO, l4, NLA_F_NESTED),
    ],
    NLA_F_NESTED,
  );
}

function decodeTuple(
  attrs: Attrs,
  type: number,
  family: Family,
  what: string,
): { proto: number; tuple: CtTuple } {
  const t = attrs.nested(type);
  const ip = t?.nested(CTA_TUPLE.IP);
  const l4 = t?.nested(CTA_TUPLE.PROTO);
  const src = ip?.ip(family === 4 ? CTA_IP.V4_SRC : CTA_IP.V6_SRC);
  const dst = ip?.ip(family === 4 ? CTA_IP.V4_DST : CTA_IP.V6_DST);
  const proto = l4?.u8(CTA_PROTO.NUM);
  if (!src || !dst || proto === undefined) {
    throw invalid(`conntrack entry without a complete ${what} tuple (addresses and protocol)`);
  }
  const icmp = icmpAttrs(family);
  const sport = l4?.be16(CTA_PROTO.SRC_PORT);
  const dport = l4?.be16(CTA_PROTO.DST_PORT);
  const icmpId = l4?.be16(icmp.id);
  const icmpType = l4?.u8(icmp.type);
  const icmpCode = l4?.u8(icmp.code);
  return {
    proto,
    tuple: {
      src,
      dst,
      ...(sport !== undefined && { sport }),
      ...(dport !== undefined && { dport }),
      ...(icmpId !== undefined && { icmpId }),
      ...(icmpType !== undefined && { icmpType }),
      ...(icmpCode !== undefined && { icmpCode }),
    },
  };
}

const be32 = (attrs: Attrs, type: number): number | undefined => {
  const v = attrs.get(type);
  if (v === undefined) return undefined;
  if (v.length < 4) throw invalid(`conntrack attribute ${type} has ${v.length} bytes, expected 4`);
  return new DataView(v.buffer, v.byteOffset, 4).getUint32(0, false);
};

const header = (family: Family | undefined): NfGenMsg => ({
  family: family === undefined ? AF.UNSPEC : afOf(family),
  version: NFNETLINK_V0,
  resId: 0,
});

/** The body of an IPCTNL_MSG_CT_NEW message for `e` (both tuples and the optional fields). */
export function encodeCtEntry(e: CtEntry): Body<NfGenMsg> {
  const attrs: Attr[] = [
    encodeTuple(CTA.TUPLE_ORIG, e.family, e.proto, e.orig),
    encodeTuple(CTA.TUPLE_REPLY, e.family, e.proto, e.reply),
  ];
  if (e.status !== undefined) attrs.push(a.bytes(CTA.STATUS, u32be(checkU(e.status, 32, 'status'))));
  if (e.timeout !== undefined) attrs.push(a.bytes(CTA.TIMEOUT, u32be(checkU(e.timeout, 32, 'timeout'))));
  if (e.mark !== undefined) attrs.push(a.bytes(CTA.MARK, u32be(checkU(e.mark, 32, 'mark'))));
  if (e.id !== undefined) attrs.push(a.bytes(CTA.ID, u32be(checkU(e.id, 32, 'id'))));
  if (e.zone !== undefined) attrs.push(a.be16(CTA.ZONE, checkU(e.zone, 16, 'zone')));
  return { header: header(e.family), attrs };
}

/**
 * Decode an IPCTNL_MSG_CT_NEW message (a dump entry). Throws INVALID for a family other than
 * AF_INET / AF_INET6 or an entry without both tuples.
 */
export function decodeCtEntry(h: NfGenMsg, attrs: Attrs): CtEntry {
  const family = familyOfAf(h.family);
  if (family === undefined)
    throw invalid(`conntrack entry of address family ${h.family} (expected AF_INET or AF_INET6)`);
  const orig = decodeTuple(attrs, CTA.TUPLE_ORIG, family, 'original');
  const reply = decodeTuple(attrs, CTA.TUPLE_REPLY, family, 'reply');
  const zone = attrs.be16(CTA.ZONE);
  const mark = be32(attrs, CTA.MARK);
  const id = be32(attrs, CTA.ID);
  const status = be32(attrs, CTA.STATUS);
  const timeout = be32(attrs, CTA.TIMEOUT);
  return {
    family,
    proto: orig.proto,
    orig: orig.tuple,
    reply: reply.tuple,
    ...(zone !== undefined && { zone }),
    ...(mark !== undefined && { mark }),
    ...(id !== undefined && { id }),
    ...(status !== undefined && { status }),
    ...(timeout !== undefined && { timeout }),
  };
}

/** The body of a dump request (IPCTNL_MSG_CT_GET with NLM_F_DUMP): one family, or both. */
export const ctDumpRequest = (family?: Family): Body<NfGenMsg> => ({ header: header(family), attrs: [] });

/** The body of an IPCTNL_MSG_CT_GET_STATS request (a bare nfgenmsg). */
export const ctStatsRequest = (): Body<NfGenMsg> => ({ header: header(undefined), attrs: [] });

/**
 * The answer to IPCTNL_MSG_CT_GET_STATS: how many entries the namespace's table holds (what
 * `conntrack -C` prints) and the table's limit. Throws INVALID when the count is missing.
 */
export function decodeCtStats(attrs: Attrs): { entries: number; maxEntries?: number } {
  const entries = be32(attrs, CTA_STATS_GLOBAL.ENTRIES);
  if (entries === undefined) throw invalid('conntrack statistics without an entry count');
  const maxEntries = be32(attrs, CTA_STATS_GLOBAL.MAX_ENTRIES);
  return { entries, ...(maxEntries !== undefined && { maxEntries }) };
}

/**
 * The body of an IPCTNL_MSG_CT_DELETE request removing the one entry whose original tuple (and
 * zone) is `k`'s. Throws INVALID for out-of-range values or addresses of the wrong family.
 */
export function encodeCtDelete(k: CtKey): Body<NfGenMsg> {
  const attrs: Attr[] = [encodeTuple(CTA.TUPLE_ORIG, k.family, k.proto, k.orig)];
  if (k.zone !== undefined) attrs.push(a.be16(CTA.ZONE, checkU(k.zone, 16, 'zone')));
  return { header: header(k.family), attrs };
}
