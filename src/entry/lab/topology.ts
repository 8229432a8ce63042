/**
 * The lab's plan, pure: names, addresses and paths of everything a lab builds, computed from its
 * options before anything changes, so bad input fails with INVALID and nothing half-made.
 *
 * Shape of a lab named L (each box a network namespace pinned at /run/netns/weft-L-<role>):
 *
 *   host1 … hostN ─ eth0 ─┐                     ┌─ eth0 router eth1 ── eth0 inet
 *   etcd1 … etcdM ─ eth0 ─┤  sw: bridge br0  ───┘   192.168.100.1      203.0.113.1 → .10
 *                         (underlay, default 192.168.100.0/24)
 *
 * Underlay offsets: .1 the router (every host's default route), .2… the etcd members, .(10+i)
 * host i. The "internet" is 203.0.113.0/24 (TEST-NET-3, documentation only): the router at .1,
 * the internet server at .10. The router does not NAT, so the server sees who really sent a
 * packet: a host's public (underlay) address when the host masquerades its containers.
 *
 * Everything is scoped by the lab's name: namespaces, state dirs (<stateRoot>/L), run dirs
 * (<runRoot>/L/<host>), so labs coexist; addresses repeat between labs freely, as each lab lives
 * in its own namespaces.
 */
import * as path from 'node:path';
import { makeClusterConfig, subnetCount } from '../../control/leases/config.js';
import { invalid } from '../../lib/errors.js';
import { addIP, formatIP, formatIPNet, overlaps, parseCidr, sizeOf } from '../../lib/ip.js';

export const BACKENDS = ['vxlan', 'host-gw', 'udp'] as const;
export type Backend = (typeof BACKENDS)[number];
export const STORES = ['embedded', 'etcd'] as const;
export type StoreKind = (typeof STORES)[number];
export const ETCD_MEMBERS = [1, 3] as const;

export const LAB_NAME_MAX = 12;
const LAB_NAME_RE = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
export const DEFAULT_LAB = 'weft';
/** The ` --name LAB` a hint must carry for `weft lab …` to reach lab `lab` ('' for the default lab). */
export const nameFlag = (lab: string): string => (lab === DEFAULT_LAB ? '' : ` --name ${lab}`);
export const DEFAULT_UNDERLAY = '192.168.100.0/24';
export const DEFAULT_NETWORK = '10.244.0.0/16';
export const DEFAULT_SUBNET_LEN = 24;
/** The "internet" side of the router (TEST-NET-3). */
export const INTERNET = { net: '203.0.113.0/24', router: '203.0.113.1', server: '203.0.113.10', len: 24 };
/** The port host1's first container is published on. */
export const PUBLISHED_PORT = 8080;
/** A sanity cap: every host is a daemon process on this one machine. */
export const MAX_HOSTS = 200;
export const MAX_CONTAINERS = 20;
/** Offset of host i's underlay address: 10 + i. */
const HOST_OFFSET = 10;

/** Where a lab keeps things: overridable for tests and odd machines. */
export interface LabPaths {
  /** Namespace pins (iproute2's folder, so `ip netns` shows them). */
  readonly netnsDir: string;
  /** Lab records and per-host state dirs: <stateRoot>/<lab>/. */
  readonly stateRoot: string;
  /** Run dirs, sockets, daemon logs: <runRoot>/<lab>/<host>/. */
  readonly runRoot: string;
}

export const DEFAULT_PATHS: LabPaths = {
  netnsDir: '/run/netns',
  stateRoot: '/var/lib/weft/lab',
  runRoot: '/run/weft/lab',
};

/** Throws INVALID unless `name` is a lab name: [a-z0-9-], at most 12, not starting or ending with -. */
export function checkLabName(name: string): string {
  if (typeof name !== 'string' || name.length > LAB_NAME_MAX || !LAB_NAME_RE.test(name)) {
    throw invalid(
      `lab name "${name}" is invalid: use 1-${LAB_NAME_MAX} of [a-z0-9-], starting and ending with a letter or digit`,
      { name },
    );
  }
  return name;
}

/** Roles of a lab's namespaces. */
export type Role = 'sw' | 'router' | 'inet' | `etcd${number}` | `host${number}`;
const ROLE_RE = /^(sw|router|inet|etcd[1-9]\d*|host[1-9]\d*)$/;

export const hostName = (i: number): `host${number}` => `host${i}`;
export const etcdName = (i: number): `etcd${number}` => `etcd${i}`;
/** Container j of host i: h1c1, h1c2, h2c1… */
export const containerName = (host: number, j: number): string => `h${host}c${j}`;

