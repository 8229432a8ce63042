/**
 * `weft trace`'s names: SRC and DST as a person writes them, turned into places (network
 * namespaces opened through the kernel layer) and addresses, with what the daemons know of each
 * host (its lease, its peers, whether it answers). Two worlds:
 *
 *   - a lab (`--lab NAME`, $WEFT_LAB, or a name only a lab has: `host2/h2c1`, `host1`,
 *     `internet`): every host's namespace, its containers' sandboxes, the switch, the router and
 *     the internet, as the lab pinned them; each host's daemon asked for its containers and its
 *     view of the cluster (a daemon that does not answer leaves its kernel state readable: its
 *     containers are then found by their sandbox pins and hostname files);
 *   - one host (the daemon on --socket / $WEFT_SOCKET): this namespace and the daemon's
 *     containers; a destination outside every weft network is "the outside" (the trace ends
 *     where the packet leaves the host).
 *
 * Names: a container (NAME, or HOST/NAME in a lab), a lab host (host1) or `host` (this host), an
 * address of any of them, or `internet` in a lab. DST may end in :PORT and /tcp or /udp (TCP
 * when only a port is given; ICMP echo without one). Unknown names and addresses that belong to
 * nothing weft knows are NOT_FOUND, malformed ones INVALID, before anything is read.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openHandle } from '../../kernel/handle.js';
import { Netns } from '../../kernel/netns.js';
import { invalid, isWeftError, notFound, WeftError } from '../../lib/errors.js';
import {
  containsIP,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
  ipEqual,
  networkOf,
  parseIPNet,
  tryParseIP,
} from '../../lib/ip.js';
import { socketFrom } from '../../lib/paths.js';
import type {
  ClusterInfo,
  Hints,
  HostInfo,
  PeerInfo,
  Place,
  PlaceKind,
  Topology,
} from '../../net/trace/index.js';
import { ApiClient } from '../client.js';
import { type LabOptions, loadLab, status } from '../lab/lab.js';
import { DEFAULT_LAB, DEFAULT_PATHS, INTERNET, nsPath, type Role } from '../lab/topology.js';

/** SRC or DST as written: a name or address, and for DST an optional port and protocol. */
export interface Target {
  readonly name: string;
  readonly port?: number;
  readonly proto?: 'tcp' | 'udp';
}

/**
 * Parse `NAME[:PORT[/tcp|udp]]` (IPv6 with a port in brackets: `[fd00::2]:80`). Throws INVALID
 * for an empty name, a bad port, a protocol without a port, or a port where none is allowed.
 */
export function parseTarget(s: string, what: 'SRC' | 'DST'): Target {
  let rest = s.trim();
  if (!rest) throw invalid(`${what} is empty: give a container, a host, an address or internet`);
  let proto: 'tcp' | 'udp' | undefined;
  const pm = /\/(tcp|udp)$/i.exec(rest);
  if (pm) {
    proto = pm[1]!.toLowerCase() as 'tcp' | 'udp';
    rest = rest.slice(0, -pm[0].length);
  }
  let name = rest;
  let portText: string | undefined;
  const br = /^\[([^\]]+)\](?::(.*))?$/.exec(rest);
  if (br) {
    name = br[1]!;
    portText = br[2];
  } else if ((rest.match(/:/g) ?? []).length === 1) {
    const i = rest.indexOf(':');
    name = rest.slice(0, i);
    portText = rest.slice(i + 1);
  }
  let port: number | undefined;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText) || Number(portText) < 1 || Number(portText) > 65535) {
      throw invalid(`"${s}": the port must be 1-65535, not "${portText}"`, { target: s });
    }
    port = Number(portText);
  }
  if (proto && port === undefined) throw invalid(`"${s}": /${proto} needs a port (NAME:PORT/${proto})`);
  if (!name) throw invalid(`"${s}" names nothing before the port`, { target: s });
  if (what === 'SRC' && port !== undefined) {
    throw invalid(`SRC "${s}" takes no port: the port belongs to DST`, { target: s });
  }
  return {
    name,
    ...(port !== undefined && { port, proto: proto ?? 'tcp' }),
  };
}

/** Whether a name only makes sense in a lab (HOST/NAME, hostN, internet). */
export const labOnlyName = (name: string): boolean =>
  /^host\d+(\/.+)?$/.test(name) || name === 'internet' || name === 'inet' || name === 'router';

