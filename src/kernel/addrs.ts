/**
 * Addresses of one namespace's interfaces: list, add, the idempotent `ensure`, delete and flush,
 * for IPv4 and IPv6. Callers name devices; indexes are resolved here, and all input is checked
 * before anything is sent, so bad input changes nothing.
 *
 * Defaults follow `ip addr add`: an IPv4 address gets the broadcast address of its prefix (what
 * `brd +` asks for; none for /31 and /32) and host scope for 127/8, universe otherwise. The
 * kernel identifies an IPv4 address by address and prefix length (the same address may be on a
 * device twice with different lengths), an IPv6 address by the address alone.
 */
import { KernelError, notFound, WeftError } from '../lib/errors.js';
import {
  bitsOf,
  type Family,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
  ipEqual,
  lastIP,
  parseIP,
  parseIPNet,
} from '../lib/ip.js';
import { IFNAME_MAX } from '../lib/names.js';
import { type Addr, addrDumpRequest, decodeAddr, encodeNewAddr, familyOfAf } from '../netlink/addr.js';
import { IFA_F, NLM_F, RT_SCOPE, RTM } from '../netlink/consts.js';
import { decodeBody, ifaddrmsg, type NlMessage } from '../netlink/message.js';
import { type ScopeName, scopeNumber } from '../netlink/route.js';
import { Links } from './links.js';
import type { Netns } from './netns.js';
import type { NetlinkSocket } from './rtnl.js';

export interface AddrOptions {
  /**
   * IPv4 broadcast address. Default: the last address of the prefix, as `ip addr add … brd +`
   * (none for /31 and /32). `false`: no broadcast address.
   */
  readonly broadcast?: IPAddr | string | false;
  /** IPv4 label (`eth0:1`); must start with the device name, as `ip` requires. */
  readonly label?: string;
  /** Do not add the prefix route for the address's subnet (IFA_F_NOPREFIXROUTE). */
  readonly noPrefixRoute?: boolean;
  /** IPv6: skip duplicate address detection so the address is usable at once (IFA_F_NODAD). */
  readonly noDad?: boolean;
  /** Default host for 127/8, universe otherwise (as `ip`). */
  readonly scope?: ScopeName | number;
  /** Lifetimes in seconds; default forever. */
  readonly validLft?: number;
  readonly preferredLft?: number;
}

export interface AddrFilter {
  readonly dev?: string;
  readonly family?: Family;
}

/** An address given as a value or as text: `10.0.0.1/24`; a bare address is /32 or /128. */
export type AddrInput = IPNet | string;

export class Addrs {
  readonly #links: Links;

  constructor(
    private readonly ns: Netns,
    private readonly sock: () => NetlinkSocket,
  ) {
    this.#links = new Links(ns, sock);
  }

  /**
   * Addresses of the namespace, optionally of one device and one family. Throws NOT_FOUND when
   * `dev` does not exist.
   */
  list(filter: AddrFilter = {}): Addr[] {
    const index = filter.dev === undefined ? undefined : this.#index(filter.dev);
    return this.#dump(filter.family).filter((x) => index === undefined || x.index === index);
  }

  /**
   * Add an address to a device; returns it as read back. Throws INVALID for bad input, NOT_FOUND
   * for a missing device, EXISTS when the device already has the address.
   */
  add(dev: string, addr: AddrInput, opts: AddrOptions = {}): Addr {
    const ipnet = toIPNet(addr);
    const req = this.#request(dev, ipnet, opts);
    let msgs: NlMessage[];
    try {
      // NLM_F_ECHO: the kernel sends the address back (IPv4 does; IPv6 does not, then we read it).
      msgs = this.sock().request(RTM.NEWADDR, ifaddrmsg, encodeNewAddr(req), {
        flags: NLM_F.CREATE | NLM_F.EXCL | NLM_F.ECHO,
        what: `add address ${formatIPNet(ipnet)} to ${dev}`,
      });
    } catch (e) {
      throw this.#explain(e, 'add', dev, ipnet);
    }
    const echoed = msgs.find((m) => m.type === RTM.NEWADDR);
    if (echoed) {
      const { header, attrs } = decodeBody(ifaddrmsg, echoed.payload);
      return decodeAddr(header, attrs);
    }
    return this.#readBack(dev, req.index, ipnet);
  }

