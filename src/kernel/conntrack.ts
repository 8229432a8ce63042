/**
 * The conntrack table of one namespace, over ctnetlink (../netlink/conntrack.ts), in-process:
 * `list` dumps it, `delete` removes every entry whose original tuple matches a filter (what
 * `conntrack -D -p tcp --orig-port-dst 8080 --reply-src 10.0.0.2` does), and nothing is spawned.
 *
 * Why a kept socket. Spawning `conntrack` costs ~6 ms, and its exit costs more: when a
 * NETLINK_NETFILTER socket is released, nf_tables' netlink notifier (NETLINK_URELEASE) finishes
 * the namespace's pending transaction clean-up on the spot, which waits for an RCU grace period
 * (~16 ms) whenever an nft transaction just before deleted something: exactly the situation
 * after a published port's rules are removed. So the NETLINK_NETFILTER socket is opened once
 * (inside the namespace, in a switched section: it stays bound there) and kept between calls;
 * it is closed after `IDLE_CLOSE_MS` without a call (an unref'd timer, so it never keeps the
 * process alive) and by `close()`. The release still pays that clean-up when one is pending
 * (close() measured 7-20 ms right after an nft deletion), but then on an idle timer, not inside
 * the request that removed a port. An open socket keeps its namespace alive, so owners close it
 * when they are done with the namespace; a call after `close()` opens a new one.
 *
 * Deletion dumps the table once per call (one family, or both) and deletes the matching entries
 * one by one by their original tuple and zone; an entry that expired in between (ENOENT) is not
 * an error. Entries can only be found by a dump (a lookup needs the client's address and port),
 * and a dump walks every bucket of the kernel's conntrack hash table, which all namespaces
 * share: it costs the same ~3.5 ms (262144 buckets on a 24 GB machine) for an empty namespace
 * as for a full one. So a deletion first asks for the namespace's entry count
 * (IPCTNL_MSG_CT_GET_STATS, ~0.03 ms) and skips the dump when there is nothing. All methods are
 * synchronous: nfnetlink answers inside the syscalls.
 */
import { Errno, KernelError, WeftError } from '../lib/errors.js';
import { type Family, formatIP, type IPAddr, ipEqual, parseIP } from '../lib/ip.js';
import {
  CT_MSG,
  type CtEntry,
  type CtKey,
  ctDumpRequest,
  ctStatsRequest,
  decodeCtEntry,
  decodeCtStats,
  encodeCtDelete,
  IPPROTO,
  NETLINK_NETFILTER,
  nfgenmsg,
} from '../netlink/conntrack.js';
import { AF } from '../netlink/consts.js';
import { decodeBody } from '../netlink/message.js';
import type { Netns } from './netns.js';
import { NetlinkSocket } from './rtnl.js';

export type { CtEntry, CtKey, CtTuple } from '../netlink/conntrack.js';

/** The kept socket is closed after this long without a call. */
export const IDLE_CLOSE_MS = 5_000;

/** Which entries `Conntrack.delete` removes: all conditions given must hold. */
export interface CtFilter {
  readonly proto: 'tcp' | 'udp';
  /** The original destination port (a published host port), or an inclusive range `[first, last]`. */
  readonly dport: number | readonly [number, number];
  /** Only entries of this family (default: the family of the addresses given, else both). */
  readonly family?: Family;
  /** The original destination address (the host address a client connected to). */
  readonly origDst?: IPAddr | string;
  /** The reply's source address (where the connection really goes: a DNAT target). */
  readonly replySrc?: IPAddr | string;
  /**
   * The reply's source port for the first port of `dport` (a DNAT target port); with a range,
   * the following ports map one to one (`dport` first+i answers from `replySport`+i).
   */
  readonly replySport?: number;
}

export interface ConntrackOptions {
  /** Close the kept socket after this many ms without a call (default IDLE_CLOSE_MS). */
  readonly idleMs?: number;
  /** How long to wait for the kernel's answer (default 10 s). */
  readonly timeoutMs?: number;
}

