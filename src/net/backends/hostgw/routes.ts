/**
 * The route-based base shared by host-gw and by vxlan's DirectRouting: peer lease checks, the
 * "is this peer on my L2 segment" test, and a reconciler that brings the routes a backend owns
 * to exactly a desired set.
 *
 * What a backend owns is decided by shape, never by memory, so a restarted daemon (or one whose
 * routes someone edited) finds its routes again: an IPv4 route of the main table whose
 * destination is a subnet of the cluster network (longer prefix than the network itself), out
 * of one of the backend's devices, and, on the underlay interface, with a gateway. Routes of
 * other tables, outside the cluster network, without a gateway on the underlay (a host's own
 * bridge route, say), or on other devices are never touched.
 */
import type { NetHandle } from '../../../kernel/handle.js';
import {
  containsIP,
  containsNet,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
  ipEqual,
  maskIP,
} from '../../../lib/ip.js';
import type { Logger } from '../../../lib/log.js';
import type { Route } from '../../../netlink/route.js';
import type { BackendContext, LeaseInfo } from '../types.js';

/** A peer lease that passed the checks: IPv4 subnet of the cluster network, IPv4 public IP. */
export interface CheckedPeer {
  readonly subnet: IPNet;
  readonly publicIp: IPAddr;
  /** `10.244.2.0/24`, the key peers are known by. */
  readonly key: string;
}

const isIPNet = (v: unknown): v is IPNet => {
  const n = v as IPNet | null | undefined;
  return (
    typeof n === 'object' &&
    n !== null &&
    typeof n.ip === 'object' &&
    n.ip !== null &&
    (n.ip.family === 4 || n.ip.family === 6) &&
    Number.isInteger(n.len)
  );
};

/**
 * Check a peer lease for a backend of `type` on this host; returns the peer, or the reason it
 * must be skipped (a different backend type, a subnet outside the cluster network, the host's
 * own subnet, IPv6, malformed values). Never throws.
 */
export function checkPeer(
  ctx: BackendContext,
  peer: LeaseInfo,
  type: string,
  own: LeaseInfo | undefined,
): CheckedPeer | string {
  if (typeof peer !== 'object' || peer === null) return 'the lease is not an object';
  if (peer.backendType !== type) return `backend type is ${JSON.stringify(peer.backendType)}, not ${type}`;
  const { subnet, publicIp } = peer;
  if (!isIPNet(subnet) || subnet.ip.family !== 4 || subnet.len < 0 || subnet.len > 32) {
    return 'the subnet is not an IPv4 prefix';
  }
  const key = formatIPNet(subnet);
  if (!ipEqual(maskIP(subnet.ip, subnet.len), subnet.ip)) return `subnet ${key} has host bits set`;
  if (!containsNet(ctx.network, subnet) || subnet.len <= ctx.network.len) {
    return `subnet ${key} is not a subnet of the cluster network ${formatIPNet(ctx.network)}`;
  }
  if (typeof publicIp !== 'object' || publicIp === null || publicIp.family !== 4) {
    return 'the public IP is not an IPv4 address';
  }
  if (own && formatIPNet(own.subnet) === key) return `subnet ${key} is this host's own`;
  return { subnet, publicIp, key };
}

/** The first address of the subnet (flannel's VTEP address and on-link gateway): 10.244.2.0. */
export const subnetAddr = (subnet: IPNet): IPAddr => maskIP(subnet.ip, subnet.len);

/** The IPv4 prefixes of the underlay interface's addresses (what `onLink` tests against). */
export function underlayNets(ctx: BackendContext): IPNet[] {
  return ctx.host.addrs
    .list({ dev: ctx.iface.name, family: 4 })
    .map((a) => a.ipnet)
    .filter((n) => n.len < 32);
}

/**
 * True when `ip` is on the same subnet as one of the underlay interface's IPv4 addresses
 * (reachable without a router: host-gw's requirement, vxlan DirectRouting's condition). Pass
 * `nets` (from `underlayNets`) to test many addresses against one reading.
 */
export function onLink(ctx: BackendContext, ip: IPAddr, nets: readonly IPNet[] = underlayNets(ctx)): boolean {
  return nets.some((n) => containsIP(n, ip));
}

/** One route a backend wants: `dst via gateway dev <dev> [onlink]`, table main, metric 0. */
export interface WantedRoute {
  readonly dst: IPNet;
  readonly via: IPAddr;
  readonly dev: string;
  readonly onlink: boolean;
}

/** The direct route to a peer's subnet: via its public IP out of the underlay interface. */
export const directRoute = (ctx: BackendContext, peer: CheckedPeer): WantedRoute => ({
  dst: peer.subnet,
  via: peer.publicIp,
  dev: ctx.iface.name,
  onlink: false,
});

export const describeRoute = (w: WantedRoute): string =>
  `${formatIPNet(w.dst)} via ${formatIP(w.via)} dev ${w.dev}${w.onlink ? ' onlink' : ''}`;