/** One end of the trace, resolved. */
export interface End {
  readonly place: Place | undefined;
  /** The address; undefined for a host as SRC (the kernel picks its source). */
  readonly addr: IPAddr | undefined;
  /** As the person named it, and what it is (`host1/h1c1 10.244.1.2`). */
  readonly label: string;
}

export interface World {
  readonly topo: Topology;
  /** lab name, when in a lab. */
  readonly lab?: string;
  readonly backend?: string;
  readonly network?: string;
  resolve(t: Target, role: 'SRC' | 'DST'): End;
  /** Close every namespace handle opened. */
  close(): void;
}

interface Builder {
  places: Place[];
  edges: Map<string, Set<string>>;
  opened: Netns[];
}

function addPlace(
  b: Builder,
  id: string,
  kind: PlaceKind,
  ns: Netns,
  extra: { host?: string; info?: HostInfo } = {},
): Place {
  b.opened.push(ns);
  const p: Place = { id, kind, h: openHandle(ns), ...extra };
  b.places.push(p);
  return p;
}

function wire(b: Builder, a: string, c: string): void {
  for (const [x, y] of [
    [a, c],
    [c, a],
  ] as const) {
    let s = b.edges.get(x);
    if (!s) {
      s = new Set();
      b.edges.set(x, s);
    }
    s.add(y);
  }
}

function topology(b: Builder, hints: Hints, leases: PeerInfo[]): Topology {
  const byId = new Map(b.places.map((p) => [p.id, p]));
  return {
    places: b.places,
    adjacent: (p) => [...(b.edges.get(p.id) ?? [])].map((id) => byId.get(id)!).filter(Boolean),
    hints,
    leases,
  };
}

const closeAll = (b: Builder) => () => {
  for (const ns of b.opened) {
    try {
      ns.close();
    } catch {
      // already closed
    }
  }
};

/** The first IPv4 address of a place (its eth0's, for a container). */
function addrsOf(p: Place): IPAddr[] {
  try {
    return p.h.addrs
      .list()
      .filter((a) => a.scope === 0)
      .map((a) => a.ipnet.ip);
  } catch {
    return [];
  }
}

function ownerOf(places: readonly Place[], ip: IPAddr): Place | undefined {
  // Containers first: a host also has addresses in its subnet (its bridge's gateway).
  const order = [...places].sort((a, b) => rank(a.kind) - rank(b.kind));
  return order.find((p) => addrsOf(p).some((a) => ipEqual(a, ip)));
}
const rank = (k: PlaceKind): number => ({ container: 0, host: 1, internet: 2, router: 3, switch: 4 })[k];

interface ClusterView {
  readonly network: string;
  readonly backend: string | { type?: string; port?: number };
  readonly lease: { subnet: string; publicIp: string; expiresAt?: string } | null;
  readonly peers: readonly { subnet: string; publicIp: string; expiresAt?: string }[];
}

function clusterInfo(v: ClusterView, leases: readonly PeerInfo[]): ClusterInfo {
  const backend = typeof v.backend === 'string' ? v.backend : (v.backend.type ?? 'vxlan');
  const port = typeof v.backend === 'object' ? v.backend.port : undefined;
  const named = (subnet: IPNet, publicIp: IPAddr, expires: string | undefined): PeerInfo => {
    const l = leases.find((x) => ipEqual(x.publicIp, publicIp));
    return { subnet, publicIp, ...(l?.host && { host: l.host }), ...(expires && { expires }) };
  };
  return {
    network: networkOf(parseIPNet(v.network)),
    backend,
    ...(v.lease && { subnet: networkOf(parseIPNet(v.lease.subnet)) }),
    ...(v.lease?.expiresAt && { leaseExpires: v.lease.expiresAt }),
    peers: v.peers.flatMap((p) => {
      const ip = tryParseIP(p.publicIp);
      return ip ? [named(networkOf(parseIPNet(p.subnet)), ip, p.expiresAt)] : [];
    }),
    peersKnown: true,
    ...(backend === 'udp' && port !== undefined && { udpPort: port }),
  };
}

// ---- a lab ---------------------------------------------------------------------------------

/**
 * The places of lab `name`. Throws NOT_FOUND for an unknown lab (the message lists the labs),
 * INVALID for a bad name.
 */
