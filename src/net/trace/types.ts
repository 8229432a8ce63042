/**
 * The hop model of `weft trace`: what a packet is, where it can be (places: the network
 * namespaces the trace may look into, and what weft knows of each), and the hops of its way.
 * Pure types and small pure helpers; the walk that fills them is ./walk.ts.
 */
import type { NetHandle } from '../../kernel/handle.js';
import { formatIP, type IPAddr, type IPNet } from '../../lib/ip.js';

export type Proto = 'icmp' | 'tcp' | 'udp';

/** A packet in flight: its IP header, ports, what conntrack has done to its connection, its L2 header. */
export interface Packet {
  readonly src: IPAddr;
  readonly dst: IPAddr;
  readonly proto: Proto;
  readonly sport?: number;
  readonly dport?: number;
  /** NAT already applied to this connection (nft `ct status dnat` / `snat`). */
  readonly dnat?: boolean;
  readonly snat?: boolean;
  readonly srcMac?: string;
  readonly dstMac?: string;
  /** Set on an outer packet: what it carries. */
  readonly encap?: Encap;
}

export interface Encap {
  /** vxlan: the kernel's VTEP; udp: weft's userspace data path (raw IP in UDP). */
  readonly kind: 'vxlan' | 'udp';
  readonly vni?: number;
  readonly inner: Packet;
}

/** A counter that moves when a packet passes a hop: packets received or sent by a device. */
export interface Watch {
  readonly place: string;
  readonly dev: string;
  readonly dir: 'rx' | 'tx';
}

export type HopStep =
  | 'route'
  | 'neighbour'
  | 'veth'
  | 'bridge'
  | 'fdb'
  | 'nft'
  | 'encap'
  | 'decap'
  | 'deliver'
  | 'leave';

export type HopStatus = 'ok' | 'warning' | 'broken';

/** What --probe saw at a hop. */
export interface ProbeMark {
  readonly seen: boolean;
  /** Packets the watched counter moved by. */
  readonly packets: number;
  /** Drops the device counted meanwhile (rx_dropped or tx_dropped, the watched direction). */
  readonly dropped: number;
  /** This is the first hop the probe did not pass. */
  readonly lost?: boolean;
}

/** One step of the way, in the order the kernel takes it. */
export interface Hop {
  readonly n: number;
  /** Where the packet is: a place id (host1, host1/h1c1, switch, router, internet, host). */
  readonly place: string;
  /** The interface concerned. */
  readonly dev?: string;
  readonly step: HopStep;
  /** The table entry (route, neighbour, FDB entry, rule…) that decided, as a person reads it. */
  readonly decision: string;
  /** The same as data (route fields, the rule's table/chain/comment, the FDB entry…). */
  readonly entry?: Readonly<Record<string, unknown>>;
  /** The packet after this hop. */
  readonly packet: PacketView;
  /** The packet changed here (NAT, encapsulation, decapsulation). */
  readonly changed?: boolean;
  readonly status: HopStatus;
  /** For a broken hop: what is missing or wrong. */
  readonly problem?: string;
  /** For a broken hop: what would fix it. */
  readonly fix?: string;
  /** Anything else worth knowing (a warning's text). */
  readonly note?: string;
  /** The counter --probe reads to confirm this hop. */
  readonly watch?: Watch;
  /** For a broken hop: the counter that would move if the hop worked. */
  readonly expect?: Watch;
  probe?: ProbeMark;
}

/** A packet as text fields (JSON). */
export interface PacketView {
  readonly src: string;
  readonly dst: string;
  readonly proto: Proto;
  readonly sport?: number;
  readonly dport?: number;
  readonly srcMac?: string;
  readonly dstMac?: string;
  readonly encap?: { readonly kind: 'vxlan' | 'udp'; readonly vni?: number; readonly inner: PacketView };
}

export function viewOf(p: Packet): PacketView {
  return {
    src: formatIP(p.src),
    dst: formatIP(p.dst),
    proto: p.proto,
    ...(p.sport !== undefined && { sport: p.sport }),
    ...(p.dport !== undefined && { dport: p.dport }),
    ...(p.srcMac !== undefined && { srcMac: p.srcMac }),
    ...(p.dstMac !== undefined && { dstMac: p.dstMac }),
    ...(p.encap && {
      encap: {
        kind: p.encap.kind,
        ...(p.encap.vni !== undefined && { vni: p.encap.vni }),
        inner: viewOf(p.encap.inner),
      },
    }),
  };
}

// ---- places ---------------------------------------------------------------------------------

export type PlaceKind = 'host' | 'container' | 'router' | 'internet' | 'switch';

/** A namespace the trace may look into. */
export interface Place {
  /** host1, host1/h1c1, switch, router, internet; `host` (and container names) on one host. */
  readonly id: string;
  readonly kind: PlaceKind;
  readonly h: NetHandle;
  /** Containers: the id of the host place they live on. */
  readonly host?: string;
  /** Hosts: what weft knows of them. */
  readonly info?: HostInfo;
}

export interface HostInfo {
  /** running: the daemon answers; dead: it does not (why in `daemonError`). */
  readonly daemon: 'running' | 'dead';
  readonly daemonError?: string;
  /** The underlay address (the overlay's public IP). */
  readonly publicIp?: IPAddr;
  /** Set on hosts of a cluster network (daemons started with --store). */
  readonly cluster?: ClusterInfo;
}

export interface ClusterInfo {
  readonly network: IPNet;
  /** vxlan, host-gw or udp. */
  readonly backend: string;
  /** This host's own lease. */
  readonly subnet?: IPNet;
  readonly leaseExpires?: string;
  /** The peers this host's daemon knows (empty and `peersKnown` false when it does not answer). */
  readonly peers: readonly PeerInfo[];
  readonly peersKnown: boolean;
  /** UDP port of the udp backend (default 8285). */
  readonly udpPort?: number;
}

export interface PeerInfo {
  readonly subnet: IPNet;
  readonly publicIp: IPAddr;
  /** The place id of that host, when the trace knows it. */
  readonly host?: string;
  /** When the lease expires (ISO time), when known. */
  readonly expires?: string;
}

/** How the hints of a broken hop tell a person to look further. */
export interface Hints {
  /** The command line that runs `cmd` on host `host` (in a lab: `weft lab exec … host -- cmd`). */
  exec(host: string, cmd: string): string;
  /** Where a host's daemon log is read. */
  logs(host: string): string;
}

/** Everything the trace may look at. */
export interface Topology {
  readonly places: readonly Place[];
  /** Places wired to `p` (a container's host, a lab host's switch…), where a veth's other end is sought. */
  adjacent(p: Place): readonly Place[];
  readonly hints: Hints;
  /** Every host's lease, as far as known (from all daemons): to name a peer and explain a missing one. */
  readonly leases: readonly PeerInfo[];
}

/** What to trace. */
export interface TraceRequest {
  /** Where the packet is made. */
  readonly from: Place;
  /** Its source address; undefined: the kernel picks (a host's own traffic). */
  readonly src?: IPAddr;
  readonly dst: IPAddr;
  /** The place that owns `dst`, when it is one weft knows (else the trace ends where it leaves). */
  readonly to?: Place;
  readonly proto: Proto;
  readonly dport?: number;
}

export interface TraceResult {
  /** No hop is broken. */
  readonly ok: boolean;
  readonly hops: Hop[];
  /** The packet as it starts. */
  readonly packet: PacketView;
  /** The number of the first broken hop. */
  readonly brokenAt?: number;
  /** Things the trace could not decide (nft expressions it does not model…). */
  readonly notes: string[];
}
