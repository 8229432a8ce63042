/**
 * Address allocation over an {@link IpamStore}, pure and synchronous.
 *
 * Dynamic allocation round-robins as CNI host-local does: it starts at the address after the
 * last one handed out, wraps at the end of the range, and skips the gateway and taken
 * addresses, so a released address is not reused at once (ARP caches and conntrack entries of
 * its previous holder have time to expire). It never iterates a range nor materialises one (an
 * IPv6 range is 2^64 addresses): it sorts the taken addresses inside the range and walks from
 * the cursor past runs of them, so one allocation costs O(n log n) in the number of allocations
 * n, whatever the size of the range.
 *
 * A requested address (`--ip`) may be any usable address of the subnet, also outside the
 * ip-range: the ip-range bounds only dynamic allocation (Docker's behaviour, which lets users
 * keep static addresses apart from dynamic ones; moby/moby#47120).
 */
import { conflict, invalid, WeftError } from '../../lib/errors.js';
import { containsIP, formatIP, formatIPNet, type IPAddr, ipEqual, v4, v6 } from '../../lib/ip.js';
import type { IpamStore } from './store.js';
import { type CanonicalSubnet, formatRange, reservedReason } from './subnet.js';

/** A canonical subnet with the id under which its allocations are stored. */
export interface Pool extends CanonicalSubnet {
  readonly id: string;
}

export interface AllocateOptions {
  /** Who gets the address (an endpoint id); one address per owner and pool. */
  readonly owner: string;
  /** A specific address (`--ip`), instead of the next free one. */
  readonly request?: IPAddr | undefined;
}

/** Select what to release: everything an owner holds, or one address. */
export type ReleaseSelector = { readonly owner: string } | { readonly ip: IPAddr };

const big = (ip: IPAddr): bigint => (ip.family === 4 ? BigInt(ip.value) : ip.value);
const fromBig = (family: 4 | 6, n: bigint): IPAddr => (family === 4 ? v4(Number(n)) : v6(n));

/**
 * Allocate an address of `pool` to `opts.owner` and record it in `store`; returns the address.
 *
 * Idempotent per owner: when the owner already holds an address of the pool, that address is
 * returned (and a request for a different one is a CONFLICT).
 *
 * Throws INVALID when the owner is empty, or the requested address is of the other family, not
 * in the subnet, or a reserved address (network, broadcast, subnet-router anycast); CONFLICT
 * when the requested address is the gateway or allocated to another owner (the message names
 * the owner), or the owner already holds a different address; BUSY ("subnet X has no free
 * address") when the range is exhausted.
 */
export function allocate(pool: Pool, store: IpamStore, opts: AllocateOptions): IPAddr {
  const { owner, request } = opts;
  if (typeof owner !== 'string' || owner === '') throw invalid('an address needs a non-empty owner');
  const subnetText = formatIPNet(pool.subnet);
  const start = big(pool.range.start);
  const end = big(pool.range.end);

  let mine: IPAddr | undefined;
  let requestOwner: string | undefined;
  const taken: bigint[] = [];
  for (const a of store.allocated(pool.id)) {
    if (a.ip.family !== pool.family) continue;
    if (a.owner === owner && mine === undefined) mine = a.ip;
    if (request !== undefined && ipEqual(a.ip, request)) requestOwner = a.owner;
    const n = big(a.ip);
    if (n >= start && n <= end) taken.push(n);
  }

  if (mine !== undefined) {
    if (request === undefined || ipEqual(request, mine)) return mine;
    throw conflict(
      `${owner} already holds ${formatIP(mine)} in subnet ${subnetText}, not ${formatIP(request)}`,
      { owner, ip: formatIP(mine), requested: formatIP(request), subnet: subnetText },
    );
  }

  if (request !== undefined) {
    checkRequest(pool, request, requestOwner);
    store.add(pool.id, { ip: request, owner });
    return request;
  }

  const gw = big(pool.gateway);
  if (pool.gateway.family === pool.family && gw >= start && gw <= end) taken.push(gw);
  taken.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const used = dedupeSorted(taken);
  if (BigInt(used.length) >= end - start + 1n) {
    const where = pool.ipRange === undefined ? '' : ` in ip range ${formatIPNet(pool.ipRange)}`;
    throw new WeftError('BUSY', `subnet ${subnetText} has no free address${where}`, {
      details: { subnet: subnetText, range: formatRange(pool.range), allocated: used.length },
    });
  }

  const last = store.lastAllocated(pool.id);
  let from = start;
  if (last !== undefined && last.family === pool.family) {
    const l = big(last);
    if (l >= start && l < end) from = l + 1n;
  }
  // Not exhausted, so a free address exists after the cursor or, wrapping, before it.
  const n = firstFree(used, from, end) ?? firstFree(used, start, from - 1n);
  if (n === undefined)
    throw new WeftError('INTERNAL', `no free address found in ${subnetText} though one exists`);
  const ip = fromBig(pool.family, n);
  store.add(pool.id, { ip, owner });
  store.setLastAllocated(pool.id, ip);
  return ip;
}

function checkRequest(pool: Pool, request: IPAddr, takenBy: string | undefined): void {
  const ipText = formatIP(request);
  const subnetText = formatIPNet(pool.subnet);
  const details = { ip: ipText, subnet: subnetText };
  if (!containsIP(pool.subnet, request)) {
    throw invalid(`requested address ${ipText} is not in subnet ${subnetText}`, details);
  }
  const why = reservedReason(pool.subnet, request);
  if (why !== undefined) throw invalid(`requested address ${ipText} ${why}`, details);
  if (ipEqual(request, pool.gateway)) {
    throw conflict(`requested address ${ipText} is the gateway of subnet ${subnetText}`, details);
  }
  if (takenBy !== undefined) {
    throw conflict(`address ${ipText} is already allocated to ${takenBy}`, { ...details, owner: takenBy });
  }
}

function dedupeSorted(a: bigint[]): bigint[] {
  let w = 0;
  for (let r = 0; r < a.length; r++) {
    if (r === 0 || a[r] !== a[w - 1]) a[w++] = a[r]!;
  }
  a.length = w;
  return a;
}

/** First index i with sorted[i] >= x. */
function lowerBound(sorted: readonly bigint[], x: bigint): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The smallest value in [from, to] not in `sorted`, walking past the run of taken values. */
function firstFree(sorted: readonly bigint[], from: bigint, to: bigint): bigint | undefined {
  let i = lowerBound(sorted, from);
  let n = from;
  while (i < sorted.length && sorted[i] === n) {
    n++;
    i++;
  }
  return n <= to ? n : undefined;
}

/**
 * Release addresses of `pool`: all of an owner's, or one address. Idempotent: releasing what
 * is not allocated does nothing. Returns the addresses released. The round-robin cursor stays
 * where it is. Never throws (beyond what the store throws).
 */
export function release(pool: Pool, store: IpamStore, which: ReleaseSelector): IPAddr[] {
  const gone: IPAddr[] = [];
  for (const a of store.allocated(pool.id)) {
    if ('owner' in which ? a.owner === which.owner : ipEqual(a.ip, which.ip)) gone.push(a.ip);
  }
  for (const ip of gone) store.remove(pool.id, ip);
  return gone;
}

/** The address `owner` holds in `pool`, if any. Never throws (beyond what the store throws). */
export function addressOf(pool: Pool, store: IpamStore, owner: string): IPAddr | undefined {
  for (const a of store.allocated(pool.id)) if (a.owner === owner) return a.ip;
  return undefined;
}