export async function labWorld(name: string, lo: LabOptions = {}): Promise<World> {
  const rec = loadLab(name, lo);
  const st = await status(name, lo);
  const paths = lo.paths ?? DEFAULT_PATHS;
  const flag = name === DEFAULT_LAB ? '' : ` --name ${name}`;
  const hints: Hints = {
    exec: (host, cmd) => `weft lab exec${flag} ${host} -- ${cmd}`,
    logs: (host) => `\`weft lab logs${flag} ${host}\``,
  };
  const b: Builder = { places: [], edges: new Map(), opened: [] };
  try {
    const open = (role: Role): Netns | undefined => {
      try {
        return Netns.open(nsPath(paths, name, role));
      } catch (e) {
        if (isWeftError(e, 'NOT_FOUND')) return undefined;
        throw e;
      }
    };
    const leases: PeerInfo[] = st.hosts.flatMap((h) => {
      const ip = tryParseIP(h.publicIp);
      return h.subnet && ip ? [{ subnet: networkOf(parseIPNet(h.subnet)), publicIp: ip, host: h.name }] : [];
    });
    const sw = open('sw');
    if (sw) addPlace(b, 'switch', 'switch', sw);
    const router = open('router');
    if (router) {
      addPlace(b, 'router', 'router', router);
      wire(b, 'router', 'switch');
    }
    const inet = open('inet');
    if (inet) {
      addPlace(b, 'internet', 'internet', inet);
      wire(b, 'internet', 'router');
    }
    const views = await Promise.all(
      rec.hosts.map(async (h) => {
        const hs = st.hosts.find((x) => x.name === h.name);
        if (!hs || hs.daemon === 'dead') return undefined;
        try {
          return await new ApiClient(h.socket, 5000).request<ClusterView>('GET', '/v1/cluster');
        } catch {
          return undefined;
        }
      }),
    );
    for (const [i, h] of rec.hosts.entries()) {
      const ns = open(h.name as Role);
      if (!ns) continue;
      const hs = st.hosts.find((x) => x.name === h.name);
      const view = views[i];
      const publicIp = tryParseIP(h.ip);
      const own = hs?.subnet ? networkOf(parseIPNet(hs.subnet)) : undefined;
      const cluster: ClusterInfo = view
        ? clusterInfo(view, leases)
        : {
            network: networkOf(parseIPNet(rec.network)),
            backend: rec.backend,
            ...(own && { subnet: own }),
            peers: [],
            peersKnown: false,
          };
      const running = hs !== undefined && hs.daemon !== 'dead' && view !== undefined;
      const info: HostInfo = {
        daemon: running ? 'running' : 'dead',
        ...(!running && { daemonError: hs?.error ?? 'it does not answer' }),
        ...(publicIp && { publicIp }),
        cluster,
      };
      addPlace(b, h.name, 'host', ns, { info });
      wire(b, h.name, 'switch');
      const containers: { name: string; netnsPath: string }[] =
        hs && hs.daemon !== 'dead'
          ? hs.containers.flatMap((c) => (c.netnsPath ? [{ name: c.name, netnsPath: c.netnsPath }] : []))
          : sandboxesOf(h.runDir);
      for (const c of containers) {
        let cns: Netns;
        try {
          cns = Netns.open(c.netnsPath);
        } catch {
          continue;
        }
        addPlace(b, `${h.name}/${c.name}`, 'container', cns, { host: h.name });
        wire(b, `${h.name}/${c.name}`, h.name);
      }
    }
    const topo = topology(b, hints, leases);
    return {
      topo,
      lab: name,
      backend: rec.backend,
      network: rec.network,
      resolve: (t, role) => resolveLab(topo, name, t, role),
      close: closeAll(b),
    };
  } catch (e) {
    closeAll(b)();
    throw e;
  }
}

/** Containers of a host whose daemon does not answer: its sandbox pins, named by their hostname files. */
function sandboxesOf(runDir: string): { name: string; netnsPath: string }[] {
  let ids: string[];
  try {
    ids = fs.readdirSync(path.join(runDir, 'netns'));
  } catch {
    return [];
  }
  return ids.map((id) => {
    let name = id;
    try {
      name = fs.readFileSync(path.join(runDir, 'containers', id, 'hostname'), 'utf8').trim() || id;
    } catch {
      // keep the id
    }
    return { name, netnsPath: path.join(runDir, 'netns', id) };
  });
}

