/**
 * Routes of one namespace, IPv4 and IPv6: list, add, replace (the idempotent ensure), delete, and
 * `get`, the kernel's own route lookup for one packet (what `ip route get` asks, and what
 * `weft trace` builds on). Callers name devices; indexes are resolved here. Every input is
 * checked before anything is sent: a bad prefix, a gateway of the other family or an unknown
 * device is an INVALID or NOT_FOUND error and the kernel is left as it was.
 *
 * Defaults are those of `ip route`: protocol boot; scope link for a route without gateway,
 * universe with one, host for a local route; table main (local for a local route); metric 0
 * for IPv4 (the kernel makes an IPv6 metric 0 into 1024).
 *
 * Kernel refusals are translated where the kernel's own words do not help: a gateway that is
 * not on-link is reported as such (the kernel says EINVAL "Nexthop has invalid gateway" for
 * IPv4 and EHOSTUNREACH for IPv6; we ask the kernel where the gateway is to be sure).
 */
import { KernelError, WeftError } from '../lib/errors.js';
import {
  bitsOf,
  type Family,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
  ipEqual,
  maskIP,
  networkOf,
  parseIP,
  parseIPNet,
} from '../lib/ip.js';
import { familyOfAf } from '../netlink/addr.js';
import { NLM_F, RT_SCOPE, RT_TABLE, RTM, RTM_F, RTPROT } from '../netlink/consts.js';
import { decodeBody, type NlMessage, rtmsg } from '../netlink/message.js';
import {
  decodeRoute,
  encodeRoute,
  encodeRouteLookup,
  type NewRoute,
  type Route,
  type RouteQuery,
  type RouteType,
  routeDumpRequest,
  type ScopeName,
  scopeNumber,
} from '../netlink/route.js';
import { Links } from './links.js';
import type { Netns } from './netns.js';
import type { NetlinkSocket } from './rtnl.js';

// errno values not (yet) in lib/errors' table.
const ENETDOWN = 100;
const EHOSTUNREACH = 113;
const ENETUNREACH = 101;
const EINVAL = 22;
const EACCES = 13;
const ENODEV = 19;

/** Route types a caller may create. */
export type RouteSpecType = 'unicast' | 'blackhole' | 'unreachable' | 'prohibit' | 'local' | 'throw';
const specTypes: readonly RouteSpecType[] = [
  'unicast',
  'blackhole',
  'unreachable',
  'prohibit',
  'local',
  'throw',
];
/** Types whose packets the kernel drops or hands back: they take no gateway or device. */
const rejectTypes = new Set<RouteSpecType>(['blackhole', 'unreachable', 'prohibit', 'throw']);

/** A route to create or delete, with names and text where the codec has indexes and values. */
export interface RouteSpec {
  /** Destination prefix (host bits must be clear), a bare address (a host route), or 'default'. */
  readonly dst: IPNet | string | 'default';
  /** Gateway (next hop); must be of the destination's family. */
  readonly via?: IPAddr | string;
  /** Output device. */
  readonly dev?: string;
  /** Treat the gateway as on the device's link whatever its subnet (needs via and dev). */
  readonly onlink?: boolean;
  readonly scope?: ScopeName | number;
  /** Routing table, 1-4294967295; default main (254), local (255) for a local route. */
  readonly table?: number;
  readonly metric?: number;
  /** Preferred source address (must be an address of the namespace). */
  readonly src?: IPAddr | string;
  /** RTPROT_*; default boot (3) as `ip route`. */
  readonly protocol?: number;
  readonly type?: RouteSpecType;
  readonly mtu?: number;
  /** Needed only to say which family a default route without gateway or src is; default 4. */
  readonly family?: Family;
}

export interface RouteFilter {
  readonly family?: Family;
  /** One table, or 'all'; default main. */
  readonly table?: number | 'all';
  /** Routes out of this device (NOT_FOUND if it does not exist). */
  readonly dev?: string;
  /** Exactly this prefix. */
  readonly dst?: IPNet | string | 'default';
  readonly protocol?: number;
  readonly type?: RouteType;
}

