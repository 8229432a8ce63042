/**
 * Neighbour (ARP / NDP) entries and bridge FDB entries of one namespace.
 *
 * `Neighbours` manages static (NUD_PERMANENT) entries such as the ones an L3 overlay installs
 * on its VTEP (flannel's `ip neigh replace 10.1.15.0 lladdr <mac> dev flannel.1 nud permanent`).
 * `Fdb` manages AF_BRIDGE entries: on a bridge port (NTF_MASTER: the bridge's own table) or on a
 * device with a table of its own such as a vxlan VTEP (NTF_SELF), where NDA_DST names the remote
 * VTEP. A vxlan FDB holds several destinations for the all-zeros MAC (flooding: `bridge fdb
 * append 00:00:00:00:00:00 dev vx0 dst 192.0.2.2`) and for multicast MACs, but one per unicast
 * MAC (flannel's `mac → host` entry): appending a second one there is refused as a CONFLICT
 * (the kernel would silently keep the first), `replace` moves it.
 *
 * Callers name devices and bridges; indexes are resolved here. All methods are synchronous
 * (rtnetlink answers inside the syscall). Input is validated before anything is sent.
 */
import { KernelError, notFound, WeftError } from '../lib/errors.js';
import { type Family, formatIP, type IPAddr, ipEqual, parseIP } from '../lib/ip.js';
import { checkIfName } from '../lib/names.js';
import { isMac, parseMac } from '../netlink/attr.js';
import { AF, NLM_F, NTF, NUD, RTM } from '../netlink/consts.js';
import { decodeBody, type NlMessage, ndmsg } from '../netlink/message.js';
import { blankNdMsg, decodeNeigh, encodeNeigh, type Neigh } from '../netlink/neigh.js';
import { Links } from './links.js';
import type { Netns } from './netns.js';
import type { NetlinkSocket } from './rtnl.js';

export type { Neigh } from '../netlink/neigh.js';

/** A static neighbour entry: `ip` on `dev` is at `mac`. */
export interface NeighSpec {
  readonly dev: string;
  readonly ip: IPAddr | string;
  readonly mac: string;
}

export interface NeighFilter {
  /** Only entries on this device (NOT_FOUND if it does not exist). */
  readonly dev?: string;
  /** Only IPv4 (4) or IPv6 (6) entries. */
  readonly family?: Family;
}

const ZERO_MAC = '00:00:00:00:00:00';

function toIP(ip: IPAddr | string): IPAddr {
  return typeof ip === 'string' ? parseIP(ip) : ip;
}

function checkMac(mac: string): string {
  if (typeof mac !== 'string' || !isMac(mac)) {
    throw new WeftError('INVALID', `"${mac}" is not a MAC address (expected aa:bb:cc:dd:ee:ff)`, {
      details: { mac },
    });
  }
  return mac.toLowerCase();
}

const familyAF = (f: Family): number => (f === 4 ? AF.INET : AF.INET6);

function decodeAll(msgs: NlMessage[]): Neigh[] {
  return msgs
    .filter((m) => m.type === RTM.NEWNEIGH)
    .map((m) => {
      const { header, attrs } = decodeBody(ndmsg, m.payload);
      return decodeNeigh(header, attrs);
    });
}

export class Neighbours {
  readonly #links: Links;

  constructor(
    private readonly ns: Netns,
    private readonly sock: () => NetlinkSocket,
  ) {
    this.#links = new Links(ns, sock);
  }

  /**
   * IPv4 and IPv6 neighbour entries of the namespace, in any state (learned ones too).
   * Throws NOT_FOUND when `filter.dev` does not exist, INVALID for a bad name.
   */
  list(filter: NeighFilter = {}): Neigh[] {
    if (filter.family !== undefined && filter.family !== 4 && filter.family !== 6) {
      throw new WeftError('INVALID', `address family must be 4 or 6, not ${String(filter.family)}`);
    }
    const index = filter.dev === undefined ? undefined : this.#links.get(filter.dev).index;
    const family = filter.family === undefined ? AF.UNSPEC : familyAF(filter.family);
    const msgs = this.sock().dump(
      RTM.GETNEIGH,
      ndmsg,
      { header: blankNdMsg({ family }), attrs: [] },
      { what: 'list neighbours' },
    );
    return decodeAll(msgs).filter(
      (n) =>
        (n.family === AF.INET || n.family === AF.INET6) &&
        (family === AF.UNSPEC || n.family === family) &&
        (index === undefined || n.ifindex === index),
    );
  }