  /**
   * Make sure the device has the address: added if missing, success if already there. An address
   * that is there with another prefix length, label, broadcast or scope is a CONFLICT naming the
   * difference.
   */
  ensure(dev: string, addr: AddrInput, opts: AddrOptions = {}): Addr {
    const ipnet = toIPNet(addr);
    const req = this.#request(dev, ipnet, opts);
    const existing = this.#dump(ipnet.ip.family).filter(
      (x) => x.index === req.index && ipEqual(x.ipnet.ip, ipnet.ip),
    );
    const same = existing.find((x) => x.ipnet.len === ipnet.len);
    if (same) {
      const diff = difference(same, req.broadcast, opts);
      if (diff !== undefined) {
        throw new WeftError('CONFLICT', `address ${formatIPNet(ipnet)} is on ${dev} but differs: ${diff}`, {
          details: { dev, addr: formatIPNet(ipnet), diff },
        });
      }
      return same;
    }
    // IPv6 allows an address once per device; IPv4 would take it again with another length,
    // which is nearly always a mistake: both are a conflict here.
    const other = existing[0];
    if (other) {
      throw new WeftError(
        'CONFLICT',
        `address ${formatIP(ipnet.ip)} is on ${dev} as ${formatIPNet(other.ipnet)}, not /${ipnet.len}`,
        { details: { dev, addr: formatIPNet(ipnet), existing: formatIPNet(other.ipnet) } },
      );
    }
    try {
      return this.add(dev, ipnet, opts);
    } catch (e) {
      // Added by someone else between the look and the add: read it back.
      if (e instanceof WeftError && e.code === 'EXISTS') return this.#readBack(dev, req.index, ipnet);
      throw e;
    }
  }

  /**
   * Remove an address from a device. Given with a prefix length, exactly that address; given
   * bare (a string without `/`), the address whatever its prefix length. An address (or device)
   * that is already gone is success unless `mustExist` (then NOT_FOUND).
   */
  delete(dev: string, addr: AddrInput, opts: { mustExist?: boolean } = {}): void {
    const bare = typeof addr === 'string' && !addr.includes('/');
    const ipnet = toIPNet(addr);
    checkDev(dev);
    const link = this.#links.find(dev);
    const gone = (why: string): void => {
      if (opts.mustExist) {
        throw notFound(`cannot delete address ${bare ? formatIP(ipnet.ip) : formatIPNet(ipnet)}: ${why}`, {
          dev,
          addr: formatIPNet(ipnet),
        });
      }
    };
    if (!link) {
      gone(`link "${dev}" not found in ${this.ns.path}`);
      return;
    }
    // Read the addresses first: the kernel matches an IPv4 delete on its peer too, and a bare
    // address means every prefix length it is on the device with.
    const targets = this.#dump(ipnet.ip.family).filter(
      (x) => x.index === link.index && ipEqual(x.ipnet.ip, ipnet.ip) && (bare || x.ipnet.len === ipnet.len),
    );
    if (targets.length === 0) {
      gone(`${dev} does not have it`);
      return;
    }
    for (const x of targets) {
      if (!this.#remove(dev, x)) gone(`${dev} does not have it`);
    }
  }

  /**
   * Remove every address of a device (of one family if given), link-local ones included, as
   * `ip addr flush dev`. Returns what was removed. NOT_FOUND when the device does not exist.
   */
  flush(dev: string, family?: Family): Addr[] {
    const index = this.#index(dev);
    const mine = this.#dump(family).filter((x) => x.index === index);
    // Secondaries first: removing an IPv4 primary may take its secondaries along.
    mine.sort((x, y) => (y.flags & IFA_F.SECONDARY) - (x.flags & IFA_F.SECONDARY));
    for (const x of mine) this.#remove(dev, x);
    return mine;
  }

  /** Delete one address as read back (with its peer); false when it was already gone. */
  #remove(dev: string, x: Addr): boolean {
    const key = { index: x.index, ipnet: x.ipnet, ...(x.peer !== undefined && { peer: x.peer }) };
    try {
      this.sock().request(RTM.DELADDR, ifaddrmsg, encodeNewAddr(key), {
        what: `delete address ${formatIPNet(x.ipnet)} from ${dev}`,
      });
      return true;
    } catch (e) {
      if (e instanceof KernelError && e.code === 'NOT_FOUND') return false;
      throw this.#explain(e, 'delete', dev, x.ipnet);
    }
  }

  #dump(family?: Family): Addr[] {
    const msgs = this.sock().dump(RTM.GETADDR, ifaddrmsg, addrDumpRequest(family), {
      what: 'list addresses',
    });
    const out: Addr[] = [];
    for (const m of msgs) {
      if (m.type !== RTM.NEWADDR) continue;
      const { header, attrs } = decodeBody(ifaddrmsg, m.payload);
      if (familyOfAf(header.family) === undefined) continue;
      const x = decodeAddr(header, attrs);
      if (family === undefined || x.family === family) out.push(x);
    }
    return out;
  }

  #index(dev: string): number {
    checkDev(dev);
    return this.#links.get(dev).index;
  }

  /** Validate everything and build the request; throws before anything is sent. */
  #request(dev: string, ipnet: IPNet, opts: AddrOptions) {
    const family = ipnet.ip.family;
    const v4only = (what: string) => {
      throw new WeftError('INVALID', `${what} is for IPv4 addresses; ${formatIPNet(ipnet)} is IPv6`, {
        details: { dev, addr: formatIPNet(ipnet) },
      });
    };
    let broadcast: IPAddr | undefined;
    if (opts.broadcast !== undefined && opts.broadcast !== false) {
      if (family === 6) v4only('a broadcast address');
      broadcast = typeof opts.broadcast === 'string' ? parseIP(opts.broadcast) : opts.broadcast;
      if (broadcast.family !== 4) {
        throw new WeftError('INVALID', `broadcast ${formatIP(broadcast)} is not an IPv4 address`);
      }
    } else if (opts.broadcast === undefined && family === 4 && ipnet.len <= 30) {
      broadcast = lastIP(ipnet);
    }
    if (opts.label !== undefined) {
      if (family === 6) v4only('a label');
      if (!opts.label.startsWith(dev) || Buffer.byteLength(opts.label) > IFNAME_MAX) {
        throw new WeftError(
          'INVALID',
          `label "${opts.label}" must start with the device name "${dev}" and have at most ${IFNAME_MAX} bytes`,
          { details: { dev, label: opts.label } },
        );
      }
    }
    for (const [k, v] of [
      ['validLft', opts.validLft],
      ['preferredLft', opts.preferredLft],
    ] as const) {
      if (v !== undefined && (!Number.isInteger(v) || v < 0 || v > 0xffffffff)) {
        throw new WeftError('INVALID', `${k} ${v} is out of range (0-4294967295 seconds)`);
      }
    }
    if (opts.validLft !== undefined && opts.preferredLft !== undefined && opts.preferredLft > opts.validLft) {
      throw new WeftError('INVALID', `preferredLft ${opts.preferredLft} exceeds validLft ${opts.validLft}`);
    }
    const scope =
      opts.scope !== undefined
        ? scopeNumber(opts.scope)
        : family === 4 && ipnet.ip.value >>> 24 === 127
          ? RT_SCOPE.HOST
          : RT_SCOPE.UNIVERSE;
    const flags = (opts.noDad ? IFA_F.NODAD : 0) | (opts.noPrefixRoute ? IFA_F.NOPREFIXROUTE : 0);
    const index = this.#index(dev);
    return {
      index,
      ipnet,
      scope,
      flags,
      ...(broadcast !== undefined && { broadcast }),
      ...(opts.label !== undefined && { label: opts.label }),
      ...(opts.validLft !== undefined && { validLft: opts.validLft }),
      ...(opts.preferredLft !== undefined && { preferredLft: opts.preferredLft }),
    };
  }

  #readBack(dev: string, index: number, ipnet: IPNet): Addr {
    const match = (x: Addr) =>
      x.index === index && ipEqual(x.ipnet.ip, ipnet.ip) && x.ipnet.len === ipnet.len;
    const found = this.#getOne(index, ipnet)?.find(match) ?? this.#dump(ipnet.ip.family).find(match);
    if (!found) {
      throw new WeftError(
        'INTERNAL',
        `address ${formatIPNet(ipnet)} was accepted but is not on ${dev} when read back`,
      );
    }
    return found;
  }

  /**
   * One address asked for directly (RTM_GETADDR with an address: IPv6 answers it, IPv4 has no
   * such request); undefined when the kernel cannot answer it this way.
   */
  #getOne(index: number, ipnet: IPNet): Addr[] | undefined {
    if (ipnet.ip.family !== 6) return undefined;
    try {
      const body = encodeNewAddr({ index, ipnet });
      const msgs = this.sock().request(RTM.GETADDR, ifaddrmsg, body, {
        what: `get address ${formatIPNet(ipnet)}`,
      });
      return msgs
        .filter((m) => m.type === RTM.NEWADDR)
        .map((m) => {
          const { header, attrs } = decodeBody(ifaddrmsg, m.payload);
          return decodeAddr(header, attrs);
        });
    } catch {
      return undefined;
    }
  }

  #explain(e: unknown, op: 'add' | 'delete', dev: string, ipnet: IPNet): unknown {
    if (!(e instanceof KernelError)) return e;
    const details = { dev, addr: formatIPNet(ipnet), errno: e.errno };
    if (op === 'add' && e.code === 'EXISTS') {
      return new WeftError('EXISTS', `address ${formatIPNet(ipnet)} is already on ${dev}`, {
        cause: e,
        details,
      });
    }
    if (e.code === 'NOT_FOUND') {
      return new WeftError('NOT_FOUND', `${op} address ${formatIPNet(ipnet)} on ${dev}: ${e.message}`, {
        cause: e,
        details,
      });
    }
    return e;
  }
}

