/**
 * Links as a tagged union and their rtnetlink codec. Each kind's encoder (IFLA_INFO_DATA for a
 * new link) and decoder (a dumped link back to a typed value) sit together in `kinds`, so adding
 * a kind touches one record entry. Anything the kernel reports with a kind weft does not model
 * (loopback, a physical NIC, a wireguard device) decodes as `device` with its raw kind.
 */

import type { IPAddr } from '../lib/ip.js';
import { type Attr, type Attrs, a, LITTLE_ENDIAN } from './attr.js';
import {
  AF,
  IFF,
  IFLA,
  IFLA_BR,
  IFLA_INFO,
  IFLA_MACVLAN,
  IFLA_TUN,
  IFLA_VXLAN,
  MACVLAN_MODE,
  VETH_INFO_PEER,
} from './consts.js';
import { type Body, encodeBody, type IfInfoMsg, ifinfomsg } from './message.js';

export type MacvlanMode = keyof typeof MACVLAN_MODE;

/** What every link has, as read back from the kernel. */
export interface LinkCommon {
  readonly index: number;
  readonly name: string;
  readonly mtu: number;
  readonly mac: string | undefined;
  /** IFF_* flags. */
  readonly flags: number;
  /** Administratively up (IFF_UP). */
  readonly up: boolean;
  readonly operState: OperState;
  /** Index of the master (bridge) this link is enslaved to. */
  readonly masterIndex: number | undefined;
  /** IFLA_LINK: the peer of a veth, the parent of a macvlan or vlan (may be in another netns). */
  readonly parentIndex: number | undefined;
  /** Set when `parentIndex` lives in another namespace (its id as seen from this one). */
  readonly linkNetnsId: number | undefined;
  readonly txQueueLen: number | undefined;
  /** IFLA_IFALIAS (`ip link set … alias`): weft marks the bridges it made with it. */
  readonly alias?: string;
  /** Interface counters (IFLA_STATS64), when the kernel sent them (it does in dumps and gets). */
  readonly stats?: LinkStats;
}

/** The first counters of struct rtnl_link_stats64 (what `ip -s link` shows first). */
export interface LinkStats {
  readonly rxPackets: number;
  readonly txPackets: number;
  readonly rxBytes: number;
  readonly txBytes: number;
  readonly rxErrors: number;
  readonly txErrors: number;
  readonly rxDropped: number;
  readonly txDropped: number;
}

const STATS_FIELDS = [
  'rxPackets',
  'txPackets',
  'rxBytes',
  'txBytes',
  'rxErrors',
  'txErrors',
  'rxDropped',
  'txDropped',
] as const;

/** IFLA_STATS64 (u64 counters in host byte order) into numbers; undefined when absent or short. */
export function decodeStats64(b: Uint8Array | undefined): LinkStats | undefined {
  if (b === undefined || b.length < STATS_FIELDS.length * 8) return undefined;
  const dv = new DataView(b.buffer, b.byteOffset, b.length);
  const out: Record<string, number> = {};
  STATS_FIELDS.forEach((k, i) => {
    out[k] = Number(dv.getBigUint64(i * 8, LITTLE_ENDIAN));
  });
  return out as unknown as LinkStats;
}

export type OperState = 'unknown' | 'notpresent' | 'down' | 'lowerlayerdown' | 'testing' | 'dormant' | 'up';
const operStates: OperState[] = [
  'unknown',
  'notpresent',
  'down',
  'lowerlayerdown',
  'testing',
  'dormant',
  'up',
];

