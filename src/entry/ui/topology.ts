/**
 * What `weft ui` draws: a lab's live topology as plain data, and the path between two of its
 * containers.
 *
 * Gathering (`gatherTopology`, impure) asks the lab for its hosts, containers and subnets
 * (lab.status, which asks every daemon), each daemon for its lease and peers (GET /v1/cluster,
 * for the lease expiry), and the kernel for the links of every host namespace and of every
 * container's namespace (bridges, veths, VXLAN and TUN devices; a container's eth0 names the
 * index of its host-side veth, which is how a veth pair is matched). Shaping (`shapeTopology`)
 * and the path (`labPath`) are pure, so they are unit tested on fixtures.
 *
 * The path is read from the lab's data (the bridge, the host route to the destination's subnet
 * by way of the backend's device, the peer's public IP on the underlay), not from the kernel's
 * own route lookups: `weft trace` is the tool that asks the kernel; this is the picture's guide.
 * Node ids: a host is its name (`host1`), a device `host1/dev/weft0`, a container `host1/h1c1`,
 * the underlay switch `underlay`.
 */

import { openHandle } from '../../kernel/handle.js';
import { Netns } from '../../kernel/netns.js';
import { isWeftError, notFound } from '../../lib/errors.js';
import { containsIP, parseIPNet, tryParseIP } from '../../lib/ip.js';
import { ApiClient } from '../client.js';
import * as lab from '../lab/lab.js';
import { DEFAULT_PATHS, nsPath, type Role } from '../lab/topology.js';

export interface UiDevice {
  readonly id: string;
  readonly name: string;
  /** bridge, veth (host side of a container's pair), vxlan, tun, uplink (the host's underlay NIC). */
  readonly kind: 'bridge' | 'veth' | 'vxlan' | 'tun' | 'uplink';
  readonly up: boolean;
  readonly mtu?: number;
  /** A veth's bridge (device id), a VTEP's VNI, the uplink's address. */
  readonly bridge?: string;
  readonly vni?: number;
  readonly address?: string;
}

export interface UiContainer {
  readonly id: string;
  readonly name: string;
  readonly host: string;
  readonly ip?: string;
  readonly status: string;
  /** The host-side veth's device id, when the pair was matched. */
  readonly veth?: string;
}

export interface UiHost {
  readonly id: string;
  readonly name: string;
  readonly publicIp: string;
  readonly subnet?: string;
  readonly daemon: 'running' | 'starting' | 'dead';
  readonly error?: string;
  readonly devices: readonly UiDevice[];
  readonly containers: readonly UiContainer[];
}

export interface UiLease {
  readonly host: string;
  readonly subnet: string;
  readonly publicIp: string;
  readonly expiresAt?: string;
}

export interface UiTopology {
  readonly lab: string;
  /** empty: no lab or no daemon answers; `message` says so in a sentence. */
  readonly state: 'ok' | 'empty';
  readonly message?: string;
  readonly backend?: string;
  readonly network?: string;
  readonly underlay?: string;
  readonly hosts: readonly UiHost[];
  readonly leases: readonly UiLease[];
  /**
   * Graph edges: veth pairs (container ↔ host veth), bridge ports, underlay links (uplink ↔
   * switch), a VTEP or TUN bound to its uplink, and the host's routing from bridge to the way out.
   */
  readonly edges: readonly {
    id: string;
    source: string;
    target: string;
    kind: 'veth' | 'port' | 'underlay' | 'bound' | 'route';
  }[];
}

/** A link as the shaping needs it (from the kernel layer's Link). */
export interface RawLink {
  readonly index: number;
  readonly name: string;
  readonly kind: string;
  readonly up: boolean;
  readonly mtu?: number;
  readonly masterIndex?: number;
  readonly vni?: number;
}

export interface RawHost {
  readonly status: lab.HostStatus;
  /** The host namespace's links (undefined: not readable). */
  readonly links?: readonly RawLink[];
  /** Container name → index of its host-side veth (its eth0's IFLA_LINK). */
  readonly peerIndex?: Readonly<Record<string, number>>;
  readonly cluster?: lab.ClusterView;
}

