/**
 * `weft trace`'s walk: one packet followed through the live kernel state of every namespace on
 * its way, hop by hop, in the order the kernel applies them. The kernel decides wherever it can
 * be asked: every route is the kernel's own lookup for the exact packet (RTM_GETROUTE with its
 * source, input interface, protocol and port, in the namespace where it is; once more with
 * FIB_MATCH for the table entry's prefix), neighbour and FDB entries are read from the device
 * they are on, bridge ports from the bridge's FDB, veth ends from their IFLA_LINK. Only the
 * nftables verdicts are computed here, by ./nftmatch.ts over the namespace's ruleset (an
 * approximation, documented there); and what weft's userspace does (the udp backend's peer
 * table) is taken from the daemon's view of the cluster.
 *
 * The walk (each arrow one or more hops):
 *   originate   route lookup (output) → nft output (DNAT re-routes) → egress
 *   ingress     nft prerouting (DNAT) → route lookup (input, iif) → local delivery, or
 *               nft forward → egress
 *   egress      nft postrouting (SNAT/masquerade) → by device: a VTEP (neighbour entry, FDB
 *               entry, encapsulation, then the outer packet originates here), the udp TUN
 *               (the daemon's peer table, then the outer UDP packet originates here), or a
 *               neighbour entry and the frame out of a veth or a bridge
 *   frames      a bridge forwards by its FDB (or to itself: up to the IP stack); a veth hands
 *               the frame to its other end (found among the places wired to this one)
 *   local       nft input → a VTEP or the udp daemon decapsulates (and the inner packet arrives
 *               on the VTEP or the TUN), or the packet is delivered (and a socket listens?)
 * On an overlay host it also checks what the kernel chose against what weft should have made
 * (the route of a peer's subnet through the backend), so a route deleted by hand is reported at
 * the host where it is missing rather than where the packet is finally lost, with what would
 * fix it. The walk stops at the first broken hop.
 */
import type { NetHandle } from '../../kernel/handle.js';
import { Nft, type NftRuleset } from '../../kernel/nft.js';
import type { RouteLookup } from '../../kernel/routes.js';
import { isWeftError } from '../../lib/errors.js';
import {
  containsIP,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
  ipEqual,
  networkOf,
} from '../../lib/ip.js';
import { NTF, NUD, RT_TABLE } from '../../netlink/consts.js';
import type { Link, VxlanLink } from '../../netlink/link.js';
import type { Neigh } from '../../netlink/neigh.js';
import { describeRule, evaluateHook, type HookResult, type NftHook } from './nftmatch.js';
import { accepts, listening } from './procnet.js';
import {
  type Hop,
  type HopStatus,
  type HopStep,
  type Packet,
  type PeerInfo,
  type Place,
  type Topology,
  type TraceRequest,
  type TraceResult,
  viewOf,
  type Watch,
} from './types.js';

export interface TraceOptions {
  /** Hops after which the walk stops as a loop (default 80). */
  readonly maxHops?: number;
}

/** Default UDP port of the udp backend (flannel's). */
const UDP_PORT = 8285;
/** Outer IPv4 + UDP + VXLAN + inner Ethernet. */
const VXLAN_OVERHEAD = 50;
const ZERO_MAC = '00:00:00:00:00:00';

interface HopInput {
  readonly place: Place;
  readonly dev?: string | undefined;
  readonly step: HopStep;
  readonly decision: string;
  readonly entry?: Record<string, unknown>;
  readonly pkt: Packet;
  readonly changed?: boolean;
  readonly status?: HopStatus;
  readonly problem?: string;
  readonly fix?: string;
  readonly note?: string | undefined;
  readonly watch?: Watch | undefined;
  readonly expect?: Watch | undefined;
}

interface PlaceCache {
  rules?: NftRuleset | null;
  links?: Link[];
  locals?: IPAddr[];
  brnf?: boolean;
}

/** `10.244.2.0/24 via 10.244.2.0 dev weft.1 onlink`, as `ip route` prints a route. */
export function routeText(r: RouteLookup, devName?: string): string {
  const parts: string[] = [];
  if (r.type !== 'unicast') parts.push(r.type);
  parts.push(r.dst ? formatIPNet(r.dst) : 'default');
  if (r.gateway) parts.push(`via ${formatIP(r.gateway)}`);
  const dev = devName ?? r.dev;
  if (dev) parts.push(`dev ${dev}`);
  if (r.table !== RT_TABLE.MAIN && !(r.type === 'local' && r.table === RT_TABLE.LOCAL)) {
    parts.push(`table ${r.table}`);
  }
  if (r.prefsrc && r.type !== 'local') parts.push(`src ${formatIP(r.prefsrc)}`);
  if (r.onlink) parts.push('onlink');
  return parts.join(' ');
}

/** NUD state as `ip neigh` names it. */
export function nudText(state: number): string {
  const names: [number, string][] = [
    [NUD.PERMANENT, 'permanent'],
    [NUD.NOARP, 'noarp'],
    [NUD.REACHABLE, 'reachable'],
    [NUD.STALE, 'stale'],
    [NUD.DELAY, 'delay'],
    [NUD.PROBE, 'probe'],
    [NUD.FAILED, 'failed'],
    [NUD.INCOMPLETE, 'incomplete'],
  ];
  const on = names.filter(([b]) => (state & b) !== 0).map(([, n]) => n);
  return on.length ? on.join(',') : 'none';
}

/**
 * Follow `req` through `topo`: reads kernel state only, changes nothing. A missing route, entry
 * or listener is a broken hop in the result, not an error; throws (KernelError/WeftError) only
 * when the kernel fails otherwise, e.g. a namespace that vanished while it was read.
 */
export async function trace(
  topo: Topology,
  req: TraceRequest,
  opts: TraceOptions = {},
): Promise<TraceResult> {
  const w = new Walker(topo, req, opts.maxHops ?? 80);
  return w.run();
}

class Walker {
  readonly #topo: Topology;
  readonly #req: TraceRequest;
  readonly #max: number;
  readonly #hops: Hop[] = [];
  readonly #notes: string[] = [];
  readonly #cache = new Map<string, PlaceCache>();
  #owners: Map<string, { place: Place; index: number }> | undefined;
  #done = false;
  #start: Packet | undefined;

  constructor(topo: Topology, req: TraceRequest, max: number) {
    this.#topo = topo;
    this.#req = req;
    this.#max = max;
  }

