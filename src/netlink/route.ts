/**
 * Routes and their rtnetlink codec: struct rtmsg followed by RTA_* attributes, for IPv4 and IPv6.
 *
 * A few encodings to know (all as iproute2 does them):
 * - The table is an 8-bit field in rtmsg; a table above 255 goes in RTA_TABLE (u32) with
 *   rtm_table RT_TABLE_UNSPEC. The kernel always answers with RTA_TABLE, which wins on decode.
 * - A default route has dst_len 0 and no RTA_DST; it decodes with `dst` undefined.
 * - The route's MTU is RTAX_MTU inside the nested RTA_METRICS.
 * - `onlink` is RTNH_F_ONLINK in rtm_flags (the next hop is on the device whatever its subnet).
 * - A gateway of the other family (an IPv4 route via an IPv6 next hop) travels in RTA_VIA.
 * - ECMP routes carry their next hops in RTA_MULTIPATH as a run of struct rtnexthop, each
 *   followed by its own attributes (RTA_GATEWAY).
 *
 * The RTM_GETROUTE *lookup* (one exact packet, what `ip route get` sends) has its own encoder:
 * the kernel answers with the route it would use, its output device and gateway.
 */
import { invalid } from '../lib/errors.js';
import { bitsOf, type Family, type IPAddr, type IPNet, ipFromBytes, ipToBytes } from '../lib/ip.js';
import { afOf, familyOfAf } from './addr.js';
import { type Attr, type Attrs, a, align4, decodeAttrs, encodeAttrs, LITTLE_ENDIAN } from './attr.js';
import { RT_SCOPE, RT_TABLE, RTA, RTAX, RTM_F, RTNH_F, RTPROT } from './consts.js';
import type { Body, RtMsg } from './message.js';

/** Route types by their RTN_* number (index = value). */
export const routeTypes = [
  'unspec',
  'unicast',
  'local',
  'broadcast',
  'anycast',
  'multicast',
  'blackhole',
  'unreachable',
  'prohibit',
  'throw',
  'nat',
  'xresolve',
] as const;
export type RouteType = (typeof routeTypes)[number];

export const routeTypeNumber = (t: RouteType): number => routeTypes.indexOf(t);
export const routeTypeOf = (n: number): RouteType => routeTypes[n] ?? 'unspec';

/** Route and address scopes by name (RT_SCOPE_*). */
export type ScopeName = 'universe' | 'site' | 'link' | 'host' | 'nowhere';
const scopeNames: Record<ScopeName, number> = {
  universe: RT_SCOPE.UNIVERSE,
  site: RT_SCOPE.SITE,
  link: RT_SCOPE.LINK,
  host: RT_SCOPE.HOST,
  nowhere: RT_SCOPE.NOWHERE,
};

/** A scope name or number as a number; INVALID for anything else. */
export function scopeNumber(s: ScopeName | number): number {
  if (typeof s === 'number') {
    if (!Number.isInteger(s) || s < 0 || s > 255) throw invalid(`scope ${s} is out of range (0-255)`);
    return s;
  }
  const n = scopeNames[s];
  if (n === undefined) {
    throw invalid(`unknown scope "${String(s)}" (use ${Object.keys(scopeNames).join(', ')} or 0-255)`);
  }
  return n;
}
export const scopeName = (n: number): ScopeName | number =>
  (Object.entries(scopeNames).find(([, v]) => v === n)?.[0] as ScopeName | undefined) ?? n;

/** One next hop of an ECMP route. */
export interface Nexthop {
  readonly gateway: IPAddr | undefined;
  readonly oif: number | undefined;
  /** 1-256 (rtnh_hops + 1). */
  readonly weight: number;
  readonly onlink: boolean;
  /** RTNH_F_* flags. */
  readonly flags: number;
}

/** A route as read back from the kernel (a dump entry or the answer of a lookup). */
export interface Route {
  readonly family: Family;
  /** Destination prefix; undefined for a default route. */
  readonly dst: IPNet | undefined;
  /** Source prefix (IPv6 source-specific routes); not the preferred source, see `prefsrc`. */
  readonly src: IPNet | undefined;
  readonly gateway: IPAddr | undefined;
  /** Output interface index. */
  readonly oif: number | undefined;
  /** Input interface index (lookups with an input interface). */
  readonly iif: number | undefined;
  /** Preferred source address for packets sent along this route. */
  readonly prefsrc: IPAddr | undefined;
  readonly table: number;
  /** RTPROT_* (2 kernel, 3 boot, 4 static, …). */
  readonly protocol: number;
  /** RT_SCOPE_*. IPv6 reports universe for all but local routes. */
  readonly scope: number;
  readonly type: RouteType;
  readonly tos: number;
  /** The metric; 0 when the kernel sends none (IPv4 routes of metric 0). */
  readonly priority: number;
  readonly onlink: boolean;
  /** rtm_flags as sent (RTNH_F_*, RTM_F_CLONED, …). */
  readonly flags: number;
  /** RTAX_MTU from RTA_METRICS. */
  readonly mtu: number | undefined;
  /** ECMP next hops (RTA_MULTIPATH); undefined for a single-path route. */
  readonly nexthops: readonly Nexthop[] | undefined;
}

