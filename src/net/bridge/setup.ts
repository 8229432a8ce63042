/**
 * The bridge driver's network-level setup as small named, idempotent steps (moby's
 * `setup_*.go`): validate, ensureBridge, ensureGateway, ensureForwarding. Each takes the HOST
 * namespace handle it works in (the root namespace in production, a lab "host" in tests).
 */
import * as crypto from 'node:crypto';
import type { NetHandle } from '../../kernel/handle.js';
import { invalid, WeftError } from '../../lib/errors.js';
import { containsIP, formatIP, formatIPNet, type IPNet, ipEqual, networkOf } from '../../lib/ip.js';
import { checkIfName } from '../../lib/names.js';
import type { BridgeLink } from '../../netlink/link.js';
import type { EndpointSpec, NetworkSpec, SubnetSpec } from '../driver.js';

export const MTU_MIN = 68;
export const MTU_MAX = 65535;

/** Throws INVALID unless the network spec is usable by the bridge driver. Changes nothing. */
export function validateNetwork(net: NetworkSpec): void {
  if (net.id.length === 0) throw invalid('network id must not be empty');
  checkIfName(net.bridge, 'bridge name');
  validateMtuAndSubnets(net);
}

/**
 * The checks every L2 driver (bridge, macvlan) makes of a network: MTU in range, subnets in
 * canonical form with their gateway inside. Throws INVALID naming the problem. Changes nothing.
 */
export function validateMtuAndSubnets(net: NetworkSpec): void {
  if (!Number.isInteger(net.mtu) || net.mtu < MTU_MIN || net.mtu > MTU_MAX) {
    throw invalid(`network ${net.name}: MTU ${net.mtu} is out of range (${MTU_MIN}-${MTU_MAX})`, {
      mtu: net.mtu,
    });
  }
  for (const s of net.subnets) {
    const sub = formatIPNet(s.subnet);
    if (!ipEqual(networkOf(s.subnet).ip, s.subnet.ip)) {
      throw invalid(`network ${net.name}: subnet ${sub} has host bits set`, { subnet: sub });
    }
    if (!containsIP(s.subnet, s.gateway)) {
      throw invalid(`network ${net.name}: gateway ${formatIP(s.gateway)} is outside subnet ${sub}`, {
        subnet: sub,
        gateway: formatIP(s.gateway),
      });
    }
  }
}

/**
 * In the sandbox (`sb`), a default route via the network's gateway on `ep`'s interface for each
 * family of its addresses that has none yet (none on an internal network). Returns the families
 * it added. Shared by the L2 drivers' join, and by a disconnect that took the default route away.
 */
export function ensureDefaultRoutes(sb: NetHandle, net: NetworkSpec, ep: EndpointSpec): (4 | 6)[] {
  const added: (4 | 6)[] = [];
  if (net.internal) return added;
  for (const a of ep.addresses) {
    const family = a.ip.family;
    if (sb.routes.list({ family, dst: 'default' }).length > 0) continue;
    sb.routes.add({ dst: 'default', family, via: formatIP(subnetFor(net, a).gateway), dev: ep.ifname });
    added.push(family);
  }
  return added;
}

/** The subnet of `net` an endpoint address belongs to; INVALID when none does. */
export function subnetFor(net: NetworkSpec, addr: IPNet): SubnetSpec {
  const s = net.subnets.find((x) => containsIP(x.subnet, addr.ip));
  if (!s) {
    throw invalid(`address ${formatIPNet(addr)} is in no subnet of network ${net.name}`, {
      addr: formatIPNet(addr),
    });
  }
  if (s.subnet.len !== addr.len) {
    throw invalid(
      `address ${formatIPNet(addr)} must have the prefix length of its subnet ${formatIPNet(s.subnet)}`,
    );
  }
  if (ipEqual(s.gateway, addr.ip)) {
    throw invalid(`address ${formatIPNet(addr)} is the gateway of network ${net.name}`);
  }
  return s;
}

/** Throws INVALID unless the endpoint fits the network. Changes nothing. */
export function validateEndpoint(net: NetworkSpec, ep: EndpointSpec): void {
  if (ep.id.length < 7) throw invalid(`endpoint id "${ep.id}" is too short (at least 7 characters)`);
  if (ep.networkId !== net.id) {
    throw invalid(`endpoint ${ep.id} belongs to network ${ep.networkId}, not ${net.id}`);
  }
  checkIfName(ep.ifname, 'sandbox interface name');
  checkIfName(hostVethName(ep), 'host veth name');
  if (ep.mac !== undefined && !/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(ep.mac)) {
    throw invalid(`"${ep.mac}" is not a MAC address`, { mac: ep.mac });
  }
  const fams = new Set<number>();
  for (const a of ep.addresses) {
    subnetFor(net, a);
    if (fams.has(a.ip.family)) throw invalid(`endpoint ${ep.id} has two IPv${a.ip.family} addresses`);
    fams.add(a.ip.family);
  }
}

/** Host end of an endpoint's veth pair: `veth` + the first 7 characters of the endpoint id. */
export const hostVethName = (ep: Pick<EndpointSpec, 'id'>): string => `veth${ep.id.slice(0, 7)}`;

/** True when a link name is one of weft's host veth ends. */
export const isWeftVeth = (name: string): boolean => /^veth[0-9a-zA-Z_.-]{7}$/.test(name);

