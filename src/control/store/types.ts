/**
 * The registry: the small key-value contract that subnet leases need from a shared store, as
 * ARCHITECTURE.md puts it (create-if-absent with TTL, update, delete, list, watch from a
 * revision). The lease manager (control/leases) holds all policy; a registry only stores.
 *
 * Two implementations pass one contract suite (contract.ts): `embedded` (SQLite, for hosts on one
 * machine, several daemon processes at once) and `etcd` (the v3 API). Revisions are the store's
 * own: one counter for the whole store, increased by every change, as etcd's are; a watch from
 * revision R delivers every change after R, in order, exactly once.
 */
import type { WeftError } from '../../lib/errors.js';

export interface KvEntry {
  readonly key: string;
  readonly value: string;
  /** Store revision of the key's last write. */
  readonly modRevision: number;
  /** When the key expires, in ms since the epoch; absent: never. */
  readonly expiresAt?: number | undefined;
}

export type WatchEvent =
  | {
      readonly type: 'put';
      readonly key: string;
      readonly value: string;
      readonly revision: number;
      readonly expiresAt?: number | undefined;
    }
  /** Deleted, or expired (the TTL ran out): both are deletes to a watcher. */
  | { readonly type: 'delete'; readonly key: string; readonly revision: number };

export interface WatchHandlers {
  /** Changes in revision order; a batch never splits one revision. */
  onEvents(events: readonly WatchEvent[]): void;
  /**
   * The requested revision is no longer available (compacted): the watch has ended; the caller
   * re-lists and watches again from the list's revision.
   */
  onCompacted(): void;
  /** A transient problem (store unreachable); the watch keeps retrying with backoff. */
  onError?(err: WeftError): void;
}

export interface Watch {
  close(): void;
}

export interface PutOptions {
  /** Time to live in seconds; absent: the key never expires. */
  readonly ttlSeconds?: number | undefined;
}

/**
 * Errors: every method rejects with WeftError UNAVAILABLE when the store does not answer (after
 * its own bounded retries), INVALID for a bad key or TTL, never with a driver-specific error.
 */
export interface Registry {
  readonly kind: 'embedded' | 'etcd';
  /** A printable address of the store (a path or the endpoints), for logs and status. */
  readonly address: string;
  get(key: string): Promise<KvEntry | undefined>;
  /** Every live key that starts with `prefix`, sorted by key, and the revision they were read at. */
  list(prefix: string): Promise<{ entries: KvEntry[]; revision: number }>;
  /** Create the key if it is absent (atomically); undefined when it exists. */
  create(key: string, value: string, opts?: PutOptions): Promise<KvEntry | undefined>;
  /**
   * Replace the value and restart the TTL, only if the key still has modRevision `ifRevision`;
   * undefined when it changed or is gone.
   */
  update(key: string, value: string, opts: PutOptions & { ifRevision: number }): Promise<KvEntry | undefined>;
  /** Write unconditionally. */
  put(key: string, value: string, opts?: PutOptions): Promise<KvEntry>;
  /** Delete (only if still at `ifRevision` when given); false when absent or changed. */
  delete(key: string, opts?: { ifRevision?: number }): Promise<boolean>;
  /** Watch keys under `prefix` for changes after revision `afterRevision`. */
  watch(prefix: string, afterRevision: number, handlers: WatchHandlers): Watch;
  /** Release connections and timers; pending watches end. */
  close(): Promise<void>;
}
