/**
 * Validation of a FirewallState and its normal form (the Plan the renderers read). Everything
 * that can be wrong with the input is found here, before any text is produced: malformed values
 * are INVALID, two objects claiming the same thing (a bridge, an id, a subnet, a host port) are
 * CONFLICT, a request the kernel cannot serve (publishing on ::1) is UNSUPPORTED.
 */
import { conflict, invalid, WeftError } from '../../lib/errors.js';
import {
  bitsOf,
  containsIP,
  type Family,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
  ipEqual,
  networkOf,
  overlaps,
  parseCidr,
} from '../../lib/ip.js';
import { checkIfName } from '../../lib/names.js';
import type { EndpointFw, FirewallState, NetworkFw, PortMapping, Proto } from './types.js';

/** One published port of one family, ready to render. */
export interface PlannedPort {
  readonly family: Family;
  readonly proto: Proto;
  /** The host address matched; undefined: any local address of the family. */
  readonly hostIp: IPAddr | undefined;
  readonly hostStart: number;
  readonly hostEnd: number;
  readonly containerStart: number;
  readonly containerEnd: number;
  /** The endpoint address traffic is DNATed to. */
  readonly target: IPAddr;
  readonly endpoint: string;
}

export interface PlannedNetwork {
  readonly id: string;
  readonly bridge: string;
  /** Canonical prefixes (host bits cleared), input order. */
  readonly subnets: readonly IPNet[];
  /** Outbound NAT in effect: masquerade requested and the network is not internal. */
  readonly outboundNat: boolean;
  /** SNAT source per family (from hostIps); a family without one masquerades. */
  readonly snat: Readonly<Partial<Record<Family, IPAddr>>>;
  readonly internal: boolean;
  readonly icc: boolean;
  /** Canonical cluster prefixes (see NetworkFw.cluster); empty unless an overlay host. */
  readonly cluster: readonly IPNet[];
  /** Source for the host's own traffic to the cluster (see NetworkFw.clusterSource). */
  readonly clusterSource: IPAddr | undefined;
  readonly ports: readonly PlannedPort[];
}

export interface Plan {
  readonly networks: readonly PlannedNetwork[];
}

export const ID_RE = /^[a-z0-9]{1,32}$/;
/** Characters weft puts into rule text for an interface name: no quotes, no nft `*` wildcard. */
const IFNAME_SAFE_RE = /^[A-Za-z0-9_.-]+$/;
const PORT_MIN = 1;
const PORT_MAX = 65535;
const LOOPBACK4 = parseCidr('127.0.0.0/8');
const LOOPBACK6 = parseCidr('::1/128');

export const isLoopback = (ip: IPAddr): boolean => containsIP(ip.family === 4 ? LOOPBACK4 : LOOPBACK6, ip);
const isUnspecified = (ip: IPAddr): boolean => (ip.family === 4 ? ip.value === 0 : ip.value === 0n);

function checkId(id: unknown, what: string): string {
  if (typeof id !== 'string' || !ID_RE.test(id)) {
    throw invalid(`${what} id ${JSON.stringify(id)} is invalid: use 1-32 of [a-z0-9]`, { id });
  }
  return id;
}

function checkBridge(net: NetworkFw): string {
  const name = checkIfName(net.bridge, `network ${net.id} bridge name`);
  if (!IFNAME_SAFE_RE.test(name)) {
    throw invalid(
      `network ${net.id} bridge name "${name}" has characters weft does not put into firewall rules (use [A-Za-z0-9_.-])`,
      { network: net.id, bridge: name },
    );
  }
  return name;
}

function checkSubnet(net: NetworkFw, s: IPNet): IPNet {
  const fam = s?.ip?.family;
  if ((fam !== 4 && fam !== 6) || !Number.isInteger(s.len) || s.len < 0 || s.len > bitsOf(fam)) {
    throw invalid(`network ${net.id} has a malformed subnet`, { network: net.id });
  }
  const n = networkOf(s);
  if (n.len === 0) {
    throw invalid(`network ${net.id} subnet ${formatIPNet(n)} covers every address`, {
      network: net.id,
      subnet: formatIPNet(n),
    });
  }
  if (overlaps(n, fam === 4 ? LOOPBACK4 : LOOPBACK6)) {
    throw invalid(`network ${net.id} subnet ${formatIPNet(n)} overlaps the loopback range`, {
      network: net.id,
      subnet: formatIPNet(n),
    });
  }
  return n;
}