export interface RawLab {
  readonly name: string;
  readonly backend: string;
  readonly network: string;
  readonly underlay: string;
  readonly hosts: readonly RawHost[];
}

export const UNDERLAY_ID = 'underlay';
/** True when `ip` is an address inside `cidr`; false for anything unparsable. */
function cidrContains(cidr: string, ip: string): boolean {
  const a = tryParseIP(ip);
  if (!a) return false;
  try {
    return containsIP(parseIPNet(cidr), a);
  } catch {
    return false;
  }
}

const devId = (host: string, name: string): string => `${host}/dev/${name}`;
const asTime = (v: unknown): string | undefined =>
  typeof v === 'string' ? v : typeof v === 'number' ? new Date(v).toISOString() : undefined;

/** The empty topology with a sentence saying why. */
export function emptyTopology(labName: string, message: string): UiTopology {
  return { lab: labName, state: 'empty', message, hosts: [], leases: [], edges: [] };
}

/** Shape a lab's raw data into the page's topology. Pure; throws nothing. */
export function shapeTopology(raw: RawLab): UiTopology {
  const edges: {
    id: string;
    source: string;
    target: string;
    kind: 'veth' | 'port' | 'underlay' | 'bound' | 'route';
  }[] = [];
  const leases = new Map<string, UiLease>();
  const hosts: UiHost[] = raw.hosts.map((rh) => {
    const h = rh.status;
    const links = rh.links ?? [];
    const byIndex = new Map(links.map((l) => [l.index, l]));
    const devices: UiDevice[] = [];
    for (const l of links) {
      const id = devId(h.name, l.name);
      const base = { id, name: l.name, up: l.up, ...(l.mtu !== undefined && { mtu: l.mtu }) };
      if (l.kind === 'bridge') devices.push({ ...base, kind: 'bridge' });
      else if (l.kind === 'vxlan')
        devices.push({ ...base, kind: 'vxlan', ...(l.vni !== undefined && { vni: l.vni }) });
      else if (l.kind === 'tun') devices.push({ ...base, kind: 'tun' });
      else if (l.name === 'eth0') devices.push({ ...base, kind: 'uplink', address: h.publicIp });
      else if (l.kind === 'veth' && l.masterIndex !== undefined) {
        const master = byIndex.get(l.masterIndex);
        devices.push({ ...base, kind: 'veth', ...(master && { bridge: devId(h.name, master.name) }) });
      }
    }
    const containers: UiContainer[] = h.containers.map((c) => {
      const idx = rh.peerIndex?.[c.name];
      const veth = idx !== undefined ? byIndex.get(idx) : undefined;
      return {
        id: `${h.name}/${c.name}`,
        name: c.name,
        host: h.name,
        status: c.status,
        ...(c.ip !== undefined && { ip: c.ip }),
        ...(veth && { veth: devId(h.name, veth.name) }),
      };
    });
    for (const d of devices) {
      if (d.kind === 'veth' && d.bridge)
        edges.push({ id: `${d.id}~${d.bridge}`, source: d.id, target: d.bridge, kind: 'port' });
      if (d.kind === 'uplink')
        edges.push({ id: `${d.id}~${UNDERLAY_ID}`, source: d.id, target: UNDERLAY_ID, kind: 'underlay' });
    }
    const uplink = devices.find((d) => d.kind === 'uplink');
    for (const d of devices) {
      if ((d.kind === 'vxlan' || d.kind === 'tun') && uplink)
        edges.push({ id: `${d.id}~${uplink.id}`, source: d.id, target: uplink.id, kind: 'bound' });
    }
    // The host's IP stack routes between its bridge and the way out (VTEP, TUN, or the uplink).
    const out = devices.find((d) => d.kind === 'vxlan' || d.kind === 'tun') ?? uplink;
    for (const d of devices) {
      if (d.kind === 'bridge' && out)
        edges.push({ id: `${d.id}~${out.id}`, source: d.id, target: out.id, kind: 'route' });
    }
    for (const c of containers) {
      if (c.veth) edges.push({ id: `${c.id}~${c.veth}`, source: c.id, target: c.veth, kind: 'veth' });
    }
    const own = rh.cluster?.lease;
    if (own) {
      const exp = asTime(own.expiresAt);
      leases.set(own.subnet, {
        host: h.name,
        subnet: own.subnet,
        publicIp: own.publicIp,
        ...(exp !== undefined && { expiresAt: exp }),
      });
    }
    return {
      id: h.name,
      name: h.name,
      publicIp: h.publicIp,
      daemon: h.daemon,
      devices,
      containers,
      ...(h.subnet !== undefined && { subnet: h.subnet }),
      ...(h.error !== undefined && { error: h.error }),
    };
  });
  // Peers' leases as other daemons see them fill in hosts whose daemon did not answer.
  for (const rh of raw.hosts) {
    for (const p of rh.cluster?.peers ?? []) {
      if (leases.has(p.subnet)) continue;
      const owner = hosts.find((h) => h.publicIp === p.publicIp);
      const exp = asTime(p.expiresAt);
      leases.set(p.subnet, {
        host: owner?.name ?? p.publicIp,
        subnet: p.subnet,
        publicIp: p.publicIp,
        ...(exp !== undefined && { expiresAt: exp }),
      });
    }
  }
  const answering = hosts.filter((h) => h.daemon !== 'dead').length;
  return {
    lab: raw.name,
    state: answering === 0 ? 'empty' : 'ok',
    ...(answering === 0 && {
      message:
        hosts.length === 0
          ? `Lab "${raw.name}" has no hosts.`
          : `No weft daemon answers in lab "${raw.name}" (${hosts.length} host${hosts.length === 1 ? '' : 's'}, all down).`,
    }),
    backend: raw.backend,
    network: raw.network,
    underlay: raw.underlay,
    hosts,
    leases: [...leases.values()].sort((a, b) => a.host.localeCompare(b.host)),
    edges,
  };
}

