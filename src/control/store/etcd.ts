/**
 * The etcd registry: the shared store for hosts on many machines, over etcd's v3 API through the
 * `etcd3` client (pure JS, gRPC). The key layout is the lease manager's, compatible with
 * flannel's; this file only maps the Registry contract onto etcd:
 *
 * - create = one transaction "createRevision == 0 then put"; update = "modRevision == R then
 *   put" (flannel's createSubnet / updateSubnet). Revisions are etcd's own.
 * - TTL through leases: each create/update/put with a TTL grants a fresh lease and puts the key
 *   with it; the lease the key had before is revoked once replaced (it carries nothing else).
 *   No keep-alive ever runs: renewal is an update by the lease manager, and a keep-alive stream
 *   would keep the process alive after close() (NODE-KERNEL-NOTES). expiresAt on reads comes
 *   from LeaseTimeToLive (whole seconds, as flannel reads it).
 * - Watch: one gRPC watch stream per Watch, created from `after + 1`. The last delivered
 *   revision is ours, not the client library's (its Watcher resumes from the response header's
 *   revision, which can skip history still being replayed), so a reconnect after any error
 *   resumes exactly where delivery stopped, with capped exponential backoff. A watch cancelled
 *   with a compact_revision reports onCompacted.
 * - Errors: every call has one deadline (default 5 s) covering at most 3 attempts (retried on
 *   the errors the client calls recoverable: unreachable, reset, overloaded; each retry may go to
 *   another endpoint). All failures become WeftError UNAVAILABLE (INVALID for requests etcd
 *   rejects as malformed), the etcd/gRPC error kept as `cause`. A write retried after a lost
 *   reply may report "changed" (create → undefined) although the first attempt applied: the
 *   lease manager re-reads and finds its own value, as flannel's does.
 */
import * as fs from 'node:fs';
import {
  ClientClosedError,
  CompareResult,
  CompareTarget,
  Etcd3,
  GRPCInvalidArgumentError,
  GRPCOutOfRangeError,
  type IDuplexStream,
  type IKeyValue,
  type IOptions,
  type IWatchRequest,
  type IWatchResponse,
  isRecoverableError,
} from 'etcd3';
import { invalid, WeftError } from '../../lib/errors.js';
import { checkKey, checkRevision, checkWrite } from './common.js';
import type { KvEntry, PutOptions, Registry, Watch, WatchEvent, WatchHandlers } from './types.js';

export interface EtcdOptions {
  /** `host:port`, `http://host:port`, `https://host:port` or `unix:///path` (tests). */
  readonly endpoints: readonly string[];
  /** PEM files for TLS: the CA to trust, and a client certificate with its key. */
  readonly caFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
  /** Bound on each call, retries included, in ms (default 5,000). */
  readonly callTimeoutMs?: number | undefined;
}

const MAX_ATTEMPTS = 3;
const WATCH_BACKOFF_MIN_MS = 100;
const WATCH_BACKOFF_MAX_MS = 5000;
/** Parallel LeaseTimeToLive calls when a list finds many leases. */
const TTL_LOOKUP_CONCURRENCY = 16;

/** gRPC call options (the deadline), typed through the client rather than its gRPC dependency. */
type CallOptions = NonNullable<Parameters<Etcd3['kv']['range']>[1]>;
// The client's fault-handling hooks, typed from its own options (cockatiel is its dependency, not ours).
type Policy = ReturnType<NonNullable<NonNullable<IOptions['faultHandling']>['host']>>;
/**
 * Pass-through policy: retries and deadlines are ours (#call), not the client's circuit breaker.
 * A function that throws synchronously must still become a rejected promise: the client chains
 * `.catch` on what execute returns, and a throw would escape as an uncaught exception.
 */
const passThrough = {
  execute: (fn: (ctx: { signal: AbortSignal }) => unknown) =>
    new Promise((resolve) => resolve(fn({ signal: neverAborted }))),
} as unknown as Policy;
const neverAborted = new AbortController().signal;

export class EtcdRegistry implements Registry {
  readonly kind = 'etcd' as const;
  readonly address: string;
  readonly #client: Etcd3;
  readonly #timeoutMs: number;
  readonly #watches = new Set<EtcdWatch>();
  #closed = false;