/** Index of a host name (host3 → 3), undefined for anything else. */
export function hostIndex(name: string): number | undefined {
  const m = /^host([1-9]\d*)$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** The namespace name of a role: weft-<lab>-<role>. */
export const nsName = (lab: string, role: Role): string => `weft-${lab}-${role}`;
export const nsPath = (paths: LabPaths, lab: string, role: Role): string =>
  path.join(paths.netnsDir, nsName(lab, role));

/**
 * The role of a pinned namespace name if it belongs to lab `lab`, else undefined. Exact: lab
 * "a" never claims lab "a-host1"'s namespaces (weft-a-host1-sw is not a role of "a").
 */
export function roleOf(lab: string, name: string): Role | undefined {
  const prefix = `weft-${lab}-`;
  if (!name.startsWith(prefix)) return undefined;
  const role = name.slice(prefix.length);
  return ROLE_RE.test(role) ? (role as Role) : undefined;
}

/** Lab names that own at least one namespace among `names` (any weft-<lab>-<role> shape). */
export function labsOfNamespaces(names: readonly string[]): string[] {
  const out = new Set<string>();
  for (const n of names) {
    const m = /^weft-([a-z0-9][a-z0-9-]*)-(sw|router|inet|etcd[1-9]\d*|host[1-9]\d*)$/.exec(n);
    if (m && m[1]!.length <= LAB_NAME_MAX && LAB_NAME_RE.test(m[1]!)) out.add(m[1]!);
  }
  return [...out].sort();
}

export interface LabDirs {
  /** <stateRoot>/<lab>: the record, the embedded store, etcd data, per-host state dirs. */
  readonly state: string;
  /** <runRoot>/<lab>: per-host run dirs, logs, the `weft` shim. */
  readonly run: string;
  readonly record: string;
}

export function labDirs(paths: LabPaths, lab: string): LabDirs {
  const state = path.join(paths.stateRoot, lab);
  return { state, run: path.join(paths.runRoot, lab), record: path.join(state, 'lab.json') };
}

export interface HostDirs {
  readonly stateDir: string;
  readonly runDir: string;
  readonly socket: string;
  readonly log: string;
}

export function hostDirs(paths: LabPaths, lab: string, host: string): HostDirs {
  const d = labDirs(paths, lab);
  const runDir = path.join(d.run, host);
  return {
    stateDir: path.join(d.state, host),
    runDir,
    socket: path.join(runDir, 'weft.sock'),
    log: path.join(runDir, 'daemon.log'),
  };
}

/** The underlay's addresses. */
export interface Underlay {
  readonly cidr: string;
  readonly len: number;
  /** The router's address on the underlay (every host's default route). */
  readonly gateway: string;
  /** The highest host index the underlay holds. */
  readonly maxHosts: number;
}

/**
 * Plan an underlay subnet. Throws INVALID for a malformed or non-IPv4 CIDR, one too small for a
 * router, etcd members and one host (prefix longer than /28), or one that overlaps the cluster
 * network or the internet range.
 */
export function planUnderlay(cidr: string, clusterNetwork?: string): Underlay {
  const net = parseCidr(cidr);
  if (net.ip.family !== 4) throw invalid(`the underlay must be an IPv4 subnet, not ${cidr}`, { cidr });
  if (net.len > 28) {
    throw invalid(`the underlay ${cidr} is too small: use a /28 or larger (hosts start at offset 11)`, {
      cidr,
    });
  }
  const inet = parseCidr(INTERNET.net);
  if (overlaps(net, inet)) throw invalid(`the underlay ${cidr} overlaps the lab's internet ${INTERNET.net}`);
  if (clusterNetwork !== undefined && overlaps(net, parseCidr(clusterNetwork))) {
    throw invalid(`the underlay ${cidr} overlaps the cluster network ${clusterNetwork}`);
  }
  const size = Number(sizeOf(net));
  return {
    cidr: formatIPNet(net),
    len: net.len,
    gateway: formatIP(addIP(net.ip, 1)),
    maxHosts: size - 2 - HOST_OFFSET,
  };
}

/** Underlay address of host i. Throws INVALID when the underlay does not hold it. */
export function hostIp(u: Underlay, i: number): string {
  if (!Number.isInteger(i) || i < 1 || i > u.maxHosts) {
    throw invalid(`host${i} does not fit the underlay ${u.cidr} (it holds ${u.maxHosts} hosts)`, {
      underlay: u.cidr,
      host: i,
    });
  }
  return formatIP(addIP(parseCidr(u.cidr).ip, HOST_OFFSET + i));
}

/** Underlay address of etcd member i (1-based): .2, .3, .4. */
export function etcdIp(u: Underlay, i: number): string {
  return formatIP(addIP(parseCidr(u.cidr).ip, 1 + i));
}

export interface UpOptions {
  readonly name?: string;
  readonly hosts?: number;
  readonly backend?: string;
  readonly store?: string;
  readonly etcdMembers?: number;
  readonly containers?: number;
  readonly network?: string;
  readonly subnetLen?: number;
  readonly underlay?: string;
}

/** Options checked and completed with defaults. */
export interface LabPlan {
  readonly name: string;
  readonly hosts: number;
  readonly backend: Backend;
  readonly store: StoreKind;
  readonly etcdMembers: number;
  readonly containers: number;
  readonly network: string;
  readonly subnetLen: number;
  readonly underlay: Underlay;
}

const intIn = (v: number | undefined, def: number, lo: number, hi: number, what: string): number => {
  const n = v ?? def;
  if (!Number.isInteger(n) || n < lo || n > hi) {
    throw invalid(`${what} must be a whole number from ${lo} to ${hi}, not ${v}`, { [what]: v });
  }
  return n;
};

/**
 * Check `up`'s options and fill in the defaults (3 hosts, vxlan, embedded, 2 containers per
 * host, 10.244.0.0/16 in /24s, underlay 192.168.100.0/24). Throws INVALID for anything wrong:
 * a bad name, an unknown backend or store, more hosts than the underlay or the cluster network
 * hold, etcd members other than 1 or 3, a cluster network that is not IPv4 or overlaps the
 * underlay or the internet.
 */
export function planLab(o: UpOptions): LabPlan {
  const name = checkLabName(o.name ?? DEFAULT_LAB);
  const backend = o.backend ?? 'vxlan';
  if (!(BACKENDS as readonly string[]).includes(backend)) {
    throw invalid(`unknown backend "${backend}": use one of ${BACKENDS.join(', ')}`, { backend });
  }
  const store = o.store ?? 'embedded';
  if (!(STORES as readonly string[]).includes(store)) {
    throw invalid(`unknown store "${store}": use one of ${STORES.join(', ')}`, { store });
  }
  const etcdMembers = o.etcdMembers ?? 1;
  if (!(ETCD_MEMBERS as readonly number[]).includes(etcdMembers)) {
    throw invalid(`--etcd-members must be 1 or 3, not ${o.etcdMembers}`, { etcdMembers: o.etcdMembers });
  }
  // The cluster configuration as `weft cluster init` will check it (flannel's rules).
  const cfg = makeClusterConfig({
    network: o.network ?? DEFAULT_NETWORK,
    ...(o.subnetLen !== undefined && { subnetLen: o.subnetLen }),
    backend,
  });
  const network = formatIPNet(cfg.network);
  const subnetLen = cfg.subnetLen;
  if (overlaps(cfg.network, parseCidr(INTERNET.net))) {
    throw invalid(`the cluster network ${network} overlaps the lab's internet ${INTERNET.net}`);
  }
  const underlay = planUnderlay(o.underlay ?? DEFAULT_UNDERLAY, network);
  const hosts = intIn(o.hosts, 3, 1, MAX_HOSTS, 'hosts');
  if (hosts > underlay.maxHosts) {
    throw invalid(
      `${hosts} hosts do not fit the underlay ${underlay.cidr}: it holds ${underlay.maxHosts} (use --underlay with a larger subnet)`,
      { hosts, underlay: underlay.cidr, max: underlay.maxHosts },
    );
  }
  const subnets = subnetCount(cfg);
  if (hosts > subnets) {
    throw invalid(
      `${hosts} hosts do not fit the cluster network ${network}: it has ${subnets} subnets of /${subnetLen}`,
      { hosts, network, subnetLen },
    );
  }
  const containers = intIn(o.containers, 2, 0, MAX_CONTAINERS, 'containers');
  // Each subnet loses its network, gateway and broadcast addresses.
  const perHost = 2 ** (32 - subnetLen) - 3;
  if (containers > perHost) {
    throw invalid(
      `${containers} containers per host do not fit a /${subnetLen} subnet (room for ${perHost}); use a shorter --subnet-len`,
      { containers, subnetLen },
    );
  }
  return {
    name,
    hosts,
    backend: backend as Backend,
    store: store as StoreKind,
    etcdMembers: store === 'etcd' ? etcdMembers : 0,
    containers,
    network,
    subnetLen,
    underlay,
  };
}

/** The store spec a daemon takes: embedded:<file> or etcd://ip:2379,… */
export function storeSpec(
  paths: LabPaths,
  plan: Pick<LabPlan, 'name' | 'store' | 'etcdMembers' | 'underlay'>,
) {
  if (plan.store === 'embedded') return `embedded:${path.join(labDirs(paths, plan.name).state, 'store.db')}`;
  const eps: string[] = [];
  for (let i = 1; i <= plan.etcdMembers; i++) eps.push(`${etcdIp(plan.underlay, i)}:2379`);
  return `etcd://${eps.join(',')}`;
}