// ---- the path ----------------------------------------------------------------------------------

export interface UiHop {
  readonly n: number;
  /** Where the packet is: host1, host1/h1c1, underlay. */
  readonly where: string;
  /** What it goes through: veth, bridge, route, vxlan, tun, underlay, deliver. */
  readonly what: string;
  /** The table entry that decides, as a person reads it. */
  readonly entry: string;
  /** The graph node the hop is at. */
  readonly node: string;
  /** From `weft trace`: ok, warning or broken, and what is wrong at a broken hop. */
  readonly status?: string;
  readonly problem?: string;
}

export interface UiPath {
  readonly src: string;
  readonly dst: string;
  /** lab: read from the lab's data (leases, peers, devices); trace: from `weft trace`. */
  readonly source: 'lab' | 'trace';
  readonly hops: readonly UiHop[];
  /** Why the path is the lab's rather than the trace's, when it is. */
  readonly note?: string;
}

/** A hop as `weft trace` gives it (src/net/trace/types.ts Hop, the fields the page shows). */
export interface TraceHopLike {
  readonly n: number;
  readonly place: string;
  readonly dev?: string;
  readonly step: string;
  readonly decision: string;
  readonly status?: string;
  readonly problem?: string;
}

/**
 * The trace's hops placed on the picture: a hop sits on its device's node when the picture has
 * it, else on its container or host, the switch on the underlay. Pure; throws nothing.
 */
export function pathFromTrace(
  t: UiTopology,
  src: string,
  dst: string,
  hops: readonly TraceHopLike[],
): UiPath {
  const ids = new Set<string>([UNDERLAY_ID]);
  for (const h of t.hosts) {
    ids.add(h.id);
    for (const d of h.devices) ids.add(d.id);
    for (const c of h.containers) ids.add(c.id);
  }
  const nodeOf = (h: TraceHopLike): string => {
    if (h.place === 'switch') return UNDERLAY_ID;
    const hostOf = h.place.split('/')[0] ?? h.place;
    if (h.dev && !h.place.includes('/') && ids.has(devId(h.place, h.dev))) return devId(h.place, h.dev);
    if (ids.has(h.place)) return h.place;
    return ids.has(hostOf) ? hostOf : UNDERLAY_ID;
  };
  return {
    src,
    dst,
    source: 'trace',
    hops: hops.map((h) => ({
      n: h.n,
      where: h.place,
      what: h.dev ? `${h.step} ${h.dev}` : h.step,
      entry: h.decision,
      node: nodeOf(h),
      ...(h.status !== undefined && { status: h.status }),
      ...(h.problem !== undefined && { problem: h.problem }),
    })),
  };
}