/** The packet to look up (the destination is `get`'s first argument). */
export interface LookupOptions {
  readonly src?: IPAddr | string;
  /** Input device: the lookup of a packet arriving there (forwarding path, needs forwarding on). */
  readonly iif?: string;
  /** Output device, as a socket bound to it. */
  readonly oif?: string;
  readonly mark?: number;
  readonly ipProto?: 'tcp' | 'udp' | 'icmp' | number;
  readonly sport?: number;
  readonly dport?: number;
  readonly uid?: number;
  /** Answer with the routing table entry that matched (its prefix) rather than a host route. */
  readonly fibMatch?: boolean;
}

/** The answer of a lookup: the route the kernel chose and the name of its output device. */
export interface RouteLookup extends Route {
  readonly dev: string | undefined;
}

/** Why a lookup found no usable route (`details.reason` of its NOT_FOUND error). */
export type NoRouteReason = 'no-route' | 'unreachable' | 'prohibit' | 'blackhole' | 'refused';

interface Resolved {
  readonly req: NewRoute;
  readonly desc: string;
  /** Set (for delete) when the named device does not exist: the route cannot either. */
  readonly devMissing?: string;
}

const u32ok = (n: unknown): n is number =>
  Number.isInteger(n) && (n as number) >= 0 && (n as number) <= 0xffffffff;

export class Routes {
  readonly #links: Links;

  constructor(
    private readonly ns: Netns,
    private readonly sock: () => NetlinkSocket,
  ) {
    this.#links = new Links(ns, sock);
  }