function resolveLab(topo: Topology, lab: string, t: Target, role: 'SRC' | 'DST'): End {
  const places = topo.places;
  const find = (id: string) => places.find((p) => p.id === id);
  const n = t.name;
  const hostNames = places.filter((p) => p.kind === 'host').map((p) => p.id);
  const containerIds = places.filter((p) => p.kind === 'container').map((p) => p.id);
  if (n === 'internet' || n === 'inet') {
    const p = find('internet');
    if (!p) throw notFound(`lab "${lab}" has no internet namespace`);
    return { place: p, addr: tryParseIP(INTERNET.server), label: `internet ${INTERNET.server}` };
  }
  if (n === 'router') {
    const p = find('router');
    if (!p) throw notFound(`lab "${lab}" has no router namespace`);
    return { place: p, addr: role === 'DST' ? addrsOf(p)[0] : undefined, label: 'router' };
  }
  const ip = tryParseIP(n);
  if (ip) {
    const p = ownerOf(places, ip);
    if (!p) {
      throw notFound(
        `${n} belongs to nothing in lab "${lab}": give a container (${containerIds.slice(0, 4).join(', ')}${containerIds.length > 4 ? ', …' : ''}), a host (${hostNames.join(', ')}), internet, or one of their addresses`,
        { address: n, lab },
      );
    }
    return { place: p, addr: ip, label: `${p.id} ${n}` };
  }
  const host = find(n);
  if (host?.kind === 'host') {
    const pub = host.info?.publicIp;
    return {
      place: host,
      addr: role === 'DST' ? pub : undefined,
      label: `${host.id}${role === 'DST' && pub ? ` ${formatIP(pub)}` : ''}`,
    };
  }
  let c: Place | undefined;
  if (n.includes('/')) {
    c = find(n);
    if (c?.kind !== 'container') {
      const [h] = n.split('/');
      if (!find(h!)) throw notFound(`lab "${lab}" has no host "${h}" (hosts: ${hostNames.join(', ')})`);
      throw notFound(
        `no container "${n}" in lab "${lab}" (containers: ${containerIds.join(', ') || 'none'})`,
        { name: n, lab },
      );
    }
  } else {
    const matches = places.filter((p) => p.kind === 'container' && p.id.endsWith(`/${n}`));
    if (matches.length > 1) {
      throw invalid(
        `"${n}" is a container on several hosts: say which (${matches.map((m) => m.id).join(', ')})`,
      );
    }
    c = matches[0];
    if (!c) {
      throw notFound(
        `"${n}" is no container, host or address of lab "${lab}" (containers: ${containerIds.join(', ') || 'none'}; hosts: ${hostNames.join(', ')}; or internet)`,
        { name: n, lab },
      );
    }
  }
  const a = addrsOf(c).find((x) => x.family === 4) ?? addrsOf(c)[0];
  if (!a) throw new WeftError('NOT_FOUND', `container ${c.id} has no address`, { details: { name: c.id } });
  return { place: c, addr: a, label: `${c.id} ${formatIP(a)}` };
}

// ---- one host -----------------------------------------------------------------------------

interface ApiContainerView {
  readonly name: string;
  readonly status: string;
  readonly netnsMode?: string;
  readonly netnsPath?: string;
  readonly networks: readonly { network: string; addresses: readonly string[] }[];
}

/**
 * This host and its daemon's containers. Throws UNAVAILABLE when the daemon does not answer
 * (its containers cannot be named without it).
 */
