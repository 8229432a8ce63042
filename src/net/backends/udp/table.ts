/**
 * The state the udp backend's main thread shares with its data-path workers, in
 * SharedArrayBuffers (no messages on the hot path):
 *
 *   control + peer table (Int32Array): a generation counter used as a seqlock (odd while the
 *     main thread writes), the stop flag, this host's own subnet, and the peer entries
 *     (subnet network, prefix length, peer public IPv4). Workers compare the generation once
 *     per loop turn and take a fresh copy only when it changed.
 *   counters (Float64Array): one row per worker, written only by that worker, summed by
 *     `readStats` in the main thread.
 *
 * `Router` is a worker's copy of the table in the form the packet loop wants: longest-prefix
 * lookup of an inner destination (one Map per distinct prefix length, longest first, and a
 * one-entry cache for the flow in progress), the set of known peer addresses, and the own
 * subnet. Pure code: no I/O, unit tested without root. IPv4 values are uint32 numbers.
 */

/** Most peers the table holds (a /8 cluster network cut into /22 subnets). */
export const MAX_PEERS = 16384;

const GEN = 0;
const STOP = 1;
const COUNT = 2;
const OWN_NET = 3;
const OWN_LEN = 4;
const HEADER = 8;
const ENTRY = 3;

/** Counter names, in their column order. */
export const STAT_FIELDS = [
  'txPackets', // tun → udp: packets sent to a peer
  'txBytes',
  'rxPackets', // udp → tun: packets written to the TUN
  'rxBytes',
  'dropNoRoute', // tun → udp: the inner destination is in no peer's subnet
  'dropUnknownPeer', // udp → tun: the datagram's source is no peer's public IP
  'dropNotOurs', // udp → tun: the inner destination is not in this host's subnet
  'dropMalformed', // not IPv4, shorter than a header, or truncated
  'dropSendError', // sendmmsg refused the packet
  'dropWriteError', // the TUN refused the packet
] as const;
export type StatName = (typeof STAT_FIELDS)[number];
export type Stats = Record<StatName, number>;
export const STAT = Object.fromEntries(STAT_FIELDS.map((n, i) => [n, i])) as Record<StatName, number>;

export interface PeerEntry {
  /** Subnet network address (host bits clear). */
  readonly net: number;
  readonly len: number;
  /** The peer's public IPv4. */
  readonly peer: number;
}

export const maskOf = (len: number): number => (len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0);

/** The shared buffers of one data path. */
export interface Shared {
  readonly control: SharedArrayBuffer;
  readonly stats: SharedArrayBuffer;
  readonly workers: number;
}

export function createShared(workers: number): Shared {
  return {
    control: new SharedArrayBuffer((HEADER + MAX_PEERS * ENTRY) * 4),
    stats: new SharedArrayBuffer(workers * STAT_FIELDS.length * 8),
    workers,
  };
}

/** Main-thread side: publish the table, raise the stop flag. One writer only. */
export class TableWriter {
  readonly #c: Int32Array;

