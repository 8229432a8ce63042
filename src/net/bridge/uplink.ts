/**
 * The bridge option `-o uplink=IFACE`: put a bridge network's containers on the same L2 network
 * as the host, as one does by hand (`ip link set eth0 master br0`, then move eth0's addresses and
 * default route to br0). The host interface IFACE becomes a port of the network's bridge; its
 * addresses and its gateway routes (the default route, and any other route via a gateway out of
 * IFACE that a person or DHCP added) move onto the bridge, so the host keeps its connectivity;
 * containers given addresses of the LAN's subnet then talk to the LAN directly, and the network's
 * gateway is the LAN's router (the bridge driver does not put a gateway address on such a bridge).
 *
 * Steps (each idempotent, each undo pushed on the caller's rollback stack):
 *   attach: bridge MAC := IFACE's MAC (the LAN's neighbour caches stay right, and the bridge MAC
 *           no longer changes as veths come and go) → enslave IFACE → take the routes, then the
 *           addresses off IFACE → put the addresses, then the routes on the bridge.
 *   detach: the reverse: routes and addresses off the bridge → release IFACE → addresses, then
 *           routes back on IFACE → the bridge's MAC as it was.
 * What was moved is returned as an `UplinkRecord` (plain JSON: the control layer persists it)
 * and accepted back by a later attach (after a restart) or by detach. Without a record, an
 * attached uplink is read back from the kernel (`readUplink`): every global address and gateway
 * route the bridge carries counts as moved.
 *
 * Left alone: IPv6 link-local addresses and kernel / router-advertisement routes (the kernel
 * makes them again on each device); address lifetimes (moved addresses are permanent).
 */
import type { NetHandle } from '../../kernel/handle.js';
import { invalid, WeftError } from '../../lib/errors.js';
import { type Family, formatIP, formatIPNet, ipEqual, parseIP, parseIPNet } from '../../lib/ip.js';
import { checkIfName } from '../../lib/names.js';
import type { Rollback } from '../../lib/rollback.js';
import type { Addr } from '../../netlink/addr.js';
import { IFA_F, RT_SCOPE, RTPROT } from '../../netlink/consts.js';
import type { Route } from '../../netlink/route.js';
import type { NetworkSpec } from '../driver.js';

/** A route moved with the uplink: always a gateway route of the main table. */
export interface UplinkRoute {
  readonly family: Family;
  /** `default` or a prefix (`10.0.0.0/8`). */
  readonly dst: string;
  readonly via: string;
  readonly metric: number;
  /** RTPROT_* it had (boot, static, dhcp…), kept so that its owner still recognises it. */
  readonly protocol: number;
  readonly onlink: boolean;
}

/** What an attach moved from the uplink to the bridge: JSON, to persist and hand back. */
export interface UplinkRecord {
  readonly iface: string;
  readonly bridge: string;
  /** Addresses with their prefix lengths (`203.0.113.2/24`), IPv4 primaries first. */
  readonly addresses: readonly string[];
  readonly routes: readonly UplinkRoute[];
  /** The bridge's MAC before it took the uplink's, restored by detach; absent when unknown. */
  readonly bridgeMac?: string;
}

/** Routes of these protocols are the kernel's own (or a router advertisement's): not moved. */
const KERNEL_PROTOCOLS = new Set<number>([RTPROT.KERNEL, 9 /* RTPROT_RA */]);

/**
 * Check, before anything changes, that `iface` can be the uplink of `net`'s bridge. Throws
 * INVALID for a bad name, the bridge itself, a bridge as uplink, or an uplink MTU below the
 * network's; NOT_FOUND when it does not exist; CONFLICT when it is a port of another master.
 */
export function checkUplink(
  h: NetHandle,
  net: Pick<NetworkSpec, 'name' | 'bridge' | 'mtu'>,
  iface: string,
): void {
  checkIfName(iface, 'uplink interface');
  if (iface === net.bridge) throw invalid(`network ${net.name}: the uplink cannot be the bridge itself`);
  const up = h.links.find(iface);
  if (!up) {
    throw new WeftError('NOT_FOUND', `network ${net.name}: uplink interface "${iface}" does not exist`, {
      details: { uplink: iface },
    });
  }
  if (up.kind === 'bridge')
    throw invalid(`network ${net.name}: uplink ${iface} is a bridge; give a port device`);
  if (up.masterIndex !== undefined) {
    const br = h.links.find(net.bridge);
    if (br === undefined || br.index !== up.masterIndex) {
      throw new WeftError(
        'CONFLICT',
        `network ${net.name}: uplink ${iface} is already a port of another master`,
        {
          details: { uplink: iface, master: h.links.find(up.masterIndex)?.name ?? up.masterIndex },
        },
      );
    }
  }
  if (up.mtu < net.mtu) {
    throw invalid(
      `network ${net.name}: MTU ${net.mtu} exceeds uplink ${iface}'s MTU ${up.mtu}; use -o mtu=${up.mtu}`,
      { uplink: iface, mtu: net.mtu, uplinkMtu: up.mtu },
    );
  }
}

