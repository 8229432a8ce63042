/**
 * The host-gw backend, flannel's design (pkg/backend/hostgw): no tunnel at all. Every peer's
 * subnet is routed to the peer's public IP as next hop, out of the underlay interface:
 *   10.244.2.0/24 via 192.168.100.11 dev eth0
 * The peer forwards the packet to its bridge. Full wire speed and the underlay's MTU, but every
 * host must be on one L2 segment (each public IP on-link from every other host): a peer that is
 * not is skipped with a clear warning (flannel fails the route and logs it).
 *
 * Ownership of routes is by shape (./routes.ts): main table, destination a subnet of the cluster
 * network, out of the underlay interface, with a gateway. `resync` brings exactly those to the
 * desired set; nothing else on the host is touched. Kernel state survives `stop()`.
 *
 * Cost at scale: one route per peer, one netlink request each; a resync is one dump and a diff.
 */
import type { NetHandle } from '../../../kernel/handle.js';
import { WeftError } from '../../../lib/errors.js';
import { formatIP, formatIPNet, type IPNet } from '../../../lib/ip.js';
import type { Logger } from '../../../lib/log.js';
import type { Backend, BackendConfig, BackendContext, BackendFactory, LeaseInfo } from '../types.js';
import {
  type CheckedPeer,
  checkPeer,
  deleteOwned,
  directRoute,
  onLink,
  ownedRoutes,
  replaceRoute,
  SkipLog,
  syncRoutes,
  underlayNets,
  type WantedRoute,
} from './routes.js';

/** The host-gw backend. Throws INVALID at construction when given another backend's config. */
export const hostGwBackend: BackendFactory = (cfg, ctx) => new HostGwBackend(cfg, ctx);

class HostGwBackend implements Backend {
  readonly type = 'host-gw' as const;
  readonly #ctx: BackendContext;
  readonly #h: NetHandle;
  readonly #log: Logger;
  readonly #skips: SkipLog;
  #own: LeaseInfo | undefined;

  constructor(cfg: BackendConfig, ctx: BackendContext) {
    if (cfg.type !== 'host-gw') throw new WeftError('INVALID', `host-gw backend given a ${cfg.type} config`);
    if (ctx.publicIp.family !== 4) {
      throw new WeftError(
        'INVALID',
        `public IP ${formatIP(ctx.publicIp)} is not IPv4 (host-gw is IPv4 here)`,
      );
    }
    this.#ctx = ctx;
    this.#h = ctx.host;
    this.#log = ctx.log.child({ backend: 'host-gw', dev: ctx.iface.name });
    this.#skips = new SkipLog(this.#log);
  }

  /** No lease data; the bridge gets the underlay's MTU. Throws NOT_FOUND if the interface is gone. */
  async prepare(): Promise<{ backendData: null; mtu: number }> {
    this.#h.links.get(this.#ctx.iface.name);
    return { backendData: null, mtu: this.#ctx.iface.mtu };
  }

  /** Remembers the host's own lease (its subnet is never routed to a peer). Throws INVALID for a bad one. */
  async start(own: LeaseInfo): Promise<void> {
    const checked = checkPeer(this.#ctx, own, own.backendType, undefined);
    if (typeof checked === 'string') throw new WeftError('INVALID', `own lease: ${checked}`);
    this.#own = own;
  }

  /**
   * Route the peer's subnet via its public IP (replace). A peer of another backend type or with
   * a malformed lease is skipped with a warning; so is one not on-link, and a route left for its
   * subnet is removed (it would send packets to a host that cannot be reached directly).
   */
  async addPeer(peer: LeaseInfo): Promise<void> {
    const wanted = this.#plan(peer, true);
    if (wanted === undefined) return;
    if (typeof wanted === 'string') {
      this.#removeRoutes(wanted);
      return;
    }
    replaceRoute(this.#h, wanted);
    this.#log.debug('peer added', { subnet: formatIPNet(wanted.dst), via: formatIP(wanted.via) });
  }

  /**
   * Delete the route to the peer's subnet via its public IP (gone already is fine; one left with
   * another gateway is resync's to remove). Kernel errors propagate.
   */
  async removePeer(peer: LeaseInfo): Promise<void> {
    this.#skips.forget(peer);
    const checked = checkPeer(this.#ctx, peer, peer?.backendType, this.#own);
    if (typeof checked === 'string') return;
    this.#h.routes.delete({ dst: checked.subnet, dev: this.#ctx.iface.name, via: checked.publicIp });
    this.#log.debug('peer removed', { subnet: checked.key });
  }

  /**
   * Bring the routes to cluster subnets via the underlay interface to exactly those of `peers`:
   * add missing, repair drifted, delete stale. Kernel errors propagate.
   */
  async resync(peers: readonly LeaseInfo[]): Promise<void> {
    const routes = new Map<string, WantedRoute>();
    const nets = underlayNets(this.#ctx);
    for (const peer of peers) {
      const w = this.#plan(peer, false, nets);
      if (w !== undefined && typeof w !== 'string') routes.set(formatIPNet(w.dst), w);
    }
    syncRoutes(this.#ctx, [this.#ctx.iface.name], routes, this.#log);
  }

  /** Nothing: the routes stay so traffic flows while the daemon is away. */
  async stop(): Promise<void> {}

  /** Delete every route this backend owns. Idempotent; kernel errors propagate. */
  async teardown(): Promise<void> {
    for (const o of ownedRoutes(this.#ctx, [this.#ctx.iface.name])) deleteOwned(this.#h, o);
    this.#own = undefined;
  }

  /**
   * The route a peer needs; a subnet key when the peer is valid but not on-link (its route must
   * go); undefined when the lease is skipped altogether.
   */
  #plan(peer: LeaseInfo, always: boolean, nets?: readonly IPNet[]): WantedRoute | string | undefined {
    const checked: CheckedPeer | string = checkPeer(this.#ctx, peer, 'host-gw', this.#own);
    if (typeof checked === 'string') {
      this.#skips.skip(peer, checked, always);
      return undefined;
    }
    if (!onLink(this.#ctx, checked.publicIp, nets)) {
      this.#skips.skip(
        peer,
        `public IP ${formatIP(checked.publicIp)} is not on-link from ${this.#ctx.iface.name}: ` +
          'host-gw needs every host on one L2 segment (use vxlan, or vxlan with DirectRouting)',
        always,
      );
      return checked.key;
    }
    return directRoute(this.#ctx, checked);
  }

  #removeRoutes(key: string): void {
    for (const o of ownedRoutes(this.#ctx, [this.#ctx.iface.name])) {
      if (formatIPNet(o.dst) === key) deleteOwned(this.#h, o);
    }
  }
}