const isPort = (n: unknown): n is number =>
  Number.isInteger(n) && (n as number) >= PORT_MIN && (n as number) <= PORT_MAX;
const rangeText = (a: number, b: number): string => (a === b ? `${a}` : `${a}-${b}`);

interface Where {
  readonly network: string;
  readonly endpoint: string;
  readonly mapping: number;
}
const whereText = (w: Where): string =>
  `network ${w.network} endpoint ${w.endpoint} port mapping ${w.mapping + 1}`;

/** Checks one mapping's numbers; returns its inclusive host and container ranges. */
function checkMapping(
  m: PortMapping,
  w: Where,
): { hostStart: number; hostEnd: number; containerStart: number; containerEnd: number } {
  const bad = (msg: string): WeftError => invalid(`${whereText(w)}: ${msg}`, { ...w });
  if (m.proto !== 'tcp' && m.proto !== 'udp')
    throw bad(`protocol ${JSON.stringify(m.proto)} is not tcp or udp`);
  const hostEnd = m.hostPortEnd ?? m.hostPort;
  const containerEnd = m.containerPortEnd ?? m.containerPort;
  for (const [what, v] of [
    ['host port', m.hostPort],
    ['host port range end', hostEnd],
    ['container port', m.containerPort],
    ['container port range end', containerEnd],
  ] as const) {
    if (!isPort(v)) throw bad(`${what} ${String(v)} is out of range (${PORT_MIN}-${PORT_MAX})`);
  }
  if (hostEnd < m.hostPort) throw bad(`host port range ${m.hostPort}-${hostEnd} ends before it starts`);
  if (containerEnd < m.containerPort) {
    throw bad(`container port range ${m.containerPort}-${containerEnd} ends before it starts`);
  }
  if (hostEnd - m.hostPort !== containerEnd - m.containerPort) {
    throw bad(
      `host ports ${rangeText(m.hostPort, hostEnd)} and container ports ${rangeText(m.containerPort, containerEnd)} differ in length; ranges map one to one`,
    );
  }
  return { hostStart: m.hostPort, hostEnd, containerStart: m.containerPort, containerEnd };
}

/**
 * Endpoints planned before, by object: states are immutable values, and a caller that hands the
 * same endpoint object again (the daemon does, for every unchanged endpoint) gets the same
 * planned ports without the work, while its network's id and subnets are the same.
 */
const plannedEndpoints = new WeakMap<EndpointFw, { readonly where: string; readonly ports: PlannedPort[] }>();

function planEndpoint(
  net: NetworkFw,
  subnets: readonly IPNet[],
  where: string,
  ep: EndpointFw,
): PlannedPort[] {
  const known = plannedEndpoints.get(ep);
  if (known?.where === where) return known.ports;
  const ports = planEndpointNow(net, subnets, ep);
  plannedEndpoints.set(ep, { where, ports });
  return ports;
}

function planEndpointNow(net: NetworkFw, subnets: readonly IPNet[], ep: EndpointFw): PlannedPort[] {
  checkId(ep.id, `network ${net.id} endpoint`);
  const first: Partial<Record<Family, IPAddr>> = {};
  for (const ip of ep.ips) {
    if (!subnets.some((s) => containsIP(s, ip))) {
      throw invalid(
        `network ${net.id} endpoint ${ep.id}: address ${formatIP(ip)} is outside the network's subnets`,
        { network: net.id, endpoint: ep.id, ip: formatIP(ip) },
      );
    }
    first[ip.family] ??= ip;
  }
  const out: PlannedPort[] = [];
  ep.ports.forEach((m, mapping) => {
    const w: Where = { network: net.id, endpoint: ep.id, mapping };
    const r = checkMapping(m, w);
    let families: Family[];
    let hostIp: IPAddr | undefined;
    if (m.hostIp === undefined) {
      families = ([4, 6] as const).filter((f) => first[f] !== undefined);
      if (families.length === 0)
        throw invalid(`${whereText(w)}: the endpoint has no address to publish to`, { ...w });
    } else {
      if (m.hostIp.family === 6 && isLoopback(m.hostIp)) {
        throw new WeftError(
          'UNSUPPORTED',
          `${whereText(w)}: publishing on ::1 is not possible: IPv6 does not forward traffic from the loopback address`,
          { details: { ...w } },
        );
      }
      families = [m.hostIp.family];
      hostIp = isUnspecified(m.hostIp) ? undefined : m.hostIp;
      if (first[m.hostIp.family] === undefined) {
        throw invalid(
          `${whereText(w)}: host address ${formatIP(m.hostIp)} is IPv${m.hostIp.family} but the endpoint has no IPv${m.hostIp.family} address`,
          { ...w },
        );
      }
    }
    for (const family of families) {
      out.push({ family, proto: m.proto, hostIp, ...r, target: first[family]!, endpoint: ep.id });
    }
  });
  return out;
}

