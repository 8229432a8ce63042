/**
 * The none driver (Docker's `--network none`): the sandbox has its own network namespace with
 * only the loopback interface, up. No link to anything else, no addresses but 127.0.0.1 and
 * ::1, no routes out.
 *
 * How it works: the control layer creates the sandbox namespace as for any driver
 * (net/sandbox.ts already brings `lo` up); `join` makes sure `lo` is up (idempotent) and does
 * nothing else; `leave` does nothing (`lo` belongs to the namespace, not to the endpoint).
 * A none network has no IPAM: no subnets, endpoints without addresses (INVALID otherwise).
 * Cost: one netlink request per join.
 */
import type { NetHandle } from '../../kernel/handle.js';
import { openHandle } from '../../kernel/handle.js';
import { invalid } from '../../lib/errors.js';
import type { EndpointSpec, NetworkDriver, NetworkSpec, SandboxRef } from '../driver.js';

export interface NoneDriverOptions {
  /** The host namespace's handle: a sandbox must not be the host's namespace. */
  readonly host: NetHandle;
}

/** Throws INVALID unless `net` is a none network: an id, no subnets. Changes nothing. */
export function validateNoneNetwork(net: NetworkSpec): void {
  if (net.id.length === 0) throw invalid('network id must not be empty');
  if (net.subnets.length > 0) {
    throw invalid(`network ${net.name}: the none driver takes no subnets (sandboxes get only lo)`, {
      network: net.id,
    });
  }
}

/** Throws INVALID unless `ep` is an endpoint of none network `net`: no addresses, no MAC. */
export function validateNoneEndpoint(net: NetworkSpec, ep: EndpointSpec): void {
  if (ep.id.length === 0) throw invalid('endpoint id must not be empty');
  if (ep.networkId !== net.id) {
    throw invalid(`endpoint ${ep.id} belongs to network ${ep.networkId}, not ${net.id}`);
  }
  if (ep.addresses.length > 0 || ep.mac !== undefined) {
    throw invalid(`endpoint ${ep.id}: a none-network endpoint has no addresses or MAC (only lo)`, {
      endpoint: ep.id,
    });
  }
}

export class NoneDriver implements NetworkDriver {
  readonly name = 'none';
  readonly #host: NetHandle;

  constructor(opts: NoneDriverOptions) {
    this.#host = opts.host;
  }

  /** Nothing to set up. Throws INVALID for a spec with subnets. */
  async createNetwork(net: NetworkSpec): Promise<void> {
    validateNoneNetwork(net);
  }

  /** Nothing to remove. Throws INVALID for a malformed spec. */
  async deleteNetwork(net: NetworkSpec): Promise<void> {
    validateNoneNetwork(net);
  }

  /** Validate only. Throws INVALID for addresses, a MAC, or an endpoint of another network. */
  async createEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void> {
    validateNoneEndpoint(net, ep);
  }

  /** Nothing to forget. */
  async deleteEndpoint(_net: NetworkSpec, _ep: EndpointSpec): Promise<void> {}

  /**
   * Make sure the sandbox's `lo` is up; nothing else. Throws INVALID for bad input or when the
   * sandbox's namespace is the host's (a none sandbox must be isolated), NOT_FOUND when the
   * namespace has no `lo` (it is not a network namespace the kernel made).
   */
  async join(net: NetworkSpec, ep: EndpointSpec, sandbox: SandboxRef): Promise<void> {
    validateNoneEndpoint(net, ep);
    if (sandbox.ns.sameAs(this.#host.ns)) {
      throw invalid(
        `sandbox ${sandbox.id} on none network ${net.name} must have its own namespace, not the host's`,
        { sandbox: sandbox.id, network: net.id },
      );
    }
    const sb = openHandle(sandbox.ns);
    if (!sb.links.get('lo').up) sb.links.setUp('lo');
  }

  /** Nothing to undo (idempotent): `lo` stays with the namespace. */
  async leave(_net: NetworkSpec, _ep: EndpointSpec, _sandbox: SandboxRef): Promise<void> {}
}