  /**
   * Routes of the namespace, filtered: by default IPv4 and IPv6 routes of the main table.
   * Cached (cloned) entries are left out. Throws NOT_FOUND when `filter.dev` does not exist.
   */
  list(filter: RouteFilter = {}): Route[] {
    const table = filter.table ?? RT_TABLE.MAIN;
    if (table !== 'all' && (!u32ok(table) || table === 0)) {
      throw new WeftError('INVALID', `table ${table} is out of range (1-4294967295 or 'all')`);
    }
    const index = filter.dev === undefined ? undefined : this.#links.get(filter.dev).index;
    const dst = filter.dst === undefined ? undefined : toDst(filter.dst, filter.family);
    return this.#dump(filter.family).filter(
      (r) =>
        (table === 'all' || r.table === table) &&
        (index === undefined || r.oif === index || (r.nexthops?.some((h) => h.oif === index) ?? false)) &&
        (dst === undefined || sameDst(r.dst, dst.net)) &&
        (dst?.net === undefined || r.family === dst.family) &&
        (filter.protocol === undefined || r.protocol === filter.protocol) &&
        (filter.type === undefined || r.type === filter.type),
    );
  }

  /**
   * Add a route; returns it as read back. EXISTS when a route with the same destination,
   * table and metric is there; INVALID / NOT_FOUND for bad input (nothing sent), INVALID with
   * an explanation when the kernel refuses (a gateway not on-link, a device that is down).
   */
  add(spec: RouteSpec): Route {
    const r = this.#resolve(spec, 'add');
    return (
      this.#echoed(this.#send(RTM.NEWROUTE, r, NLM_F.CREATE | NLM_F.EXCL, 'add', spec)) ?? this.#readBack(r)
    );
  }

  /**
   * Add the route, or replace the one with the same destination, table and metric (as `ip
   * route replace`): the idempotent ensure. Returns it as read back.
   */
  replace(spec: RouteSpec): Route {
    const r = this.#resolve(spec, 'replace');
    return (
      this.#echoed(this.#send(RTM.NEWROUTE, r, NLM_F.CREATE | NLM_F.REPLACE, 'replace', spec)) ??
      this.#readBack(r)
    );
  }

  /**
   * Delete the route to `spec.dst` in its table; via, dev, metric, src, protocol, type and scope,
   * when given, narrow which one. A route that is not there (or whose device is gone) is success
   * unless `mustExist` (then NOT_FOUND).
   */
  delete(spec: RouteSpec, opts: { mustExist?: boolean } = {}): void {
    const r = this.#resolve(spec, 'delete');
    if (r.devMissing !== undefined) {
      if (opts.mustExist) {
        throw new WeftError(
          'NOT_FOUND',
          `no route ${r.desc}: link "${r.devMissing}" not found in ${this.ns.path}`,
          {
            details: { route: r.desc, dev: r.devMissing },
          },
        );
      }
      return;
    }
    try {
      this.#send(RTM.DELROUTE, r, 0, 'delete', spec);
    } catch (e) {
      if (e instanceof WeftError && e.code === 'NOT_FOUND' && !opts.mustExist) return;
      throw e;
    }
  }

  /**
   * The kernel's route lookup for one packet to `dst` (with the source, devices, mark, protocol
   * and ports of `opts`), in this namespace: the route it would use, with output device and
   * gateway. When no route lets the packet through, a NOT_FOUND error whose `details.reason` says
   * why: 'no-route', 'unreachable', 'prohibit', 'blackhole' (routes of those types), or
   * 'refused' (an input lookup the kernel rejects: a martian source, forwarding off).
   */
  get(dst: IPAddr | string, opts: LookupOptions = {}): RouteLookup {
    const query = this.#query(dst, opts);
    const desc = describeQuery(query, opts);
    let msgs: ReturnType<NetlinkSocket['request']>;
    try {
      msgs = this.sock().request(RTM.GETROUTE, rtmsg, encodeRouteLookup(query), {
        what: `route get ${desc}`,
      });
    } catch (e) {
      throw lookupError(e, desc, opts);
    }
    const m = msgs.find((x) => x.type === RTM.NEWROUTE);
    if (!m) throw new WeftError('INTERNAL', `route get ${desc}: the kernel answered without a route`);
    const { header, attrs } = decodeBody(rtmsg, m.payload);
    const route = decodeRoute(header, attrs);
    const dev = route.oif === undefined ? undefined : this.#links.find(route.oif)?.name;
    return { ...route, dev };
  }

  // ---- internals ------------------------------------------------------------------------------

  #dump(family?: Family): Route[] {
    const msgs = this.sock().dump(RTM.GETROUTE, rtmsg, routeDumpRequest(family), { what: 'list routes' });
    const out: Route[] = [];
    for (const m of msgs) {
      if (m.type !== RTM.NEWROUTE) continue;
      const { header, attrs } = decodeBody(rtmsg, m.payload);
      if (familyOfAf(header.family) === undefined || header.flags & RTM_F.CLONED) continue;
      const r = decodeRoute(header, attrs);
      if (family === undefined || r.family === family) out.push(r);
    }
    return out;
  }

  /**
   * Send a change. NLM_F_ECHO asks the kernel to send the route it made back to us, which saves
   * reading the table again; it stays silent when nothing changed (a replace with the same route).
   */
  #send(
    type: number,
    r: Resolved,
    flags: number,
    op: 'add' | 'replace' | 'delete',
    spec: RouteSpec,
  ): NlMessage[] {
    try {
      return this.sock().request(type, rtmsg, encodeRoute(r.req), {
        flags: flags | (type === RTM.NEWROUTE ? NLM_F.ECHO : 0),
        what: `${op} route ${r.desc}`,
      });
    } catch (e) {
      throw this.#explain(e, op, r, spec);
    }
  }

  #echoed(msgs: NlMessage[]): Route | undefined {
    const m = msgs.find((x) => x.type === RTM.NEWROUTE);
    if (!m) return undefined;
    const { header, attrs } = decodeBody(rtmsg, m.payload);
    return decodeRoute(header, attrs);
  }

  /** Validate a spec and turn it into a request; throws before anything is sent. */
  #resolve(spec: RouteSpec, op: 'add' | 'replace' | 'delete'): Resolved {
    if (spec === null || typeof spec !== 'object')
      throw new WeftError('INVALID', 'route spec must be an object');
    if (spec.family !== undefined && spec.family !== 4 && spec.family !== 6) {
      throw new WeftError('INVALID', `family ${String(spec.family)} is not 4 or 6`);
    }
    const type = spec.type ?? 'unicast';
    if (!specTypes.includes(type)) {
      throw new WeftError('INVALID', `route type "${String(type)}" is not one of ${specTypes.join(', ')}`);
    }
    const via = spec.via === undefined ? undefined : toIP(spec.via, 'gateway');
    const src = spec.src === undefined ? undefined : toIP(spec.src, 'src');
    // A prefix says its family; a default route takes it from `family`, its gateway or its src.
    const { family, net: dst } = toDst(
      spec.dst,
      spec.family,
      spec.dst === 'default' ? (via?.family ?? src?.family) : undefined,
    );
    const dstText = dst ? formatIPNet(dst) : 'default';
    if (via && via.family !== family) {
      throw new WeftError(
        'INVALID',
        `gateway ${formatIP(via)} is IPv${via.family} but destination ${dstText} is IPv${family}`,
        { details: { dst: dstText, via: formatIP(via) } },
      );
    }
    if (src && src.family !== family) {
      throw new WeftError(
        'INVALID',
        `src ${formatIP(src)} is IPv${src.family} but destination ${dstText} is IPv${family}`,
        { details: { dst: dstText, src: formatIP(src) } },
      );
    }
    const deleting = op === 'delete';
    if (rejectTypes.has(type) && (via || spec.dev !== undefined)) {
      throw new WeftError('INVALID', `a ${type} route to ${dstText} takes no gateway (via) or device (dev)`);
    }
    if (!deleting && type === 'unicast' && !via && spec.dev === undefined) {
      throw new WeftError('INVALID', `route to ${dstText} needs a gateway (via) or a device (dev)`);
    }
    if (!deleting && type === 'local' && spec.dev === undefined) {
      throw new WeftError('INVALID', `a local route to ${dstText} needs a device (dev)`);
    }
    if (spec.onlink && (!via || spec.dev === undefined)) {
      throw new WeftError(
        'INVALID',
        `onlink needs both a gateway (via) and a device (dev) (route to ${dstText})`,
      );
    }
    if (spec.table !== undefined && (!u32ok(spec.table) || spec.table === 0)) {
      throw new WeftError('INVALID', `table ${spec.table} is out of range (1-4294967295)`);
    }
    if (spec.metric !== undefined && !u32ok(spec.metric)) {
      throw new WeftError('INVALID', `metric ${spec.metric} is out of range (0-4294967295)`);
    }
    if (
      spec.protocol !== undefined &&
      (!Number.isInteger(spec.protocol) || spec.protocol < 0 || spec.protocol > 255)
    ) {
      throw new WeftError('INVALID', `protocol ${spec.protocol} is out of range (0-255)`);
    }
    const minMtu = family === 4 ? 68 : 1280;
    if (spec.mtu !== undefined && (!Number.isInteger(spec.mtu) || spec.mtu < minMtu || spec.mtu > 65535)) {
      throw new WeftError('INVALID', `mtu ${spec.mtu} is out of range for IPv${family} (${minMtu}-65535)`);
    }
    const scope =
      spec.scope !== undefined
        ? scopeNumber(spec.scope)
        : deleting
          ? RT_SCOPE.NOWHERE
          : type === 'local'
            ? RT_SCOPE.HOST
            : type === 'unicast' && !via
              ? RT_SCOPE.LINK
              : RT_SCOPE.UNIVERSE;
    const table = spec.table ?? (type === 'local' ? RT_TABLE.LOCAL : RT_TABLE.MAIN);
    let oif: number | undefined;
    let devMissing: string | undefined;
    if (spec.dev !== undefined) {
      if (typeof spec.dev !== 'string' || spec.dev.length === 0)
        throw new WeftError('INVALID', 'dev must be a device name');
      const link = this.#links.find(spec.dev);
      if (link) oif = link.index;
      else if (deleting) devMissing = spec.dev;
      else {
        throw new WeftError(
          'NOT_FOUND',
          `route to ${dstText}: link "${spec.dev}" not found in ${this.ns.path}`,
          {
            details: { dst: dstText, dev: spec.dev },
          },
        );
      }
    }
    const req: NewRoute = {
      family,
      table,
      scope,
      ...(dst !== undefined && { dst }),
      ...(via !== undefined && { gateway: via }),
      ...(oif !== undefined && { oif }),
      ...(src !== undefined && { prefsrc: src }),
      ...(spec.metric !== undefined && { priority: spec.metric }),
      ...(deleting
        ? {
            type: spec.type ?? 'unspec',
            protocol: spec.protocol ?? RTPROT.UNSPEC,
          }
        : {
            type,
            protocol: spec.protocol ?? RTPROT.BOOT,
            ...(spec.onlink && { onlink: true }),
            ...(spec.mtu !== undefined && { mtu: spec.mtu }),
          }),
    };
    const desc = describe(spec, dstText, via, table);
    return devMissing === undefined ? { req, desc } : { req, desc, devMissing };
  }

  #readBack(r: Resolved): Route {
    const { req } = r;
    const metric =
      req.priority === undefined || (req.family === 6 && req.priority === 0) ? undefined : req.priority;
    const wantPriority = metric ?? (req.family === 6 ? 1024 : 0);
    const found = this.#dump(req.family).filter(
      (x) =>
        x.table === req.table &&
        sameDst(x.dst, req.dst) &&
        x.tos === 0 &&
        x.priority === wantPriority &&
        x.type === req.type &&
        (req.gateway === undefined || (x.gateway !== undefined && ipEqual(x.gateway, req.gateway))) &&
        (req.oif === undefined || x.oif === req.oif),
    );
    const route = found[0];
    if (!route) {
      throw new WeftError('INTERNAL', `route ${r.desc} was accepted but is not there when read back`);
    }
    return route;
  }

  #query(dst: IPAddr | string, opts: LookupOptions): RouteQuery {
    const d = toIP(dst, 'destination');
    const src = opts.src === undefined ? undefined : toIP(opts.src, 'src');
    if (src && src.family !== d.family) {
      throw new WeftError(
        'INVALID',
        `src ${formatIP(src)} and destination ${formatIP(d)} are of different families`,
      );
    }
    const dev = (name: string | undefined, what: string): number | undefined => {
      if (name === undefined) return undefined;
      const l = this.#links.find(name);
      if (!l)
        throw new WeftError('NOT_FOUND', `${what} link "${name}" not found in ${this.ns.path}`, {
          details: { dev: name },
        });
      return l.index;
    };
    for (const [k, v] of [
      ['mark', opts.mark],
      ['uid', opts.uid],
    ] as const) {
      if (v !== undefined && !u32ok(v))
        throw new WeftError('INVALID', `${k} ${v} is out of range (0-4294967295)`);
    }
    let ipProto: number | undefined;
    if (opts.ipProto !== undefined) {
      const icmp = d.family === 4 ? 1 : 58;
      const named: Record<string, number> = { tcp: 6, udp: 17, icmp };
      ipProto = typeof opts.ipProto === 'string' ? named[opts.ipProto] : opts.ipProto;
      if (ipProto === undefined || ![6, 17, icmp].includes(ipProto)) {
        throw new WeftError(
          'INVALID',
          `ip protocol ${String(opts.ipProto)} cannot be looked up (tcp, udp, icmp or 6, 17, ${icmp})`,
        );
      }
    }
    for (const [k, v] of [
      ['sport', opts.sport],
      ['dport', opts.dport],
    ] as const) {
      if (v === undefined) continue;
      if (!Number.isInteger(v) || v < 0 || v > 65535)
        throw new WeftError('INVALID', `${k} ${v} is out of range (0-65535)`);
      if (ipProto !== 6 && ipProto !== 17) throw new WeftError('INVALID', `${k} needs ipProto tcp or udp`);
    }
    const iif = dev(opts.iif, 'iif');
    const oif = dev(opts.oif, 'oif');
    return {
      dst: d,
      ...(src !== undefined && { src }),
      ...(iif !== undefined && { iif }),
      ...(oif !== undefined && { oif }),
      ...(opts.mark !== undefined && { mark: opts.mark }),
      ...(opts.uid !== undefined && { uid: opts.uid }),
      ...(ipProto !== undefined && { ipProto }),
      ...(opts.sport !== undefined && { sport: opts.sport }),
      ...(opts.dport !== undefined && { dport: opts.dport }),
      ...(opts.fibMatch && { fibMatch: true }),
    };
  }

  /** True when the kernel reaches `gw` directly (no gateway) and, if given, out of `oif`. */
  #onLink(gw: IPAddr, oif: number | undefined): boolean {
    try {
      const r = this.get(gw);
      return (
        r.gateway === undefined &&
        (r.type === 'unicast' || r.type === 'local') &&
        (oif === undefined || r.oif === oif)
      );
    } catch {
      return false;
    }
  }

  /** A kernel refusal of add/replace/delete as an error that says what to do. */
  #explain(e: unknown, op: 'add' | 'replace' | 'delete', r: Resolved, spec: RouteSpec): unknown {
    if (!(e instanceof KernelError)) return e;
    const { req, desc } = r;
    const details = { route: desc, errno: e.errno, op };
    const wrap = (code: WeftError['code'], message: string) =>
      new WeftError(code, message, { cause: e, details });
    if (e.code === 'EXISTS' && op !== 'delete') {
      return wrap('EXISTS', `route ${desc} already exists (same destination, table and metric)`);
    }
    if (op === 'delete' && (e.errno === 3 || e.code === 'NOT_FOUND')) {
      return wrap('NOT_FOUND', `no route ${desc}`);
    }
    const gw = req.gateway;
    if (
      op !== 'delete' &&
      gw &&
      !req.onlink &&
      (e.errno === EINVAL || e.errno === ENETUNREACH || e.errno === EHOSTUNREACH) &&
      !this.#onLink(gw, req.oif)
    ) {
      const msg =
        spec.dev !== undefined
          ? `gateway ${formatIP(gw)} is not reachable on-link from dev ${spec.dev}; use onlink`
          : `gateway ${formatIP(gw)} is not reachable on-link: no directly connected route covers it; ` +
            'add an address on its subnet, or give dev and use onlink';
      return wrap('INVALID', `${op} route ${desc}: ${msg}`);
    }
    if (e.errno === ENETDOWN) {
      const dev = spec.dev !== undefined ? `dev ${spec.dev}` : 'the device of the next hop';
      return wrap('INVALID', `${op} route ${desc}: ${dev} is down; set it up first`);
    }
    if (e.errno === ENODEV) {
      return wrap('NOT_FOUND', `${op} route ${desc}: the device is gone`);
    }
    if (e.errno === EINVAL && req.prefsrc) {
      return wrap(
        'INVALID',
        `${e.message} (src ${formatIP(req.prefsrc)} must be an address of this namespace)`,
      );
    }
    return e;
  }
}

