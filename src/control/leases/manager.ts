/**
 * The lease manager: flannel's lease policy over a Registry (which only stores).
 *
 * Acquire, in this order: this host's existing lease (same PublicIP) is kept and refreshed; else
 * the subnet of the previous subnet.env, if it is still in range and free; else a random free
 * subnet of [SubnetMin, SubnetMax]. Every claim is one create-if-absent with the TTL, so two
 * hosts can never hold one subnet; a lost race re-lists and tries again, a bounded number of
 * times. Renewal rewrites the lease (compare-and-swap on its revision) some time before it
 * expires; a lease that is gone or was changed by someone else is acquired again (the same
 * subnet first) instead of giving up.
 *
 * Acquire, renew and release run one at a time, so release() deletes the revision the last
 * write left; after release() or close() acquire and renew refuse, so a retry still under way
 * when the host leaves cannot create the lease again.
 */
import { WeftError } from '../../lib/errors.js';
import { formatIPNet, type IPAddr, type IPNet } from '../../lib/ip.js';
import { type Logger, nullLogger } from '../../lib/log.js';
import type { Registry } from '../store/types.js';
import { type ClusterConfig, nthSubnet, parseClusterConfig, subnetCount } from './config.js';
import {
  configKey,
  type Lease,
  leaseKey,
  parseLease,
  renderLeaseValue,
  sameSubnet,
  subnetKey,
  subnetsPrefix,
} from './lease.js';

export const DEFAULT_TTL_SECONDS = 24 * 60 * 60;
const CLAIM_ATTEMPTS = 10;

/**
 * A free subnet: the i-th of the range for a random i, walking on from there so that the answer
 * is found in one pass. Undefined when every subnet is taken. Pure (random is injected).
 */
export function pickFreeSubnet(
  cfg: ClusterConfig,
  taken: readonly IPNet[],
  random: () => number = Math.random,
): IPNet | undefined {
  const n = subnetCount(cfg);
  const used = new Set(taken.map(subnetKey));
  const start = Math.floor(random() * n);
  for (let k = 0; k < n; k++) {
    const s = nthSubnet(cfg, (start + k) % n);
    if (!used.has(subnetKey(s))) return s;
  }
  return undefined;
}

/** Whether a subnet is one the configuration hands out. */
export function inRange(cfg: ClusterConfig, s: IPNet): boolean {
  if (s.len !== cfg.subnetLen || s.ip.family !== 4) return false;
  const v = s.ip.value as number;
  return v >= (cfg.subnetMin.value as number) && v <= (cfg.subnetMax.value as number);
}

export interface LeaseManagerOptions {
  readonly registry: Registry;
  readonly prefix: string;
  readonly publicIp: IPAddr;
  readonly backendType: string;
  readonly backendData: unknown;
  readonly ttlSeconds?: number;
  /** The subnet of a previous subnet.env, tried before a random one. */
  readonly previousSubnet?: IPNet | undefined;
  readonly log?: Logger;
  readonly random?: () => number;
}

