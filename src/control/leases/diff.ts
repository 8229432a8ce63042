/**
 * Watch, diff, reconcile: the pure part. A PeerSet holds the peers' leases as last seen and
 * turns a fresh snapshot (a list) or a batch of watch events into what a backend must do:
 * `removed` first, then `added`. A lease that changed (new public address, new VTEP MAC)
 * appears in both, so the backend drops the old entries before writing the new ones. The
 * host's own subnet is never a peer; when its lease disappears `ownLost` says so (the manager
 * re-acquires). Malformed leases are counted in `skipped` and otherwise ignored.
 */
import type { IPNet } from '../../lib/ip.js';
import type { WatchEvent } from '../store/types.js';
import { type Lease, parseLease, parseLeaseKey, sameSubnet, subnetKey } from './lease.js';

export interface PeerChange {
  readonly removed: readonly Lease[];
  readonly added: readonly Lease[];
  /** The host's own lease was deleted or expired. */
  readonly ownLost: boolean;
  /** Lease keys whose value could not be read. */
  readonly skipped: readonly string[];
}

const sameLease = (a: Lease, b: Lease): boolean =>
  a.publicIp.value === b.publicIp.value &&
  a.backendType === b.backendType &&
  JSON.stringify(a.backendData) === JSON.stringify(b.backendData);

export class PeerSet {
  readonly #peers = new Map<string, Lease>();

  constructor(
    private readonly prefix: string,
    /** The host's own subnet now (it may change when a lost lease is re-acquired). */
    private readonly own: () => IPNet | undefined,
  ) {}

  #isOwn(subnet: IPNet): boolean {
    const o = this.own();
    return o !== undefined && sameSubnet(o, subnet);
  }

  /** The peers now, sorted by subnet. */
  list(): Lease[] {
    return [...this.#peers.values()].sort(
      (a, b) => (a.subnet.ip.value as number) - (b.subnet.ip.value as number),
    );
  }

  /** Replace the whole set with a listing (after start-up, a re-list, or a compaction). */
  reset(
    entries: readonly { key: string; value: string; modRevision: number; expiresAt?: number | undefined }[],
  ): PeerChange {
    const next = new Map<string, Lease>();
    const skipped: string[] = [];
    let ownSeen = false;
    for (const e of entries) {
      const l = parseLease(this.prefix, e);
      if (!l) {
        if (parseLeaseKey(this.prefix, e.key)) skipped.push(e.key);
        continue;
      }
      if (this.#isOwn(l.subnet)) {
        ownSeen = true;
        continue;
      }
      next.set(subnetKey(l.subnet), l);
    }
    const removed: Lease[] = [];
    const added: Lease[] = [];
    for (const [k, old] of this.#peers) {
      const now = next.get(k);
      if (!now || !sameLease(old, now)) removed.push(old);
    }
    for (const [k, now] of next) {
      const old = this.#peers.get(k);
      if (!old || !sameLease(old, now)) added.push(now);
    }
    this.#peers.clear();
    for (const [k, l] of next) this.#peers.set(k, l);
    return { removed, added, ownLost: this.own() !== undefined && !ownSeen, skipped };
  }

  /**
   * Apply watch events in order. The change is the net one per key, from the state before the
   * batch to the state after it: a peer put and deleted in one batch (or changed, then deleted)
   * is no addition, since the backend applies every removal before every addition.
   */
  apply(events: readonly WatchEvent[]): PeerChange {
    const before = new Map<string, Lease | undefined>();
    const skipped: string[] = [];
    let ownLost = false;
    for (const ev of events) {
      const subnet = parseLeaseKey(this.prefix, ev.key);
      if (!subnet) continue;
      const k = subnetKey(subnet);
      if (this.#isOwn(subnet)) {
        if (ev.type === 'delete') ownLost = true;
        continue;
      }
      if (ev.type === 'delete') {
        if (!before.has(k)) before.set(k, this.#peers.get(k));
        this.#peers.delete(k);
        continue;
      }
      const l = parseLease(this.prefix, { ...ev, modRevision: ev.revision });
      if (!l) {
        skipped.push(ev.key);
        continue;
      }
      if (!before.has(k)) before.set(k, this.#peers.get(k));
      this.#peers.set(k, l);
    }
    const removed: Lease[] = [];
    const added: Lease[] = [];
    for (const [k, old] of before) {
      const now = this.#peers.get(k);
      if (old && now && sameLease(old, now)) continue; // a renewal: nothing for the kernel
      if (old) removed.push(old);
      if (now) added.push(now);
    }
    return { removed, added, ownLost, skipped };
  }
}
