/**
 * The bridge driver: Docker's default network model. One Linux bridge per network carrying the
 * gateway addresses; one veth pair per endpoint, the host end on the bridge, the other end in the
 * sandbox as eth0, eth1, … with the addresses and the default route via the gateway.
 *
 * How it works: `createNetwork` runs the steps of ./setup.ts (bridge, gateway, forwarding) in a
 * transaction, then the firewall hook; `join` runs ./endpoint.ts's steps in a transaction.
 * Every step is idempotent, so re-running `createNetwork` after a restart repairs drift.
 *
 * Cost at scale: a join is a handful of synchronous netlink requests on warm sockets (no
 * processes spawned); a network costs one bridge. The firewall is not this module's part: the
 * optional `firewall` hook receives the whole desired state after each change (to be rendered
 * as one atomic nftables batch by net/firewall, connected by the daemon).
 *
 * Removing a container: its namespace is destroyed anyway, so `leave` with `namespaceGoing`
 * only sets the host end down and lets the kernel delete the pair with the namespace, in its
 * own worker; deleting a veth ourselves would make the request wait for an RCU barrier (~17 ms).
 *
 * The driver keeps, in memory, the networks and joined endpoints it was told about; after a
 * restart the daemon replays `createNetwork` / `createEndpoint` from its persisted state.
 *
 * `-o uplink=IFACE` (./uplink.ts): the host interface becomes a bridge port and its addresses
 * and gateway routes move onto the bridge; the network's gateway is then the LAN's router, so
 * no gateway address is put on the bridge. What was moved is kept per network
 * (`uplinkRecord(id)`, to persist) and handed back after a restart (`uplinks` option);
 * `deleteNetwork` restores it before removing the bridge.
 */
import { type NetHandle, openHandle } from '../../kernel/handle.js';
import { isWeftError, notFound, WeftError } from '../../lib/errors.js';
import { transaction } from '../../lib/rollback.js';
import type {
  CreateNetworkOptions,
  EndpointInfo,
  EndpointSpec,
  LeaveOptions,
  NetworkDriver,
  NetworkSpec,
  SandboxRef,
} from '../driver.js';
import { inspectPlumbed, plumbEndpoint } from './endpoint.js';
import {
  ensureBridge,
  ensureDefaultRoutes,
  ensureForwarding,
  ensureGateway,
  hostVethName,
  removeBridge,
  validateEndpoint,
  validateNetwork,
} from './setup.js';
import { attachUplink, checkUplink, detachUplink, type UplinkRecord } from './uplink.js';

/** How long a veth left to its namespace's destruction may live before it is deleted by hand. */
const REAP_AFTER_MS = 10_000;

/** An endpoint plumbed into a sandbox, as the firewall sees it. */
export interface JoinedEndpoint {
  readonly ep: EndpointSpec;
  readonly sandboxId: string;
  /** Host end of the veth pair (a bridge port). */
  readonly hostIf: string;
}

/** Everything the bridge driver has set up: the input of the firewall hook. */
export interface BridgeFirewallState {
  readonly networks: readonly {
    readonly net: NetworkSpec;
    readonly endpoints: readonly JoinedEndpoint[];
  }[];
}

/** To be implemented over net/firewall: render `state` and apply it atomically (replacing the last). */
export interface BridgeFirewallHook {
  apply(state: BridgeFirewallState): void | Promise<void>;
}

export interface BridgeDriverOptions {
  /** The host namespace's handle (root namespace in production, a lab host in tests). */
  readonly host: NetHandle;
  readonly firewall?: BridgeFirewallHook;
  /** Uplink records persisted by the control layer, by network id (see `uplinkRecord`). */
  readonly uplinks?: Readonly<Record<string, UplinkRecord>>;
  /** How long a veth left to its namespace's destruction may live (default 10 s; see leave). */
  readonly reapAfterMs?: number;
}

interface NetState {
  net: NetworkSpec;
  /** Endpoints created on the network, by id. */
  endpoints: Map<string, EndpointSpec>;
  /** Joined endpoints, by endpoint id. */
  joined: Map<string, JoinedEndpoint>;
}

export class BridgeDriver implements NetworkDriver {
  readonly name = 'bridge';
  readonly #host: NetHandle;
  readonly #firewall: BridgeFirewallHook | undefined;
  readonly #nets = new Map<string, NetState>();
  /** What `-o uplink` moved onto each network's bridge, by network id. */
  readonly #uplinks = new Map<string, UplinkRecord>();
  /** Host veths left to their namespace's destruction, with the time they were left. */
  readonly #going = new Map<string, number>();
  /** Endpoints whose join found their host veth name taken by another endpoint's veth. */
  readonly #clashed = new Set<string>();
  #reaper: NodeJS.Timeout | undefined;
  readonly #reapAfterMs: number;