/** A validated filter (compileFilter). */
export interface CtMatch {
  readonly family: Family | undefined;
  readonly proto: number;
  readonly first: number;
  readonly last: number;
  readonly origDst: IPAddr | undefined;
  readonly replySrc: IPAddr | undefined;
  readonly replySport: number | undefined;
}

const PROTOS = { tcp: IPPROTO.TCP, udp: IPPROTO.UDP } as const;

function checkPort(p: unknown, what: string): number {
  if (typeof p !== 'number' || !Number.isInteger(p) || p < 1 || p > 65535) {
    throw new WeftError('INVALID', `conntrack filter: ${what} ${String(p)} is not a port (1-65535)`);
  }
  return p;
}

function toIP(ip: IPAddr | string, what: string): IPAddr {
  if (typeof ip !== 'string') return ip;
  try {
    return parseIP(ip);
  } catch (e) {
    throw new WeftError('INVALID', `conntrack filter: ${what} "${ip}" is not an IP address`, { cause: e });
  }
}

/**
 * Validate a filter (pure). @throws WeftError INVALID naming the problem: an unknown protocol, a
 * port out of range, a reversed range, an address that does not parse, families that disagree.
 */
export function compileFilter(f: CtFilter): CtMatch {
  if (!f || typeof f !== 'object') throw new WeftError('INVALID', 'conntrack filter must be an object');
  const proto = (PROTOS as Record<string, number>)[f.proto as string];
  if (proto === undefined) {
    throw new WeftError('INVALID', `conntrack filter: protocol must be tcp or udp, not "${String(f.proto)}"`);
  }
  const range: readonly unknown[] = Array.isArray(f.dport) ? f.dport : [f.dport, f.dport];
  if (range.length !== 2) {
    throw new WeftError('INVALID', 'conntrack filter: a port range is [first, last]');
  }
  const first = checkPort(range[0], 'port');
  const last = checkPort(range[1], 'port');
  if (last < first)
    throw new WeftError('INVALID', `conntrack filter: port range ${first}-${last} is reversed`);
  if (f.replySport !== undefined) {
    checkPort(f.replySport, 'reply source port');
    checkPort(f.replySport + (last - first), 'last reply source port');
  }
  if (f.family !== undefined && f.family !== 4 && f.family !== 6) {
    throw new WeftError('INVALID', `conntrack filter: family must be 4 or 6, not ${String(f.family)}`);
  }
  const origDst = f.origDst === undefined ? undefined : toIP(f.origDst, 'original destination');
  const replySrc = f.replySrc === undefined ? undefined : toIP(f.replySrc, 'reply source');
  const families = new Set([f.family, origDst?.family, replySrc?.family].filter((x) => x !== undefined));
  if (families.size > 1) {
    throw new WeftError(
      'INVALID',
      'conntrack filter: the family and the addresses are of different IP versions',
    );
  }
  return {
    family: [...families][0],
    proto,
    first,
    last,
    origDst,
    replySrc,
    replySport: f.replySport,
  };
}

/** True when entry `e` is one that the filter `m` selects (pure). */
export function matches(m: CtMatch, e: CtEntry): boolean {
  const dport = e.orig.dport;
  if (e.proto !== m.proto || dport === undefined || dport < m.first || dport > m.last) return false;
  if (m.family !== undefined && e.family !== m.family) return false;
  if (m.origDst && !ipEqual(e.orig.dst, m.origDst)) return false;
  if (m.replySrc && !ipEqual(e.reply.src, m.replySrc)) return false;
  if (m.replySport !== undefined && e.reply.sport !== m.replySport + (dport - m.first)) return false;
  return true;
}

/** Errors of any request that mean "no ctnetlink here". */
const NO_SUBSYSTEM = new Set<number>([Errno.EPROTONOSUPPORT, Errno.EOPNOTSUPP]);
/**
 * Errors of a bare dump request (which has nothing else to refuse) taken the same way: nfnetlink
 * answers EINVAL for a subsystem that is not registered (nf_conntrack_netlink neither built in
 * nor loadable); ENOENT likewise.
 */
const MISSING = new Set<number>([...NO_SUBSYSTEM, Errno.ENOENT, Errno.EINVAL]);

