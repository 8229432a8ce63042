/**
 * The macvlan driver: containers directly on the parent interface's L2 segment ("a container on
 * the same network as the host"), each with a MAC of its own, an address from the network's
 * subnet and, as default route, the network's gateway: a router on that segment (the LAN's),
 * NOT an address weft assigns on the host. Options: `-o parent=IFACE` (required) and
 * `-o macvlan_mode=bridge|vepa|private|passthru` (default bridge: sandboxes on one parent reach
 * each other inside the kernel).
 *
 * How it works: `createNetwork` only validates (the parent must exist in the host namespace;
 * nothing is changed on it, so `deleteNetwork` has nothing to undo there). `join` runs one
 * transaction: create the macvlan on the parent DIRECTLY in the sandbox's namespace under a
 * unique temporary name (no name clash in the host, no move step), rename it to the
 * endpoint's ifname, set the MAC, add the addresses, set it up, add the default route via the
 * gateway (unless internal, or the sandbox has one already). Any failure deletes the macvlan,
 * so nothing is half-made. `leave` deletes it (idempotent).
 *
 * Known macvlan property (kernel design, not a weft choice): the host cannot reach its own
 * macvlan children through the parent, and vice versa; peers on the wire and other macvlans of
 * the same parent (bridge mode) can. The MTU is the network's, clamped to the parent's (a
 * macvlan cannot exceed its parent). Cost: a join is ~6 synchronous netlink requests.
 */
import type { NetHandle } from '../../kernel/handle.js';
import { openHandle } from '../../kernel/handle.js';
import { invalid, notFound, WeftError } from '../../lib/errors.js';
import { checkIfName } from '../../lib/names.js';
import { transaction } from '../../lib/rollback.js';
import type { MacvlanMode } from '../../netlink/link.js';
import { tempIfName } from '../bridge/endpoint.js';
import { ensureDefaultRoutes, subnetFor, validateMtuAndSubnets } from '../bridge/setup.js';
import type { EndpointSpec, LeaveOptions, NetworkDriver, NetworkSpec, SandboxRef } from '../driver.js';

/** The macvlan modes a network may ask for (`source` needs a MAC list weft does not manage). */
export const MACVLAN_MODES = ['bridge', 'vepa', 'private', 'passthru'] as const;
export type MacvlanNetworkMode = (typeof MACVLAN_MODES)[number] & MacvlanMode;

/** A macvlan network's options as parsed from `net.options`. */
export interface MacvlanOptions {
  readonly parent: string;
  readonly mode: MacvlanNetworkMode;
}

/**
 * Parse and check the network spec (id, MTU range, subnets and gateways, `parent`,
 * `macvlan_mode`); no kernel access. Throws INVALID naming the problem.
 */
export function parseMacvlanNetwork(net: NetworkSpec): MacvlanOptions {
  if (net.id.length === 0) throw invalid('network id must not be empty');
  validateMtuAndSubnets(net);
  const parent = net.options.parent;
  if (parent === undefined || parent === '') {
    throw invalid(`macvlan network ${net.name} needs a parent interface: -o parent=IFACE`, {
      network: net.id,
      option: 'parent',
    });
  }
  checkIfName(parent, 'macvlan parent interface');
  const mode = net.options.macvlan_mode ?? 'bridge';
  if (!(MACVLAN_MODES as readonly string[]).includes(mode)) {
    throw invalid(
      `macvlan network ${net.name}: macvlan_mode "${mode}" is not one of ${MACVLAN_MODES.join(', ')}`,
      { network: net.id, option: 'macvlan_mode', value: mode },
    );
  }
  return { parent, mode: mode as MacvlanNetworkMode };
}