export interface NewNexthop {
  readonly gateway?: IPAddr;
  readonly oif?: number;
  readonly weight?: number;
  readonly onlink?: boolean;
}

/** What an RTM_NEWROUTE / RTM_DELROUTE carries. Indexes, not names. */
export interface NewRoute {
  readonly family: Family;
  /** Undefined: a default route. */
  readonly dst?: IPNet;
  readonly src?: IPNet;
  readonly gateway?: IPAddr;
  readonly oif?: number;
  readonly iif?: number;
  readonly prefsrc?: IPAddr;
  /** Default RT_TABLE_MAIN. */
  readonly table?: number;
  /** Default RTPROT_UNSPEC. */
  readonly protocol?: number;
  /** Default RT_SCOPE_UNIVERSE. */
  readonly scope?: number;
  /** Default unicast. */
  readonly type?: RouteType;
  readonly tos?: number;
  readonly priority?: number;
  readonly onlink?: boolean;
  readonly mtu?: number;
  readonly nexthops?: readonly NewNexthop[];
}

const RTNH_SIZE = 8; // struct rtnexthop: u16 len, u8 flags, u8 hops, s32 ifindex

function checkPrefix(n: IPNet, family: Family, what: string): void {
  if (n.ip.family !== family) throw invalid(`${what} is IPv${n.ip.family} in an IPv${family} route`);
  if (!Number.isInteger(n.len) || n.len < 0 || n.len > bitsOf(family)) {
    throw invalid(`${what} prefix length ${n.len} is out of range for IPv${family}`);
  }
}

/** RTA_GATEWAY for a next hop of the route's family, RTA_VIA (struct rtvia) otherwise. */
function gatewayAttr(gw: IPAddr, family: Family): Attr {
  if (gw.family === family) return a.ip(RTA.GATEWAY, gw);
  const addr = ipToBytes(gw);
  const via = new Uint8Array(2 + addr.length);
  new DataView(via.buffer).setUint16(0, afOf(gw.family), LITTLE_ENDIAN);
  via.set(addr, 2);
  return a.bytes(RTA.VIA, via);
}

function decodeVia(v: Uint8Array | undefined): IPAddr | undefined {
  if (v === undefined || v.length < 2) return undefined;
  const fam = familyOfAf(new DataView(v.buffer, v.byteOffset, 2).getUint16(0, LITTLE_ENDIAN));
  if (fam === undefined) return undefined;
  return ipFromBytes(v.subarray(2, 2 + (fam === 4 ? 4 : 16)));
}