function findContainer(t: UiTopology, ref: string): { host: UiHost; c: UiContainer } {
  for (const host of t.hosts) {
    const c = host.containers.find((x) => x.id === ref);
    if (c) return { host, c };
  }
  throw notFound(`no container "${ref}" in lab "${t.lab}" (use HOST/CONTAINER, e.g. host1/h1c1)`, { ref });
}

/**
 * The hops from container `src` to container `dst` (HOST/CONTAINER ids), as the lab's data
 * gives them. Pure. Throws NOT_FOUND for an unknown container; INVALID when a container has no
 * address.
 */
export function labPath(t: UiTopology, src: string, dst: string): UiPath {
  const a = findContainer(t, src);
  const b = findContainer(t, dst);
  if (!b.c.ip) throw notFound(`container "${dst}" has no address`, { ref: dst });
  const hops: Omit<UiHop, 'n'>[] = [];
  const bridgeOf = (h: UiHost, c: UiContainer): UiDevice | undefined => {
    const veth = h.devices.find((d) => d.id === c.veth);
    return h.devices.find((d) => d.id === veth?.bridge) ?? h.devices.find((d) => d.kind === 'bridge');
  };
  const brA = bridgeOf(a.host, a.c);
  const brB = bridgeOf(b.host, b.c);
  hops.push({
    where: a.c.id,
    what: 'route',
    entry:
      a.host.subnet && cidrContains(a.host.subnet, b.c.ip)
        ? `${a.host.subnet} dev eth0 (on-link)`
        : `default via the gateway on ${brA?.name ?? 'the bridge'}`,
    node: a.c.id,
  });
  hops.push({
    where: a.host.name,
    what: 'veth',
    entry: `eth0 → ${a.c.veth?.split('/').pop() ?? 'host veth'}`,
    node: a.c.veth ?? a.host.id,
  });
  hops.push({
    where: a.host.name,
    what: 'bridge',
    entry: `port of ${brA?.name ?? 'the bridge'}`,
    node: brA?.id ?? a.host.id,
  });
  if (a.host.id !== b.host.id) {
    const lease =
      t.leases.find((l) => l.host === b.host.name) ??
      t.leases.find((l) => cidrContains(l.subnet, b.c.ip ?? ''));
    const subnet = lease?.subnet ?? b.host.subnet ?? '?';
    const peer = lease?.publicIp ?? b.host.publicIp;
    const dev = (h: UiHost) =>
      h.devices.find((d) => d.kind === 'vxlan' || d.kind === 'tun') ??
      h.devices.find((d) => d.kind === 'uplink');
    const outA = t.backend === 'host-gw' ? a.host.devices.find((d) => d.kind === 'uplink') : dev(a.host);
    const inB = t.backend === 'host-gw' ? b.host.devices.find((d) => d.kind === 'uplink') : dev(b.host);
    const via = t.backend === 'host-gw' ? `via ${peer} dev eth0` : `dev ${outA?.name ?? '?'}`;
    hops.push({
      where: a.host.name,
      what: 'route',
      entry: `${subnet} ${via} (lease of ${b.host.name})`,
      node: outA?.id ?? a.host.id,
    });
    if (t.backend === 'vxlan' && outA)
      hops.push({
        where: a.host.name,
        what: 'vxlan',
        entry: `FDB: remote VTEP ${peer}, VNI ${outA.vni ?? '?'}: encapsulated in UDP 8472`,
        node: outA.id,
      });
    if (t.backend === 'udp' && outA)
      hops.push({
        where: a.host.name,
        what: 'tun',
        entry: `daemon reads ${outA.name}, sends a UDP datagram to ${peer}:8285`,
        node: outA.id,
      });
    hops.push({
      where: 'underlay',
      what: 'underlay',
      entry: `${a.host.publicIp} → ${peer}`,
      node: UNDERLAY_ID,
    });
    if (inB && t.backend !== 'host-gw')
      hops.push({ where: b.host.name, what: inB.kind, entry: `decapsulated on ${inB.name}`, node: inB.id });
    else if (inB)
      hops.push({ where: b.host.name, what: 'uplink', entry: `received on ${inB.name}`, node: inB.id });
    hops.push({
      where: b.host.name,
      what: 'route',
      entry: `${b.host.subnet ?? subnet} dev ${brB?.name ?? 'bridge'}`,
      node: brB?.id ?? b.host.id,
    });
  }
  hops.push({
    where: b.host.name,
    what: 'bridge',
    entry: `FDB: ${b.c.ip} → port ${b.c.veth?.split('/').pop() ?? '?'}`,
    node: brB?.id ?? b.host.id,
  });
  hops.push({
    where: b.host.name,
    what: 'veth',
    entry: `${b.c.veth?.split('/').pop() ?? 'host veth'} → eth0`,
    node: b.c.veth ?? b.host.id,
  });
  hops.push({ where: b.c.id, what: 'deliver', entry: `local ${b.c.ip} dev eth0`, node: b.c.id });
  return { src, dst, source: 'lab', hops: hops.map((h, i) => ({ n: i + 1, ...h })) };
}

