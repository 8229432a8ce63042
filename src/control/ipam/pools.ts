/**
 * Choosing subnets for networks created without `--subnet`, like Docker's
 * `default-address-pools`: each pool is a base prefix split into subnets of one size; the first
 * subnet (pools in order, addresses ascending) that overlaps no network in use and no prefix
 * routed on the host wins. The walk jumps over each conflicting prefix at once, so it costs
 * O(pools × conflicts²) whatever the size of the pools (an IPv6 base split into /64s included).
 *
 * The default pools are Docker's, except 172.17.0.0/16: that is Docker's own default bridge
 * (docker0), which weft never takes even when Docker is not running.
 */
import { invalid, WeftError } from '../../lib/errors.js';
import {
  addIP,
  bitsOf,
  compareIP,
  containsNet,
  type Family,
  formatIPNet,
  type IPNet,
  ipEqual,
  lastIP,
  maskIP,
  networkOf,
  overlaps,
  parseCidr,
} from '../../lib/ip.js';

/** A base prefix split into subnets of `size` bits (Docker's `{"base": …, "size": …}`). */
export interface AddressPool {
  readonly base: IPNet;
  readonly size: number;
}

/** A network in use: its subnet, optionally with its name for error messages. */
export type InUseNet = IPNet | { readonly name: string; readonly subnet: IPNet };

/**
 * Parse a pool as written in a config file (`{base: "10.10.0.0/16", size: 24}`).
 * Throws INVALID when the base is not a network prefix or the size does not fit it.
 */
export function parseAddressPool(pool: { base: string; size: number }): AddressPool {
  return checkPool({ base: parseCidr(pool.base), size: pool.size });
}

function checkPool(pool: AddressPool): AddressPool {
  const { base, size } = pool;
  const bits = bitsOf(base.ip.family);
  if (!Number.isInteger(size) || size < base.len || size > bits) {
    throw invalid(`address pool ${formatIPNet(base)}: size ${size} must be between ${base.len} and ${bits}`, {
      base: formatIPNet(base),
      size,
    });
  }
  if (!ipEqual(maskIP(base.ip, base.len), base.ip)) {
    throw invalid(`address pool ${formatIPNet(base)} has host bits set`, { base: formatIPNet(base) });
  }
  return pool;
}

/** 172.18.0.0/16 … 172.31.0.0/16 as /16s, then 192.168.0.0/16 as /20s. */
export const DEFAULT_POOLS: readonly AddressPool[] = Object.freeze([
  ...Array.from({ length: 14 }, (_, i) => ({ base: parseCidr(`172.${18 + i}.0.0/16`), size: 16 })),
  { base: parseCidr('192.168.0.0/16'), size: 20 },
]);

/** Docker's default bridge network, never picked from the default pools. */
export const DOCKER_DEFAULT_BRIDGE: IPNet = parseCidr('172.17.0.0/16');

export interface PickSubnetOptions {
  /** The pools to choose from, in order; default {@link DEFAULT_POOLS}. */
  readonly pools?: readonly AddressPool[] | undefined;
  /** Prefix length wanted; default each pool's own size. Pools smaller than it are skipped. */
  readonly size?: number | undefined;
  /** Only pools of this family; default all. */
  readonly family?: Family | undefined;
  /** Networks that exist (weft's own); the result overlaps none of them. */
  readonly inUse?: readonly InUseNet[] | undefined;
  /** Prefixes routed on the host; the result overlaps none. Default routes (/0) are ignored. */
  readonly avoid?: readonly IPNet[] | undefined;
}

const subnetOf = (n: InUseNet): IPNet => ('subnet' in n ? n.subnet : n);
const describe = (n: InUseNet): string =>
  'subnet' in n ? `network ${n.name} (${formatIPNet(n.subnet)})` : `network ${formatIPNet(n)}`;

/**
 * The first free subnet from the pools (see the file comment).
 *
 * Throws INVALID when a pool or `size` is malformed (a size outside the family's 0-32 or
 * 0-128, a pool size smaller than its base); BUSY when every candidate overlaps a network in
 * use or a host route.
 */
export function pickSubnet(opts: PickSubnetOptions = {}): IPNet {
  const pools = (opts.pools ?? DEFAULT_POOLS).map(checkPool);
  const { size, family } = opts;
  if (size !== undefined && (!Number.isInteger(size) || size < 0 || size > 128)) {
    throw invalid(`subnet size /${size} is not a prefix length`, { size });
  }
  const taken: IPNet[] = [
    ...(opts.inUse ?? []).map((n) => networkOf(subnetOf(n))),
    ...(opts.avoid ?? []).filter((n) => n.len > 0).map(networkOf),
  ];
  let considered = 0;
  for (const pool of pools) {
    if (family !== undefined && pool.base.ip.family !== family) continue;
    const len = size ?? pool.size;
    if (len < pool.base.len || len > bitsOf(pool.base.ip.family)) continue;
    considered++;
    const found = firstFreeIn(pool.base, len, taken);
    if (found !== undefined) return found;
  }
  const sizeText = size === undefined ? '' : ` /${size}`;
  const poolsText = pools.map((p) => `${formatIPNet(p.base)} as /${p.size}`);
  throw new WeftError(
    'BUSY',
    considered === 0
      ? `no address pool can hold a${sizeText} subnet${family === undefined ? '' : ` of IPv${family}`}`
      : `no free${sizeText} subnet left in the address pools: every one overlaps a network in use or a host route`,
    { details: { pools: poolsText, size, family } },
  );
}

/** The first /len subnet of `base` that overlaps nothing in `taken`, jumping past conflicts. */
function firstFreeIn(base: IPNet, len: number, taken: readonly IPNet[]): IPNet | undefined {
  let cand: IPNet = { ip: base.ip, len };
  for (;;) {
    // Of the prefixes overlapping the candidate, the one reaching furthest decides the jump.
    let hit: IPNet | undefined;
    for (const t of taken) {
      if (overlaps(t, cand) && (hit === undefined || compareIP(lastIP(t), lastIP(hit)) > 0)) hit = t;
    }
    if (hit === undefined) return cand;
    // Past both the candidate and the conflicting prefix: the next aligned /len after them.
    const end = compareIP(lastIP(hit), lastIP(cand)) > 0 ? lastIP(hit) : lastIP(cand);
    const next: IPNet = { ip: maskIP(addIP(end, 1), len), len };
    if (compareIP(next.ip, cand.ip) <= 0 || !containsNet(base, next)) return undefined; // wrapped or left
    cand = next;
  }
}

/**
 * Check that a user-given subnet (`--subnet`) overlaps no network in use.
 * Throws CONFLICT naming the first overlapping network.
 */
export function checkSubnetFree(subnet: IPNet, inUse: readonly InUseNet[]): void {
  for (const n of inUse) {
    if (overlaps(subnet, subnetOf(n))) {
      const subnetText = formatIPNet(networkOf(subnet));
      throw new WeftError('CONFLICT', `subnet ${subnetText} overlaps ${describe(n)}`, {
        details: {
          subnet: subnetText,
          overlaps: formatIPNet(networkOf(subnetOf(n))),
          ...('subnet' in n ? { network: n.name } : {}),
        },
      });
    }
  }
}