/** Add the route or replace the one of the same destination (table main, metric 0). */
export function replaceRoute(h: NetHandle, w: WantedRoute): void {
  h.routes.replace({ dst: w.dst, via: w.via, dev: w.dev, ...(w.onlink && { onlink: true }) });
}

const MAIN = 254;

/**
 * The routes this backend owns now (see the note at the top): main table, IPv4, destination a
 * subnet of the cluster network, out of `devices` (name → index; missing devices are skipped),
 * and with a gateway when out of the underlay interface.
 */
export function ownedRoutes(
  ctx: BackendContext,
  devices: readonly string[],
): { route: Route; dev: string; dst: IPNet }[] {
  const byIndex = new Map<number, string>();
  for (const name of devices) {
    const l = ctx.host.links.find(name);
    if (l) byIndex.set(l.index, name);
  }
  const out: { route: Route; dev: string; dst: IPNet }[] = [];
  for (const r of ctx.host.routes.list({ family: 4 })) {
    const dev = r.oif === undefined ? undefined : byIndex.get(r.oif);
    const dst = r.dst;
    if (dev === undefined || dst === undefined || r.table !== MAIN || r.type !== 'unicast') continue;
    if (!containsNet(ctx.network, dst) || dst.len <= ctx.network.len) continue;
    if (dev === ctx.iface.name && r.gateway === undefined) continue;
    out.push({ route: r, dev, dst });
  }
  return out;
}

const matches = (r: Route, dev: string, w: WantedRoute): boolean =>
  r.priority === 0 &&
  r.gateway !== undefined &&
  ipEqual(r.gateway, w.via) &&
  dev === w.dev &&
  r.onlink === w.onlink &&
  r.nexthops === undefined;

/** Delete one owned route exactly as read back. Gone already is success. */
export function deleteOwned(h: NetHandle, o: { route: Route; dev: string; dst: IPNet }): void {
  h.routes.delete({
    dst: o.dst,
    dev: o.dev,
    metric: o.route.priority,
    ...(o.route.gateway !== undefined && { via: o.route.gateway }),
  });
}

export interface SyncCounts {
  added: number;
  fixed: number;
  removed: number;
}

/**
 * Bring the owned routes out of `devices` to exactly `wanted` (one per destination): keep what
 * matches, replace what drifted (same destination, other gateway, device or flags), delete the
 * rest, add what is missing. Kernel errors propagate (what was done before stays done; the next
 * resync carries on).
 */
export function syncRoutes(
  ctx: BackendContext,
  devices: readonly string[],
  wanted: ReadonlyMap<string, WantedRoute>,
  log: Logger,
): SyncCounts {
  const counts: SyncCounts = { added: 0, fixed: 0, removed: 0 };
  const owned = ownedRoutes(ctx, devices);
  // 1. What already matches; 2. one route per wanted destination that drifted (it is replaced in
  // place: same destination, table and metric); 3. everything else is stale.
  const done = new Set<string>();
  const rest: typeof owned = [];
  for (const o of owned) {
    const key = formatIPNet(o.dst);
    const w = wanted.get(key);
    if (w && !done.has(key) && matches(o.route, o.dev, w)) done.add(key);
    else rest.push(o);
  }
  const drifted = new Set<string>();
  const stale: typeof owned = [];
  for (const o of rest) {
    const key = formatIPNet(o.dst);
    if (wanted.has(key) && !done.has(key) && !drifted.has(key) && o.route.priority === 0) drifted.add(key);
    else stale.push(o);
  }
  for (const [key, w] of wanted) {
    if (done.has(key)) continue;
    replaceRoute(ctx.host, w);
    if (drifted.has(key)) {
      counts.fixed++;
      log.info('route repaired', { route: describeRoute(w) });
    } else {
      counts.added++;
      log.info('route restored', { route: describeRoute(w) });
    }
  }
  for (const o of stale) {
    deleteOwned(ctx.host, o);
    counts.removed++;
    log.info('stale route removed', {
      route: `${formatIPNet(o.dst)}${o.route.gateway ? ` via ${formatIP(o.route.gateway)}` : ''} dev ${o.dev}`,
      metric: o.route.priority,
    });
  }
  return counts;
}

/**
 * Log a skipped peer at most once per (subnet, reason) until `forget` is called for it: a
 * malformed lease stays malformed, and the resync loop would otherwise repeat it every period.
 */
export class SkipLog {
  readonly #seen = new Set<string>();
  constructor(private readonly log: Logger) {}

  skip(peer: LeaseInfo, reason: string, always = false): void {
    const subnet = isIPNet(peer?.subnet) ? formatIPNet(peer.subnet) : String(peer?.subnet);
    const k = `${subnet}|${reason}`;
    if (!always && this.#seen.has(k)) return;
    this.#seen.add(k);
    this.log.warn('peer lease skipped', { subnet, reason });
  }

  forget(peer: LeaseInfo): void {
    const subnet = isIPNet(peer?.subnet) ? formatIPNet(peer.subnet) : String(peer?.subnet);
    for (const k of this.#seen) if (k.startsWith(`${subnet}|`)) this.#seen.delete(k);
  }
}