// ---- gathering (impure) ------------------------------------------------------------------------

function readLinks(path: string): RawLink[] | undefined {
  let ns: Netns | undefined;
  try {
    ns = Netns.open(path);
    return openHandle(ns)
      .links.list()
      .map((l) => ({
        index: l.index,
        name: l.name,
        kind: l.kind,
        up: l.up,
        mtu: l.mtu,
        ...(l.masterIndex !== undefined && { masterIndex: l.masterIndex }),
        ...(l.kind === 'vxlan' && { vni: l.vni }),
      }));
  } catch {
    return undefined;
  } finally {
    ns?.close();
  }
}

/** The index of the host-side veth of the container whose namespace is pinned at `path`. */
function peerIndexOf(path: string): number | undefined {
  let ns: Netns | undefined;
  try {
    ns = Netns.open(path);
    const eth0 = openHandle(ns).links.find('eth0');
    return eth0?.parentIndex;
  } catch {
    return undefined;
  } finally {
    ns?.close();
  }
}

/**
 * The live topology of lab `labName`. Never throws for a lab that is missing or down: that is
 * the empty state, with a sentence saying why. Throws INVALID for a bad lab name.
 */
export async function gatherTopology(labName: string, lo: lab.LabOptions = {}): Promise<UiTopology> {
  let st: lab.LabStatus;
  try {
    st = await lab.status(labName, lo);
  } catch (e) {
    if (isWeftError(e, 'NOT_FOUND'))
      return emptyTopology(
        labName,
        `There is no lab "${labName}" running. Start one with \`weft lab up${labName === 'weft' ? '' : ` --name ${labName}`}\`.`,
      );
    throw e;
  }
  const paths = lo.paths ?? DEFAULT_PATHS;
  const hosts = await Promise.all(
    st.hosts.map(async (h): Promise<RawHost> => {
      const links = readLinks(nsPath(paths, st.name, h.name as Role));
      const peerIndex: Record<string, number> = {};
      for (const c of h.containers) {
        const idx = c.netnsPath ? peerIndexOf(c.netnsPath) : undefined;
        if (idx !== undefined) peerIndex[c.name] = idx;
      }
      let cluster: lab.ClusterView | undefined;
      if (h.daemon !== 'dead') {
        try {
          cluster = await new ApiClient(h.socket, 3000).request<lab.ClusterView>('GET', '/v1/cluster');
        } catch {
          cluster = undefined;
        }
      }
      return { status: h, peerIndex, ...(links && { links }), ...(cluster && { cluster }) };
    }),
  );
  return shapeTopology({
    name: st.name,
    backend: st.backend,
    network: st.network,
    underlay: st.underlay,
    hosts,
  });
}