export interface BridgeLink extends LinkCommon {
  readonly kind: 'bridge';
  readonly vlanFiltering: boolean;
  readonly stp: boolean;
}
export interface VethLink extends LinkCommon {
  readonly kind: 'veth';
}
export interface VxlanLink extends LinkCommon {
  readonly kind: 'vxlan';
  readonly vni: number;
  readonly local: IPAddr | undefined;
  readonly group: IPAddr | undefined;
  /** Index of the underlay device the VTEP is bound to. */
  readonly devIndex: number | undefined;
  readonly port: number;
  readonly learning: boolean;
  /** ARP proxy (IFLA_VXLAN_PROXY): the device answers ARP from its neighbour table. */
  readonly proxy: boolean;
  readonly ttl: number;
}
export interface MacvlanLink extends LinkCommon {
  readonly kind: 'macvlan';
  readonly mode: MacvlanMode;
}
export interface DummyLink extends LinkCommon {
  readonly kind: 'dummy';
}
export interface TunLink extends LinkCommon {
  readonly kind: 'tun';
  readonly tunType: 'tun' | 'tap';
  readonly multiQueue: boolean;
  readonly persist: boolean;
  readonly pi: boolean;
  readonly vnetHdr: boolean;
}
/** Any other link (lo, a NIC, a kind weft does not model). */
export interface DeviceLink extends LinkCommon {
  readonly kind: 'device';
  readonly rawKind: string | undefined;
}

export type Link = BridgeLink | VethLink | VxlanLink | MacvlanLink | DummyLink | TunLink | DeviceLink;
export type LinkKind = Link['kind'];

/** Attributes any new link may be created with. Indexes, not names: the kernel layer resolves. */
export interface NewLinkCommon {
  readonly name: string;
  readonly mtu?: number;
  readonly mac?: string;
  readonly masterIndex?: number;
  readonly txQueueLen?: number;
  readonly up?: boolean;
  /** Create the link directly in the namespace behind this fd. */
  readonly netnsFd?: number;
}

export interface NewBridge extends NewLinkCommon {
  readonly kind: 'bridge';
  readonly vlanFiltering?: boolean;
  readonly stp?: boolean;
  /** Bridge FDB ageing time in centiseconds. */
  readonly ageingTime?: number;
  readonly mcastSnooping?: boolean;
}
export interface NewVeth extends NewLinkCommon {
  readonly kind: 'veth';
  readonly peer: {
    readonly name: string;
    readonly netnsFd?: number;
    readonly mtu?: number;
    readonly mac?: string;
  };
}
export interface NewVxlan extends NewLinkCommon {
  readonly kind: 'vxlan';
  readonly vni: number;
  readonly local?: IPAddr;
  readonly group?: IPAddr;
  readonly devIndex?: number;
  /** UDP destination port (network order on the wire); unset: the kernel's default, 8472. */
  readonly port?: number;
  readonly learning?: boolean;
  readonly proxy?: boolean;
  readonly ttl?: number;
  readonly udpCsum?: boolean;
}
export interface NewMacvlan extends NewLinkCommon {
  readonly kind: 'macvlan';
  readonly parentIndex: number;
  readonly mode?: MacvlanMode;
}
export interface NewDummy extends NewLinkCommon {
  readonly kind: 'dummy';
}
export type NewLink = NewBridge | NewVeth | NewVxlan | NewMacvlan | NewDummy;

interface KindCodec<K extends LinkKind> {
  /** IFLA_INFO_DATA children for a new link of this kind (undefined: none). */
  encode?(spec: Extract<NewLink, { kind: K }>): Attr[] | undefined;
  decode(common: LinkCommon, data: Attrs | undefined): Extract<Link, { kind: K }>;
}

const bool = (v: number | undefined): boolean => v !== undefined && v !== 0;