export class LeaseManager {
  readonly #o: LeaseManagerOptions;
  readonly #log: Logger;
  #lease: Lease | undefined;
  #closed = false;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(o: LeaseManagerOptions) {
    this.#o = o;
    this.#log = o.log ?? nullLogger;
  }

  get lease(): Lease | undefined {
    return this.#lease;
  }

  get ttlSeconds(): number {
    return this.#o.ttlSeconds ?? DEFAULT_TTL_SECONDS;
  }

  /**
   * The cluster configuration, or undefined when none is stored yet.
   * @throws WeftError INVALID when the stored configuration is malformed; UNAVAILABLE from the store.
   */
  async config(): Promise<ClusterConfig | undefined> {
    const e = await this.#o.registry.get(configKey(this.#o.prefix));
    return e ? parseClusterConfig(e.value) : undefined;
  }

  /**
   * Acquire (or keep) this host's lease, see the design note.
   * @throws WeftError CONFLICT when no subnet is free or every claim lost its race; UNAVAILABLE
   *   from the store; INVALID once closed.
   */
  acquire(cfg: ClusterConfig): Promise<Lease> {
    return this.#serial(() => this.#acquire(cfg));
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #refuseClosed(): void {
    if (this.#closed)
      throw new WeftError('INVALID', 'the lease manager is closed (the host left or stopped)');
  }

  async #acquire(cfg: ClusterConfig): Promise<Lease> {
    const r = this.#o.registry;
    const opts = { ttlSeconds: this.ttlSeconds };
    const value = renderLeaseValue(this.#o);
    let prefer = this.#lease?.subnet ?? this.#o.previousSubnet;
    for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
      this.#refuseClosed();
      const { entries } = await r.list(subnetsPrefix(this.#o.prefix));
      const leases = entries.flatMap((e) => parseLease(this.#o.prefix, e) ?? []);
      const mine = leases.find((l) => l.publicIp.value === this.#o.publicIp.value && inRange(cfg, l.subnet));
      if (mine) {
        const key = leaseKey(this.#o.prefix, mine.subnet);
        const e = await r.update(key, value, { ...opts, ifRevision: mine.modRevision });
        if (e) return this.#took(parseLease(this.#o.prefix, e), 'kept');
        continue; // changed under us: look again
      }
      const taken = leases.map((l) => l.subnet);
      let want: IPNet | undefined;
      if (prefer && inRange(cfg, prefer) && !taken.some((t) => sameSubnet(t, prefer!))) want = prefer;
      want ??= pickFreeSubnet(cfg, taken, this.#o.random);
      if (!want) {
        throw new WeftError(
          'CONFLICT',
          `no free subnet left in ${formatIPNet(cfg.network)} (${taken.length} leased)`,
          {
            details: { network: formatIPNet(cfg.network), leased: taken.length },
          },
        );
      }
      const e = await r.create(leaseKey(this.#o.prefix, want), value, opts);
      if (e) return this.#took(parseLease(this.#o.prefix, e), 'acquired');
      this.#log.info('subnet claimed by another host meanwhile; trying again', { subnet: formatIPNet(want) });
      prefer = undefined;
    }
    throw new WeftError('CONFLICT', `could not claim a subnet in ${CLAIM_ATTEMPTS} attempts (busy cluster?)`);
  }

  #took(l: Lease | undefined, how: string): Lease {
    if (!l) throw new WeftError('INTERNAL', 'the store returned a lease weft cannot read back');
    this.#lease = l;
    this.#log.info(`lease ${how}`, {
      subnet: formatIPNet(l.subnet),
      expiresAt: l.expiresAt === undefined ? undefined : new Date(l.expiresAt).toISOString(),
    });
    return l;
  }

  /**
   * Renew the lease; if it is gone or changed, acquire again (same subnet first).
   * @throws like acquire.
   */
  renew(cfg: ClusterConfig): Promise<Lease> {
    return this.#serial(() => this.#renew(cfg));
  }

  async #renew(cfg: ClusterConfig): Promise<Lease> {
    this.#refuseClosed();
    const l = this.#lease;
    if (l) {
      const e = await this.#o.registry.update(leaseKey(this.#o.prefix, l.subnet), renderLeaseValue(this.#o), {
        ttlSeconds: this.ttlSeconds,
        ifRevision: l.modRevision,
      });
      if (e) return this.#took(parseLease(this.#o.prefix, e), 'renewed');
      this.#log.warn('lease lost (deleted, expired or changed); acquiring again', {
        subnet: formatIPNet(l.subnet),
      });
    }
    return this.#acquire(cfg);
  }

  /** When to renew: 1 h before expiry (flannel), or halfway for short TTLs. ms from now. */
  renewDelayMs(now = Date.now()): number {
    const exp = this.#lease?.expiresAt;
    if (exp === undefined) return 60 * 60 * 1000;
    const margin = Math.min(60 * 60 * 1000, (this.ttlSeconds * 1000) / 2);
    return Math.max(0, exp - margin - now);
  }

  /** Refuse acquire and renew from now on (the lease stays in the store). */
  close(): void {
    this.#closed = true;
  }

  /**
   * Delete the lease (leaving the cluster) once an acquire or renew under way has settled; false
   * when it was already gone. Only at the revision this host wrote: a lease that expired and was
   * taken by another host meanwhile is that host's.
   */
  release(): Promise<boolean> {
    this.#closed = true;
    return this.#serial(async () => {
      const l = this.#lease;
      if (!l) return false;
      const gone = await this.#o.registry.delete(leaseKey(this.#o.prefix, l.subnet), {
        ifRevision: l.modRevision,
      });
      this.#lease = undefined;
      return gone;
    });
  }
}