  /** The entry for `ip` on `dev`, or undefined (also when `dev` does not exist). */
  find(dev: string, ip: IPAddr | string): Neigh | undefined {
    checkIfName(dev);
    const addr = toIP(ip);
    const link = this.#links.find(dev);
    if (!link) return undefined;
    try {
      const msgs = this.sock().request(
        RTM.GETNEIGH,
        ndmsg,
        encodeNeigh({ ...blankNeigh(familyAF(addr.family), link.index), ip: addr }),
        { what: `get neighbour ${formatIP(addr)} dev ${dev}` },
      );
      return decodeAll(msgs)[0];
    } catch (e) {
      if (e instanceof KernelError && e.code === 'NOT_FOUND') return undefined;
      throw e;
    }
  }

  /** The entry for `ip` on `dev`; NOT_FOUND if there is none (or no such device). */
  get(dev: string, ip: IPAddr | string): Neigh {
    const n = this.find(dev, ip);
    if (!n) {
      const shown = typeof ip === 'string' ? ip : formatIP(ip);
      throw notFound(`no neighbour entry for ${shown} on ${dev} in ${this.ns.path}`, { dev, ip: shown });
    }
    return n;
  }

  /**
   * Add a permanent entry. EXISTS if the kernel has any entry for that address on that device
   * (a learned one too: use `replace` to take it over). Returns the entry as read back.
   */
  add(spec: NeighSpec): Neigh {
    return this.#modify(spec, NLM_F.CREATE | NLM_F.EXCL, 'add');
  }

  /**
   * Make `ip` on `dev` a permanent entry at `mac`, whatever was there (the idempotent ensure,
   * `ip neigh replace … nud permanent`). Returns the entry as read back.
   */
  replace(spec: NeighSpec): Neigh {
    return this.#modify(spec, NLM_F.CREATE | NLM_F.REPLACE, 'replace');
  }

  #modify(spec: NeighSpec, flags: number, verb: string): Neigh {
    checkIfName(spec.dev);
    const ip = toIP(spec.ip);
    const mac = checkMac(spec.mac);
    const index = this.#links.get(spec.dev).index;
    const what = `${verb} neighbour ${formatIP(ip)} lladdr ${mac} dev ${spec.dev}`;
    try {
      this.sock().request(
        RTM.NEWNEIGH,
        ndmsg,
        encodeNeigh({ ...blankNeigh(familyAF(ip.family), index), state: NUD.PERMANENT, ip, lladdr: mac }),
        { flags, what },
      );
    } catch (e) {
      if (e instanceof KernelError && e.code === 'EXISTS') {
        throw new WeftError('EXISTS', `a neighbour entry for ${formatIP(ip)} on ${spec.dev} already exists`, {
          cause: e,
          details: { dev: spec.dev, ip: formatIP(ip) },
        });
      }
      throw e;
    }
    return this.get(spec.dev, ip);
  }

  /**
   * Delete the entry for `ip` on `dev`. An entry (or device) that does not exist is success
   * unless `mustExist`, then NOT_FOUND.
   */
  delete(
    entry: { readonly dev: string; readonly ip: IPAddr | string },
    opts: { mustExist?: boolean } = {},
  ): void {
    checkIfName(entry.dev);
    const ip = toIP(entry.ip);
    const link = this.#links.find(entry.dev);
    if (!link) {
      if (opts.mustExist)
        throw notFound(`link "${entry.dev}" not found in ${this.ns.path}`, { dev: entry.dev });
      return;
    }
    try {
      this.sock().request(
        RTM.DELNEIGH,
        ndmsg,
        encodeNeigh({ ...blankNeigh(familyAF(ip.family), link.index), ip }),
        {
          what: `delete neighbour ${formatIP(ip)} dev ${entry.dev}`,
        },
      );
    } catch (e) {
      if (e instanceof KernelError && e.code === 'NOT_FOUND' && !opts.mustExist) return;
      throw e;
    }
  }
}

const blankNeigh = (family: number, ifindex: number): Neigh => ({
  family,
  ifindex,
  state: 0,
  flags: 0,
  type: 0,
});

// ---- FDB ------------------------------------------------------------------------------------