/** Throws INVALID unless the endpoint fits the network (ifname, MAC, addresses). Changes nothing. */
export function validateMacvlanEndpoint(net: NetworkSpec, ep: EndpointSpec): void {
  if (ep.id.length === 0) throw invalid('endpoint id must not be empty');
  if (ep.networkId !== net.id) {
    throw invalid(`endpoint ${ep.id} belongs to network ${ep.networkId}, not ${net.id}`);
  }
  checkIfName(ep.ifname, 'sandbox interface name');
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

export interface MacvlanDriverOptions {
  /** The host namespace's handle, where the parent interfaces live. */
  readonly host: NetHandle;
}

export class MacvlanDriver implements NetworkDriver {
  readonly name = 'macvlan';
  readonly #host: NetHandle;
  /** Networks created here, by id. */
  readonly #nets = new Map<string, { net: NetworkSpec; opts: MacvlanOptions }>();

  constructor(opts: MacvlanDriverOptions) {
    this.#host = opts.host;
  }

  /**
   * Validate and remember the network (idempotent; no kernel change). Throws INVALID for a bad
   * spec or option, NOT_FOUND naming the parent when it does not exist in the host namespace.
   */
  async createNetwork(net: NetworkSpec): Promise<void> {
    const opts = parseMacvlanNetwork(net);
    this.#parent(net, opts);
    this.#nets.set(net.id, { net, opts });
  }

  /** Forget the network (idempotent). The parent is left exactly as it is. */
  async deleteNetwork(net: NetworkSpec): Promise<void> {
    this.#nets.delete(net.id);
  }

  /** Validate only. NOT_FOUND for a network not created here, INVALID for bad input. */
  async createEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void> {
    this.#net(net);
    validateMacvlanEndpoint(net, ep);
  }

  /** Nothing to forget: the macvlan lives and dies with `join` / `leave`. */
  async deleteEndpoint(_net: NetworkSpec, _ep: EndpointSpec): Promise<void> {}

  /**
   * Create the endpoint's macvlan in the sandbox (all or nothing). Throws NOT_FOUND for an
   * unknown network or a parent that has gone, INVALID for bad input (nothing changed), EXISTS
   * when the sandbox already has an interface of that name, and what the kernel refuses (a
   * multicast MAC, a second macvlan on a passthru parent); the macvlan is deleted then.
   */
  async join(net: NetworkSpec, ep: EndpointSpec, sandbox: SandboxRef): Promise<void> {
    const { opts } = this.#net(net);
    validateMacvlanEndpoint(net, ep);
    const parent = this.#parent(net, opts);
    const mtu = Math.min(net.mtu, parent.mtu);
    const sb = openHandle(sandbox.ns);
    await transaction(async (rb) => {
      let name = tempIfName();
      this.#host.links.add({
        kind: 'macvlan',
        name,
        parent: opts.parent,
        mode: opts.mode,
        mtu,
        netns: sandbox.ns,
      });
      rb.push(`delete macvlan of ${ep.id}`, () => sb.links.delete(name));
      sb.links.rename(name, ep.ifname);
      name = ep.ifname;
      if (ep.mac !== undefined) sb.links.setMac(ep.ifname, ep.mac);
      sb.links.setUp(ep.ifname);
      for (const a of ep.addresses) sb.addrs.add(ep.ifname, a, a.ip.family === 6 ? { noDad: true } : {});
      ensureDefaultRoutes(sb, net, ep);
    });
  }

  async ensureDefaultRoute(net: NetworkSpec, ep: EndpointSpec, sandbox: SandboxRef): Promise<void> {
    const sb = openHandle(sandbox.ns);
    if (sb.links.find(ep.ifname)) ensureDefaultRoutes(sb, net, ep);
  }

  /**
   * Delete the endpoint's macvlan from the sandbox (idempotent: a missing one is success; its
   * addresses and routes go with it). CONFLICT when the name belongs to a link that is not a
   * macvlan (left alone). With `namespaceGoing` it is only set down (silent on the parent's
   * LAN at once) and the namespace's destruction deletes it, without the RCU wait.
   */
  async leave(
    _net: NetworkSpec,
    ep: EndpointSpec,
    sandbox: SandboxRef,
    opts: LeaveOptions = {},
  ): Promise<void> {
    checkIfName(ep.ifname, 'sandbox interface name');
    const sb = openHandle(sandbox.ns);
    const l = sb.links.find(ep.ifname);
    if (!l) return;
    if (l.kind !== 'macvlan') {
      throw new WeftError(
        'CONFLICT',
        `${ep.ifname} in sandbox ${sandbox.id} is a ${l.kind}, not endpoint ${ep.id}'s macvlan: not removing it`,
        { details: { sandbox: sandbox.id, link: ep.ifname } },
      );
    }
    if (opts.namespaceGoing) sb.links.setDown(ep.ifname);
    else sb.links.delete(ep.ifname);
  }

  #net(net: NetworkSpec): { net: NetworkSpec; opts: MacvlanOptions } {
    const st = this.#nets.get(net.id);
    if (!st) {
      throw notFound(`network ${net.name} (${net.id}) is not set up by the macvlan driver`, {
        network: net.id,
      });
    }
    return st;
  }

  /** The parent link in the host namespace; NOT_FOUND naming it when it is missing. */
  #parent(net: NetworkSpec, opts: MacvlanOptions) {
    const parent = this.#host.links.find(opts.parent);
    if (!parent) {
      throw notFound(
        `macvlan network ${net.name}: parent interface "${opts.parent}" does not exist in ${this.#host.ns.path}`,
        { network: net.id, parent: opts.parent },
      );
    }
    return parent;
  }
}