function checkDev(dev: string): void {
  if (typeof dev !== 'string' || dev.length === 0) throw new WeftError('INVALID', 'device name is empty');
}

/** Parse and check an address input (prefix length in range; host bits are allowed). */
function toIPNet(addr: AddrInput): IPNet {
  if (typeof addr === 'string') return parseIPNet(addr);
  const { ip, len } = addr ?? {};
  if (ip === undefined || (ip.family !== 4 && ip.family !== 6)) {
    throw new WeftError('INVALID', 'address has no IPv4 or IPv6 address');
  }
  if (!Number.isInteger(len) || len < 0 || len > bitsOf(ip.family)) {
    throw new WeftError('INVALID', `prefix length ${len} is out of range for IPv${ip.family}`);
  }
  return addr;
}

/** How an existing address differs from what is asked (undefined: it does not). */
function difference(x: Addr, broadcast: IPAddr | undefined, opts: AddrOptions): string | undefined {
  if (opts.label !== undefined && x.label !== opts.label)
    return `label ${x.label ?? 'none'} vs ${opts.label}`;
  if (opts.broadcast !== undefined) {
    const want = broadcast ? formatIP(broadcast) : 'none';
    const have = x.broadcast ? formatIP(x.broadcast) : 'none';
    if (want !== have) return `broadcast ${have} vs ${want}`;
  }
  if (opts.scope !== undefined && x.scope !== scopeNumber(opts.scope)) {
    return `scope ${x.scope} vs ${scopeNumber(opts.scope)}`;
  }
  return undefined;
}