  async run(): Promise<TraceResult> {
    const req = this.#req;
    await this.#originate(req.from, {
      src: req.src,
      dst: req.dst,
      proto: req.proto,
      ...(req.dport !== undefined && { dport: req.dport }),
    });
    const broken = this.#hops.find((h) => h.status === 'broken');
    const start = this.#start ?? {
      src: req.src ?? req.dst,
      dst: req.dst,
      proto: req.proto,
      ...(req.dport !== undefined && { dport: req.dport }),
    };
    return {
      ok: !broken,
      hops: this.#hops,
      packet: viewOf(start),
      ...(broken && { brokenAt: broken.n }),
      notes: [...new Set(this.#notes)],
    };
  }

  // ---- hops ---------------------------------------------------------------------------------

  #add(h: HopInput): Hop {
    const hop: Hop = {
      n: this.#hops.length + 1,
      place: h.place.id,
      ...(h.dev !== undefined && { dev: h.dev }),
      step: h.step,
      decision: h.decision,
      ...(h.entry && { entry: h.entry }),
      packet: viewOf(h.pkt),
      ...(h.changed && { changed: true }),
      status: h.status ?? 'ok',
      ...(h.problem !== undefined && { problem: h.problem }),
      ...(h.fix !== undefined && { fix: h.fix }),
      ...(h.note !== undefined && { note: h.note }),
      ...(h.watch && { watch: h.watch }),
      ...(h.expect && { expect: h.expect }),
    };
    this.#hops.push(hop);
    if (hop.status === 'broken') this.#done = true;
    if (this.#hops.length >= this.#max && !this.#done) {
      this.#hops.push({
        n: this.#hops.length + 1,
        place: h.place.id,
        step: 'leave',
        decision: `stopped after ${this.#max} hops`,
        packet: viewOf(h.pkt),
        status: 'broken',
        problem: 'the packet goes round in a loop (or the way is longer than the trace follows)',
        fix: 'look at the routes of the places above for one that sends the packet back',
      });
      this.#done = true;
    }
    return hop;
  }

  #broken(h: HopInput & { problem: string; fix: string }): void {
    this.#add({ ...h, status: 'broken' });
  }

  // ---- per-place state ------------------------------------------------------------------------

  #c(p: Place): PlaceCache {
    let c = this.#cache.get(p.id);
    if (!c) {
      c = {};
      this.#cache.set(p.id, c);
    }
    return c;
  }

  #links(p: Place): Link[] {
    const c = this.#c(p);
    c.links ??= p.h.links.list();
    return c.links;
  }

  #link(p: Place, nameOrIndex: string | number | undefined): Link | undefined {
    if (nameOrIndex === undefined) return undefined;
    return this.#links(p).find((l) => (typeof nameOrIndex === 'number' ? l.index : l.name) === nameOrIndex);
  }

  async #rules(p: Place): Promise<NftRuleset | null> {
    const c = this.#c(p);
    if (c.rules === undefined) {
      try {
        c.rules = await new Nft(p.h.ns).list('ruleset');
      } catch (e) {
        c.rules = null;
        this.#notes.push(
          `the nftables rules of ${p.id} could not be read (${(e as Error).message}): firewall verdicts there are not shown`,
        );
      }
    }
    return c.rules;
  }

  #brnf(p: Place): boolean {
    const c = this.#c(p);
    if (c.brnf === undefined) {
      try {
        c.brnf = p.h.sysctl.get('net.bridge.bridge-nf-call-iptables') === '1';
      } catch {
        c.brnf = false;
      }
    }
    return c.brnf;
  }

  /** Every address of every place: who owns an IP (for a next hop not yet in a neighbour cache). */
  #owner(ip: IPAddr): { place: Place; link: Link } | undefined {
    if (!this.#owners) {
      this.#owners = new Map();
      for (const p of this.#topo.places) {
        let addrs: ReturnType<NetHandle['addrs']['list']> = [];
        try {
          addrs = p.h.addrs.list();
        } catch {
          addrs = [];
        }
        for (const a of addrs) {
          const k = formatIP(a.ipnet.ip);
          if (!this.#owners.has(k)) this.#owners.set(k, { place: p, index: a.index });
        }
      }
    }
    const o = this.#owners.get(formatIP(ip));
    if (!o) return undefined;
    const link = this.#link(o.place, o.index);
    return link ? { place: o.place, link } : undefined;
  }

  #isLocal(p: Place, ip: IPAddr): boolean {
    if (ip.family === 4 && (ip.value as number) >>> 24 === 127) return true;
    const c = this.#c(p);
    if (!c.locals) {
      try {
        c.locals = p.h.addrs.list().map((a) => a.ipnet.ip);
      } catch {
        c.locals = [];
      }
    }
    return c.locals.some((a) => ipEqual(a, ip));
  }

  #hostOf(p: Place): Place | undefined {
    if (p.kind === 'host') return p;
    return p.host ? this.#topo.places.find((x) => x.id === p.host) : undefined;
  }

  #peerName(ip: IPAddr): string | undefined {
    const l = this.#topo.leases.find((x) => ipEqual(x.publicIp, ip));
    return l?.host;
  }

  // ---- IP layer -------------------------------------------------------------------------------

  /** A packet made by a process in `p` (src undefined: the kernel picks it). */
  async #originate(p: Place, pkt0: Omit<Packet, 'src'> & { src?: IPAddr | undefined }): Promise<void> {
    const first = this.#lookup(p, pkt0, undefined);
    if (!first) return;
    let { r } = first;
    let pkt: Packet = { ...pkt0, src: pkt0.src ?? r.prefsrc ?? this.#addrOf(p, r.oif) ?? pkt0.dst };
    this.#start ??= pkt;
    if (r.type !== 'local') {
      const out = await this.#hook(p, 'output', pkt, undefined, r.dev);
      if (!out) return;
      if (out.nat?.kind === 'dnat' || out.nat?.kind === 'redirect') {
        pkt = out.pkt;
        const again = this.#lookup(p, pkt, undefined);
        if (!again) return;
        r = again.r;
      } else pkt = out.pkt;
    }
    if (r.type === 'local') {
      await this.#local(p, pkt, 'lo');
      return;
    }
    await this.#egress(p, pkt, r, undefined);
  }

  /** A packet arriving at `p`'s IP stack on `iif`. */
  async #ingress(p: Place, frame: Packet, iif: string): Promise<void> {
    if (this.#done) return;
    // The IP layer: the frame's Ethernet header is gone (a next hop's neighbour entry makes a new one).
    const { srcMac: _s, dstMac: _d, ...pkt0 } = frame;
    const pre = await this.#hook(p, 'prerouting', pkt0, iif, undefined);
    if (!pre) return;
    const pkt = pre.pkt;
    const found = this.#lookup(p, pkt, iif);
    if (!found) return;
    const { r } = found;
    if (r.type === 'local') {
      await this.#local(p, pkt, iif);
      return;
    }
    const fwd = await this.#hook(p, 'forward', pkt, iif, r.dev);
    if (!fwd) return;
    await this.#egress(p, fwd.pkt, r, iif);
  }

  /**
   * The kernel's route lookup for `pkt` in `p` (arriving on `iif`, or made there). Adds the route
   * hop; on no route, or a route that is not what weft made on an overlay host, a broken hop.
   */
  #lookup(
    p: Place,
    pkt: Omit<Packet, 'src'> & { src?: IPAddr | undefined },
    iif: string | undefined,
  ): { r: RouteLookup } | undefined {
    if (this.#done) return undefined;
    const ports = pkt.proto !== 'icmp' && pkt.dport !== undefined ? { dport: pkt.dport } : {};
    const q = {
      ...(pkt.src !== undefined && (iif !== undefined || this.#isLocal(p, pkt.src)) && { src: pkt.src }),
      ...(iif !== undefined && { iif }),
      ipProto: pkt.proto,
      ...ports,
    };
    const shown: Packet = { ...pkt, src: pkt.src ?? pkt.dst };
    let r: RouteLookup;
    let m: RouteLookup;
    try {
      r = p.h.routes.get(pkt.dst, q);
      m = p.h.routes.get(pkt.dst, { ...q, fibMatch: true });
    } catch (e) {
      if (!isWeftError(e, 'NOT_FOUND')) throw e;
      const reason = String(e.details.reason ?? 'no-route');
      const to = this.#req.to;
      const outside = p.kind === 'router' || p.kind === 'internet' || p.kind === 'switch';
      const why =
        this.#clusterWhy(p, pkt.dst, undefined) ??
        (to?.kind === 'container' && outside
          ? {
              problem: `${p.id} has no route to ${formatIP(pkt.dst)}: container addresses are not routed outside the cluster`,
              fix: `reach the container through a port published on its host (trace HOST:PORT), or trace from inside the cluster`,
            }
          : undefined);
      this.#broken({
        place: p,
        step: 'route',
        dev: iif,
        decision: `no route to ${formatIP(pkt.dst)}${iif ? ` (arriving on ${iif})` : ''}: ${reason}`,
        entry: { reason, lookup: e.details.lookup },
        pkt: shown,
        problem: why?.problem ?? `${p.id} has no route to ${formatIP(pkt.dst)} (${e.message})`,
        fix:
          why?.fix ??
          `give ${p.id} a route to ${formatIP(pkt.dst)} (or a default route): see \`ip route\` there`,
        ...(why?.expect && { expect: why.expect }),
      });
      return undefined;
    }
    const decision = `${routeText(m, m.dev)}${iif ? ` (in on ${iif})` : ''}`;
    const entry = {
      matched: m.dst ? formatIPNet(m.dst) : 'default',
      type: r.type,
      ...(r.gateway && { gateway: formatIP(r.gateway) }),
      ...(r.dev !== undefined && { dev: r.dev }),
      table: m.table,
      ...(r.prefsrc && { prefsrc: formatIP(r.prefsrc) }),
      ...(iif !== undefined && { iif }),
    };
    const check = r.type === 'local' ? undefined : this.#clusterWhy(p, pkt.dst, r, m);
    if (check?.problem) {
      this.#broken({
        place: p,
        step: 'route',
        dev: r.dev,
        decision,
        entry,
        pkt: shown,
        problem: check.problem,
        fix: check.fix ?? '',
        ...(check.expect && { expect: check.expect }),
      });
      return undefined;
    }
    this.#add({
      place: p,
      step: 'route',
      dev: r.dev,
      decision,
      entry,
      pkt: shown,
      ...(check?.note && { status: 'warning' as const, note: check.note }),
    });
    return { r };
  }

  /**
   * On an overlay host: is `r` (or no route) the way weft sends `dst`? Returns a problem and fix
   * when not, a note when the daemon behind the route is not running, undefined otherwise.
   */
  #clusterWhy(
    p: Place,
    dst: IPAddr,
    r: RouteLookup | undefined,
    matched?: RouteLookup,
  ): { problem?: string; fix?: string; note?: string; expect?: Watch } | undefined {
    const cl = p.kind === 'host' ? p.info?.cluster : undefined;
    if (!cl || !containsIP(cl.network, dst)) return undefined;
    const hints = this.#topo.hints;
    const dead = p.info?.daemon === 'dead';
    const deadText = dead ? `${p.id}'s weft daemon is not running` : undefined;
    if (cl.subnet && containsIP(cl.subnet, dst)) {
      if (!r) {
        return {
          problem: `${formatIP(dst)} is in ${p.id}'s own subnet ${formatIPNet(cl.subnet)}, but ${p.id} has no route to it: the bridge of its default network has lost its address or is down`,
          fix: `restart ${p.id}'s weft daemon, which configures its default network (${hints.logs(p.id)})`,
        };
      }
      return undefined;
    }
    const known = cl.peersKnown ? cl.peers : this.#topo.leases.filter((l) => l.host !== p.id);
    const peer = longest(known, dst);
    const lease = longest(this.#topo.leases, dst);
    const backend = cl.backend;
    const tun = this.#links(p).find((l) => l.kind === 'tun');
    const vtep = this.#links(p).find((l) => l.kind === 'vxlan');
    const expectDev = backend === 'vxlan' ? vtep?.name : backend === 'udp' ? tun?.name : undefined;
    const expect = expectDev ? { place: p.id, dev: expectDev, dir: 'tx' as const } : undefined;
    const status = hints.exec(p.id, 'weft cluster status');
    if (!peer) {
      const holder = lease?.host ? ` (${lease.host} holds ${formatIPNet(lease.subnet)})` : '';
      return {
        problem: lease
          ? `${formatIP(dst)} is in the cluster network ${formatIPNet(cl.network)}, but ${p.id}'s daemon knows no lease covering it${holder}`
          : `${formatIP(dst)} is in the cluster network ${formatIPNet(cl.network)}, but no host holds a lease covering it: no host has that subnet (it left, or its daemon has not acquired a lease)`,
        fix: dead
          ? `${deadText}: start it again (${hints.logs(p.id)})`
          : `see ${p.id}'s view of the cluster: \`${status}\``,
        ...(expect && { expect }),
      };
    }
    const peerName = peer.host ?? lease?.host ?? formatIP(peer.publicIp);
    const want =
      backend === 'vxlan'
        ? `${formatIPNet(peer.subnet)} via ${formatIP(networkOf(peer.subnet).ip)} dev ${vtep?.name ?? 'weft.<VNI>'} onlink`
        : backend === 'host-gw'
          ? `${formatIPNet(peer.subnet)} via ${formatIP(peer.publicIp)}`
          : backend === 'udp'
            ? `${formatIPNet(cl.network)} dev ${tun?.name ?? 'weft-tun0'}`
            : undefined;
    const oif = r ? this.#link(p, r.oif) : undefined;
    const good =
      r !== undefined &&
      (backend === 'vxlan'
        ? (oif?.kind === 'vxlan' &&
            r.gateway !== undefined &&
            ipEqual(r.gateway, networkOf(peer.subnet).ip)) ||
          (r.gateway !== undefined && ipEqual(r.gateway, peer.publicIp))
        : backend === 'host-gw'
          ? r.gateway !== undefined && ipEqual(r.gateway, peer.publicIp)
          : backend === 'udp'
            ? oif?.kind === 'tun'
            : true);
    if (good) {
      const notes: string[] = [];
      if (dead) {
        notes.push(
          `${deadText}: this route is what it left in the kernel and still carries packets, but nothing renews ${p.id}'s lease or follows peers that come and go (${hints.logs(p.id)})`,
        );
      }
      const peerPlace = this.#topo.places.find((x) => x.id === peerName);
      if (peerPlace?.info?.daemon === 'dead') {
        const exp = peer.expires ?? lease?.expires;
        notes.push(
          `${peerName}'s weft daemon is not running: its kernel state still takes the packets, but its lease${exp ? ` (expires ${exp})` : ''} is not renewed; when it expires, ${p.id} removes this route (${hints.logs(peerName)})`,
        );
      }
      return notes.length ? { note: notes.join('; ') } : undefined;
    }
    const instead = r
      ? ` (the kernel's route for it is ${routeText(matched ?? r)} instead, where nothing routes the cluster network)`
      : '';
    let fix: string;
    if (backend === 'udp' && !tun) {
      fix = `${dead ? deadText : `${p.id}'s udp data path is not running`}, and the udp backend's TUN device weft-tun0 went with it (the daemon is its reader): start the daemon again (${hints.logs(p.id)})`;
    } else if (dead) {
      fix = `${deadText}: it makes these routes from the peers' leases; start it again (${hints.logs(p.id)})`;
    } else {
      fix = `${p.id}'s daemon adds it from ${peerName}'s lease and repairs it at its next resync (within about 10 s); if it stays missing: \`${status}\` and ${hints.logs(p.id)}`;
    }
    return {
      problem: `no route to ${formatIPNet(peer.subnet)} (${peerName}) through the ${backend} backend in ${p.id}${want ? `: expected ${want}` : ''}${instead}`,
      fix,
      ...(expect && { expect }),
    };
  }

  #addrOf(p: Place, index: number | undefined): IPAddr | undefined {
    if (index === undefined) return undefined;
    try {
      return p.h.addrs.list().find((a) => a.index === index && a.family === 4)?.ipnet.ip;
    } catch {
      return undefined;
    }
  }

  /**
   * Run `pkt` through nftables `hook` in `p`: a hop when something decided (NAT, a drop, one of
   * weft's rules accepting, an accept in a chain whose policy drops). Undefined when dropped.
   */
  async #hook(
    p: Place,
    hook: NftHook,
    pkt: Packet,
    iif: string | undefined,
    oif: string | undefined,
    opts: { bridged?: string } = {},
  ): Promise<{ pkt: Packet; nat?: HookResult['nat'] } | undefined> {
    if (this.#done) return undefined;
    const rules = await this.#rules(p);
    if (!rules) return { pkt };
    const res = evaluateHook(
      rules,
      hook,
      {
        family: pkt.dst.family,
        saddr: pkt.src,
        daddr: pkt.dst,
        proto: pkt.proto,
        ...(pkt.sport !== undefined && { sport: pkt.sport }),
        ...(pkt.dport !== undefined && { dport: pkt.dport }),
        ...(iif !== undefined && { iifname: iif }),
        ...(oif !== undefined && { oifname: oif }),
        ...(pkt.dnat && { dnat: true }),
        ...(pkt.snat && { snat: true }),
      },
      { isLocal: (ip) => this.#isLocal(p, ip) },
    );
    for (const u of res.uncertain) {
      this.#notes.push(
        `${p.id}: nft rule ${describeRule(u)} uses what weft trace does not evaluate; it was taken as not matching`,
      );
    }
    const label = opts.bridged ? `${hook} (bridged on ${opts.bridged})` : hook;
    if (res.verdict === 'drop') {
      const d = res.decisive!;
      const byPolicy = d.outcome === 'policy-drop';
      const what = byPolicy
        ? `policy drop of ${d.family} ${d.table} ${d.chain}: no rule accepts the packet`
        : `${d.outcome} by ${describeRule(d.rule!)}`;
      const isWeft = d.family === 'inet' && d.table === 'weft';
      let fix: string;
      if (byPolicy && d.table === 'filter' && (d.chain === 'FORWARD' || d.chain === 'INPUT')) {
        const h = this.#hostOf(p)?.id ?? p.id;
        fix = `iptables' ${d.chain} policy is DROP and nothing there accepts weft's traffic: weft's daemon puts the jump to its WEFT-FORWARD chain first in FORWARD when it applies its firewall (restart the daemon), or add it: \`${this.#topo.hints.exec(h, 'iptables -I FORWARD 1 -j WEFT-FORWARD')}\``;
      } else if (byPolicy) {
        fix = `change the policy of ${d.family} ${d.table} ${d.chain} or add a rule accepting this traffic (in ${p.id})`;
      } else if (isWeft && d.rule?.comment) {
        fix = `this is weft's own rule (${d.rule.comment}): ${isolationHint(d.rule.comment)}`;
      } else {
        const handle = d.rule?.handle !== undefined ? ` handle ${d.rule.handle}` : '';
        const del = `nft delete rule ${d.family} ${d.table} ${d.chain}${handle}`;
        fix = `a rule weft did not make drops it: remove it (\`${p.kind === 'host' ? this.#topo.hints.exec(p.id, del) : del}\`${p.kind === 'host' ? '' : ` in ${p.id}`})${isWeft ? "; weft's daemon also replaces its whole table when it next applies its firewall" : ''}`;
      }
      this.#broken({
        place: p,
        step: 'nft',
        dev: oif ?? iif,
        decision: `${label}: ${what}`,
        entry: { hook, verdict: 'drop', chain: d, ...(d.rule && { rule: d.rule }) },
        pkt,
        problem: `the packet is dropped in ${p.id} at ${label}: ${what}`,
        fix,
        ...(oif !== undefined && { expect: { place: p.id, dev: oif, dir: 'tx' as const } }),
      });
      return undefined;
    }
    let out = pkt;
    const shown: string[] = [];
    if (res.nat) {
      const n = res.nat;
      if (n.kind === 'dnat' || n.kind === 'redirect') {
        const to = n.addr ?? (n.kind === 'redirect' && iif ? this.#addrOfName(p, iif) : undefined) ?? pkt.dst;
        out = { ...out, dst: to, ...(n.port !== undefined && { dport: n.port }), dnat: true };
        shown.push(
          `${n.kind} to ${formatIP(to)}${n.port !== undefined ? `:${n.port}` : ''} by ${describeRule(n.rule)}`,
        );
      } else {
        const src = n.kind === 'snat' && n.addr ? n.addr : this.#masqSource(p, oif, pkt.dst);
        out = { ...out, src: src ?? out.src, snat: true };
        shown.push(`${n.kind} to ${src ? formatIP(src) : '?'} by ${describeRule(n.rule)}`);
      }
    }
    for (const c of res.chains) {
      if (c.outcome !== 'accept' || !c.rule) continue;
      const weftRule = c.family === 'inet' && c.table === 'weft' && c.rule.comment !== undefined;
      if (weftRule || c.policy === 'drop') {
        const pol = c.policy === 'drop' ? ` (${c.family} ${c.table} ${c.chain}'s policy is drop)` : '';
        shown.push(`accept by ${describeRule(c.rule)}${pol}`);
      }
    }
    if (shown.length > 0) {
      this.#add({
        place: p,
        step: 'nft',
        dev: oif ?? iif,
        decision: `${label}: ${shown.join('; ')}`,
        entry: {
          hook,
          verdict: 'accept',
          chains: res.chains,
          ...(res.nat && { nat: { ...res.nat, addr: res.nat.addr ? formatIP(res.nat.addr) : undefined } }),
        },
        pkt: out,
        ...(res.nat && { changed: true }),
      });
    }
    return { pkt: out, ...(res.nat && { nat: res.nat }) };
  }

  #addrOfName(p: Place, dev: string): IPAddr | undefined {
    return this.#addrOf(p, this.#link(p, dev)?.index);
  }

  /** The source a masquerade picks: the output device's address for the destination. */
  #masqSource(p: Place, oif: string | undefined, dst: IPAddr): IPAddr | undefined {
    try {
      const r = p.h.routes.get(dst, oif !== undefined ? { oif } : {});
      if (r.prefsrc) return r.prefsrc;
    } catch {
      // fall back to the device's first address
    }
    return oif !== undefined ? this.#addrOfName(p, oif) : undefined;
  }

  /** Out of `p` along route `r`: postrouting, then by the kind of the output device. */
  async #egress(p: Place, pkt0: Packet, r: RouteLookup, iif: string | undefined): Promise<void> {
    if (this.#done) return;
    const post = await this.#hook(p, 'postrouting', pkt0, iif, r.dev);
    if (!post) return;
    const pkt = post.pkt;
    const dev = this.#link(p, r.oif);
    if (!dev) {
      this.#broken({
        place: p,
        step: 'route',
        decision: `output device ${r.dev ?? r.oif ?? '?'} not found`,
        pkt,
        problem: `the route's device ${r.dev ?? r.oif ?? '?'} vanished while tracing`,
        fix: 'run the trace again',
      });
      return;
    }
    const nh = r.gateway ?? pkt.dst;
    if (dev.kind === 'vxlan') await this.#vxlanOut(p, pkt, dev, nh);
    else if (dev.kind === 'tun') await this.#tunOut(p, pkt, dev);
    else await this.#l3Out(p, pkt, dev, nh);
  }

  // ---- encapsulation --------------------------------------------------------------------------

  async #vxlanOut(p: Place, pkt: Packet, dev: VxlanLink, nh: IPAddr): Promise<void> {
    const hints = this.#topo.hints;
    const peer = this.#peerFor(p, nh);
    const peerName = peer?.host ?? (peer ? formatIP(peer.publicIp) : 'the peer');
    const expect: Watch = { place: p.id, dev: dev.name, dir: 'tx' };
    const daemonFix = (what: string) =>
      p.info?.daemon === 'dead'
        ? `${p.id}'s weft daemon is not running: it writes ${what} from ${peerName}'s lease; start it again (${hints.logs(p.id)})`
        : `${p.id}'s daemon writes ${what} from ${peerName}'s lease and repairs it at its next resync (within about 10 s); if it stays missing: \`${hints.exec(p.id, 'weft cluster status')}\``;
    const n = p.h.neigh.find(dev.name, nh);
    if (!n?.lladdr || (n.state & (NUD.FAILED | NUD.INCOMPLETE)) !== 0) {
      this.#broken({
        place: p,
        step: 'neighbour',
        dev: dev.name,
        decision: `no neighbour entry for ${formatIP(nh)} on ${dev.name}${n ? ` (${nudText(n.state)})` : ''}`,
        pkt,
        problem: `${p.id} does not know the MAC of ${peerName}'s VTEP (${formatIP(nh)} on ${dev.name}): the VTEP does not ARP across hosts, so the packet is dropped`,
        fix: daemonFix(`the entry \`${formatIP(nh)} lladdr <VtepMAC> dev ${dev.name} nud permanent\``),
        expect,
      });
      return;
    }
    const mac = n.lladdr;
    this.#add({
      place: p,
      step: 'neighbour',
      dev: dev.name,
      decision: `${formatIP(nh)} lladdr ${mac} dev ${dev.name} ${nudText(n.state)}${peer ? ` (${peerName}'s VTEP)` : ''}`,
      entry: { ip: formatIP(nh), lladdr: mac, dev: dev.name, state: nudText(n.state) },
      pkt: { ...pkt, srcMac: dev.mac ?? '', dstMac: mac },
    });
    const entries = p.h.fdb.find(dev.name, mac).filter((e) => e.dst !== undefined);
    const fallback = entries.length
      ? []
      : p.h.fdb.find(dev.name, ZERO_MAC).filter((e) => e.dst !== undefined);
    const e = entries[0] ?? fallback[0];
    if (!e?.dst) {
      this.#broken({
        place: p,
        step: 'fdb',
        dev: dev.name,
        decision: `no FDB entry for ${mac} on ${dev.name}`,
        pkt,
        problem: `${dev.name} in ${p.id} does not know which host has ${mac} (${peerName}'s VTEP): the frame is dropped (tx_dropped)`,
        fix: daemonFix(
          `the entry \`${mac} dev ${dev.name} dst ${peer ? formatIP(peer.publicIp) : '<its public IP>'} self permanent\``,
        ),
        expect,
      });
      return;
    }
    const remote = e.dst!;
    const remoteName = this.#peerName(remote);
    const vni = e.vni ?? dev.vni;
    const port = e.port ?? dev.port;
    let note: string | undefined;
    if (peer && !ipEqual(peer.publicIp, remote)) {
      note = `${peerName}'s lease says its public IP is ${formatIP(peer.publicIp)}, but the FDB entry sends to ${formatIP(remote)}`;
    }
    this.#add({
      place: p,
      step: 'fdb',
      dev: dev.name,
      decision: `${e.lladdr} dev ${dev.name} dst ${formatIP(remote)}${remoteName ? ` (${remoteName})` : ''} ${fdbFlags(e)}${entries.length ? '' : ' (the default entry: no entry for the MAC itself)'}`,
      entry: fdbEntry(e, dev.name),
      pkt: { ...pkt, srcMac: dev.mac ?? '', dstMac: mac },
      ...(note && { status: 'warning' as const, note }),
    });
    const inner: Packet = { ...pkt, srcMac: dev.mac ?? '', dstMac: mac };
    const src = dev.local ?? this.#masqSource(p, undefined, remote) ?? remote;
    const outer: Packet = {
      src,
      dst: remote,
      proto: 'udp',
      dport: port,
      encap: { kind: 'vxlan', vni, inner },
    };
    let mtuNote: string | undefined;
    try {
      const u = p.h.routes.get(remote);
      const under = this.#link(p, u.oif);
      if (under && dev.mtu + VXLAN_OVERHEAD > under.mtu) {
        mtuNote = `${dev.name} has MTU ${dev.mtu} but ${under.name} only ${under.mtu}: encapsulated packets above ${under.mtu - VXLAN_OVERHEAD} bytes do not fit`;
      }
    } catch {
      // the outer lookup below reports it
    }
    this.#add({
      place: p,
      step: 'encap',
      dev: dev.name,
      decision: `vxlan vni ${vni}: outer ${formatIP(src)} → ${formatIP(remote)} udp/${port}`,
      entry: { kind: 'vxlan', vni, port, local: formatIP(src), remote: formatIP(remote) },
      pkt: outer,
      changed: true,
      watch: { place: p.id, dev: dev.name, dir: 'tx' },
      ...(mtuNote && { status: 'warning' as const, note: mtuNote }),
    });
    await this.#originate(p, outer);
  }

  async #tunOut(p: Place, pkt: Packet, dev: Link): Promise<void> {
    const cl = p.info?.cluster;
    const hints = this.#topo.hints;
    const watch: Watch = { place: p.id, dev: dev.name, dir: 'tx' };
    if (cl?.backend !== 'udp') {
      this.#add({
        place: p,
        step: 'leave',
        dev: dev.name,
        decision: `into the TUN device ${dev.name}: the process reading it takes the packet (not weft's udp backend: the trace ends here)`,
        pkt,
        watch,
      });
      this.#done = true;
      return;
    }
    const known = cl.peersKnown ? cl.peers : this.#topo.leases.filter((l) => l.host !== p.id);
    const peer = longest(known, pkt.dst);
    if (!peer) {
      this.#broken({
        place: p,
        step: 'encap',
        dev: dev.name,
        decision: `${dev.name} → ${p.id}'s udp data path: no peer covers ${formatIP(pkt.dst)}`,
        pkt,
        problem: `${p.id}'s udp data path has no peer lease covering ${formatIP(pkt.dst)}: it drops the packet (counted in its stats)`,
        fix: `see ${p.id}'s view of the cluster: \`${hints.exec(p.id, 'weft cluster status')}\``,
        expect: watch,
      });
      return;
    }
    const peerName = peer.host ?? formatIP(peer.publicIp);
    const src = p.info?.publicIp ?? this.#masqSource(p, undefined, peer.publicIp) ?? peer.publicIp;
    const port = cl.udpPort ?? UDP_PORT;
    const outer: Packet = {
      src,
      dst: peer.publicIp,
      proto: 'udp',
      dport: port,
      encap: { kind: 'udp', inner: pkt },
    };
    this.#add({
      place: p,
      step: 'encap',
      dev: dev.name,
      decision: `${dev.name} → ${p.id}'s weft daemon (udp backend): peer table ${formatIPNet(peer.subnet)} → ${formatIP(peer.publicIp)} (${peerName}): sent in UDP ${formatIP(src)} → ${formatIP(peer.publicIp)}:${port}`,
      entry: { kind: 'udp', peer: formatIPNet(peer.subnet), remote: formatIP(peer.publicIp), port },
      pkt: outer,
      changed: true,
      watch,
      ...(p.info?.daemon === 'dead' && {
        status: 'warning' as const,
        note: `${p.id}'s daemon does not answer its API, yet ${dev.name} exists (some process still reads it)`,
      }),
    });
    await this.#originate(p, outer);
  }

  /** The peer lease covering `ip`, from `p`'s daemon (or every lease when it does not answer). */
  #peerFor(p: Place, ip: IPAddr): PeerInfo | undefined {
    const cl = p.info?.cluster;
    const list = cl?.peersKnown ? cl.peers : this.#topo.leases.filter((l) => l.host !== p.id);
    const found = longest(list, ip);
    if (!found || found.host) return found;
    const host = this.#peerName(found.publicIp);
    return host ? { ...found, host } : found;
  }

  // ---- local delivery and decapsulation -------------------------------------------------------

  async #local(p: Place, pkt0: Packet, iif: string): Promise<void> {
    if (this.#done) return;
    const inp = await this.#hook(p, 'input', pkt0, iif, undefined);
    if (!inp) return;
    const pkt = inp.pkt;
    if (pkt.encap?.kind === 'vxlan') {
      await this.#vxlanIn(p, pkt);
      return;
    }
    if (pkt.encap?.kind === 'udp') {
      await this.#udpIn(p, pkt);
      return;
    }
    this.#deliver(p, pkt, iif);
  }

  async #vxlanIn(p: Place, outer: Packet): Promise<void> {
    const enc = outer.encap!;
    const hints = this.#topo.hints;
    const vx = this.#links(p).find(
      (l): l is VxlanLink =>
        l.kind === 'vxlan' && l.port === outer.dport && (enc.vni === undefined || l.vni === enc.vni),
    );
    if (!vx) {
      this.#broken({
        place: p,
        step: 'decap',
        decision: `no VTEP for vni ${enc.vni ?? '?'} on UDP ${outer.dport}`,
        pkt: outer,
        problem: `nothing decapsulates VXLAN vni ${enc.vni ?? '?'} on UDP ${outer.dport} in ${p.id}: its VTEP is missing`,
        fix: `${p.id}'s weft daemon creates it when it starts (${hints.logs(p.id)}; \`${hints.exec(p.id, 'ip -d link show type vxlan')}\`)`,
      });
      return;
    }
    const inner = enc.inner;
    if (inner.dstMac && vx.mac && inner.dstMac !== vx.mac) {
      this.#broken({
        place: p,
        step: 'decap',
        dev: vx.name,
        decision: `${vx.name} (MAC ${vx.mac}) receives a frame for ${inner.dstMac}`,
        pkt: outer,
        problem: `the sender used ${inner.dstMac} as ${p.id}'s VTEP MAC, but ${p.id}'s ${vx.name} has ${vx.mac}: the frame is dropped (a stale neighbour/FDB entry on the sender, e.g. after ${p.id} re-created its VTEP)`,
        fix: `the sender's daemon rewrites both from ${p.id}'s lease at its next resync; check that ${p.id}'s lease advertises ${vx.mac}: \`${hints.exec(p.id, 'weft cluster status')}\``,
        expect: { place: p.id, dev: vx.name, dir: 'rx' },
      });
      return;
    }
    this.#add({
      place: p,
      step: 'decap',
      dev: vx.name,
      decision: `${vx.name} (vni ${vx.vni}, udp/${vx.port}, MAC ${vx.mac ?? '?'}) decapsulates: the inner packet arrives on ${vx.name}`,
      entry: { dev: vx.name, vni: vx.vni, port: vx.port, mac: vx.mac },
      pkt: inner,
      changed: true,
      watch: { place: p.id, dev: vx.name, dir: 'rx' },
    });
    await this.#ingress(p, inner, vx.name);
  }

  async #udpIn(p: Place, outer: Packet): Promise<void> {
    const inner = outer.encap!.inner;
    const hints = this.#topo.hints;
    const port = outer.dport ?? UDP_PORT;
    const tun = this.#links(p).find((l) => l.kind === 'tun');
    const dead = p.info?.daemon === 'dead';
    const socks = listening(p.h.ns, 'udp');
    if (!accepts(socks, 'udp', outer.dst, port) || !tun) {
      this.#broken({
        place: p,
        step: 'decap',
        decision: `UDP ${port}: ${accepts(socks, 'udp', outer.dst, port) ? `a socket listens, but no TUN device` : 'nothing listens'}`,
        pkt: outer,
        problem: `nothing in ${p.id} takes the udp backend's datagrams on port ${port}${tun ? '' : ' (and its TUN device weft-tun0 is gone)'}: ${dead ? `${p.id}'s weft daemon is not running` : `${p.id}'s udp data path is not running`}; the datagram is answered with ICMP port unreachable`,
        fix: `start ${p.id}'s weft daemon again: it is the udp backend's data path (${hints.logs(p.id)})`,
        ...(tun && { expect: { place: p.id, dev: tun.name, dir: 'rx' as const } }),
      });
      return;
    }
    const own = p.info?.cluster?.subnet;
    if (own && !containsIP(own, inner.dst)) {
      this.#broken({
        place: p,
        step: 'decap',
        dev: tun.name,
        decision: `${p.id}'s udp data path: ${formatIP(inner.dst)} is not in its subnet ${formatIPNet(own)}`,
        pkt: outer,
        problem: `the sender's peer table sent ${formatIP(inner.dst)} to ${p.id}, whose subnet is ${formatIPNet(own)}: the data path drops it`,
        fix: `the sender's peer table is stale: \`${hints.exec(p.id, 'weft cluster status')}\` on both hosts`,
        expect: { place: p.id, dev: tun.name, dir: 'rx' },
      });
      return;
    }
    this.#add({
      place: p,
      step: 'decap',
      dev: tun.name,
      decision: `${p.id}'s weft daemon takes UDP ${port} and writes the inner packet into ${tun.name}`,
      entry: { kind: 'udp', port, dev: tun.name },
      pkt: inner,
      changed: true,
      watch: { place: p.id, dev: tun.name, dir: 'rx' },
      ...(dead && {
        status: 'warning' as const,
        note: `${p.id}'s daemon does not answer its API, but a socket listens on UDP ${port}`,
      }),
    });
    await this.#ingress(p, inner, tun.name);
  }

  #deliver(p: Place, pkt: Packet, iif: string): void {
    const dev = iif === 'lo' ? undefined : iif;
    let status: HopStatus = 'ok';
    let problem: string | undefined;
    let fix: string | undefined;
    let what = pkt.proto === 'icmp' ? 'the kernel answers the echo request' : '';
    if (pkt.proto !== 'icmp' && pkt.dport !== undefined) {
      const socks = listening(p.h.ns, pkt.proto);
      if (accepts(socks, pkt.proto, pkt.dst, pkt.dport))
        what = `a socket listens on ${pkt.proto}/${pkt.dport}`;
      else {
        status = 'broken';
        what = `nothing listens on ${pkt.proto}/${pkt.dport}`;
        const asked = this.#req.to?.kind === 'host' && !pkt.dnat;
        problem = `the packet reaches ${p.id}, but nothing listens on ${pkt.proto}/${pkt.dport} there: ${pkt.proto === 'tcp' ? 'the connection is refused' : 'the datagram is answered with ICMP port unreachable'}${asked ? `; no DNAT rule took it to a container, so ${pkt.dport}/${pkt.proto} is not published on ${p.id}` : ''}`;
        fix = asked
          ? `publish the port (\`weft run -p ${pkt.dport}:PORT …\`), or trace a container's own address`
          : `start a server on ${pkt.proto}/${pkt.dport} in ${p.id}`;
      }
    }
    this.#add({
      place: p,
      step: 'deliver',
      ...(dev !== undefined && { dev }),
      decision: `${formatIP(pkt.dst)} is ${p.id}'s own address${dev ? ` (in on ${dev})` : ''}: delivered; ${what}`,
      pkt,
      status,
      ...(problem !== undefined && { problem, fix: fix ?? '' }),
    });
    this.#done = true;
  }

  // ---- links and frames -----------------------------------------------------------------------

  /** Resolve the next hop's MAC on `dev` (neighbour entry, or who owns the address), then send the frame. */
  async #l3Out(p: Place, pkt: Packet, dev: Link, nh: IPAddr): Promise<void> {
    const n = p.h.neigh.find(dev.name, nh);
    const owner = this.#owner(nh);
    let mac: string | undefined;
    let note: string | undefined;
    let decision: string;
    let entry: Record<string, unknown> | undefined;
    const bad = n !== undefined && (n.state & (NUD.FAILED | NUD.INCOMPLETE)) !== 0;
    if (n?.lladdr && !bad) {
      mac = n.lladdr;
      decision = `${formatIP(nh)} lladdr ${mac} dev ${dev.name} ${nudText(n.state)}`;
      entry = { ip: formatIP(nh), lladdr: mac, dev: dev.name, state: nudText(n.state) };
    } else {
      mac = owner?.link.mac;
      decision = `${formatIP(nh)} on ${dev.name}: ${n ? nudText(n.state) : 'not in the neighbour cache'}${owner ? `; it is ${owner.place.id}'s ${owner.link.name} (${mac ?? '?'})` : ''}`;
      entry = { ip: formatIP(nh), dev: dev.name, state: n ? nudText(n.state) : 'none' };
      if (!owner) {
        // A wire the trace can follow (a bridge here, a veth whose other end it knows) must lead
        // somewhere; anything else is the edge of what it can see.
        if (dev.kind === 'bridge' || (dev.kind === 'veth' && this.#vethPeer(p, dev))) {
          this.#broken({
            place: p,
            step: 'neighbour',
            dev: dev.name,
            decision,
            entry,
            pkt,
            problem: `nothing the trace knows has ${formatIP(nh)}${n ? ` and ${p.id}'s ARP for it ${bad ? 'failed' : 'is unanswered'}` : ''}: the packet cannot be delivered on ${dev.name}`,
            fix: `check that ${formatIP(nh)} exists (the next hop's namespace is up, its address is set)`,
          });
          return;
        }
        this.#add({
          place: p,
          step: 'leave',
          dev: dev.name,
          decision: `out of ${dev.name} towards ${formatIP(nh)}${n?.lladdr ? ` (${n.lladdr})` : ''}: the packet leaves ${p.id}; beyond it the trace cannot look`,
          pkt,
          watch: { place: p.id, dev: dev.name, dir: 'tx' },
        });
        this.#done = true;
        return;
      }
      note = bad
        ? `the kernel's entry is ${nudText(n!.state)} (an earlier ARP went unanswered); it asks again on the next packet`
        : 'not cached yet: ARP resolves it on the first packet';
    }
    this.#add({
      place: p,
      step: 'neighbour',
      dev: dev.name,
      decision,
      ...(entry && { entry }),
      pkt: { ...pkt, ...(dev.mac && { srcMac: dev.mac }), ...(mac && { dstMac: mac }) },
      ...(note && { note }),
    });
    const framed: Packet = { ...pkt, ...(dev.mac && { srcMac: dev.mac }), ...(mac && { dstMac: mac }) };
    await this.#frameOut(p, dev, framed, undefined);
  }

  /** A frame sent out of `dev` (a bridge forwards it, a veth hands it over, anything else: it leaves). */
  async #frameOut(p: Place, dev: Link, pkt: Packet, inPort: Link | undefined): Promise<void> {
    if (this.#done) return;
    if (dev.kind === 'bridge') {
      await this.#bridge(p, dev, inPort, pkt);
      return;
    }
    if (dev.kind === 'veth') {
      await this.#cross(p, dev, pkt);
      return;
    }
    this.#add({
      place: p,
      step: 'leave',
      dev: dev.name,
      decision: `out of ${dev.name}${pkt.dstMac ? ` to ${pkt.dstMac}` : ''}: the packet leaves ${p.id}; beyond it the trace cannot look`,
      pkt,
      watch: { place: p.id, dev: dev.name, dir: 'tx' },
    });
    this.#done = true;
  }

  /** The other end of veth `dev`, among the places wired to `p`. */
  #vethPeer(p: Place, dev: Link): { place: Place; link: Link } | undefined {
    if (dev.parentIndex === undefined) return undefined;
    for (const q of this.#topo.adjacent(p)) {
      const l = this.#link(q, dev.parentIndex);
      if (l && l.kind === 'veth' && l.parentIndex === dev.index) return { place: q, link: l };
    }
    return undefined;
  }

  async #cross(p: Place, dev: Link, pkt: Packet): Promise<void> {
    const peer = this.#vethPeer(p, dev);
    if (!peer) {
      this.#add({
        place: p,
        step: 'leave',
        dev: dev.name,
        decision: `out of ${dev.name}: its other end is in a namespace the trace does not know; the packet leaves ${p.id} here`,
        pkt,
        watch: { place: p.id, dev: dev.name, dir: 'tx' },
      });
      this.#done = true;
      return;
    }
    const master =
      peer.link.masterIndex !== undefined ? this.#link(peer.place, peer.link.masterIndex) : undefined;
    this.#add({
      place: peer.place,
      step: 'veth',
      dev: peer.link.name,
      decision: `${p.id} ${dev.name} → ${peer.place.id} ${peer.link.name}${master ? ` (port of ${master.name})` : ''}`,
      entry: { from: { place: p.id, dev: dev.name }, to: { place: peer.place.id, dev: peer.link.name } },
      pkt,
      watch: { place: peer.place.id, dev: peer.link.name, dir: 'rx' },
    });
    await this.#arrive(peer.place, peer.link, pkt);
  }

  async #arrive(p: Place, link: Link, pkt: Packet): Promise<void> {
    if (this.#done) return;
    if (link.masterIndex !== undefined) {
      const br = this.#link(p, link.masterIndex);
      if (br?.kind === 'bridge') {
        await this.#bridge(p, br, link, pkt);
        return;
      }
    }
    if (!pkt.dstMac || pkt.dstMac === link.mac || isGroupMac(pkt.dstMac)) {
      await this.#ingress(p, pkt, link.name);
      return;
    }
    this.#broken({
      place: p,
      step: 'veth',
      dev: link.name,
      decision: `${link.name} (${link.mac ?? '?'}) receives a frame for ${pkt.dstMac}`,
      pkt,
      problem: `the frame is addressed to ${pkt.dstMac}, but ${p.id}'s ${link.name} is ${link.mac ?? '?'}: it is dropped (a stale neighbour entry on the sender)`,
      fix: 'flush the stale neighbour entry on the sending side (`ip neigh flush dev …`)',
    });
  }

  /** Bridge `br` in `p` forwards a frame that came in on `inPort` (undefined: from `p`'s own IP stack). */
  async #bridge(p: Place, br: Link, inPort: Link | undefined, pkt: Packet): Promise<void> {
    const mac = pkt.dstMac;
    let entries: Neigh[] = [];
    try {
      entries = mac ? p.h.fdb.list({ master: br.name }).filter((e) => e.lladdr === mac) : [];
    } catch {
      entries = [];
    }
    const local =
      inPort !== undefined &&
      mac !== undefined &&
      (mac === br.mac || entries.some((e) => (e.state & NUD.PERMANENT) !== 0 && (e.flags & NTF.SELF) === 0));
    if (local) {
      this.#add({
        place: p,
        step: 'bridge',
        dev: br.name,
        decision: `${br.name}: ${mac} is the bridge's own address → up to ${p.id}'s IP stack (in on ${br.name})`,
        entry: { bridge: br.name, mac, local: true },
        pkt,
        watch: { place: p.id, dev: br.name, dir: 'rx' },
      });
      await this.#ingress(p, pkt, br.name);
      return;
    }
    const learned = entries.find((e) => e.ifindex !== br.index && (e.flags & NTF.SELF) === 0);
    let port = learned ? this.#link(p, learned.ifindex) : undefined;
    let how: string;
    if (port && learned) {
      const kind =
        learned.state & NUD.NOARP ? 'static' : learned.state & NUD.PERMANENT ? 'permanent' : 'learned';
      how = `fdb ${mac} dev ${port.name} master ${br.name} (${kind})`;
    } else {
      // Not learned (yet): the bridge floods; say which port leads to the MAC.
      port = mac ? this.#portTowards(p, br, mac) : undefined;
      how = `${mac ?? 'the frame'} not learned: flooded; ${port ? `it reaches ${port.name}` : 'no port leads to it'}`;
    }
    if (!port) {
      this.#broken({
        place: p,
        step: 'bridge',
        dev: br.name,
        decision: `${br.name}: ${how}`,
        pkt,
        problem: `no port of ${br.name} in ${p.id} leads to ${mac ?? 'the destination'}: the frame is lost`,
        fix: `check the ports of ${br.name} (\`bridge link\`) and the destination's interface`,
      });
      return;
    }
    if (inPort !== undefined && this.#brnf(p)) {
      const f = await this.#hook(p, 'forward', pkt, br.name, br.name, { bridged: br.name });
      if (!f) return;
    }
    const hair = inPort !== undefined && port.index === inPort.index;
    this.#add({
      place: p,
      step: 'bridge',
      dev: port.name,
      decision: `${br.name}: ${how}${hair ? ' (back out of the port it came in on: hairpin)' : ''}`,
      entry: { bridge: br.name, mac, port: port.name, learned: learned !== undefined },
      pkt,
      watch: { place: p.id, dev: port.name, dir: 'tx' },
    });
    await this.#frameOut(p, port, pkt, undefined);
  }

  #portTowards(p: Place, br: Link, mac: string): Link | undefined {
    for (const port of this.#links(p).filter((l) => l.masterIndex === br.index)) {
      if (port.kind !== 'veth') continue;
      const peer = this.#vethPeer(p, port);
      if (!peer) continue;
      if (peer.link.mac === mac) return port;
      // One level on: the peer end is a port of another bridge whose device has the MAC.
      if (peer.link.masterIndex !== undefined && this.#link(peer.place, peer.link.masterIndex)?.mac === mac) {
        return port;
      }
    }
    return undefined;
  }
}