  constructor(opts: BridgeDriverOptions) {
    this.#host = opts.host;
    this.#firewall = opts.firewall;
    this.#reapAfterMs = opts.reapAfterMs ?? REAP_AFTER_MS;
    for (const [id, rec] of Object.entries(opts.uplinks ?? {})) this.#uplinks.set(id, rec);
  }

  /** What `-o uplink` moved onto the network's bridge (JSON: persist it, pass it back as `uplinks`). */
  uplinkRecord(networkId: string): UplinkRecord | undefined {
    return this.#uplinks.get(networkId);
  }

  /**
   * Bridge, gateway addresses, forwarding, firewall (idempotent). Throws INVALID for a bad spec
   * (nothing changed), CONFLICT when the bridge name or a gateway address clashes with existing
   * state. A bridge created here is removed again when a later step fails. With `uplink`:
   * NOT_FOUND when the uplink does not exist, CONFLICT when it is another master's port, INVALID
   * when its MTU is below the network's (all before any change); the uplink is restored when a
   * later step fails.
   */
  async createNetwork(net: NetworkSpec, opts: CreateNetworkOptions = {}): Promise<void> {
    validateNetwork(net);
    const h = this.#host;
    const uplink = net.options.uplink;
    if (uplink !== undefined) checkUplink(h, net, uplink);
    await transaction(async (rb) => {
      const { created } = ensureBridge(h, net, opts);
      if (created) rb.push(`delete bridge ${net.bridge}`, () => h.links.delete(net.bridge));
      // With an uplink the gateway is the LAN's router, not an address of the bridge.
      const added = uplink === undefined ? ensureGateway(h, net) : [];
      if (!created) {
        for (const a of added) rb.push('delete gateway address', () => h.addrs.delete(net.bridge, a));
      }
      if (uplink !== undefined) {
        const prevRec = this.#uplinks.get(net.id);
        const rec = attachUplink(h, net.bridge, uplink, rb, prevRec);
        // The kernel gave the bridge its ports' lowest MTU, the uplink's; set again, it stays
        // (set by the user), instead of moving as containers come and go.
        if (h.links.get(net.bridge).mtu !== net.mtu) h.links.setMtu(net.bridge, net.mtu);
        this.#uplinks.set(net.id, rec);
        rb.push('forget uplink record', () => {
          if (prevRec) this.#uplinks.set(net.id, prevRec);
          else this.#uplinks.delete(net.id);
        });
      }
      ensureForwarding(h, net);
      const prev = this.#nets.get(net.id);
      const st: NetState = prev ? { ...prev, net } : { net, endpoints: new Map(), joined: new Map() };
      await this.#applyFirewall(net.id, st);
      this.#nets.set(net.id, st);
    });
  }