  constructor(shared: Shared) {
    this.#c = new Int32Array(shared.control);
    Atomics.store(this.#c, OWN_LEN, -1);
  }

  /**
   * Publish this host's subnet and the peers (at most MAX_PEERS: the caller checks). Readers
   * never see a half-written table: the generation is odd while writing.
   */
  publish(own: { net: number; len: number } | undefined, peers: readonly PeerEntry[]): void {
    const c = this.#c;
    const n = Math.min(peers.length, MAX_PEERS);
    Atomics.add(c, GEN, 1);
    c[OWN_NET] = own ? own.net | 0 : 0;
    c[OWN_LEN] = own ? own.len : -1;
    for (let i = 0; i < n; i++) {
      const e = peers[i]!;
      const o = HEADER + i * ENTRY;
      c[o] = e.net | 0;
      c[o + 1] = e.len;
      c[o + 2] = e.peer | 0;
    }
    c[COUNT] = n;
    Atomics.add(c, GEN, 1);
  }

  stop(): void {
    Atomics.store(this.#c, STOP, 1);
  }
}

/** Sum the workers' counters. */
export function readStats(shared: Shared): Stats {
  const s = new Float64Array(shared.stats);
  const out = Object.fromEntries(STAT_FIELDS.map((n) => [n, 0])) as Stats;
  for (let w = 0; w < shared.workers; w++) {
    for (let i = 0; i < STAT_FIELDS.length; i++) out[STAT_FIELDS[i]!] += s[w * STAT_FIELDS.length + i]!;
  }
  return out;
}

/** A worker's row of counters: `count(STAT.x, n)`. */
export function statsRow(shared: Shared, worker: number): Float64Array {
  return new Float64Array(shared.stats, worker * STAT_FIELDS.length * 8, STAT_FIELDS.length);
}

/** Worker side: a consistent copy of the table, rebuilt when the generation moves. */
export class Router {
  readonly #c: Int32Array;
  #gen = -1;
  /** Distinct prefix lengths, longest first, with their masks and net → peer maps. */
  #lens: number[] = [];
  #masks: number[] = [];
  #maps: Map<number, number>[] = [];
  #peers = new Set<number>();
  #ownNet = 0;
  #ownMask = 0;
  #hasOwn = false;
  #lastDst = -1;
  #lastPeer = -1;
  #lastSrc = -1;

  constructor(control: SharedArrayBuffer) {
    this.#c = new Int32Array(control);
  }

  get stopped(): boolean {
    return Atomics.load(this.#c, STOP) !== 0;
  }

  /** Take a fresh copy if the main thread published since the last look. Cheap when not. */
  refresh(): void {
    const c = this.#c;
    const g1 = Atomics.load(c, GEN);
    if (g1 === this.#gen || (g1 & 1) === 1) return;
    const ownLen = c[OWN_LEN]!;
    const ownNet = c[OWN_NET]! >>> 0;
    const n = c[COUNT]!;
    const entries: PeerEntry[] = [];
    for (let i = 0; i < n; i++) {
      const o = HEADER + i * ENTRY;
      entries.push({ net: c[o]! >>> 0, len: c[o + 1]!, peer: c[o + 2]! >>> 0 });
    }
    if (Atomics.load(c, GEN) !== g1) return; // written meanwhile: next turn
    this.#gen = g1;
    this.#hasOwn = ownLen >= 0;
    this.#ownMask = this.#hasOwn ? maskOf(ownLen) : 0;
    this.#ownNet = this.#hasOwn ? (ownNet & this.#ownMask) >>> 0 : 0;
    const byLen = new Map<number, Map<number, number>>();
    const peers = new Set<number>();
    for (const e of entries) {
      const m = byLen.get(e.len) ?? new Map<number, number>();
      byLen.set(e.len, m);
      m.set((e.net & maskOf(e.len)) >>> 0, e.peer);
      peers.add(e.peer);
    }
    this.#lens = [...byLen.keys()].sort((a, b) => b - a);
    this.#masks = this.#lens.map(maskOf);
    this.#maps = this.#lens.map((l) => byLen.get(l)!);
    this.#peers = peers;
    this.#lastDst = -1;
    this.#lastPeer = -1;
    this.#lastSrc = -1;
  }

  /**
   * The public IPv4 of the peer whose subnet holds `dst` (longest prefix), or -1: no peer, or
   * `dst` is in this host's own subnet (never sent back out).
   */
  lookup(dst: number): number {
    if (dst === this.#lastDst) return this.#lastPeer;
    let peer = -1;
    if (!(this.#hasOwn && (dst & this.#ownMask) >>> 0 === this.#ownNet)) {
      for (let i = 0; i < this.#maps.length; i++) {
        const p = this.#maps[i]!.get((dst & this.#masks[i]!) >>> 0);
        if (p !== undefined) {
          peer = p;
          break;
        }
      }
    }
    this.#lastDst = dst;
    this.#lastPeer = peer;
    return peer;
  }

  /** True when `src` is the public IP of a peer in the table. */
  knownPeer(src: number): boolean {
    if (src === this.#lastSrc) return true;
    if (!this.#peers.has(src)) return false;
    this.#lastSrc = src;
    return true;
  }

  /** True when `dst` lies in this host's own subnet (false before start published it). */
  isOwn(dst: number): boolean {
    return this.#hasOwn && (dst & this.#ownMask) >>> 0 === this.#ownNet;
  }
}