function longest<T extends { subnet: IPNet }>(list: readonly T[], ip: IPAddr): T | undefined {
  let best: T | undefined;
  for (const x of list) {
    if (containsIP(x.subnet, ip) && (!best || x.subnet.len > best.subnet.len)) best = x;
  }
  return best;
}

const isGroupMac = (mac: string): boolean => ((Number.parseInt(mac.slice(0, 2), 16) || 0) & 1) === 1;

function fdbFlags(e: Neigh): string {
  const f: string[] = [];
  if (e.flags & NTF.SELF) f.push('self');
  if (e.flags & NTF.MASTER) f.push('master');
  if (e.state & NUD.PERMANENT) f.push('permanent');
  else if (e.state & NUD.NOARP) f.push('static');
  return f.join(' ');
}

function fdbEntry(e: Neigh, dev: string): Record<string, unknown> {
  return {
    mac: e.lladdr,
    dev,
    ...(e.dst && { dst: formatIP(e.dst) }),
    ...(e.vni !== undefined && { vni: e.vni }),
    ...(e.port !== undefined && { port: e.port }),
    flags: fdbFlags(e),
  };
}

/** What to do about one of weft's own drop rules, from its comment. */
function isolationHint(comment: string): string {
  if (/isolation/.test(comment)) {
    return 'networks are isolated from each other and from outside; connect the source to the destination network, or publish a port and use the host address';
  }
  if (/icc=false/.test(comment))
    return 'the network was made with icc=false (no traffic between its containers)';
  if (/internal/.test(comment)) return 'the network is internal (nothing enters or leaves it)';
  return 'see the network’s options';
}
