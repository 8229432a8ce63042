/**
 * Where allocations live. The interface is deliberately small and synchronous: the daemon
 * implements it over its state inside one database or file transaction (read, allocate, write,
 * commit), so two concurrent requests can never be handed the same address and a crash leaves
 * either the whole allocation or none. The allocator above it holds all the policy.
 */
import type { IPAddr } from '../../lib/ip.js';

/** One allocated address and who holds it (an endpoint id, a container id + interface, …). */
export interface Allocation {
  readonly ip: IPAddr;
  readonly owner: string;
}

export interface IpamStore {
  /** Every allocation of the pool, in any order (an unknown pool has none). */
  allocated(poolId: string): Iterable<Allocation>;
  /** The round-robin cursor: the address most recently handed out dynamically, if any. */
  lastAllocated(poolId: string): IPAddr | undefined;
  /** Record an allocation. The allocator has checked the address is free. */
  add(poolId: string, allocation: Allocation): void;
  /** Move the round-robin cursor (kept when the address is later released, as host-local does). */
  setLastAllocated(poolId: string, ip: IPAddr): void;
  /** Forget the allocation of `ip`; nothing happens when it is not allocated. */
  remove(poolId: string, ip: IPAddr): void;
}

interface PoolState {
  readonly byIP: Map<number | bigint, Allocation>;
  last: IPAddr | undefined;
}

/** An in-memory store (tests, and the base for a daemon store that snapshots to disk). */
export class MemoryIpamStore implements IpamStore {
  readonly #pools = new Map<string, PoolState>();

  #pool(poolId: string): PoolState {
    let p = this.#pools.get(poolId);
    if (p === undefined) {
      p = { byIP: new Map(), last: undefined };
      this.#pools.set(poolId, p);
    }
    return p;
  }

  allocated(poolId: string): Iterable<Allocation> {
    return this.#pools.get(poolId)?.byIP.values() ?? [];
  }

  lastAllocated(poolId: string): IPAddr | undefined {
    return this.#pools.get(poolId)?.last;
  }

  // An IPv4 value is a number and an IPv6 value a bigint, so one Map keyed by value never
  // confuses the families.
  add(poolId: string, allocation: Allocation): void {
    this.#pool(poolId).byIP.set(allocation.ip.value, allocation);
  }

  setLastAllocated(poolId: string, ip: IPAddr): void {
    this.#pool(poolId).last = ip;
  }

  remove(poolId: string, ip: IPAddr): void {
    this.#pools.get(poolId)?.byIP.delete(ip.value);
  }

  /** The owner of `ip` in the pool, if it is allocated (for tests and inspection). */
  ownerOf(poolId: string, ip: IPAddr): string | undefined {
    return this.#pools.get(poolId)?.byIP.get(ip.value)?.owner;
  }

  /** Number of allocations in the pool. */
  count(poolId: string): number {
    return this.#pools.get(poolId)?.byIP.size ?? 0;
  }
}