/** An AF_BRIDGE FDB entry to add, replace or delete. */
export interface FdbSpec {
  /** The bridge port (with `master`) or the device owning its own table, e.g. a vxlan VTEP. */
  readonly dev: string;
  /** The MAC forwarded; all zeros on a vxlan device is the default (flooding) destination. */
  readonly mac: string;
  /** Remote VTEP address (vxlan, NDA_DST). */
  readonly dst?: IPAddr | string;
  /** VNI of the remote, when it differs from the device's. */
  readonly vni?: number;
  /** UDP port of the remote, when it differs from the device's. */
  readonly port?: number;
  /** The device's own table (NTF_SELF). The default when neither `self` nor `master` is set. */
  readonly self?: boolean;
  /** The table of the bridge `dev` is enslaved to (NTF_MASTER). */
  readonly master?: boolean;
  /**
   * NUD_PERMANENT instead of the default *static* entry (NUD_NOARP|NUD_REACHABLE, iproute2's
   * `static`); neither ages. On a bridge port (`master`) a permanent entry means a *local*
   * address: frames to it go to the bridge itself, not out of the port.
   */
  readonly permanent?: boolean;
}

export interface FdbFilter {
  /** Only entries on this device (NOT_FOUND if it does not exist). */
  readonly dev?: string;
  /** Only entries of this bridge's table (NOT_FOUND if it does not exist). */
  readonly master?: string;
}

const isUnicastMac = (mac: string): boolean => mac !== ZERO_MAC && ((parseMac(mac)[0] ?? 0) & 1) === 0;

interface ResolvedFdb {
  readonly neigh: Neigh;
  readonly mac: string;
  readonly dst: IPAddr | undefined;
  readonly what: string;
}

export class Fdb {
  readonly #links: Links;

  constructor(
    private readonly ns: Netns,
    private readonly sock: () => NetlinkSocket,
  ) {
    this.#links = new Links(ns, sock);
  }

  /**
   * FDB entries of the namespace (bridge tables, vxlan tables and the devices' own address
   * lists, as `bridge fdb show` prints them); one value per destination.
   */
  list(filter: FdbFilter = {}): Neigh[] {
    const index = filter.dev === undefined ? undefined : this.#links.get(filter.dev).index;
    const master = filter.master === undefined ? undefined : this.#links.get(filter.master).index;
    const msgs = this.sock().dump(
      RTM.GETNEIGH,
      ndmsg,
      { header: blankNdMsg({ family: AF.BRIDGE }), attrs: [] },
      { what: 'list fdb' },
    );
    return decodeAll(msgs).filter(
      (n) =>
        n.family === AF.BRIDGE &&
        (index === undefined || n.ifindex === index) &&
        (master === undefined || n.master === master),
    );
  }

  /** The entries (one per destination) for `mac` on `dev`; empty when none or no such device. */
  find(dev: string, mac: string): Neigh[] {
    checkIfName(dev);
    const m = checkMac(mac);
    const link = this.#links.find(dev);
    if (!link) return [];
    return this.list({ dev }).filter((n) => n.lladdr === m);
  }

  /** The entries (one per destination) for `mac` on `dev`; NOT_FOUND if there are none. */
  get(dev: string, mac: string): Neigh[] {
    const out = this.find(dev, mac);
    if (out.length === 0) {
      throw notFound(`no fdb entry for ${mac} on ${dev} in ${this.ns.path}`, { dev, mac });
    }
    return out;
  }

  /**
   * Add an entry, or another destination to an existing one (`bridge fdb append`): appending
   * what is already there is success. On a unicast MAC of a vxlan device the kernel keeps one
   * destination: appending a different one is a CONFLICT naming both (use `replace`).
   */
  append(spec: FdbSpec): void {
    const r = this.#resolve(spec, 'append');
    if (r.dst !== undefined && isUnicastMac(r.mac)) {
      // Checked first: the kernel would update the entry's state and keep its destination.
      const now = this.#first(r);
      if (now?.dst !== undefined && !ipEqual(now.dst, r.dst)) {
        throw new WeftError(
          'CONFLICT',
          `fdb entry ${r.mac} on ${spec.dev} points to ${formatIP(now.dst)}, not ${formatIP(r.dst)}; a unicast MAC has one destination (use replace)`,
          { details: { dev: spec.dev, mac: r.mac, dst: formatIP(now.dst), wanted: formatIP(r.dst) } },
        );
      }
    }
    this.#send(RTM.NEWNEIGH, r, NLM_F.CREATE | NLM_F.APPEND);
  }

  /**
   * Create the entry or overwrite the existing one for this MAC (`bridge fdb replace`; flannel's
   * static `mac → VTEP` entry): the idempotent ensure for unicast MACs.
   */
  replace(spec: FdbSpec): void {
    this.#send(RTM.NEWNEIGH, this.#resolve(spec, 'replace'), NLM_F.CREATE | NLM_F.REPLACE);
  }