/** The alias (IFLA_IFALIAS) of the bridges weft makes: what tells them from anyone else's. */
export const bridgeAlias = (networkId: string): string => `weft network ${networkId}`;
const isWeftBridge = (l: { alias?: string }): boolean => l.alias?.startsWith('weft network ') === true;

/** A random locally administered unicast MAC. */
function randomMac(): string {
  const b = crypto.randomBytes(6);
  b[0] = ((b[0] ?? 0) & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/**
 * Step 1: the bridge device, with the network's MTU, up, VLAN filtering off, marked weft's by its
 * alias. Returns whether it was created (so a transaction knows to undo it). CONFLICT, nothing
 * changed, when a non-bridge link, a bridge with VLAN filtering, or a bridge that is not weft's
 * (docker0…) holds the name: weft would otherwise change it and delete it with the network.
 * `restore` (a network weft already has, at the daemon's start) takes a bridge without the alias
 * as weft's (made before bridges carried it).
 *
 * A new bridge gets a fixed random MAC (as Docker does), so the gateway's MAC does not follow the
 * lowest port's as containers come and go (their neighbour entries would go stale).
 */
export function ensureBridge(
  h: NetHandle,
  net: Pick<NetworkSpec, 'id' | 'bridge' | 'mtu'>,
  opts: { restore?: boolean } = {},
): { created: boolean } {
  const before = h.links.find(net.bridge);
  if (before?.kind === 'bridge' && !isWeftBridge(before) && opts.restore !== true) {
    throw new WeftError(
      'CONFLICT',
      `bridge ${net.bridge} exists and is not weft's (no "weft network" alias): choose another bridge name`,
      { details: { link: net.bridge } },
    );
  }
  // VLAN filtering is off by default; not asked for explicitly because kernels built without
  // CONFIG_BRIDGE_VLAN_FILTERING refuse the attribute (EOPNOTSUPP). Checked on read-back instead.
  const br = h.links.ensure({
    kind: 'bridge',
    name: net.bridge,
    mtu: net.mtu,
    up: true,
    ...(before === undefined && { mac: randomMac() }),
  });
  if (br.kind === 'bridge' && br.vlanFiltering) {
    if (before === undefined) h.links.delete(net.bridge);
    throw new WeftError('CONFLICT', `bridge ${net.bridge} exists with VLAN filtering on`, {
      details: { link: net.bridge },
    });
  }
  try {
    if (!isWeftBridge(br)) h.links.setAlias(net.bridge, bridgeAlias(net.id));
  } catch (e) {
    if (before === undefined) h.links.delete(net.bridge);
    throw e;
  }
  return { created: before === undefined };
}

/**
 * Step 2: the gateway addresses on the bridge, each with its subnet's prefix length; IPv6 with
 * nodad so it answers at once. Returns the addresses it added (for undo). CONFLICT when the
 * bridge holds a gateway address with another prefix length.
 */
export function ensureGateway(h: NetHandle, net: Pick<NetworkSpec, 'bridge' | 'subnets'>): IPNet[] {
  const added: IPNet[] = [];
  for (const s of net.subnets) {
    const gw: IPNet = { ip: s.gateway, len: s.subnet.len };
    const had = h.addrs
      .list({ dev: net.bridge, family: gw.ip.family })
      .some((a) => ipEqual(a.ipnet.ip, gw.ip));
    h.addrs.ensure(net.bridge, gw, gw.ip.family === 6 ? { noDad: true } : {});
    if (!had) added.push(gw);
  }
  return added;
}

/**
 * Step 3: forwarding in the host namespace: net.ipv4.ip_forward=1, and
 * net.ipv6.conf.all.forwarding=1 when the network has an IPv6 subnet. Never turned off again
 * (other networks and the host may rely on it), so there is nothing to undo.
 */
export function ensureForwarding(h: NetHandle, net: Pick<NetworkSpec, 'subnets'>): void {
  if (net.subnets.some((s) => s.gateway.family === 4)) h.sysctl.ensure('net.ipv4.ip_forward', 1);
  if (net.subnets.some((s) => s.gateway.family === 6)) h.sysctl.ensure('net.ipv6.conf.all.forwarding', 1);
}

/**
 * Remove the bridge (idempotent). BUSY when a port that is not one of weft's veths is enslaved
 * to it (an uplink someone added); weft's own veth ports (orphans) go with it. CONFLICT when the
 * name belongs to a link that is not a bridge.
 */
export function removeBridge(h: NetHandle, name: string): void {
  const br = h.links.find(name);
  if (!br) return;
  if (br.kind !== 'bridge') {
    throw new WeftError('CONFLICT', `link "${name}" is a ${br.kind}, not a bridge: not removing it`, {
      details: { link: name },
    });
  }
  const ports = h.links.list().filter((l) => l.masterIndex === (br as BridgeLink).index);
  const foreign = ports.filter((p) => !isWeftVeth(p.name)).map((p) => p.name);
  if (foreign.length > 0) {
    throw new WeftError('BUSY', `bridge ${name} still has ports weft does not own: ${foreign.join(', ')}`, {
      details: { bridge: name, ports: foreign },
    });
  }
  for (const p of ports) h.links.delete(p.name);
  h.links.delete(name);
}