  private constructor(client: Etcd3, address: string, timeoutMs: number) {
    this.#client = client;
    this.address = address;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * A registry over the etcd cluster at `endpoints`. Does not connect yet (gRPC connects on
   * first use): an unreachable store shows as UNAVAILABLE from the first call. Throws INVALID
   * for no endpoints, a certificate without its key (or the reverse), or an unreadable TLS file.
   */
  static open(opts: EtcdOptions): EtcdRegistry {
    if (opts.endpoints.length === 0) throw invalid('etcd store needs at least one endpoint');
    if ((opts.certFile === undefined) !== (opts.keyFile === undefined)) {
      throw invalid('etcd TLS: a client certificate and its key go together (certFile and keyFile)');
    }
    const read = (file: string | undefined, what: string): Buffer | undefined => {
      if (file === undefined) return undefined;
      try {
        return fs.readFileSync(file);
      } catch (e) {
        throw new WeftError('INVALID', `etcd TLS: cannot read the ${what} ${file}`, { cause: e });
      }
    };
    const ca = read(opts.caFile, 'CA file');
    const cert = read(opts.certFile, 'certificate file');
    const key = read(opts.keyFile, 'key file');
    const timeoutMs = opts.callTimeoutMs ?? 5000;
    const client = new Etcd3({
      hosts: [...opts.endpoints],
      dialTimeout: timeoutMs,
      ...(ca || cert
        ? {
            // grpc-js takes a null root certificate as "the system's roots".
            credentials: {
              rootCertificate: ca ?? (null as unknown as Buffer),
              ...(key ? { privateKey: key } : {}),
              ...(cert ? { certChain: cert } : {}),
            },
          }
        : {}),
      faultHandling: { host: () => passThrough, global: passThrough },
    });
    return new EtcdRegistry(client, opts.endpoints.join(','), timeoutMs);
  }

  /** Throws INVALID for a bad key, UNAVAILABLE when etcd does not answer. */
  async get(key: string): Promise<KvEntry | undefined> {
    checkKey(key);
    const res = await this.#call('get', (o) => this.#client.kv.range({ key: Buffer.from(key) }, o));
    const kv = res.kvs[0];
    if (!kv) return undefined;
    const ttl = await this.#expiries([kv]);
    return toEntry(kv, ttl.get(kv.lease));
  }

  /** Throws UNAVAILABLE when etcd does not answer. */
  async list(prefix: string): Promise<{ entries: KvEntry[]; revision: number }> {
    // etcd sorts a range by key bytes, ascending, by default.
    const res = await this.#call('list', (o) => this.#client.kv.range(prefixRange(prefix), o));
    const ttl = await this.#expiries(res.kvs);
    return {
      entries: res.kvs.map((kv) => toEntry(kv, ttl.get(kv.lease))),
      revision: rev(res.header.revision),
    };
  }

  /** Throws INVALID for a bad key or TTL, UNAVAILABLE when etcd does not answer. */
  async create(key: string, value: string, opts: PutOptions = {}): Promise<KvEntry | undefined> {
    checkWrite(key, value, opts.ttlSeconds);
    const k = Buffer.from(key);
    return this.#withLease(opts.ttlSeconds, async (lease) => {
      const res = await this.#call('create', (o) =>
        this.#client.kv.txn(
          {
            compare: [
              { key: k, target: CompareTarget.Create, result: CompareResult.Equal, create_revision: 0 },
            ],
            success: [{ request_put: { key: k, value: Buffer.from(value), lease: lease.id } }],
            failure: [{ request_range: { key: k } }],
          },
          o,
        ),
      );
      if (res.succeeded) return { key, value, modRevision: rev(res.header.revision), ...lease.expiry };
      return appliedBefore(res.responses[0]?.response_range?.kvs[0], lease, value);
    });
  }

  /** Throws INVALID for a bad key, TTL or revision, UNAVAILABLE when etcd does not answer. */
  async update(
    key: string,
    value: string,
    opts: PutOptions & { ifRevision: number },
  ): Promise<KvEntry | undefined> {
    checkWrite(key, value, opts.ttlSeconds, opts.ifRevision);
    // An absent key has mod_revision 0 in a compare: revision 0 must not "update" it into being.
    if (opts.ifRevision === 0) return undefined;
    const k = Buffer.from(key);
    return this.#withLease(opts.ttlSeconds, async (lease) => {
      const res = await this.#call('update', (o) =>
        this.#client.kv.txn(
          {
            compare: [
              {
                key: k,
                target: CompareTarget.Mod,
                result: CompareResult.Equal,
                mod_revision: opts.ifRevision,
              },
            ],
            success: [
              { request_range: { key: k } },
              { request_put: { key: k, value: Buffer.from(value), lease: lease.id } },
            ],
            failure: [{ request_range: { key: k } }],
          },
          o,
        ),
      );
      if (!res.succeeded) return appliedBefore(res.responses[0]?.response_range?.kvs[0], lease, value);
      await this.#revoke(res.responses[0]?.response_range?.kvs[0]?.lease);
      return { key, value, modRevision: rev(res.header.revision), ...lease.expiry };
    });
  }

  /** Throws INVALID for a bad key or TTL, UNAVAILABLE when etcd does not answer. */
  async put(key: string, value: string, opts: PutOptions = {}): Promise<KvEntry> {
    checkWrite(key, value, opts.ttlSeconds);
    const entry = await this.#withLease(opts.ttlSeconds, async (lease) => {
      const res = await this.#call('put', (o) =>
        this.#client.kv.put(
          { key: Buffer.from(key), value: Buffer.from(value), lease: lease.id, prev_kv: true },
          o,
        ),
      );
      await this.#revoke(res.prev_kv?.lease);
      return { key, value, modRevision: rev(res.header.revision), ...lease.expiry };
    });
    return entry!;
  }

  /** Throws INVALID for a bad key or revision, UNAVAILABLE when etcd does not answer. */
  async delete(key: string, opts: { ifRevision?: number } = {}): Promise<boolean> {
    checkKey(key);
    if (opts.ifRevision !== undefined) checkRevision(opts.ifRevision, 'ifRevision');
    if (opts.ifRevision === 0) return false;
    const k = Buffer.from(key);
    let prev: IKeyValue | undefined;
    if (opts.ifRevision === undefined) {
      const res = await this.#call('delete', (o) =>
        this.#client.kv.deleteRange({ key: k, prev_kv: true }, o),
      );
      prev = res.prev_kvs[0];
    } else {
      const ifRevision = opts.ifRevision;
      const res = await this.#call('delete', (o) =>
        this.#client.kv.txn(
          {
            compare: [
              { key: k, target: CompareTarget.Mod, result: CompareResult.Equal, mod_revision: ifRevision },
            ],
            success: [{ request_delete_range: { key: k, prev_kv: true } }],
          },
          o,
        ),
      );
      prev = res.succeeded ? res.responses[0]?.response_delete_range?.prev_kvs[0] : undefined;
    }
    if (!prev) return false;
    await this.#revoke(prev.lease);
    return true;
  }

  /**
   * Watch `prefix` from `afterRevision`. Throws INVALID for a bad revision; connection problems
   * go to onError while the watch reconnects with backoff.
   */
  watch(prefix: string, afterRevision: number, handlers: WatchHandlers): Watch {
    checkRevision(afterRevision, 'afterRevision');
    if (this.#closed) throw new WeftError('UNAVAILABLE', `etcd store ${this.address}: registry closed`);
    const w = new EtcdWatch(this, prefix, afterRevision, handlers, () => this.#watches.delete(w));
    this.#watches.add(w);
    return w;
  }

  /**
   * Discard etcd's history before `revision` (etcd's compact): watches from earlier revisions
   * get onCompacted. Throws INVALID for a revision etcd refuses (future or already compacted),
   * UNAVAILABLE when etcd does not answer.
   */
  async compact(revision: number): Promise<void> {
    checkRevision(revision);
    await this.#call('compact', (o) => this.#client.kv.compact({ revision, physical: true }, o));
  }

  /** Ends every watch and closes the connections; no lease keep-alive is ever left running. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of [...this.#watches]) w.close();
    this.#client.close();
  }

  // ---- internals (EtcdWatch uses #-less twins below) -----------------------------------------

  /** A watch stream of the shared client (a gRPC call on its channel). */
  openWatchStream(): Promise<IDuplexStream<IWatchRequest, IWatchResponse>> {
    if (this.#closed) return Promise.reject(new ClientClosedError('Watch'));
    return this.#client.watchClient.watch();
  }

  expiries(kvs: readonly IKeyValue[]): Promise<Map<string, number>> {
    return this.#expiries(kvs);
  }

  mapError(op: string, e: unknown): WeftError {
    return mapError(op, e, this.address);
  }

  /**
   * Run one RPC under the call deadline, retrying recoverable failures (at most MAX_ATTEMPTS,
   * never past the deadline).
   */
  async #call<T>(op: string, fn: (o: CallOptions) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.#timeoutMs;
    for (let attempt = 1; ; attempt++) {
      if (this.#closed) throw new WeftError('UNAVAILABLE', `etcd store ${this.address}: registry closed`);
      try {
        return await fn({ deadline });
      } catch (e) {
        const delay = 100 * 3 ** (attempt - 1);
        const retry =
          e instanceof Error &&
          isRecoverableError(e) &&
          attempt < MAX_ATTEMPTS &&
          Date.now() + delay < deadline &&
          !this.#closed;
        if (!retry) throw mapError(op, e, this.address);
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /**
   * Grant a lease for `ttl` (none without a TTL) and run `fn` with it; revoke the lease when `fn`
   * found the key changed. Not when `fn` failed: its write may have applied with this lease
   * (reply lost), and revoking would delete the key; the lease then just runs out.
   */
  async #withLease<T>(
    ttl: number | undefined,
    fn: (lease: { id: string; expiry: { expiresAt?: number } }) => Promise<T | undefined>,
  ): Promise<T | undefined> {
    if (ttl === undefined) return fn({ id: '0', expiry: {} });
    const now = Date.now();
    const g = await this.#call('lease grant', (o) => this.#client.leaseClient.leaseGrant({ TTL: ttl }, o));
    // etcd may raise a short TTL to its minimum (about 1.5 × the election timeout).
    const lease = { id: g.ID, expiry: { expiresAt: now + Number(g.TTL) * 1000 } };
    const out = await fn(lease);
    if (out === undefined) await this.#revoke(g.ID);
    return out;
  }

  /** Best effort: an unrevoked lease only lingers until its TTL runs out. */
  async #revoke(id: string | undefined): Promise<void> {
    if (id === undefined || id === '0' || this.#closed) return;
    try {
      await this.#call('lease revoke', (o) => this.#client.leaseClient.leaseRevoke({ ID: id }, o));
    } catch {
      // expires by itself
    }
  }

  /** Expiry (ms since the epoch) of each lease the keys hold; an expired lease reads as now. */
  async #expiries(kvs: readonly IKeyValue[]): Promise<Map<string, number>> {
    const ids = [...new Set(kvs.map((kv) => kv.lease).filter((id) => id !== '0'))];
    const out = new Map<string, number>();
    for (let i = 0; i < ids.length; i += TTL_LOOKUP_CONCURRENCY) {
      await Promise.all(
        ids.slice(i, i + TTL_LOOKUP_CONCURRENCY).map(async (id) => {
          const now = Date.now();
          const r = await this.#call('lease ttl', (o) =>
            this.#client.leaseClient.leaseTimeToLive({ ID: id }, o),
          );
          out.set(id, now + Math.max(0, Number(r.TTL)) * 1000);
        }),
      );
    }
    return out;
  }
}

class EtcdWatch implements Watch {
  readonly #reg: EtcdRegistry;
  readonly #prefix: string;
  readonly #handlers: WatchHandlers;
  readonly #onClose: () => void;
  /** Last revision delivered to the handlers: a new stream starts right after it. */
  #last: number;
  /** Bumped on every (re)connect and error: responses of an older stream are dropped. */
  #gen = 0;
  #stream: IDuplexStream<IWatchRequest, IWatchResponse> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  #queue: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(
    reg: EtcdRegistry,
    prefix: string,
    after: number,
    handlers: WatchHandlers,
    onClose: () => void,
  ) {
    this.#reg = reg;
    this.#prefix = prefix;
    this.#last = after;
    this.#handlers = handlers;
    this.#onClose = onClose;
    void this.#connect();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#gen++;
    if (this.#timer) clearTimeout(this.#timer);
    this.#drop();
    this.#onClose();
  }

  async #connect(): Promise<void> {
    const gen = ++this.#gen;
    let stream: IDuplexStream<IWatchRequest, IWatchResponse>;
    try {
      stream = await this.#reg.openWatchStream();
    } catch (e) {
      this.#fail(gen, e);
      return;
    }
    if (gen !== this.#gen) {
      endStream(stream);
      return;
    }
    this.#stream = stream;
    // Responses are handled one after another (a put may need a lease look-up first), so
    // delivery keeps etcd's order even when a look-up is slow.
    stream.on('data', (res) => {
      this.#queue = this.#queue
        .then(() => this.#onResponse(gen, res))
        .catch((e: unknown) => {
          // A handler threw: surface the caller's bug as embedded's timer would, uncaught,
          // without breaking the chain (a rejected link would silently stop delivery).
          setImmediate(() => {
            throw e;
          });
        });
    });
    stream.on('error', (e) => this.#fail(gen, e));
    stream.on('end', () => this.#fail(gen, new Error('watch stream ended')));
    stream.write({
      create_request: { ...prefixRange(this.#prefix), start_revision: this.#last + 1 },
    });
  }

  async #onResponse(gen: number, res: IWatchResponse): Promise<void> {
    if (gen !== this.#gen) return;
    if (res.canceled) {
      if (Number(res.compact_revision) > 0) {
        this.close();
        this.#handlers.onCompacted();
      } else {
        this.#fail(gen, new Error(`watch cancelled by etcd: ${res.cancel_reason || 'no reason given'}`));
      }
      return;
    }
    if (res.created) {
      this.#failures = 0;
      return;
    }
    // A resumed stream may repeat what an older one delivered: keep only what is new.
    const evs = res.events.filter((ev) => rev(ev.kv.mod_revision) > this.#last);
    if (evs.length === 0) return;
    let ttl: Map<string, number>;
    try {
      ttl = await this.#reg.expiries(evs.filter((ev) => ev.type === 'Put').map((ev) => ev.kv));
    } catch (e) {
      this.#fail(gen, e); // not delivered: the next stream starts again from #last + 1
      return;
    }
    if (this.#closed) return;
    const out = evs
      .filter((ev) => rev(ev.kv.mod_revision) > this.#last)
      .map((ev): WatchEvent => {
        const key = ev.kv.key.toString();
        const revision = rev(ev.kv.mod_revision);
        if (ev.type !== 'Put') return { type: 'delete', key, revision };
        const expiresAt = ttl.get(ev.kv.lease);
        return {
          type: 'put',
          key,
          value: ev.kv.value.toString(),
          revision,
          ...(expiresAt ? { expiresAt } : {}),
        };
      });
    if (out.length === 0) return;
    this.#last = out.at(-1)!.revision;
    this.#handlers.onEvents(out);
  }

  /** Tear the stream down and reconnect after a capped, jittered exponential backoff. */
  #fail(gen: number, e: unknown): void {
    if (gen !== this.#gen || this.#closed) return;
    this.#gen++;
    this.#drop();
    const base = Math.min(WATCH_BACKOFF_MAX_MS, WATCH_BACKOFF_MIN_MS * 2 ** this.#failures++);
    this.#timer = setTimeout(
      () => {
        this.#timer = undefined;
        if (!this.#closed) void this.#connect();
      },
      base / 2 + Math.random() * (base / 2),
    ).unref();
    this.#handlers.onError?.(this.#reg.mapError('watch', e));
  }

  #drop(): void {
    if (this.#stream) endStream(this.#stream);
    this.#stream = undefined;
  }
}

/**
 * Half-close, then cancel. Ending first matters: the client resets every connection of a host
 * when a still-writable watch stream errors, which would also cut the other calls in flight.
 */
function endStream(s: IDuplexStream<IWatchRequest, IWatchResponse>): void {
  try {
    s.end();
    s.cancel();
  } catch {
    // already gone
  }
}

const rev = (s: string): number => Number(s);

/**
 * A conditional write that found the key "changed" may have been our own earlier attempt whose
 * reply was lost (#call retried it): the key then holds this call's fresh lease and value.
 */
function appliedBefore(
  kv: IKeyValue | undefined,
  lease: { id: string; expiry: { expiresAt?: number } },
  value: string,
): KvEntry | undefined {
  if (!kv || lease.id === '0' || kv.lease !== lease.id || kv.value.toString() !== value) return undefined;
  return toEntry(kv, lease.expiry.expiresAt);
}

const toEntry = (kv: IKeyValue, expiresAt: number | undefined): KvEntry => ({
  key: kv.key.toString(),
  value: kv.value.toString(),
  modRevision: rev(kv.mod_revision),
  ...(expiresAt === undefined ? {} : { expiresAt }),
});

/** The etcd key range holding every key that starts with `prefix` (all keys for ''). */
function prefixRange(prefix: string): { key: Buffer; range_end: Buffer } {
  const start = Buffer.from(prefix);
  // The end is the prefix with its last byte below 0xff incremented (etcd's GetPrefixRangeEnd).
  for (let i = start.length - 1; i >= 0; i--) {
    if (start[i]! < 0xff) {
      const end = Buffer.from(start.subarray(0, i + 1));
      end[i] = start[i]! + 1;
      return { key: start, range_end: end };
    }
  }
  // Empty or all-0xff prefix: from the prefix to the end of the keyspace ("\0" means no end).
  return { key: start.length === 0 ? Buffer.from([0]) : start, range_end: Buffer.from([0]) };
}

function mapError(op: string, e: unknown, address: string): WeftError {
  if (e instanceof WeftError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  const details = { store: address, op };
  if (e instanceof GRPCInvalidArgumentError || e instanceof GRPCOutOfRangeError) {
    return new WeftError('INVALID', `etcd ${op} refused: ${msg}`, { cause: e, details });
  }
  const why = e instanceof ClientClosedError ? 'registry closed' : msg;
  return new WeftError('UNAVAILABLE', `etcd store ${address}: ${op} failed: ${why}`, { cause: e, details });
}
