/**
 * The vxlan backend, flannel's design (pkg/backend/vxlan): an L3 overlay over one kernel VXLAN
 * device, with every forwarding decision written statically by the daemon (no multicast, no
 * learning, no userspace on the data path).
 *
 * History: flannel started with a userspace UDP tunnel; its vxlan backend (2015) moved the data
 * path into the kernel and first answered the kernel's L2/L3 misses from userspace; since 2017
 * (v0.9) it programs everything up front, one subnet per host, as done here.
 *
 * How it works. Each host has a VTEP `weft.<VNI>` bound to its underlay interface (local =
 * public IP, dstport 8472, nolearning) with a MAC kept across restarts, advertised in its lease
 * as `{"VNI", "VtepMAC"}`, and its subnet's network address as a /32 (10.244.1.0/32). For each
 * peer (subnet S, public IP P, VTEP MAC M) three entries:
 *   route   S via S.0 dev weft.N onlink            the next hop is the peer's VTEP address
 *   neigh   S.0 lladdr M dev weft.N permanent      its MAC, so the kernel never ARPs
 *   fdb     M dev weft.N dst P self permanent      where frames for M go on the underlay
 * A packet for 10.244.2.5 is routed to weft.1 with next hop 10.244.2.0, gets destination MAC M,
 * and the device sends it in UDP to P:8472; P's device decapsulates and routes it to its bridge.
 * With DirectRouting, a peer whose public IP is on the underlay interface's subnet gets a plain
 * route (S via P dev eth0) instead: no encapsulation between hosts on one L2 segment.
 *
 * Ownership is by shape (see ../hostgw/routes.ts): routes of cluster subnets on weft.N and, with a
 * gateway, on the underlay interface; neighbour entries of cluster addresses on weft.N; unicast
 * FDB entries on weft.N. A restarted daemon finds them again and `resync` repairs them; nothing
 * outside the cluster network is touched. Kernel state survives `stop()`: traffic keeps flowing
 * while the daemon restarts.
 *
 * Cost at scale: three kernel entries per peer, each one netlink request (~0.05 ms); a resync
 * is three dumps and a diff, O(peers). The MTU is the underlay's minus 50 (outer IPv4 20, UDP 8,
 * VXLAN 8, inner Ethernet 14).
 */
import { randomBytes } from 'node:crypto';
import type { NetHandle } from '../../../kernel/handle.js';
import { isWeftError, WeftError } from '../../../lib/errors.js';
import { containsIP, formatIP, formatIPNet, type IPAddr, type IPNet, ipEqual } from '../../../lib/ip.js';
import type { Logger } from '../../../lib/log.js';
import { transaction } from '../../../lib/rollback.js';
import { isMac, parseMac } from '../../../netlink/attr.js';
import { NUD } from '../../../netlink/consts.js';
import type { Link } from '../../../netlink/link.js';
import {
  type CheckedPeer,
  checkPeer,
  deleteOwned,
  directRoute,
  onLink,
  ownedRoutes,
  replaceRoute,
  SkipLog,
  subnetAddr,
  syncRoutes,
  underlayNets,
  type WantedRoute,
} from '../hostgw/routes.js';
import type { Backend, BackendConfig, BackendContext, BackendFactory, LeaseInfo } from '../types.js';

/** flannel's defaults. */
export const DEFAULT_VNI = 1;
export const DEFAULT_PORT = 8472;
/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
export const VXLAN_OVERHEAD = 50;

/** What a vxlan lease carries in BackendData (flannel's field names). */
export interface VxlanLeaseData {
  readonly VNI: number;
  readonly VtepMAC: string;
}

/** The VTEP device name for a VNI: `weft.<VNI>`. */
export const vxlanDeviceName = (vni: number): string => `weft.${vni}`;

/**
 * A random locally administered unicast MAC (the 0x02 bit set, the multicast bit clear), as
 * flannel's mac.NewHardwareAddr; set explicitly so the kernel does not pick one per boot.
 */