  /**
   * Delete an entry; with `dst`, only that destination of it. An entry (or device) that does
   * not exist is success unless `mustExist`, then NOT_FOUND.
   */
  delete(spec: Omit<FdbSpec, 'permanent'>, opts: { mustExist?: boolean } = {}): void {
    const r = checkFdb(spec, 'delete');
    const link = this.#links.find(spec.dev);
    if (!link) {
      if (opts.mustExist)
        throw notFound(`link "${spec.dev}" not found in ${this.ns.path}`, { dev: spec.dev });
      return;
    }
    try {
      this.#send(RTM.DELNEIGH, { ...r, neigh: { ...r.neigh, ifindex: link.index } }, 0);
    } catch (e) {
      if (e instanceof KernelError && e.code === 'NOT_FOUND' && !opts.mustExist) return;
      throw e;
    }
  }

  #send(type: number, r: ResolvedFdb, flags: number): void {
    this.sock().request(type, ndmsg, encodeNeigh(r.neigh), { flags, what: r.what });
  }

  /** The kernel's own lookup (RTM_GETNEIGH): the entry's first destination, or undefined. */
  #first(r: ResolvedFdb): Neigh | undefined {
    const { ifindex, flags, lladdr, vni } = r.neigh;
    const query: Neigh = {
      ...blankNeigh(AF.BRIDGE, ifindex),
      flags: flags & (NTF.SELF | NTF.MASTER),
      ...(lladdr !== undefined && { lladdr }),
      ...(vni !== undefined && { vni }),
    };
    try {
      return decodeAll(
        this.sock().request(RTM.GETNEIGH, ndmsg, encodeNeigh(query), { what: `get ${r.what}` }),
      )[0];
    } catch (e) {
      if (e instanceof KernelError && (e.code === 'NOT_FOUND' || e.code === 'UNSUPPORTED')) return undefined;
      throw e;
    }
  }

  /** Validate a spec, then turn the device name into its index (NOT_FOUND if it is missing). */
  #resolve(spec: FdbSpec, verb: string): ResolvedFdb {
    const r = checkFdb(spec, verb);
    return { ...r, neigh: { ...r.neigh, ifindex: this.#links.get(spec.dev).index } };
  }
}

/** Validate all of a spec before anything is sent; the entry's ifindex is left 0. */
function checkFdb(spec: FdbSpec, verb: string): ResolvedFdb {
  checkIfName(spec.dev);
  const mac = checkMac(spec.mac);
  const dst = spec.dst === undefined ? undefined : toIP(spec.dst);
  if (spec.vni !== undefined && (!Number.isInteger(spec.vni) || spec.vni < 0 || spec.vni > 0xffffff)) {
    throw new WeftError('INVALID', `VNI ${spec.vni} is out of range (0-16777215)`);
  }
  if (spec.port !== undefined && (!Number.isInteger(spec.port) || spec.port < 1 || spec.port > 65535)) {
    throw new WeftError('INVALID', `UDP port ${spec.port} is out of range (1-65535)`);
  }
  const self = spec.self ?? spec.master !== true;
  const master = spec.master ?? false;
  if (!self && (dst !== undefined || spec.vni !== undefined || spec.port !== undefined)) {
    throw new WeftError(
      'INVALID',
      'dst, vni and port belong to a device table (self), not to a bridge (master)',
    );
  }
  const neigh: Neigh = {
    ...blankNeigh(AF.BRIDGE, 0),
    // vxlan accepts only PERMANENT or REACHABLE; NOARP keeps a REACHABLE entry from ageing.
    state: spec.permanent ? NUD.PERMANENT : NUD.NOARP | NUD.REACHABLE,
    flags: (self ? NTF.SELF : 0) | (master ? NTF.MASTER : 0),
    lladdr: mac,
    ...(dst !== undefined && { dst }),
    ...(spec.vni !== undefined && { vni: spec.vni }),
    ...(spec.port !== undefined && { port: spec.port }),
  };
  const parts = [verb, 'fdb', mac, 'dev', spec.dev];
  if (dst !== undefined) parts.push('dst', formatIP(dst));
  if (spec.vni !== undefined) parts.push('vni', String(spec.vni));
  if (spec.port !== undefined) parts.push('port', String(spec.port));
  if (self) parts.push('self');
  if (master) parts.push('master');
  return { neigh, mac, dst, what: parts.join(' ') };
}
