/**
 * The host driver (Docker's `--network host`): the sandbox has NO network namespace of its own.
 * Its process runs in the host's namespace and shares the host's links, addresses, routes,
 * ports and firewall; only its UTS and mount namespaces (hostname, /etc files) are its own.
 *
 * How it works: nothing happens in the kernel. `createNetwork` / `join` / `leave` only check
 * their input. The driver object carries `sharesHostNetns = true`: the control layer must see
 * it (with `sharesHostNetns(driver)`) and then NOT create a sandbox namespace; it hands the
 * host's own namespace to `join` as the sandbox's (anything else is refused with INVALID, which
 * catches a control layer that created one by mistake).
 *
 * A host network has no IPAM: no subnets, and its endpoints have no addresses, interface names
 * are meaningless (INVALID otherwise, so that a caller learns it at once instead of believing
 * an address was assigned). Cost: none; a host network is a name in control's state.
 */
import type { NetHandle } from '../../kernel/handle.js';
import { invalid } from '../../lib/errors.js';
import type { EndpointSpec, NetworkDriver, NetworkSpec, SandboxRef } from '../driver.js';

/** True when `driver` runs its sandboxes in the host's namespace (no namespace to create). */
export const sharesHostNetns = (driver: NetworkDriver): boolean =>
  (driver as { readonly sharesHostNetns?: unknown }).sharesHostNetns === true;

export interface HostDriverOptions {
  /** The host namespace's handle (root namespace in production, a lab host in tests). */
  readonly host: NetHandle;
}

/** Throws INVALID unless `net` is a host network: an id, no subnets. Changes nothing. */
export function validateHostNetwork(net: NetworkSpec): void {
  if (net.id.length === 0) throw invalid('network id must not be empty');
  if (net.subnets.length > 0) {
    throw invalid(
      `network ${net.name}: the host driver takes no subnets (the host's own addresses are used)`,
      {
        network: net.id,
      },
    );
  }
}

/** Throws INVALID unless `ep` is an endpoint of host network `net`: no addresses, no MAC. */
export function validateHostEndpoint(net: NetworkSpec, ep: EndpointSpec): void {
  if (ep.id.length === 0) throw invalid('endpoint id must not be empty');
  if (ep.networkId !== net.id) {
    throw invalid(`endpoint ${ep.id} belongs to network ${ep.networkId}, not ${net.id}`);
  }
  if (ep.addresses.length > 0 || ep.mac !== undefined) {
    throw invalid(
      `endpoint ${ep.id}: a host-network endpoint has no addresses or MAC of its own (it shares the host's)`,
      { endpoint: ep.id },
    );
  }
}

export class HostDriver implements NetworkDriver {
  readonly name = 'host';
  /** Marker for the control layer: do not create a namespace for sandboxes on this driver. */
  readonly sharesHostNetns = true;
  readonly #host: NetHandle;

  constructor(opts: HostDriverOptions) {
    this.#host = opts.host;
  }

  /** Nothing to set up. Throws INVALID for a spec with subnets. */
  async createNetwork(net: NetworkSpec): Promise<void> {
    validateHostNetwork(net);
  }

  /** Nothing to remove. Throws INVALID for a malformed spec. */
  async deleteNetwork(net: NetworkSpec): Promise<void> {
    validateHostNetwork(net);
  }

  /** Validate only. Throws INVALID for addresses, a MAC, or an endpoint of another network. */
  async createEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void> {
    validateHostEndpoint(net, ep);
  }

  /** Nothing to forget. */
  async deleteEndpoint(_net: NetworkSpec, _ep: EndpointSpec): Promise<void> {}

  /**
   * No kernel change: the sandbox already shares the host's stack. Throws INVALID when the
   * sandbox's namespace is not the host's (control created a namespace it must not create).
   */
  async join(net: NetworkSpec, ep: EndpointSpec, sandbox: SandboxRef): Promise<void> {
    validateHostEndpoint(net, ep);
    if (!sandbox.ns.sameAs(this.#host.ns)) {
      throw invalid(
        `sandbox ${sandbox.id} has its own network namespace (${sandbox.ns.path}); on host network ` +
          `${net.name} it must run in the host's namespace (${this.#host.ns.path})`,
        { sandbox: sandbox.id, network: net.id },
      );
    }
  }

  /** Nothing to undo (idempotent). */
  async leave(_net: NetworkSpec, _ep: EndpointSpec, _sandbox: SandboxRef): Promise<void> {}
}