const tupleText = (e: CtKey): string =>
  `${formatIP(e.orig.src)}:${e.orig.sport ?? '-'} -> ${formatIP(e.orig.dst)}:${e.orig.dport ?? '-'} (protocol ${e.proto})`;

function unavailable(ns: Netns, e: unknown): WeftError {
  return new WeftError(
    'UNSUPPORTED',
    `conntrack is not available in ${ns.path}: the kernel lacks nf_conntrack or its netlink interface (nf_conntrack_netlink)`,
    { cause: e, details: { errno: e instanceof KernelError ? e.errno : undefined } },
  );
}

export class Conntrack {
  readonly #ns: Netns;
  readonly #idleMs: number;
  readonly #timeoutMs: number;
  #sock: NetlinkSocket | undefined;
  #idle: NodeJS.Timeout | undefined;

  /** @throws WeftError INVALID for an idle time or timeout that is not a positive integer of ms. */
  constructor(ns: Netns, opts: ConntrackOptions = {}) {
    this.#ns = ns;
    this.#idleMs = opts.idleMs ?? IDLE_CLOSE_MS;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    for (const [k, v] of [
      ['idle time', this.#idleMs],
      ['timeout', this.#timeoutMs],
    ] as const) {
      if (!Number.isInteger(v) || v <= 0) {
        throw new WeftError('INVALID', `conntrack ${k} must be a positive integer of ms, not ${v}`);
      }
    }
  }

  /** True while the kept socket is open (between a call and the idle close or `close()`). */
  get isOpen(): boolean {
    return this.#sock !== undefined;
  }

  /**
   * Every entry of the namespace's table (all protocols), of one family or both.
   * @throws WeftError INVALID for a family other than 4 or 6; UNSUPPORTED when the kernel has no
   *   conntrack netlink interface; KernelError for anything else the kernel refuses.
   */
  list(family?: Family): CtEntry[] {
    if (family !== undefined && family !== 4 && family !== 6) {
      throw new WeftError('INVALID', `address family must be 4 or 6, not ${String(family)}`);
    }
    return this.#use((sock) => this.#dump(sock, family));
  }

  /**
   * How many entries the namespace's table holds, all families (`conntrack -C`): one small
   * request, where a dump walks the whole hash table.
   * @throws WeftError UNSUPPORTED when the kernel has no conntrack netlink interface;
   *   KernelError for anything else the kernel refuses.
   */
  count(): number {
    return this.#use((sock) => this.#count(sock));
  }