// ---- helpers ----------------------------------------------------------------------------------

function toIP(v: IPAddr | string, what: string): IPAddr {
  if (typeof v === 'string') {
    try {
      return parseIP(v);
    } catch (e) {
      throw new WeftError('INVALID', `${what} "${v}" is not an IP address`, {
        cause: e,
        details: { [what]: v },
      });
    }
  }
  if (v === null || typeof v !== 'object' || (v.family !== 4 && v.family !== 6)) {
    throw new WeftError('INVALID', `${what} is not an IP address`);
  }
  return v;
}

/** A destination as family and prefix (undefined for default); host bits must be clear. */
function toDst(
  d: IPNet | string | 'default',
  family: Family | undefined,
  fallback?: Family,
): { family: Family; net: IPNet | undefined } {
  if (d === 'default') return { family: family ?? fallback ?? 4, net: undefined };
  let net: IPNet;
  if (typeof d === 'string') {
    try {
      net = parseIPNet(d);
    } catch (e) {
      throw new WeftError(
        'INVALID',
        `destination "${d}" is not a prefix (ADDR/LEN), an address or 'default'`,
        {
          cause: e,
          details: { dst: d },
        },
      );
    }
  } else {
    if (d === null || typeof d !== 'object' || !d.ip || (d.ip.family !== 4 && d.ip.family !== 6)) {
      throw new WeftError('INVALID', 'destination is not a prefix');
    }
    if (!Number.isInteger(d.len) || d.len < 0 || d.len > bitsOf(d.ip.family)) {
      throw new WeftError(
        'INVALID',
        `destination prefix length ${d.len} is out of range for IPv${d.ip.family}`,
      );
    }
    net = d;
  }
  if (family !== undefined && net.ip.family !== family) {
    throw new WeftError('INVALID', `destination ${formatIPNet(net)} is not IPv${family}`);
  }
  if (!ipEqual(maskIP(net.ip, net.len), net.ip)) {
    throw new WeftError(
      'INVALID',
      `destination ${formatIPNet(net)} has host bits set; did you mean ${formatIPNet(networkOf(net))}?`,
      { details: { dst: formatIPNet(net) } },
    );
  }
  return { family: net.ip.family, net: net.len === 0 ? undefined : net };
}