const kinds: { [K in Exclude<LinkKind, 'device'>]: KindCodec<K> } = {
  bridge: {
    encode: (s) => {
      const out: Attr[] = [];
      if (s.vlanFiltering !== undefined) out.push(a.u8(IFLA_BR.VLAN_FILTERING, s.vlanFiltering ? 1 : 0));
      if (s.stp !== undefined) out.push(a.u32(IFLA_BR.STP_STATE, s.stp ? 1 : 0));
      if (s.ageingTime !== undefined) out.push(a.u32(IFLA_BR.AGEING_TIME, s.ageingTime));
      if (s.mcastSnooping !== undefined) out.push(a.u8(IFLA_BR.MCAST_SNOOPING, s.mcastSnooping ? 1 : 0));
      return out.length > 0 ? out : undefined;
    },
    decode: (c, d) => ({
      ...c,
      kind: 'bridge',
      vlanFiltering: bool(d?.u8(IFLA_BR.VLAN_FILTERING)),
      stp: bool(d?.u32(IFLA_BR.STP_STATE)),
    }),
  },
  veth: {
    encode: (s) => {
      const attrs: Attr[] = [a.str(IFLA.IFNAME, s.peer.name)];
      if (s.peer.mtu !== undefined) attrs.push(a.u32(IFLA.MTU, s.peer.mtu));
      if (s.peer.mac !== undefined) attrs.push(a.mac(IFLA.ADDRESS, s.peer.mac));
      if (s.peer.netnsFd !== undefined) attrs.push(a.u32(IFLA.NET_NS_FD, s.peer.netnsFd));
      const peer = encodeBody(ifinfomsg, { header: blankIfInfo(), attrs });
      return [a.bytes(VETH_INFO_PEER, peer)];
    },
    decode: (c) => ({ ...c, kind: 'veth' }),
  },
  vxlan: {
    encode: (s) => {
      const out: Attr[] = [a.u32(IFLA_VXLAN.ID, s.vni)];
      if (s.local) out.push(a.ip(s.local.family === 4 ? IFLA_VXLAN.LOCAL : IFLA_VXLAN.LOCAL6, s.local));
      if (s.group) out.push(a.ip(s.group.family === 4 ? IFLA_VXLAN.GROUP : IFLA_VXLAN.GROUP6, s.group));
      if (s.devIndex !== undefined) out.push(a.u32(IFLA_VXLAN.LINK, s.devIndex));
      if (s.port !== undefined) out.push(a.be16(IFLA_VXLAN.PORT, s.port));
      if (s.learning !== undefined) out.push(a.u8(IFLA_VXLAN.LEARNING, s.learning ? 1 : 0));
      if (s.proxy !== undefined) out.push(a.u8(IFLA_VXLAN.PROXY, s.proxy ? 1 : 0));
      if (s.ttl !== undefined) out.push(a.u8(IFLA_VXLAN.TTL, s.ttl));
      if (s.udpCsum !== undefined) out.push(a.u8(IFLA_VXLAN.UDP_CSUM, s.udpCsum ? 1 : 0));
      return out;
    },
    decode: (c, d) => ({
      ...c,
      kind: 'vxlan',
      vni: d?.u32(IFLA_VXLAN.ID) ?? 0,
      local: d?.ip(IFLA_VXLAN.LOCAL) ?? d?.ip(IFLA_VXLAN.LOCAL6),
      group: d?.ip(IFLA_VXLAN.GROUP) ?? d?.ip(IFLA_VXLAN.GROUP6),
      devIndex: d?.u32(IFLA_VXLAN.LINK) || undefined,
      port: d?.be16(IFLA_VXLAN.PORT) ?? 0,
      learning: bool(d?.u8(IFLA_VXLAN.LEARNING)),
      proxy: bool(d?.u8(IFLA_VXLAN.PROXY)),
      ttl: d?.u8(IFLA_VXLAN.TTL) ?? 0,
    }),
  },
  macvlan: {
    encode: (s) => [a.u32(IFLA_MACVLAN.MODE, MACVLAN_MODE[s.mode ?? 'bridge'])],
    decode: (c, d) => {
      const m = d?.u32(IFLA_MACVLAN.MODE) ?? MACVLAN_MODE.vepa;
      const mode = (Object.entries(MACVLAN_MODE).find(([, v]) => v === m)?.[0] ?? 'vepa') as MacvlanMode;
      return { ...c, kind: 'macvlan', mode };
    },
  },
  dummy: { decode: (c) => ({ ...c, kind: 'dummy' }) },
  tun: {
    decode: (c, d) => ({
      ...c,
      kind: 'tun',
      tunType: d?.u8(IFLA_TUN.TYPE) === 2 ? 'tap' : 'tun',
      multiQueue: bool(d?.u8(IFLA_TUN.MULTI_QUEUE)),
      persist: bool(d?.u8(IFLA_TUN.PERSIST)),
      pi: bool(d?.u8(IFLA_TUN.PI)),
      vnetHdr: bool(d?.u8(IFLA_TUN.VNET_HDR)),
    }),
  },
};