/**
 * Attach `iface` to `bridge` and move its addresses and gateway routes onto the bridge, pushing
 * each undo on `rb`. Idempotent: on an uplink attached already, it moves what is still on
 * `iface` (nothing, normally) and puts back on the bridge what `previous` (or the kernel) says
 * was moved. Returns the record of everything moved. Throws NOT_FOUND when a link is missing,
 * CONFLICT when `iface` is a port of another master, INVALID when `previous` is of another
 * pair; kernel refusals as they come (the caller's transaction undoes what was done).
 */
export function attachUplink(
  h: NetHandle,
  bridge: string,
  iface: string,
  rb: Rollback,
  previous?: UplinkRecord,
): UplinkRecord {
  checkRecord(previous, bridge, iface);
  const br = h.links.get(bridge);
  const up = h.links.get(iface);
  const attached = up.masterIndex === br.index;
  if (up.masterIndex !== undefined && !attached) {
    throw new WeftError('CONFLICT', `uplink ${iface} is already a port of another master`, {
      details: { uplink: iface },
    });
  }
  const prior = previous ?? (attached ? readUplink(h, bridge, iface) : undefined);
  const bridgeMac = prior ? prior.bridgeMac : br.mac;

  const oldMac = br.mac;
  if (up.mac !== undefined && oldMac !== undefined && oldMac !== up.mac) {
    h.links.setMac(bridge, up.mac);
    rb.push(`give ${bridge} its MAC back`, () => h.links.setMac(bridge, oldMac));
  }
  if (!attached) {
    h.links.setMaster(iface, bridge);
    rb.push(`release ${iface} from ${bridge}`, () => h.links.setMaster(iface, null));
  }

  // Off the uplink: routes first (they need the addresses), then addresses, secondaries first.
  const routes = movableRoutes(h, iface);
  for (const r of routes) {
    h.routes.delete(routeSpec(r, iface));
    rb.push(`route ${r.dst} back on ${iface}`, () => void h.routes.replace(routeSpec(r, iface)));
  }
  const addrs = movableAddrs(h, iface);
  for (const a of [...addrs].reverse()) {
    h.addrs.delete(iface, a);
    rb.push(`address ${a} back on ${iface}`, () => void h.addrs.ensure(iface, a, addrOpts(a)));
  }

  // Onto the bridge: what moves now and what an earlier attach moved (repairing drift). An
  // uplink that was not on the bridge and has addresses of its own (after a reboot: the bridge
  // is new, DHCP may have given another address) is the truth; the record would add stale ones.
  const stale = !attached && addrs.length > 0;
  const allAddrs = stale ? addrs : union(prior?.addresses ?? [], addrs, (x, y) => x === y);
  const allRoutes = stale ? routes : union(prior?.routes ?? [], routes, sameRoute);
  for (const a of allAddrs) {
    if (hasAddr(h, bridge, a)) continue;
    h.addrs.ensure(bridge, a, addrOpts(a));
    rb.push(`address ${a} off ${bridge}`, () => h.addrs.delete(bridge, a));
  }
  for (const r of allRoutes) {
    if (hasRoute(h, bridge, r)) continue;
    h.routes.replace(routeSpec(r, bridge));
    rb.push(`route ${r.dst} off ${bridge}`, () => h.routes.delete(routeSpec(r, bridge)));
  }
  return {
    iface,
    bridge,
    addresses: allAddrs,
    routes: allRoutes,
    ...(bridgeMac !== undefined && { bridgeMac }),
  };
}

/**
 * Give back what an attach moved: routes and addresses off the bridge, `iface` released,
 * addresses and routes back on `iface`, the bridge's MAC as it was; each undo pushed on `rb`.
 * Idempotent: what is already back is left as it is. Without `record` the attached state is
 * read from the kernel (nothing to do when `iface` is not a port of `bridge`). A missing bridge
 * (its addresses went with it) or a missing `iface` (nothing can go back) is skipped. Throws
 * INVALID when `record` is of another pair; kernel refusals as they come.
 */