function planNetwork(net: NetworkFw): PlannedNetwork {
  checkId(net.id, 'network');
  const bridge = checkBridge(net);
  const subnets = net.subnets.map((s) => checkSubnet(net, s));
  const snat: Partial<Record<Family, IPAddr>> = {};
  for (const ip of net.hostIps ?? []) {
    if (!net.masquerade) {
      throw invalid(`network ${net.id}: host addresses for outbound NAT need masquerade`, {
        network: net.id,
      });
    }
    if (snat[ip.family] !== undefined) {
      throw invalid(`network ${net.id}: more than one IPv${ip.family} host address for outbound NAT`, {
        network: net.id,
      });
    }
    if (isUnspecified(ip) || isLoopback(ip)) {
      throw invalid(`network ${net.id}: ${formatIP(ip)} cannot be a source address for outbound NAT`, {
        network: net.id,
      });
    }
    snat[ip.family] = ip;
  }
  const ids = new Set<string>();
  const seenIps = new Map<string, string>();
  const ports: PlannedPort[] = [];
  const where = `${net.id} ${subnets.map(formatIPNet).join(' ')}`;
  for (const ep of net.endpoints) {
    ports.push(...planEndpoint(net, subnets, where, ep));
    if (ids.has(ep.id)) {
      throw conflict(`network ${net.id} has two endpoints with id ${ep.id}`, {
        network: net.id,
        endpoint: ep.id,
      });
    }
    ids.add(ep.id);
    for (const ip of ep.ips) {
      const key = `${ip.family}/${ip.value}`;
      const other = seenIps.get(key);
      if (other !== undefined) {
        throw conflict(
          `network ${net.id}: address ${formatIP(ip)} of endpoint ${ep.id} is already used by endpoint ${other}`,
          { network: net.id, endpoint: ep.id, owner: other, ip: formatIP(ip) },
        );
      }
      seenIps.set(key, ep.id);
    }
  }
  return {
    id: net.id,
    bridge,
    subnets,
    outboundNat: net.masquerade && !net.internal,
    snat,
    internal: net.internal,
    icc: net.icc,
    cluster: planCluster(net, subnets),
    clusterSource: planClusterSource(net, subnets),
    ports,
  };
}

/** The cluster prefixes in canonical form; each must contain one of the network's subnets. */
function planCluster(net: NetworkFw, subnets: readonly IPNet[]): IPNet[] {
  const out: IPNet[] = [];
  for (const c of net.cluster ?? []) {
    if (!c?.ip || !Number.isInteger(c.len) || c.len < 0 || c.len > bitsOf(c.ip.family)) {
      throw invalid(`network ${net.id}: a cluster prefix is malformed`, { network: net.id });
    }
    const canon = networkOf(c);
    if (
      !subnets.some((s) => s.ip.family === canon.ip.family && canon.len <= s.len && containsIP(canon, s.ip))
    ) {
      throw invalid(
        `network ${net.id}: cluster network ${formatIPNet(canon)} contains none of the network's subnets`,
        { network: net.id, cluster: formatIPNet(canon) },
      );
    }
    out.push(canon);
  }
  return out;
}

function planClusterSource(net: NetworkFw, subnets: readonly IPNet[]): IPAddr | undefined {
  const src = net.clusterSource;
  if (src === undefined) return undefined;
  if (!net.cluster?.length) throw invalid(`network ${net.id}: a cluster source needs a cluster network`);
  if (!subnets.some((s) => containsIP(s, src))) {
    throw invalid(`network ${net.id}: cluster source ${formatIP(src)} is not in the network's subnets`);
  }
  return src;
}