export async function hostWorld(socket: string = socketFrom(process.env)): Promise<World> {
  const api = new ApiClient(socket, 5000);
  const list = await api.request<ApiContainerView[]>('GET', '/v1/containers');
  let view: ClusterView | undefined;
  try {
    view = await api.request<ClusterView>('GET', '/v1/cluster');
  } catch (e) {
    if (!isWeftError(e, 'NOT_FOUND')) throw e;
  }
  const b: Builder = { places: [], edges: new Map(), opened: [] };
  try {
    const self = Netns.self();
    const pub = view?.lease ? tryParseIP(view.lease.publicIp) : undefined;
    const leases: PeerInfo[] = view?.lease
      ? [{ subnet: networkOf(parseIPNet(view.lease.subnet)), publicIp: pub!, host: 'host' }]
      : [];
    const cluster = view ? clusterInfo(view, leases) : undefined;
    if (cluster) leases.push(...cluster.peers);
    const info: HostInfo = { daemon: 'running', ...(pub && { publicIp: pub }), ...(cluster && { cluster }) };
    const host = addPlace(b, 'host', 'host', self, { info });
    for (const c of list) {
      if (c.netnsMode === 'host' || !c.netnsPath) continue;
      let ns: Netns;
      try {
        ns = Netns.open(c.netnsPath);
      } catch {
        continue;
      }
      addPlace(b, c.name, 'container', ns, { host: host.id });
      wire(b, c.name, host.id);
    }
    const hints: Hints = {
      exec: (h, cmd) => (h === 'host' ? cmd : `on ${h}: ${cmd}`),
      logs: (h) => `the log of ${h === 'host' ? "this host's" : `${h}'s`} weft daemon`,
    };
    const topo = topology(b, hints, leases);
    const nets = subnetsOf(host, cluster);
    return {
      topo,
      ...(cluster && { backend: cluster.backend, network: formatIPNet(cluster.network) }),
      resolve: (t, role) => resolveHost(topo, list, nets, t, role),
      close: closeAll(b),
    };
  } catch (e) {
    closeAll(b)();
    throw e;
  }
}

/** The subnets weft serves on this host: its bridges' and the cluster network. */
function subnetsOf(host: Place, cluster: ClusterInfo | undefined): IPNet[] {
  const out: IPNet[] = cluster ? [cluster.network] : [];
  try {
    const bridges = new Set(
      host.h.links
        .list()
        .filter((l) => l.kind === 'bridge')
        .map((l) => l.index),
    );
    for (const a of host.h.addrs.list()) {
      if (bridges.has(a.index) && a.scope === 0) out.push(networkOf(a.ipnet));
    }
  } catch {
    // nothing more known
  }
  return out;
}

function resolveHost(
  topo: Topology,
  list: readonly ApiContainerView[],
  nets: readonly IPNet[],
  t: Target,
  role: 'SRC' | 'DST',
): End {
  const host = topo.places.find((p) => p.id === 'host')!;
  const n = t.name;
  if (n === 'host' || n === 'localhost') {
    const a = role === 'DST' ? addrsOf(host).find((x) => x.family === 4) : undefined;
    return { place: host, addr: a, label: 'host' };
  }
  const ip = tryParseIP(n);
  if (ip) {
    const p = ownerOf(topo.places, ip);
    if (p) return { place: p, addr: ip, label: `${p.id} ${n}` };
    const inside = nets.find((x) => containsIP(x, ip));
    if (inside) {
      throw notFound(`no container has ${n} (it is in ${formatIPNet(inside)}, which weft serves)`, {
        address: n,
      });
    }
    if (role === 'SRC') {
      throw notFound(`${n} is not an address of this host or of one of its containers`, { address: n });
    }
    return { place: undefined, addr: ip, label: `${n} (outside)` };
  }
  const c = list.find((x) => x.name === n);
  if (!c) {
    throw notFound(
      `no container "${n}" on this host (containers: ${list.map((x) => x.name).join(', ') || 'none'}); in a lab give --lab NAME`,
      { name: n },
    );
  }
  if (c.netnsMode === 'host') {
    const a = role === 'DST' ? addrsOf(host).find((x) => x.family === 4) : undefined;
    return { place: host, addr: a, label: `${n} (host network)` };
  }
  const p = topo.places.find((x) => x.id === n);
  if (!p) {
    throw new WeftError(
      'CONFLICT',
      `container "${n}" has no network namespace to trace (${c.status}${c.netnsMode === 'none' ? ', network none' : ''})`,
      { details: { name: n } },
    );
  }
  const fromApi = c.networks.flatMap((x) => x.addresses).map((s) => tryParseIP(s.split('/')[0]!));
  const a = fromApi.find((x): x is IPAddr => x?.family === 4) ?? addrsOf(p)[0];
  if (!a) throw notFound(`container "${n}" has no address`, { name: n });
  return { place: p, addr: a, label: `${n} ${formatIP(a)}` };
}