  /**
   * Remove the bridge (idempotent). BUSY while ports other than weft's veths are on it (nothing
   * changed then); CONFLICT when the name belongs to a non-bridge link. With `uplink`, first
   * restores the uplink's addresses and routes and releases it (undone if the bridge stays).
   */
  async deleteNetwork(net: NetworkSpec): Promise<void> {
    validateNetwork(net);
    const uplink = net.options.uplink;
    await transaction(async (rb) => {
      // The uplink goes back first (removeBridge refuses a bridge with a foreign port); if the
      // bridge cannot go, the uplink is attached again.
      if (uplink !== undefined) detachUplink(this.#host, net.bridge, uplink, rb, this.#uplinks.get(net.id));
      removeBridge(this.#host, net.bridge);
    });
    this.#uplinks.delete(net.id);
    if (this.#nets.has(net.id)) {
      await this.#applyFirewall(net.id, undefined);
      this.#nets.delete(net.id);
    }
  }

  /** Validate and register (no kernel change). NOT_FOUND for a network not created here. */
  async createEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void> {
    const st = this.#net(net);
    validateEndpoint(net, ep);
    st.endpoints.set(ep.id, ep);
  }

  /** Remove the endpoint's veth if still there and forget it (idempotent). */
  async deleteEndpoint(net: NetworkSpec, ep: EndpointSpec): Promise<void> {
    const name = hostVethName(ep);
    // A pair that goes with its namespace is the kernel's to delete (see leave); a name another
    // endpoint holds is not this one's.
    if (!this.#clashed.delete(ep.id) && !this.#going.has(name)) this.#host.links.delete(name);
    const st = this.#nets.get(net.id);
    if (!st) return;
    if (st.joined.has(ep.id)) await this.#leaveState(st, ep);
    st.endpoints.delete(ep.id);
  }

  /**
   * Plumb the endpoint into the sandbox (all or nothing). NOT_FOUND for an unknown network,
   * INVALID for bad input (nothing changed), EXISTS when the veth or the interface name is taken.
   */
  async join(net: NetworkSpec, ep: EndpointSpec, sandbox: SandboxRef): Promise<void> {
    const st = this.#net(net);
    validateEndpoint(net, ep);
    await transaction(async (rb) => {
      const { hostIf } = await plumbEndpoint(this.#host, net, ep, sandbox, rb).catch((e: unknown) => {
        // The host end's name (7 characters of the endpoint id) is another endpoint's veth:
        // deleting this endpoint must leave that one alone.
        if (isWeftError(e, 'EXISTS') && this.#host.links.find(hostVethName(ep))) this.#clashed.add(ep.id);
        throw e;
      });
      const joined = new Map(st.joined).set(ep.id, { ep, sandboxId: sandbox.id, hostIf });
      const next: NetState = { ...st, joined };
      await this.#applyFirewall(net.id, next);
      st.endpoints.set(ep.id, ep);
      st.joined = joined;
    });
  }

  /**
   * Remove the host veth (its peer goes with it) and the endpoint's firewall state (idempotent).
   * With `namespaceGoing` the host end is only set down (off the bridge's forwarding at once,
   * its learned addresses flushed) and the pair is left to the namespace's destruction; a pair
   * still there `reapAfterMs` later (something else kept the namespace alive) is deleted then.
   */
  async leave(
    net: NetworkSpec,
    ep: EndpointSpec,
    _sandbox: SandboxRef,
    opts: LeaveOptions = {},
  ): Promise<void> {
    const name = hostVethName(ep);
    // Deleted on the thread pool: the ~17 ms the kernel waits for it are the caller's to use.
    if (opts.namespaceGoing) this.#setGoing(name);
    else await this.#host.links.deleteAsync(name);
    const st = this.#nets.get(net.id);
    if (st?.joined.has(ep.id)) await this.#leaveState(st, ep);
  }

  async ensureDefaultRoute(net: NetworkSpec, ep: EndpointSpec, sandbox: SandboxRef): Promise<void> {
    const sb = openHandle(sandbox.ns);
    // A bare endpoint's interface is the runtime's to configure (Docker).
    if (!ep.bare && sb.links.find(ep.ifname)) ensureDefaultRoutes(sb, net, ep);
  }

  inspectEndpoint(net: NetworkSpec, ep: EndpointSpec, sandbox: SandboxRef): EndpointInfo {
    return inspectPlumbed(this.#host, net, ep, sandbox);
  }

  /** The firewall hook's input as it stands. */
  firewallState(): BridgeFirewallState {
    return this.#state(this.#nets);
  }

  async #leaveState(st: NetState, ep: EndpointSpec): Promise<void> {
    const joined = new Map(st.joined);
    joined.delete(ep.id);
    const next: NetState = { ...st, joined };
    await this.#applyFirewall(st.net.id, next);
    st.joined = joined;
  }

  #net(net: NetworkSpec): NetState {
    const st = this.#nets.get(net.id);
    if (!st)
      throw notFound(`network ${net.name} (${net.id}) is not set up by the bridge driver`, {
        network: net.id,
      });
    return st;
  }

  #setGoing(name: string): void {
    try {
      this.#host.links.setDown(name);
    } catch (e) {
      if (e instanceof WeftError && e.code === 'NOT_FOUND') return;
      throw e;
    }
    this.#going.set(name, Date.now());
    if (!this.#reaper) {
      this.#reaper = setTimeout(() => this.#reap(), this.#reapAfterMs);
      this.#reaper.unref();
    }
  }

  /** Delete the pairs their namespace's end did not take along in time; reschedule for the rest. */
  #reap(): void {
    this.#reaper = undefined;
    const now = Date.now();
    for (const [name, since] of this.#going) {
      if (now - since < this.#reapAfterMs) continue;
      this.#going.delete(name);
      try {
        this.#host.links.delete(name);
      } catch {
        // The host namespace itself is gone (a lab host removed): nothing left to delete.
      }
    }
    if (this.#going.size > 0) {
      this.#reaper = setTimeout(() => this.#reap(), this.#reapAfterMs);
      this.#reaper.unref();
    }
  }

  /** Apply the firewall with network `id` replaced by `st` (or removed when undefined). */
  async #applyFirewall(id: string, st: NetState | undefined): Promise<void> {
    if (!this.#firewall) return;
    const nets = new Map(this.#nets);
    if (st) nets.set(id, st);
    else nets.delete(id);
    await this.#firewall.apply(this.#state(nets));
  }

  #state(nets: Map<string, NetState>): BridgeFirewallState {
    return {
      networks: [...nets.values()].map((s) => ({ net: s.net, endpoints: [...s.joined.values()] })),
    };
  }
}
