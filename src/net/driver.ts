/**
 * The network driver interface (libnetwork's driver API, CNM): a *network* is an L2/L3 domain
 * (a bridge, a macvlan parent, an overlay), an *endpoint* is one interface on it with its
 * addresses, a *sandbox* is a container's network namespace. `control/` decides what should
 * exist (IDs, IPAM, names) and hands canonical values down; a driver turns them into kernel
 * state. Every method is idempotent where the kernel allows it (creating what exists, deleting
 * what is gone: success) and all-or-nothing: a failure leaves nothing half-made.
 *
 * Split of work, as in libnetwork: `createEndpoint` validates and reserves (no kernel change for
 * the bridge driver), `join` plumbs the interface into the sandbox, `leave` unplumbs it,
 * `deleteEndpoint` forgets it (and removes anything left). Drivers never import `control/`.
 */
import type { Netns } from '../kernel/netns.js';
import type { IPAddr, IPNet } from '../lib/ip.js';

/** One subnet of a network, canonical (host bits clear), with its gateway inside it. */
export interface SubnetSpec {
  readonly subnet: IPNet;
  readonly gateway: IPAddr;
}

export interface NetworkSpec {
  readonly id: string;
  readonly name: string;
  /** Driver name ('bridge', 'macvlan', …). */
  readonly driver: string;
  /** Name of the bridge device (bridge driver), e.g. `weft0`, `br-0123456789ab`. */
  readonly bridge: string;
  /** MTU of every device of the network (bridge, both veth ends). */
  readonly mtu: number;
  /** At most a few: typically one IPv4 and optionally one IPv6. */
  readonly subnets: readonly SubnetSpec[];
  /** No route out and no NAT (firewall) and no default route in sandboxes. */
  readonly internal: boolean;
  /** Inter-container communication on this network (firewall). */
  readonly icc: boolean;
  /** Masquerade traffic leaving the network (firewall). */
  readonly masquerade: boolean;
  /** Driver-specific options (`-o key=value`), already validated by control. */
  readonly options: Readonly<Record<string, string>>;
}

export interface EndpointSpec {
  readonly id: string;
  readonly networkId: string;
  /** The interface addresses (address + prefix length of its subnet), IPv4 and/or IPv6. */
  readonly addresses: readonly IPNet[];
  /** MAC of the sandbox interface; the kernel picks one when absent. */
  readonly mac?: string;
  /** Interface name inside the sandbox: eth0, eth1, … */
  readonly ifname: string;
  /**
   * Plumb the interface only (MAC, MTU), no addresses, no routes, left down: for a runtime that
   * moves and configures it itself (Docker's remote driver API). Bridge driver only.
   */
  readonly bare?: boolean;
}

/** What the kernel has of a joined endpoint (for CNI results and CHECK). */
export interface EndpointInfo {
  /** The host side of the endpoint (a veth end on the bridge), if it has one. */
  readonly hostIfname?: string;
  readonly hostMac?: string;
  /** MAC of the sandbox interface. */
  readonly mac?: string;
  /** Everything that differs from what the endpoint should be; empty when all is in place. */
  readonly problems: readonly string[];
}

/** A sandbox as a driver sees it: its id and a handle on its network namespace. */
export interface SandboxRef {
  readonly id: string;
  readonly ns: Netns;
}

export interface LeaveOptions {
  /**
   * The sandbox's namespace is about to be destroyed with everything in it (its container is
   * being removed). The driver then only makes the endpoint inert at once (its interfaces down,
   * so nothing more passes) and leaves deleting them to the kernel's clean-up of the namespace,
   * which runs in the kernel's own worker. Why: deleting a network device makes the caller wait
   * for an RCU barrier (~17 ms, ../../shared/design/NODE-KERNEL-NOTES.md); a namespace's
   * destruction deletes its devices without making anyone wait.
   */
  readonly namespaceGoing?: boolean;
}

export interface CreateNetworkOptions {
  /**
   * The network is weft's already (the daemon's start sets its networks up again): what exists
   * under its names is taken as weft's own.
   */
  readonly restore?: boolean;
}

export interface NetworkDriver {
  readonly name: string;
  /** Set up the network (idempotent). Throws INVALID for bad specs, CONFLICT for clashing state. */
  createNetwork(net: NetworkSpec, opts?: CreateNetworkOptions): Promise<void>;
  /** Remove the network (idempotent). Throws BUSY while it is in use by something weft does not own. */
  deleteNetwork(net: NetworkSpec): Promise<void>;
  /** Validate and register an endpoint. NOT_FOUND for an unknown network, INVALID for bad input. */
  createEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void>;
  /** Forget an endpoint and remove what is left of it (idempotent). */
  deleteEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void>;
  /** Plumb the endpoint into the sandbox (all or nothing). */
  join(net: NetworkSpec, ep: EndpointSpec, sandbox: SandboxRef): Promise<void>;
  /** Unplumb the endpoint from the sandbox (idempotent). */
  leave(net: NetworkSpec, ep: EndpointSpec, sandbox: SandboxRef, opts?: LeaveOptions): Promise<void>;
  /**
   * Give the sandbox a default route through this joined endpoint for each family it has none
   * of (after the endpoint that held it left: Docker moves the gateway to a remaining network).
   * Optional; idempotent.
   */
  ensureDefaultRoute?(net: NetworkSpec, ep: EndpointSpec, sandbox: SandboxRef): Promise<void>;
  /** Read back a joined endpoint's kernel state and compare it with the spec (optional). */
  inspectEndpoint?(net: NetworkSpec, ep: EndpointSpec, sandbox: SandboxRef): EndpointInfo;
}