function sameDst(a: IPNet | undefined, b: IPNet | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.len === b.len && ipEqual(a.ip, b.ip);
}

/** `10.0.0.0/24 via 10.1.0.1 dev eth0 table 100 metric 5`, as `ip route` would print it. */
function describe(spec: RouteSpec, dst: string, via: IPAddr | undefined, table: number): string {
  const parts = [spec.type !== undefined && spec.type !== 'unicast' ? `${spec.type} ${dst}` : dst];
  if (via) parts.push(`via ${formatIP(via)}`);
  if (spec.dev !== undefined) parts.push(`dev ${spec.dev}`);
  if (spec.onlink) parts.push('onlink');
  if (table !== RT_TABLE.MAIN) parts.push(`table ${table}`);
  if (spec.metric !== undefined) parts.push(`metric ${spec.metric}`);
  return parts.join(' ');
}

function describeQuery(q: RouteQuery, opts: LookupOptions): string {
  const parts = [formatIP(q.dst)];
  if (q.src) parts.push(`from ${formatIP(q.src)}`);
  if (opts.iif !== undefined) parts.push(`iif ${opts.iif}`);
  if (opts.oif !== undefined) parts.push(`oif ${opts.oif}`);
  if (q.mark !== undefined) parts.push(`mark ${q.mark}`);
  if (q.ipProto !== undefined) parts.push(`ipproto ${q.ipProto}`);
  if (q.sport !== undefined) parts.push(`sport ${q.sport}`);
  if (q.dport !== undefined) parts.push(`dport ${q.dport}`);
  return parts.join(' ');
}

function lookupError(e: unknown, desc: string, opts: LookupOptions): unknown {
  if (!(e instanceof KernelError)) return e;
  const input = opts.iif !== undefined;
  const fail = (reason: NoRouteReason, why: string) =>
    new WeftError('NOT_FOUND', `route get ${desc}: ${why}`, {
      cause: e,
      details: { lookup: desc, reason, errno: e.errno },
    });
  switch (e.errno) {
    case ENETUNREACH:
      return fail('no-route', 'no route to the destination (network is unreachable)');
    case EHOSTUNREACH:
      return input
        ? fail(
            'unreachable',
            `no route for a packet arriving on ${opts.iif}: an unreachable route covers the destination, or forwarding is off`,
          )
        : fail('unreachable', 'an unreachable route covers the destination');
    case EACCES:
      return fail('prohibit', 'a prohibit route covers the destination (administratively prohibited)');
    case EINVAL:
      return input
        ? fail(
            'refused',
            `the kernel refuses the packet on ${opts.iif}: a blackhole route, or a martian source (give a valid src)`,
          )
        : fail('blackhole', 'a blackhole route covers the destination');
    default:
      return e;
  }
}