  /**
   * Delete every entry whose original tuple matches one of the filters; returns how many were
   * deleted. Entries that vanish between the dump and their deletion are not counted, and are not
   * an error. All filters are validated before anything is asked of the kernel; an empty list
   * does nothing (and opens no socket).
   * @throws WeftError INVALID for a bad filter (nothing deleted); UNSUPPORTED when the kernel has
   *   no conntrack netlink interface; KernelError for anything else the kernel refuses.
   */
  delete(filter: CtFilter | readonly CtFilter[]): number {
    const list: readonly CtFilter[] = Array.isArray(filter) ? filter : [filter as CtFilter];
    const ms = list.map(compileFilter);
    if (ms.length === 0) return 0;
    const fams = new Set(ms.map((m) => m.family));
    const family = fams.size === 1 ? [...fams][0] : undefined;
    return this.#use((sock) => {
      // A dump walks the kernel's whole hash table (shared by all namespaces: ~3.5 ms for 262144
      // buckets here), whatever this namespace holds; an empty table needs none.
      if (this.#countOrUndefined(sock) === 0) return 0;
      return this.#deleteAll(
        sock,
        this.#dump(sock, family).filter((e) => ms.some((m) => matches(m, e))),
      );
    });
  }

  /**
   * Delete these entries (as `list` returned them), each by its original tuple and zone; returns
   * how many were deleted. Entries already gone are skipped, not an error.
   * @throws WeftError INVALID for an entry whose values cannot be encoded (nothing deleted);
   *   UNSUPPORTED when the kernel has no conntrack netlink interface; KernelError otherwise.
   */
  deleteEntries(entries: readonly CtKey[]): number {
    const bodies = entries.map(encodeCtDelete);
    if (bodies.length === 0) return 0;
    return this.#use((sock) => this.#deleteAll(sock, entries, bodies));
  }

  /**
   * Close the kept socket now (idempotent). Releasing it may make the kernel finish nf_tables'
   * pending clean-up (see the note at the top), so it belongs where nobody waits: shutdown, or
   * before the namespace is deleted (an open socket keeps the namespace alive).
   */
  close(): void {
    if (this.#idle) clearTimeout(this.#idle);
    this.#idle = undefined;
    const s = this.#sock;
    this.#sock = undefined;
    s?.close(); // closing needs no namespace switch
  }

  #use<T>(fn: (sock: NetlinkSocket) => T): T {
    if (!this.#sock) {
      try {
        this.#sock = this.#ns.run(() =>
          NetlinkSocket.open({ protocol: NETLINK_NETFILTER, timeoutMs: this.#timeoutMs }),
        );
      } catch (e) {
        if (e instanceof KernelError && e.errno === Errno.EPROTONOSUPPORT) throw unavailable(this.#ns, e);
        throw e;
      }
    }
    try {
      return fn(this.#sock);
    } finally {
      // Kept for the next call; released once idle (see the note at the top for why not now).
      if (this.#idle) this.#idle.refresh();
      else {
        this.#idle = setTimeout(() => this.close(), this.#idleMs);
        this.#idle.unref();
      }
    }
  }

  #deleteAll(sock: NetlinkSocket, entries: readonly CtKey[], bodies = entries.map(encodeCtDelete)): number {
    let deleted = 0;
    entries.forEach((e, i) => {
      try {
        sock.request(CT_MSG.DELETE, nfgenmsg, bodies[i]!, {
          what: `delete conntrack entry ${tupleText(e)} in ${this.#ns.path}`,
        });
        deleted++;
      } catch (err) {
        // Expired, or deleted by someone else since it was listed: it is gone, as wanted.
        if (err instanceof KernelError && err.errno === Errno.ENOENT) return;
        if (err instanceof KernelError && NO_SUBSYSTEM.has(err.errno)) throw unavailable(this.#ns, err);
        throw err;
      }
    });
    return deleted;
  }

  #count(sock: NetlinkSocket): number {
    let msgs: ReturnType<NetlinkSocket['request']>;
    try {
      msgs = sock.request(CT_MSG.GET_STATS, nfgenmsg, ctStatsRequest(), {
        what: `count conntrack entries in ${this.#ns.path}`,
      });
    } catch (e) {
      if (e instanceof KernelError && MISSING.has(e.errno)) throw unavailable(this.#ns, e);
      throw e;
    }
    const m = msgs.find((x) => x.type === CT_MSG.GET_STATS);
    if (!m) throw new WeftError('INTERNAL', `count conntrack entries in ${this.#ns.path}: no answer`);
    return decodeCtStats(decodeBody(nfgenmsg, m.payload).attrs).entries;
  }

  /** The count, or undefined when the kernel cannot tell (then a dump finds out). */
  #countOrUndefined(sock: NetlinkSocket): number | undefined {
    try {
      return this.#count(sock);
    } catch (e) {
      if (e instanceof WeftError && e.code === 'UNSUPPORTED') throw e;
      return undefined;
    }
  }

  #dump(sock: NetlinkSocket, family: Family | undefined): CtEntry[] {
    let msgs: ReturnType<NetlinkSocket['dump']>;
    try {
      msgs = sock.dump(CT_MSG.GET, nfgenmsg, ctDumpRequest(family), {
        what: `list conntrack entries in ${this.#ns.path}`,
      });
    } catch (e) {
      if (e instanceof KernelError && MISSING.has(e.errno)) throw unavailable(this.#ns, e);
      throw e;
    }
    const out: CtEntry[] = [];
    for (const m of msgs) {
      if (m.type !== CT_MSG.NEW) continue;
      const { header, attrs } = decodeBody(nfgenmsg, m.payload);
      if (header.family !== AF.INET && header.family !== AF.INET6) continue;
      const e = decodeCtEntry(header, attrs);
      if (family === undefined || e.family === family) out.push(e);
    }
    return out;
  }
}