interface Claim {
  readonly port: PlannedPort;
  readonly network: string;
  readonly order: number;
  /** Protocol and family: claims only collide within one. */
  readonly key: string;
}

const hostText = (c: Claim): string =>
  c.port.hostIp ? formatIP(c.port.hostIp) : c.port.family === 4 ? '0.0.0.0' : '::';

/**
 * A host port can be published once per protocol and host address; "any address" of a family
 * overlaps every address of that family. Sort and sweep: O(n log n) plus the overlaps found.
 */
function checkPortClaims(networks: readonly PlannedNetwork[]): void {
  const claims: Claim[] = [];
  for (const n of networks) {
    for (const port of n.ports) {
      claims.push({ port, network: n.id, order: claims.length, key: `${port.proto}/${port.family}` });
    }
  }
  claims.sort(
    (a, b) =>
      (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) ||
      a.port.hostStart - b.port.hostStart ||
      a.order - b.order,
  );
  let active: Claim[] = [];
  for (const c of claims) {
    active = active.filter((a) => a.key === c.key && a.port.hostEnd >= c.port.hostStart);
    for (const a of active) {
      const sameHost =
        a.port.hostIp === undefined || c.port.hostIp === undefined || ipEqual(a.port.hostIp, c.port.hostIp);
      if (!sameHost) continue;
      const [owner, claimant] = a.order < c.order ? [a, c] : [c, a];
      const port = Math.max(a.port.hostStart, c.port.hostStart);
      const proto = c.port.proto;
      throw conflict(
        `${proto} port ${port} on ${hostText(claimant)} is already published by network ${owner.network} endpoint ${owner.port.endpoint} (on ${hostText(owner)}); network ${claimant.network} endpoint ${claimant.port.endpoint} cannot publish it too`,
        {
          proto,
          port,
          hostIp: hostText(claimant),
          owner: { network: owner.network, endpoint: owner.port.endpoint },
          claimant: { network: claimant.network, endpoint: claimant.port.endpoint },
        },
      );
    }
    active.push(c);
  }
}

/**
 * Validate a state and bring it into normal form.
 * @throws WeftError INVALID: a malformed id, bridge name, subnet, address or port mapping.
 * @throws WeftError CONFLICT: two networks with one id, bridge or overlapping subnets; two
 *   endpoints of a network with one id or address; a host port published twice.
 * @throws WeftError UNSUPPORTED: a port published on ::1.
 */
export function planFirewall(state: FirewallState): Plan {
  if (!state || !Array.isArray(state.networks)) throw invalid('firewall state has no networks list');
  // One apply renders a state several ways (and diffs against the previous one): plan it once.
  // States are immutable values, so the plan of an object stays valid while the object lives.
  const known = plans.get(state);
  if (known) return known;
  const plan = planNow(state);
  plans.set(state, plan);
  return plan;
}

const plans = new WeakMap<FirewallState, Plan>();

function planNow(state: FirewallState): Plan {
  const networks = state.networks.map(planNetwork);
  for (let i = 0; i < networks.length; i++) {
    const a = networks[i]!;
    for (let j = 0; j < i; j++) {
      const b = networks[j]!;
      if (a.id === b.id) throw conflict(`two networks have the id ${a.id}`, { network: a.id });
      if (a.bridge === b.bridge) {
        throw conflict(`networks ${b.id} and ${a.id} both use bridge ${a.bridge}`, {
          network: a.id,
          owner: b.id,
          bridge: a.bridge,
        });
      }
    }
  }
  const subnets = networks.flatMap((n) => n.subnets.map((s) => ({ s, network: n.id })));
  for (let i = 0; i < subnets.length; i++) {
    for (let j = 0; j < i; j++) {
      const a = subnets[i]!;
      const b = subnets[j]!;
      if (overlaps(a.s, b.s)) {
        throw conflict(
          `subnet ${formatIPNet(a.s)} of network ${a.network} overlaps ${formatIPNet(b.s)} of network ${b.network}`,
          { network: a.network, owner: b.network, subnet: formatIPNet(a.s) },
        );
      }
    }
  }
  checkPortClaims(networks);
  return { networks };
}