export function randomMac(): string {
  const b = randomBytes(6);
  b[0] = ((b[0] ?? 0) & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

const isUnicastMac = (mac: string | undefined): mac is string =>
  mac !== undefined && isMac(mac) && ((parseMac(mac)[0] ?? 1) & 1) === 0 && !/^(00:){5}00$/.test(mac);

/**
 * Read a peer's `{VNI, VtepMAC}`; returns the data or why it is unusable. `vni` is ours: a peer
 * on another VNI cannot be reached through our device (its VTEP drops our packets).
 */
export function parseVxlanData(data: unknown, vni: number): VxlanLeaseData | string {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    return 'BackendData is not an object with VtepMAC';
  }
  const { VNI, VtepMAC } = data as { VNI?: unknown; VtepMAC?: unknown };
  if (typeof VtepMAC !== 'string' || !isUnicastMac(VtepMAC.toLowerCase())) {
    return `BackendData.VtepMAC ${JSON.stringify(VtepMAC)} is not a unicast MAC address`;
  }
  if (VNI !== undefined && VNI !== vni) return `BackendData.VNI ${JSON.stringify(VNI)} is not ours (${vni})`;
  return { VNI: vni, VtepMAC: VtepMAC.toLowerCase() };
}

/** What one peer needs on this host. */
type Plan =
  | { readonly kind: 'vxlan'; readonly peer: CheckedPeer; readonly mac: string; readonly route: WantedRoute }
  | { readonly kind: 'direct'; readonly peer: CheckedPeer; readonly route: WantedRoute };

/**
 * The vxlan backend. Throws INVALID at construction for a bad configuration (VNI outside
 * 0-16777215, a port outside 1-65535, another backend type), before anything is changed.
 */
export const vxlanBackend: BackendFactory = (cfg, ctx) => new VxlanBackend(cfg, ctx);

class VxlanBackend implements Backend {
  readonly type = 'vxlan' as const;
  readonly #ctx: BackendContext;
  readonly #h: NetHandle;
  readonly #log: Logger;
  readonly #vni: number;
  readonly #port: number;
  readonly #direct: boolean;
  readonly #dev: string;
  readonly #skips: SkipLog;
  /** The VTEP MAC once prepare() ran: resync recreates a device deleted by hand with it. */
  #mac: string | undefined;
  #own: LeaseInfo | undefined;

  constructor(cfg: BackendConfig, ctx: BackendContext) {
    if (cfg.type !== 'vxlan') throw new WeftError('INVALID', `vxlan backend given a ${cfg.type} config`);
    const vni = cfg.vni ?? DEFAULT_VNI;
    if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffff) {
      throw new WeftError('INVALID', `VNI ${vni} is out of range (0-16777215)`, { details: { vni } });
    }
    const port = cfg.port ?? DEFAULT_PORT;
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new WeftError('INVALID', `vxlan UDP port ${port} is out of range (1-65535)`, {
        details: { port },
      });
    }
    if (ctx.publicIp.family !== 4) {
      throw new WeftError('INVALID', `public IP ${formatIP(ctx.publicIp)} is not IPv4 (vxlan is IPv4 here)`);
    }
    this.#ctx = ctx;
    this.#h = ctx.host;
    this.#vni = vni;
    this.#port = port;
    this.#direct = cfg.directRouting === true;
    this.#dev = vxlanDeviceName(vni);
    this.#log = ctx.log.child({ backend: 'vxlan', dev: this.#dev });
    this.#skips = new SkipLog(this.#log);
  }

  /**
   * Ensure the VTEP: created if missing, recreated (keeping its MAC) if it exists with other
   * parameters, MTU and up state set. Returns `{VNI, VtepMAC}` and the MTU for the bridge.
   * Throws NOT_FOUND if the underlay interface is gone, kernel errors otherwise.
   */
  async prepare(): Promise<{ backendData: VxlanLeaseData; mtu: number }> {
    const link = this.#ensureDevice();
    const mac = link.mac;
    if (!isUnicastMac(mac)) throw new WeftError('INTERNAL', `${this.#dev} has no usable MAC (${mac})`);
    this.#mac = mac;
    return { backendData: { VNI: this.#vni, VtepMAC: mac }, mtu: this.#mtu() };
  }

  /**
   * Put the host subnet's network address as a /32 on the VTEP and remove any other IPv4
   * address from it. Throws INVALID for an own lease that is not an IPv4 subnet of the cluster
   * network, NOT_FOUND when the device does not exist (prepare() first).
   */
  async start(own: LeaseInfo): Promise<void> {
    const checked = checkPeer(this.#ctx, own, own.backendType, undefined);
    if (typeof checked === 'string') throw new WeftError('INVALID', `own lease: ${checked}`);
    this.#own = own;
    this.#ensureAddress(checked);
  }

  /**
   * Program one peer (again): replace semantics, so a changed lease (new MAC, new public IP,
   * direct ↔ encapsulated) ends with exactly the new entries. Skips (with a warning) leases of
   * another backend type, malformed data and subnets outside the cluster network. Kernel
   * errors propagate after the steps made by this call are undone.
   */
  async addPeer(peer: LeaseInfo): Promise<void> {
    const plan = this.#plan(peer, true);
    if (!plan) return;
    if (plan.kind === 'direct') {
      replaceRoute(this.#h, plan.route);
      // It may have been encapsulated before: its neighbour and FDB entries go.
      this.#dropEncap(plan.peer);
      this.#log.debug('peer added (direct route)', {
        subnet: plan.peer.key,
        publicIp: formatIP(plan.peer.publicIp),
      });
      return;
    }
    const gw = subnetAddr(plan.peer.subnet);
    const prev = this.#h.neigh.find(this.#dev, gw);
    const oldMac = prev?.lladdr;
    await transaction(async (rb) => {
      // Neighbour and FDB entries before the route, as flannel: with the route first the
      // kernel would ARP for the next hop.
      this.#h.neigh.replace({ dev: this.#dev, ip: gw, mac: plan.mac });
      rb.push(`neigh ${formatIP(gw)}`, () => {
        if (prev?.lladdr !== undefined) this.#h.neigh.replace({ dev: this.#dev, ip: gw, mac: prev.lladdr });
        else this.#h.neigh.delete({ dev: this.#dev, ip: gw });
      });
      this.#h.fdb.replace({
        dev: this.#dev,
        mac: plan.mac,
        dst: plan.peer.publicIp,
        self: true,
        permanent: true,
      });
      // Undone only when the MAC is new here: if this peer had it already, the entry now points
      // at the lease's current public IP, which is right whatever happens next (and reading the
      // old one back would cost an FDB dump per peer).
      rb.push(`fdb ${plan.mac}`, () => {
        if (oldMac !== plan.mac) this.#h.fdb.delete({ dev: this.#dev, mac: plan.mac });
      });
      replaceRoute(this.#h, plan.route);
    });
    // The peer's VTEP got a new MAC: its old FDB entry goes, unless another peer still uses it.
    if (oldMac !== undefined && oldMac !== plan.mac) this.#dropFdbIfUnused(oldMac, gw);
    this.#log.debug('peer added', {
      subnet: plan.peer.key,
      publicIp: formatIP(plan.peer.publicIp),
      vtepMac: plan.mac,
    });
  }

  /**
   * Remove a peer's route, neighbour and FDB entries (whichever exist; the FDB entry stays if
   * another peer's neighbour entry still points at that MAC). Kernel errors propagate.
   */
  async removePeer(peer: LeaseInfo): Promise<void> {
    this.#skips.forget(peer);
    const checked = checkPeer(this.#ctx, peer, peer?.backendType, this.#own);
    if (typeof checked === 'string') {
      this.#log.debug('removePeer: nothing of ours can belong to this lease', { reason: checked });
      return;
    }
    // Any route to a cluster subnet on the VTEP is ours; on the underlay only the direct one.
    this.#h.routes.delete({ dst: checked.subnet, dev: this.#dev });
    this.#h.routes.delete({ dst: checked.subnet, dev: this.#ctx.iface.name, via: checked.publicIp });
    const data = parseVxlanData(peer.backendData, this.#vni);
    this.#dropEncap(checked, typeof data === 'string' ? undefined : data.VtepMAC);
    this.#log.debug('peer removed', { subnet: checked.key });
  }

  /**
   * Make the kernel state exactly what `peers` ask for: re-ensures the device (with its MAC)
   * and address if they were prepared and started here, adds what is missing, repairs what
   * drifted and deletes routes, neighbour and FDB entries of cluster subnets that belong to no
   * peer. Throws NOT_FOUND when the device is missing and prepare() was not called on this
   * object; kernel errors propagate (the next resync carries on).
   */
  async resync(peers: readonly LeaseInfo[]): Promise<void> {
    if (this.#mac !== undefined) this.#ensureDevice();
    if (this.#own) {
      const own = checkPeer(this.#ctx, this.#own, this.#own.backendType, undefined);
      if (typeof own !== 'string') this.#ensureAddress(own);
    }
    const vx = this.#h.links.get(this.#dev);
    const nets = this.#direct ? underlayNets(this.#ctx) : [];

    const routes = new Map<string, WantedRoute>();
    const neighs = new Map<string, { ip: IPAddr; mac: string }>();
    const fdbs = new Map<string, IPAddr>();
    const fdbRevision = new Map<string, number>();
    for (const peer of peers) {
      const plan = this.#plan(peer, false, nets);
      if (!plan) continue;
      routes.set(plan.peer.key, plan.route);
      if (plan.kind !== 'vxlan') continue;
      const gw = subnetAddr(plan.peer.subnet);
      neighs.set(formatIP(gw), { ip: gw, mac: plan.mac });
      // One MAC, two leases: a host whose public IP changed (its VTEP keeps its MAC) still has
      // its old lease until that expires. The newest lease (highest store revision) is where the
      // MAC is now; the watch applies events in that order too. Without revisions: the last.
      const rev = peer.modRevision ?? -1;
      const other = fdbs.get(plan.mac);
      if (other && !ipEqual(other, plan.peer.publicIp)) {
        this.#log.warn('two peers advertise one VTEP MAC; the newest lease wins', {
          vtepMac: plan.mac,
          publicIps: [formatIP(other), formatIP(plan.peer.publicIp)],
        });
      }
      if (other && rev < (fdbRevision.get(plan.mac) ?? -1)) continue;
      fdbs.set(plan.mac, plan.peer.publicIp);
      fdbRevision.set(plan.mac, rev);
    }

    // 1. FDB and neighbour entries: add and repair.
    const fdbNow = this.#h.fdb
      .list({ dev: this.#dev })
      .filter((n) => n.lladdr !== undefined && isUnicastMac(n.lladdr) && n.lladdr !== vx.mac);
    const fdbOk = new Set<string>();
    for (const n of fdbNow) {
      const want = n.lladdr === undefined ? undefined : fdbs.get(n.lladdr);
      if (
        want &&
        n.dst !== undefined &&
        ipEqual(n.dst, want) &&
        n.state === NUD.PERMANENT &&
        n.port === undefined &&
        n.vni === undefined &&
        n.via === undefined
      ) {
        fdbOk.add(n.lladdr ?? '');
      }
    }
    for (const [mac, dst] of fdbs) {
      if (fdbOk.has(mac)) continue;
      const had = fdbNow.some((n) => n.lladdr === mac);
      this.#h.fdb.replace({ dev: this.#dev, mac, dst, self: true, permanent: true });
      this.#log.info(had ? 'fdb entry repaired' : 'fdb entry restored', { vtepMac: mac, dst: formatIP(dst) });
    }
    const neighNow = this.#h.neigh
      .list({ dev: this.#dev, family: 4 })
      .filter((n) => n.ip !== undefined && containsIP(this.#ctx.network, n.ip));
    for (const [key, want] of neighs) {
      const n = neighNow.find((x) => x.ip !== undefined && formatIP(x.ip) === key);
      if (n && n.lladdr === want.mac && n.state === NUD.PERMANENT) continue;
      this.#h.neigh.replace({ dev: this.#dev, ip: want.ip, mac: want.mac });
      this.#log.info(n ? 'neighbour entry repaired' : 'neighbour entry restored', {
        ip: key,
        vtepMac: want.mac,
      });
    }

    // 2. Routes: add, repair, remove stale.
    syncRoutes(this.#ctx, [this.#dev, this.#ctx.iface.name], routes, this.#log);

    // 3. Stale neighbour and FDB entries.
    for (const n of neighNow) {
      if (n.ip === undefined || neighs.has(formatIP(n.ip))) continue;
      this.#h.neigh.delete({ dev: this.#dev, ip: n.ip });
      this.#log.info('stale neighbour entry removed', { ip: formatIP(n.ip), vtepMac: n.lladdr });
    }
    for (const n of fdbNow) {
      if (n.lladdr === undefined || fdbs.has(n.lladdr)) continue;
      this.#h.fdb.delete({ dev: this.#dev, mac: n.lladdr, ...(n.dst !== undefined && { dst: n.dst }) });
      this.#log.info('stale fdb entry removed', {
        vtepMac: n.lladdr,
        ...(n.dst !== undefined && { dst: formatIP(n.dst) }),
      });
    }
  }

  /** Nothing: the kernel state stays so traffic flows while the daemon is away. */
  async stop(): Promise<void> {}

  /**
   * Delete the VTEP (its routes, neighbour and FDB entries go with it) and the direct routes to
   * cluster subnets on the underlay interface. Idempotent; kernel errors propagate.
   */
  async teardown(): Promise<void> {
    this.#h.links.delete(this.#dev);
    for (const o of ownedRoutes(this.#ctx, [this.#ctx.iface.name])) deleteOwned(this.#h, o);
    this.#mac = undefined;
    this.#own = undefined;
  }

  // ---- internals ------------------------------------------------------------------------------

  #mtu(): number {
    return this.#ctx.iface.mtu - VXLAN_OVERHEAD;
  }

  /** Why an existing link cannot serve as our VTEP (undefined: it can). */
  #incompatibility(l: Link): string | undefined {
    if (l.kind !== 'vxlan') return `kind ${l.kind === 'device' ? (l.rawKind ?? 'device') : l.kind} vs vxlan`;
    if (l.vni !== this.#vni) return `vni ${l.vni} vs ${this.#vni}`;
    if (l.port !== this.#port) return `dstport ${l.port} vs ${this.#port}`;
    if (l.local === undefined || !ipEqual(l.local, this.#ctx.publicIp)) {
      return `local ${l.local ? formatIP(l.local) : 'none'} vs ${formatIP(this.#ctx.publicIp)}`;
    }
    if (l.devIndex !== this.#ctx.iface.index)
      return `dev index ${l.devIndex ?? 'none'} vs ${this.#ctx.iface.index}`;
    if (l.group !== undefined) return `group ${formatIP(l.group)} vs none`;
    if (l.learning) return 'learning on vs off';
    if (l.proxy) return 'proxy on vs off';
    return undefined;
  }

  /** Create or fix the VTEP, keeping an existing device's MAC; returns it as read back. */
  #ensureDevice(): Link {
    const existing = this.#h.links.find(this.#dev);
    const mac = (isUnicastMac(existing?.mac) ? existing?.mac : undefined) ?? this.#mac ?? randomMac();
    if (existing) {
      const diff = this.#incompatibility(existing);
      if (diff !== undefined) {
        this.#log.warn('device exists with other parameters; recreating it (same MAC)', { diff, mac });
        this.#h.links.delete(this.#dev);
      }
    }
    const link = this.#h.links.ensure(
      {
        kind: 'vxlan',
        name: this.#dev,
        vni: this.#vni,
        local: this.#ctx.publicIp,
        dev: this.#ctx.iface.name,
        port: this.#port,
        learning: false,
        proxy: false,
        mac,
        mtu: this.#mtu(),
        up: true,
      },
      { recreate: true },
    );
    if (!existing) this.#log.info('device created', { mac, mtu: link.mtu });
    // As flannel: no router advertisements on the VTEP. A kernel without IPv6 has no such key.
    try {
      this.#h.sysctl.ensure(`net/ipv6/conf/${this.#dev}/accept_ra`, 0);
    } catch (e) {
      if (!isWeftError(e, 'NOT_FOUND')) throw e;
    }
    return link;
  }

  /** Exactly the subnet's network address /32 among the device's IPv4 addresses. */
  #ensureAddress(own: CheckedPeer): void {
    const addr = subnetAddr(own.subnet);
    for (const a of this.#h.addrs.list({ dev: this.#dev, family: 4 })) {
      if (a.ipnet.len === 32 && ipEqual(a.ipnet.ip, addr)) continue;
      this.#h.addrs.delete(this.#dev, a.ipnet);
      this.#log.info('stale address removed', { addr: formatIPNet(a.ipnet) });
    }
    this.#h.addrs.ensure(this.#dev, { ip: addr, len: 32 });
    this.#h.links.setUp(this.#dev);
  }

  /** What a peer needs, or undefined after logging why it is skipped. */
  #plan(peer: LeaseInfo, always: boolean, nets?: readonly IPNet[]): Plan | undefined {
    const checked = checkPeer(this.#ctx, peer, 'vxlan', this.#own);
    if (typeof checked === 'string') {
      this.#skips.skip(peer, checked, always);
      return undefined;
    }
    if (this.#direct && onLink(this.#ctx, checked.publicIp, nets)) {
      return { kind: 'direct', peer: checked, route: directRoute(this.#ctx, checked) };
    }
    const data = parseVxlanData(peer.backendData, this.#vni);
    if (typeof data === 'string') {
      this.#skips.skip(peer, data, always);
      return undefined;
    }
    const gw = subnetAddr(checked.subnet);
    return {
      kind: 'vxlan',
      peer: checked,
      mac: data.VtepMAC,
      route: { dst: checked.subnet, via: gw, dev: this.#dev, onlink: true },
    };
  }

  /** Remove a peer's neighbour entry and the FDB entry of its MAC (if no other peer uses it). */
  #dropEncap(peer: CheckedPeer, leaseMac?: string): void {
    const gw = subnetAddr(peer.subnet);
    const n = this.#h.neigh.find(this.#dev, gw);
    this.#h.neigh.delete({ dev: this.#dev, ip: gw });
    for (const mac of new Set([n?.lladdr, leaseMac])) {
      if (mac !== undefined && isUnicastMac(mac)) this.#dropFdbIfUnused(mac, gw);
    }
  }

  /** Delete the FDB entry of `mac` unless a neighbour entry other than `except`'s still uses it. */
  #dropFdbIfUnused(mac: string, except: IPAddr): void {
    if (!this.#h.links.find(this.#dev)) return;
    const used = this.#h.neigh
      .list({ dev: this.#dev, family: 4 })
      .some((n) => n.lladdr === mac && n.ip !== undefined && !ipEqual(n.ip, except));
    if (!used) this.#h.fdb.delete({ dev: this.#dev, mac });
  }
}