export function detachUplink(
  h: NetHandle,
  bridge: string,
  iface: string,
  rb: Rollback,
  record?: UplinkRecord,
): void {
  checkRecord(record, bridge, iface);
  const br = h.links.find(bridge);
  const up = h.links.find(iface);
  const rec = record ?? (br && up ? readUplink(h, bridge, iface) : undefined);
  if (!rec) return;
  if (br) {
    for (const r of rec.routes) {
      if (!hasRoute(h, bridge, r)) continue;
      h.routes.delete(routeSpec(r, bridge));
      rb.push(`route ${r.dst} back on ${bridge}`, () => void h.routes.replace(routeSpec(r, bridge)));
    }
    for (const a of [...rec.addresses].reverse()) {
      if (!hasAddr(h, bridge, a)) continue;
      h.addrs.delete(bridge, a);
      rb.push(`address ${a} back on ${bridge}`, () => void h.addrs.ensure(bridge, a, addrOpts(a)));
    }
  }
  if (br && up && up.masterIndex === br.index) {
    h.links.setMaster(iface, null);
    rb.push(`enslave ${iface} to ${bridge} again`, () => h.links.setMaster(iface, bridge));
  }
  if (up) {
    for (const a of rec.addresses) {
      if (hasAddr(h, iface, a)) continue;
      h.addrs.ensure(iface, a, addrOpts(a));
      rb.push(`address ${a} off ${iface}`, () => h.addrs.delete(iface, a));
    }
    for (const r of rec.routes) {
      if (hasRoute(h, iface, r)) continue;
      h.routes.replace(routeSpec(r, iface));
      rb.push(`route ${r.dst} off ${iface}`, () => h.routes.delete(routeSpec(r, iface)));
    }
  }
  const mac = br?.mac;
  if (rec.bridgeMac !== undefined && mac !== undefined && mac !== rec.bridgeMac) {
    h.links.setMac(bridge, rec.bridgeMac);
    rb.push(`give ${bridge} the uplink's MAC again`, () => h.links.setMac(bridge, mac));
  }
}

/**
 * The record of an attached uplink as the kernel shows it (for when none was persisted): the
 * bridge's global addresses and gateway routes. Undefined when `iface` is not a port of
 * `bridge` (or either is missing). The bridge's MAC before the attach is not known then.
 */
export function readUplink(h: NetHandle, bridge: string, iface: string): UplinkRecord | undefined {
  const br = h.links.find(bridge);
  const up = h.links.find(iface);
  if (!br || !up || up.masterIndex !== br.index) return undefined;
  return { iface, bridge, addresses: movableAddrs(h, bridge), routes: movableRoutes(h, bridge) };
}

// ---- helpers ----------------------------------------------------------------------------------

function checkRecord(rec: UplinkRecord | undefined, bridge: string, iface: string): void {
  if (rec && (rec.bridge !== bridge || rec.iface !== iface)) {
    throw invalid(`uplink record is of ${rec.iface} on ${rec.bridge}, not of ${iface} on ${bridge}`);
  }
}

/** Global (and site) addresses of `dev`, IPv4 primaries first, as text. */
function movableAddrs(h: NetHandle, dev: string): string[] {
  const isSecondary = (x: Addr) => (x.flags & IFA_F.SECONDARY) !== 0;
  return h.addrs
    .list({ dev })
    .filter((x) => x.scope < RT_SCOPE.LINK)
    .sort((x, y) => Number(isSecondary(x)) - Number(isSecondary(y)))
    .map((x) => formatIPNet(x.ipnet));
}

/** Gateway routes of the main table out of `dev`, not the kernel's or a router advertisement's. */
function movableRoutes(h: NetHandle, dev: string): UplinkRoute[] {
  return h.routes
    .list({ dev })
    .filter(
      (r): r is Route & { gateway: NonNullable<Route['gateway']> } =>
        r.gateway !== undefined &&
        r.type === 'unicast' &&
        r.nexthops === undefined &&
        !KERNEL_PROTOCOLS.has(r.protocol),
    )
    .map((r) => ({
      family: r.family,
      dst: r.dst === undefined ? 'default' : formatIPNet(r.dst),
      via: formatIP(r.gateway),
      metric: r.priority,
      protocol: r.protocol,
      onlink: r.onlink,
    }));
}

const addrOpts = (a: string) => (parseIPNet(a).ip.family === 6 ? { noDad: true } : {});

function routeSpec(r: UplinkRoute, dev: string) {
  return {
    dst: r.dst,
    family: r.family,
    via: r.via,
    dev,
    metric: r.metric,
    protocol: r.protocol,
    ...(r.onlink && { onlink: true }),
  };
}

function hasAddr(h: NetHandle, dev: string, a: string): boolean {
  const want = parseIPNet(a);
  return h.addrs
    .list({ dev, family: want.ip.family })
    .some((x) => ipEqual(x.ipnet.ip, want.ip) && x.ipnet.len === want.len);
}

function hasRoute(h: NetHandle, dev: string, r: UplinkRoute): boolean {
  const via = parseIP(r.via);
  return h.routes
    .list({ dev, family: r.family, dst: r.dst })
    .some((x) => x.gateway !== undefined && ipEqual(x.gateway, via) && x.priority === r.metric);
}

function sameRoute(x: UplinkRoute, y: UplinkRoute): boolean {
  return x.family === y.family && x.dst === y.dst && x.via === y.via && x.metric === y.metric;
}

function union<T>(a: readonly T[], b: readonly T[], eq: (x: T, y: T) => boolean): T[] {
  const out = [...a];
  for (const y of b) if (!out.some((x) => eq(x, y))) out.push(y);
  return out;
}
