/**
 * Neighbour and bridge FDB entries (RTM_NEWNEIGH / RTM_DELNEIGH / RTM_GETNEIGH over an ndmsg) as
 * one typed value and its codec. One message layout serves two tables:
 *
 * - the neighbour (ARP / NDP) table, family AF_INET or AF_INET6: `ip` (NDA_DST) is the
 *   neighbour's address and `lladdr` its MAC, as `ip neigh` shows;
 * - the bridge forwarding database, family AF_BRIDGE: `lladdr` is the MAC being forwarded and
 *   `dst` (also NDA_DST on the wire) the remote VTEP of a vxlan device, as `bridge fdb` shows,
 *   with `vni`, `port`, `via` for the tunnel and `master` for the bridge an entry belongs to.
 *
 * The codec keeps the two readings of NDA_DST apart by family, so a decoded value says which
 * one it is. Pure: values to a `Body<NdMsg>` and back, no I/O.
 */
import type { IPAddr } from '../lib/ip.js';
import { type Attr, type Attrs, a } from './attr.js';
import { AF, NDA } from './consts.js';
import type { Body, NdMsg } from './message.js';

export interface Neigh {
  /** AF.INET, AF.INET6 (neighbour table) or AF.BRIDGE (FDB). */
  readonly family: number;
  /** The device the entry is on (for FDB: the bridge port or the vxlan device). */
  readonly ifindex: number;
  /** NUD_* state: PERMANENT, NOARP (a static FDB entry), REACHABLE, STALE… */
  readonly state: number;
  /** NTF_* flags (SELF, MASTER, EXT_LEARNED…). */
  readonly flags: number;
  /** ndm_type (RTN_UNICAST for most neighbours, 0 in FDB entries). */
  readonly type: number;
  /** The neighbour's IP address (NDA_DST of an AF_INET / AF_INET6 entry). */
  readonly ip?: IPAddr;
  /** The link-layer address (NDA_LLADDR): the neighbour's MAC, or the MAC an FDB entry forwards. */
  readonly lladdr?: string;
  /** The remote VTEP of a vxlan FDB entry (NDA_DST of an AF_BRIDGE entry). */
  readonly dst?: IPAddr;
  /** VXLAN network identifier of the remote (NDA_VNI). */
  readonly vni?: number;
  /** UDP destination port of the remote (NDA_PORT, network byte order on the wire). */
  readonly port?: number;
  /** Index of the underlay device to reach the remote through (NDA_IFINDEX, `via` in iproute2). */
  readonly via?: number;
  /** Index of the bridge this FDB entry belongs to (NDA_MASTER). */
  readonly master?: number;
  /** VLAN id of a bridge FDB entry (NDA_VLAN). */
  readonly vlan?: number;
}

const isBridge = (family: number): boolean => family === AF.BRIDGE;

/** The body of an RTM_NEWNEIGH / RTM_DELNEIGH / RTM_GETNEIGH request for `n`. */
export function encodeNeigh(n: Neigh): Body<NdMsg> {
  const attrs: Attr[] = [];
  const dst = isBridge(n.family) ? n.dst : n.ip;
  if (dst !== undefined) attrs.push(a.ip(NDA.DST, dst));
  if (n.lladdr !== undefined) attrs.push(a.mac(NDA.LLADDR, n.lladdr));
  if (n.vlan !== undefined) attrs.push(a.u16(NDA.VLAN, n.vlan));
  if (n.port !== undefined) attrs.push(a.be16(NDA.PORT, n.port));
  if (n.vni !== undefined) attrs.push(a.u32(NDA.VNI, n.vni));
  if (n.via !== undefined) attrs.push(a.u32(NDA.IFINDEX, n.via));
  if (n.master !== undefined) attrs.push(a.u32(NDA.MASTER, n.master));
  return {
    header: { family: n.family, index: n.ifindex, state: n.state, flags: n.flags, type: n.type },
    attrs,
  };
}

/** Decode an RTM_NEWNEIGH message (a dump entry, a GET answer or a notification). */
export function decodeNeigh(header: NdMsg, attrs: Attrs): Neigh {
  const dst = attrs.ip(NDA.DST);
  const lladdr = attrs.mac(NDA.LLADDR);
  const vlan = attrs.u16(NDA.VLAN);
  const port = attrs.be16(NDA.PORT);
  const vni = attrs.u32(NDA.VNI);
  const via = attrs.u32(NDA.IFINDEX);
  const master = attrs.u32(NDA.MASTER);
  const bridge = isBridge(header.family);
  return {
    family: header.family,
    ifindex: header.index,
    state: header.state,
    flags: header.flags,
    type: header.type,
    ...(dst !== undefined && (bridge ? { dst } : { ip: dst })),
    ...(lladdr !== undefined && { lladdr }),
    ...(vlan !== undefined && { vlan }),
    ...(port !== undefined && { port }),
    ...(vni !== undefined && { vni }),
    ...(via !== undefined && { via }),
    ...(master !== undefined && { master }),
  };
}

/** An ndmsg header with everything zero but what is given. */
export const blankNdMsg = (over: Partial<NdMsg> = {}): NdMsg => ({
  family: AF.UNSPEC,
  index: 0,
  state: 0,
  flags: 0,
  type: 0,
  ...over,
});