function encodeMultipath(hops: readonly NewNexthop[], family: Family): Uint8Array {
  const parts = hops.map((h) => {
    const attrs = h.gateway ? encodeAttrs([gatewayAttr(h.gateway, family)]) : new Uint8Array(0);
    const weight = h.weight ?? 1;
    if (!Number.isInteger(weight) || weight < 1 || weight > 256) {
      throw invalid(`next hop weight ${weight} is out of range (1-256)`);
    }
    const b = new Uint8Array(RTNH_SIZE + attrs.length);
    const dv = new DataView(b.buffer);
    dv.setUint16(0, b.length, LITTLE_ENDIAN);
    dv.setUint8(2, h.onlink ? RTNH_F.ONLINK : 0);
    dv.setUint8(3, weight - 1);
    dv.setInt32(4, h.oif ?? 0, LITTLE_ENDIAN);
    b.set(attrs, RTNH_SIZE);
    return b;
  });
  const out = new Uint8Array(parts.reduce((n, p) => n + align4(p.length), 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += align4(p.length);
  }
  return out;
}

function decodeMultipath(v: Uint8Array): Nexthop[] {
  const dv = new DataView(v.buffer, v.byteOffset, v.length);
  const out: Nexthop[] = [];
  let off = 0;
  while (off + RTNH_SIZE <= v.length) {
    const len = dv.getUint16(off, LITTLE_ENDIAN);
    if (len < RTNH_SIZE || off + len > v.length) throw invalid(`malformed rtnexthop at offset ${off}`);
    const flags = dv.getUint8(off + 2);
    const attrs = decodeAttrs(v.subarray(off + RTNH_SIZE, off + len));
    out.push({
      gateway: attrs.ip(RTA.GATEWAY) ?? decodeVia(attrs.get(RTA.VIA)),
      oif: dv.getInt32(off + 4, LITTLE_ENDIAN) || undefined,
      weight: dv.getUint8(off + 3) + 1,
      onlink: (flags & RTNH_F.ONLINK) !== 0,
      flags,
    });
    off += align4(len);
  }
  return out;
}

const u32ok = (n: number): boolean => Number.isInteger(n) && n >= 0 && n <= 0xffffffff;

/** The body of an RTM_NEWROUTE or RTM_DELROUTE request. */
export function encodeRoute(r: NewRoute): Body<RtMsg> {
  if (r.dst) checkPrefix(r.dst, r.family, 'destination');
  if (r.src) checkPrefix(r.src, r.family, 'source');
  const table = r.table ?? RT_TABLE.MAIN;
  if (!u32ok(table)) throw invalid(`table ${table} is out of range`);
  const attrs: Attr[] = [];
  if (table > 255) attrs.push(a.u32(RTA.TABLE, table));
  if (r.dst && r.dst.len > 0) attrs.push(a.ip(RTA.DST, r.dst.ip));
  if (r.src && r.src.len > 0) attrs.push(a.ip(RTA.SRC, r.src.ip));
  if (r.gateway) attrs.push(gatewayAttr(r.gateway, r.family));
  if (r.oif !== undefined) attrs.push(a.u32(RTA.OIF, r.oif));
  if (r.iif !== undefined) attrs.push(a.u32(RTA.IIF, r.iif));
  if (r.prefsrc) {
    if (r.prefsrc.family !== r.family) throw invalid(`preferred source of the other family`);
    attrs.push(a.ip(RTA.PREFSRC, r.prefsrc));
  }
  if (r.priority !== undefined) {
    if (!u32ok(r.priority)) throw invalid(`metric ${r.priority} is out of range`);
    attrs.push(a.u32(RTA.PRIORITY, r.priority));
  }
  if (r.mtu !== undefined) {
    if (!u32ok(r.mtu)) throw invalid(`mtu ${r.mtu} is out of range`);
    attrs.push(a.nest(RTA.METRICS, [a.u32(RTAX.MTU, r.mtu)]));
  }
  if (r.nexthops !== undefined && r.nexthops.length > 0) {
    attrs.push(a.bytes(RTA.MULTIPATH, encodeMultipath(r.nexthops, r.family)));
  }
  return {
    header: {
      family: afOf(r.family),
      dstLen: r.dst?.len ?? 0,
      srcLen: r.src?.len ?? 0,
      tos: r.tos ?? 0,
      table: table > 255 ? RT_TABLE.UNSPEC : table,
      protocol: r.protocol ?? RTPROT.UNSPEC,
      scope: r.scope ?? RT_SCOPE.UNIVERSE,
      type: routeTypeNumber(r.type ?? 'unicast'),
      flags: r.onlink ? RTNH_F.ONLINK : 0,
    },
    attrs,
  };
}

/** The body of an RTM_GETROUTE dump request (all families when `family` is undefined). */
export function routeDumpRequest(family?: Family): Body<RtMsg> {
  return {
    header: {
      family: family === undefined ? 0 : afOf(family),
      dstLen: 0,
      srcLen: 0,
      tos: 0,
      table: RT_TABLE.UNSPEC,
      protocol: 0,
      scope: 0,
      type: 0,
      flags: 0,
    },
    attrs: [],
  };
}

/** Decode an RTM_NEWROUTE message (dump entry, notification or lookup answer). */
export function decodeRoute(h: RtMsg, attrs: Attrs): Route {
  const family = familyOfAf(h.family);
  if (family === undefined) throw invalid(`route of family ${h.family} is not IPv4 or IPv6`);
  const dstIp = attrs.ip(RTA.DST);
  const srcIp = attrs.ip(RTA.SRC);
  const mp = attrs.get(RTA.MULTIPATH);
  return {
    family,
    dst: dstIp !== undefined && h.dstLen > 0 ? { ip: dstIp, len: h.dstLen } : undefined,
    src: srcIp !== undefined && h.srcLen > 0 ? { ip: srcIp, len: h.srcLen } : undefined,
    gateway: attrs.ip(RTA.GATEWAY) ?? decodeVia(attrs.get(RTA.VIA)),
    oif: attrs.u32(RTA.OIF),
    iif: attrs.u32(RTA.IIF),
    prefsrc: attrs.ip(RTA.PREFSRC),
    table: attrs.u32(RTA.TABLE) ?? h.table,
    protocol: h.protocol,
    scope: h.scope,
    type: routeTypeOf(h.type),
    tos: h.tos,
    priority: attrs.u32(RTA.PRIORITY) ?? 0,
    onlink: (h.flags & RTNH_F.ONLINK) !== 0,
    flags: h.flags,
    mtu: attrs.nested(RTA.METRICS)?.u32(RTAX.MTU),
    nexthops: mp === undefined ? undefined : decodeMultipath(mp),
  };
}

// ---- lookup of one packet ---------------------------------------------------------------------

/** One packet to look up: what `ip route get DST from SRC iif DEV mark M ipproto P dport D` asks. */
export interface RouteQuery {
  readonly dst: IPAddr;
  readonly src?: IPAddr;
  /** Input interface index: look the packet up as if it arrived there (forwarding path). */
  readonly iif?: number;
  /** Output interface index: as a socket bound to the device would. */
  readonly oif?: number;
  readonly mark?: number;
  /** IP protocol number (TCP 6, UDP 17, ICMP 1, ICMPv6 58: what the kernel accepts). */
  readonly ipProto?: number;
  readonly sport?: number;
  readonly dport?: number;
  readonly uid?: number;
  readonly tos?: number;
  /** Answer with the FIB entry that matched (its prefix) instead of the resolved host route. */
  readonly fibMatch?: boolean;
}

/**
 * The body of an RTM_GETROUTE lookup for one packet (send it as a plain request, not a dump).
 * RTM_F_LOOKUP_TABLE is always set so the answer names the table the route really came from.
 */
export function encodeRouteLookup(q: RouteQuery): Body<RtMsg> {
  const family = q.dst.family;
  if (q.src && q.src.family !== family) throw invalid('source and destination of different families');
  const attrs: Attr[] = [a.ip(RTA.DST, q.dst)];
  if (q.src) attrs.push(a.ip(RTA.SRC, q.src));
  if (q.iif !== undefined) attrs.push(a.u32(RTA.IIF, q.iif));
  if (q.oif !== undefined) attrs.push(a.u32(RTA.OIF, q.oif));
  if (q.mark !== undefined) attrs.push(a.u32(RTA.MARK, q.mark));
  if (q.uid !== undefined) attrs.push(a.u32(RTA.UID, q.uid));
  if (q.ipProto !== undefined) attrs.push(a.u8(RTA.IP_PROTO, q.ipProto));
  if (q.sport !== undefined) attrs.push(a.be16(RTA.SPORT, q.sport));
  if (q.dport !== undefined) attrs.push(a.be16(RTA.DPORT, q.dport));
  return {
    header: {
      family: afOf(family),
      dstLen: bitsOf(family),
      srcLen: q.src ? bitsOf(family) : 0,
      tos: q.tos ?? 0,
      table: RT_TABLE.UNSPEC,
      protocol: 0,
      scope: 0,
      type: 0,
      flags: RTM_F.LOOKUP_TABLE | (q.fibMatch ? RTM_F.FIB_MATCH : 0),
    },
    attrs,
  };
}

/** Decode an RTM_GETROUTE lookup request (the inverse of encodeRouteLookup; for tests and fixtures). */
export function decodeRouteQuery(h: RtMsg, attrs: Attrs): RouteQuery {
  const dst = attrs.ip(RTA.DST);
  if (dst === undefined) throw invalid('route lookup without RTA_DST');
  const opt = <K extends keyof RouteQuery>(k: K, v: RouteQuery[K] | undefined) =>
    v === undefined ? {} : ({ [k]: v } as Pick<RouteQuery, K>);
  return {
    dst,
    ...opt('src', attrs.ip(RTA.SRC)),
    ...opt('iif', attrs.u32(RTA.IIF)),
    ...opt('oif', attrs.u32(RTA.OIF)),
    ...opt('mark', attrs.u32(RTA.MARK)),
    ...opt('uid', attrs.u32(RTA.UID)),
    ...opt('ipProto', attrs.u8(RTA.IP_PROTO)),
    ...opt('sport', attrs.be16(RTA.SPORT)),
    ...opt('dport', attrs.be16(RTA.DPORT)),
    ...opt('tos', h.tos || undefined),
    ...opt('fibMatch', (h.flags & RTM_F.FIB_MATCH) !== 0 || undefined),
  };
}

/** Names of well-known RTPROT_* values, for messages. */
export const protocolName = (p: number): string =>
  Object.entries(RTPROT)
    .find(([, v]) => v === p)?.[0]
    .toLowerCase() ?? String(p);