export const blankIfInfo = (over: Partial<IfInfoMsg> = {}): IfInfoMsg => ({
  family: AF.UNSPEC,
  type: 0,
  index: 0,
  flags: 0,
  change: 0,
  ...over,
});

/** The body of an RTM_NEWLINK request creating `spec`. */
export function encodeNewLink(spec: NewLink): Body<IfInfoMsg> {
  const attrs: Attr[] = [a.str(IFLA.IFNAME, spec.name)];
  if (spec.mtu !== undefined) attrs.push(a.u32(IFLA.MTU, spec.mtu));
  if (spec.mac !== undefined) attrs.push(a.mac(IFLA.ADDRESS, spec.mac));
  if (spec.masterIndex !== undefined) attrs.push(a.u32(IFLA.MASTER, spec.masterIndex));
  if (spec.txQueueLen !== undefined) attrs.push(a.u32(IFLA.TXQLEN, spec.txQueueLen));
  if (spec.netnsFd !== undefined) attrs.push(a.u32(IFLA.NET_NS_FD, spec.netnsFd));
  if (spec.kind === 'macvlan') attrs.push(a.u32(IFLA.LINK, spec.parentIndex));
  const codec = kinds[spec.kind] as KindCodec<typeof spec.kind>;
  const data = codec.encode?.(spec as never);
  const info: Attr[] = [a.str(IFLA_INFO.KIND, spec.kind)];
  if (data) info.push(a.nest(IFLA_INFO.DATA, data));
  attrs.push(a.nest(IFLA.LINKINFO, info));
  const header = blankIfInfo(spec.up ? { flags: IFF.UP, change: IFF.UP } : {});
  return { header, attrs };
}

/** Decode an RTM_NEWLINK message (a dump entry or a notification) into a typed link. */
export function decodeLink(header: IfInfoMsg, attrs: Attrs): Link {
  const op = attrs.u8(IFLA.OPERSTATE);
  const stats = decodeStats64(attrs.get(IFLA.STATS64));
  const common: LinkCommon = {
    index: header.index,
    name: attrs.str(IFLA.IFNAME) ?? '',
    mtu: attrs.u32(IFLA.MTU) ?? 0,
    mac: attrs.mac(IFLA.ADDRESS),
    flags: header.flags,
    up: (header.flags & IFF.UP) !== 0,
    operState: operStates[op ?? 0] ?? 'unknown',
    masterIndex: attrs.u32(IFLA.MASTER) || undefined,
    parentIndex: attrs.u32(IFLA.LINK) || undefined,
    linkNetnsId: attrs.s32(IFLA.LINK_NETNSID),
    txQueueLen: attrs.u32(IFLA.TXQLEN),
    ...(attrs.has(IFLA.IFALIAS) && { alias: attrs.str(IFLA.IFALIAS) ?? '' }),
    ...(stats && { stats }),
  };
  const info = attrs.nested(IFLA.LINKINFO);
  const rawKind = info?.str(IFLA_INFO.KIND);
  if (rawKind !== undefined && Object.hasOwn(kinds, rawKind)) {
    const k = rawKind as Exclude<LinkKind, 'device'>;
    return (kinds[k] as KindCodec<typeof k>).decode(common, info?.nested(IFLA_INFO.DATA));
  }
  return { ...common, kind: 'device', rawKind };
}

/** Kinds weft can create through RTM_NEWLINK. */
export const creatableKinds: readonly NewLink['kind'][] = ['bridge', 'veth', 'vxlan', 'macvlan', 'dummy'];
