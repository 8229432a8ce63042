/**
 * The cluster agent: what `weft daemon --store …` does besides its host's own networks, flannel's
 * daemon loop in one place.
 *
 *   join()   wait for the cluster configuration in the store; have the backend prepare (what
 *            the lease advertises, the bridge MTU); acquire the lease; write subnet.env
 *   run()    start the backend for the own lease; list the peers' leases and bring the backend
 *            to them; then watch from the list's revision, applying changes as they come
 *            (re-listing after a compaction); renew the lease before it expires; resync the
 *            kernel against the peers periodically (repairs drift, removes what has no lease)
 *   leave()  remove the backend's kernel state and delete the lease (peers converge)
 *   stop()   end timers and the watch; kernel state stays for the next start
 *
 * Backend calls are serialised through one queue. Store outages are retried with backoff and
 * never end the daemon; a lease lost meanwhile is re-acquired (the same subnet when still free)
 * and everything is reconfigured.
 */
import * as fs from 'node:fs';
import { invalid, WeftError } from '../lib/errors.js';
import { formatIP, formatIPNet, type IPAddr, type IPNet, networkOf, overlaps } from '../lib/ip.js';
import { type Logger, nullLogger } from '../lib/log.js';
import { writeAtomic } from '../lib/paths.js';
import type { Backend, BackendConfig, LeaseInfo } from '../net/backends/types.js';
import { type ClusterConfig, parseClusterConfig } from './leases/config.js';
import { PeerSet } from './leases/diff.js';
import {
  configKey,
  type Lease,
  parseSubnetEnv,
  renderSubnetEnv,
  sameSubnet,
  subnetsPrefix,
} from './leases/lease.js';
import { LeaseManager } from './leases/manager.js';
import type { Registry, Watch } from './store/types.js';

export interface ClusterAgentOptions {
  readonly registry: Registry;
  readonly prefix: string;
  readonly publicIp: IPAddr;
  /** Builds the backend the configuration names (the composition root's explicit registry). */
  readonly makeBackend: (cfg: BackendConfig, network: IPNet) => Backend;
  readonly subnetEnvPath: string;
  /** Written into subnet.env (FLANNEL_IPMASQ) and used for the default network's NAT. */
  readonly ipMasq: boolean;
  readonly ttlSeconds?: number;
  readonly resyncMs?: number;
  readonly log?: Logger;
  /** The underlay's own prefixes: a cluster network overlapping them is refused. */
  readonly underlayNets?: readonly IPNet[];
  /** Called when a re-acquired lease has another subnet than before (the daemon re-plumbs). */
  readonly onSubnetChange?: (lease: Lease, mtu: number) => Promise<void>;
}

export interface ClusterView {
  readonly network: string;
  readonly backend: BackendConfig;
  readonly store: { readonly kind: string; readonly address: string; readonly prefix: string };
  readonly publicIp: string;
  readonly mtu: number;
  readonly lease: { subnet: string; publicIp: string; expiresAt: string | null } | null;
  readonly peers: { subnet: string; publicIp: string; backendType: string; expiresAt: string | null }[];
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

const iso = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(ms).toISOString());

export class ClusterAgent {
  readonly #o: ClusterAgentOptions;
  readonly #log: Logger;
  readonly #manager: LeaseManager;
  readonly #peers: PeerSet;
  readonly #backend: Backend;
  readonly config: ClusterConfig;
  readonly mtu: number;
  #queue: Promise<unknown> = Promise.resolve();
  #watch: Watch | undefined;
  #timers = new Set<NodeJS.Timeout>();
  #stopped = new AbortController();
  #running = false;
  /** stop() or leave() ran: nothing reaches the backend any more but their own calls. */
  #halted = false;
  /** Bumped whenever the watch is closed: events of an older watch are ignored. */
  #watchGen = 0;

  private constructor(
    o: ClusterAgentOptions,
    config: ClusterConfig,
    backend: Backend,
    manager: LeaseManager,
    mtu: number,
  ) {
    this.#o = o;
    this.#log = o.log ?? nullLogger;
    this.config = config;
    this.#backend = backend;
    this.#manager = manager;
    this.mtu = mtu;
    this.#peers = new PeerSet(o.prefix, () => this.#manager.lease?.subnet);
  }

  /**
   * Wait for the configuration (until `signal` aborts), prepare the backend, acquire the lease
   * and write subnet.env.
   * @throws WeftError INVALID (bad stored configuration), CONFLICT (no free subnet), kernel errors
   *   from the backend; TIMEOUT when aborted while waiting.
   */
  static async join(o: ClusterAgentOptions, signal?: AbortSignal): Promise<ClusterAgent> {
    const log = o.log ?? nullLogger;
    const previous = readSubnetEnv(o.subnetEnvPath);
    let config: ClusterConfig | undefined;
    let waitMs = 200;
    let said = false;
    for (;;) {
      try {
        const e = await o.registry.get(configKey(o.prefix));
        if (e) {
          config = parseClusterConfig(e.value);
          break;
        }
        if (!said)
          log.info('waiting for the cluster configuration (weft cluster init)', { key: configKey(o.prefix) });
      } catch (err) {
        if (err instanceof WeftError && err.code === 'INVALID') throw err;
        if (!said)
          log.warn('store not reachable yet; retrying', { store: o.registry.address, error: String(err) });
      }
      said = true;
      if (signal?.aborted)
        throw new WeftError('TIMEOUT', 'stopped while waiting for the cluster configuration');
      await sleep(waitMs, signal);
      waitMs = Math.min(waitMs * 2, 5000);
    }
    for (const u of o.underlayNets ?? []) {
      if (overlaps(u, config.network)) {
        throw invalid(
          `the cluster network ${formatIPNet(config.network)} overlaps the underlay ${formatIPNet(networkOf(u))}: choose another network (weft cluster init --force)`,
          { network: formatIPNet(config.network), underlay: formatIPNet(networkOf(u)) },
        );
      }
    }
    const backend = o.makeBackend(config.backend, config.network);
    const { backendData, mtu } = await backend.prepare();
    const manager = new LeaseManager({
      registry: o.registry,
      prefix: o.prefix,
      publicIp: o.publicIp,
      backendType: config.backend.type,
      backendData,
      previousSubnet:
        previous.network && sameSubnet(previous.network, config.network) ? previous.subnet : undefined,
      ...(o.ttlSeconds !== undefined && { ttlSeconds: o.ttlSeconds }),
      log,
    });
    const agent = new ClusterAgent(o, config, backend, manager, mtu);
    await agent.#retrying('acquire the lease', () => manager.acquire(config), signal);
    agent.#writeSubnetEnv();
    return agent;
  }

  get lease(): Lease {
    const l = this.#manager.lease;
    if (!l) throw new WeftError('UNAVAILABLE', 'this host holds no lease right now');
    return l;
  }

  get peers(): Lease[] {
    return this.#peers.list();
  }

  /**
   * Store errors (UNAVAILABLE/TIMEOUT) are retried with backoff; anything else is thrown, and so
   * is the last error when stopped (also while sleeping: no attempt is made after a stop).
   */
  async #retrying<T>(what: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    let waitMs = 200;
    const aborted = () => signal?.aborted === true || this.#stopped.signal.aborted;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        const transient = e instanceof WeftError && (e.code === 'UNAVAILABLE' || e.code === 'TIMEOUT');
        if (!transient || aborted()) throw e;
        this.#log.warn(`could not ${what}; retrying`, { error: String(e), retryInMs: waitMs });
        await sleep(waitMs, this.#stopped.signal);
        if (aborted()) throw e;
        waitMs = Math.min(waitMs * 2, 10_000);
      }
    }
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #writeSubnetEnv(): void {
    const text = renderSubnetEnv({
      network: this.config.network,
      subnet: this.lease.subnet,
      mtu: this.mtu,
      ipMasq: this.#o.ipMasq,
    });
    writeAtomic(this.#o.subnetEnvPath, text);
  }

  #timer(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.#timers.delete(t);
      fn();
    }, ms);
    t.unref();
    this.#timers.add(t);
  }

  /** Start the data path and keep it in step with the store until stop() or leave(). */
  async run(): Promise<void> {
    if (this.#halted) throw new WeftError('INVALID', 'the cluster agent was stopped; join again');
    this.#running = true;
    await this.#serial(() => this.#backend.start(this.#info(this.lease)));
    await this.#relist();
    this.#scheduleRenew();
    this.#scheduleResync();
  }

  #info(l: Lease): LeaseInfo {
    return {
      subnet: l.subnet,
      publicIp: l.publicIp,
      backendType: l.backendType,
      backendData: l.backendData,
      modRevision: l.modRevision,
    };
  }

  /** End the current watch; events it still delivers are ignored. */
  #closeWatch(): void {
    this.#watchGen++;
    this.#watch?.close();
    this.#watch = undefined;
  }

  async #relist(): Promise<void> {
    this.#closeWatch();
    let listed: Awaited<ReturnType<Registry['list']>>;
    try {
      listed = await this.#retrying('list the leases', () =>
        this.#o.registry.list(subnetsPrefix(this.#o.prefix)),
      );
    } catch (e) {
      if (!this.#running) return; // stopped while the store was away: nothing to report
      throw e;
    }
    if (!this.#running) return;
    const { entries, revision } = listed;
    const change = this.#peers.reset(entries);
    await this.#serial(() => this.#backend.resync(this.#peers.list().map((l) => this.#info(l))));
    this.#log.info('peers listed', { peers: this.#peers.list().length, revision });
    // Stopped during the resync: no watch (it would outlive the stop and drive the backend).
    if (!this.#running) return;
    if (change.ownLost) void this.#reacquire();
    // Two re-lists can overlap (a compaction during a re-acquisition): the last one's watch wins.
    this.#closeWatch();
    const gen = this.#watchGen;
    const live = () => this.#running && gen === this.#watchGen;
    this.#watch = this.#o.registry.watch(subnetsPrefix(this.#o.prefix), revision, {
      onEvents: (events) => {
        if (!live()) return;
        const c = this.#peers.apply(events);
        for (const k of c.skipped) this.#log.warn('ignoring a lease weft cannot read', { key: k });
        if (c.removed.length + c.added.length > 0) {
          void this.#serial(async () => {
            if (!this.#running) return;
            for (const l of c.removed) {
              this.#log.info('peer gone', { subnet: formatIPNet(l.subnet), publicIp: formatIP(l.publicIp) });
              await this.#backend.removePeer(this.#info(l));
            }
            for (const l of c.added) {
              this.#log.info('peer added', { subnet: formatIPNet(l.subnet), publicIp: formatIP(l.publicIp) });
              await this.#backend.addPeer(this.#info(l));
            }
          }).catch((e) =>
            this.#log.error('applying a peer change failed; the next resync repairs it', {
              error: String(e),
            }),
          );
        }
        if (c.ownLost) void this.#reacquire();
      },
      onCompacted: () => {
        if (!live()) return;
        this.#log.info('watch history compacted; listing again');
        void this.#relist().catch((e) => this.#log.error('re-list failed', { error: String(e) }));
      },
      onError: (e) => this.#log.warn('watch interrupted; resuming', { error: e.message }),
    });
  }

  #scheduleRenew(): void {
    if (!this.#running) return;
    this.#timer(this.#manager.renewDelayMs(), () => void this.#renew());
  }

  async #renew(): Promise<void> {
    try {
      const before = this.lease.subnet;
      await this.#retrying('renew the lease', () => this.#manager.renew(this.config));
      await this.#afterLease(before);
    } catch (e) {
      if (!this.#running) return; // stopped meanwhile: the manager refused, nothing to retry
      this.#log.error('lease renewal failed; trying again soon', { error: String(e) });
      this.#timer(5000, () => void this.#renew());
      return;
    }
    this.#scheduleRenew();
  }

  #reacquiring = false;
  async #reacquire(): Promise<void> {
    if (this.#reacquiring || !this.#running) return;
    this.#reacquiring = true;
    try {
      const before = this.#manager.lease?.subnet;
      this.#log.warn('this host’s lease is gone; acquiring it again');
      await this.#retrying('re-acquire the lease', () => this.#manager.renew(this.config));
      await this.#afterLease(before);
    } catch (e) {
      if (!this.#running) return;
      this.#log.error('re-acquiring the lease failed; trying again soon', { error: String(e) });
      this.#timer(5000, () => void this.#reacquire());
    } finally {
      this.#reacquiring = false;
    }
  }

  /** After a renewal or re-acquisition: a new subnet means new plumbing everywhere. */
  async #afterLease(before: IPNet | undefined): Promise<void> {
    if (!this.#running) return;
    const now = this.lease;
    if (before && sameSubnet(before, now.subnet)) return;
    this.#log.warn('the lease has a new subnet; reconfiguring', { subnet: formatIPNet(now.subnet) });
    this.#writeSubnetEnv();
    await this.#serial(async () => {
      if (this.#running) await this.#backend.start(this.#info(now));
    });
    if (!this.#running) return;
    await this.#o.onSubnetChange?.(now, this.mtu);
    await this.#relist();
  }

  #scheduleResync(): void {
    if (!this.#running) return;
    this.#timer(this.#o.resyncMs ?? 10_000, () => {
      void this.resync()
        .catch((e) => this.#log.error('resync failed', { error: String(e) }))
        .finally(() => this.#scheduleResync());
    });
  }

  /**
   * Resync now (tests, `weft cluster resync`): the kernel brought to the peers known. Nothing
   * after stop() or leave() (checked when its turn comes: a left host's state stays removed).
   */
  resync(): Promise<void> {
    return this.#serial(async () => {
      if (this.#halted) return;
      await this.#backend.resync(this.#peers.list().map((l) => this.#info(l)));
    });
  }

  view(): ClusterView {
    const l = this.#manager.lease;
    return {
      network: formatIPNet(this.config.network),
      backend: this.config.backend,
      store: { kind: this.#o.registry.kind, address: this.#o.registry.address, prefix: this.#o.prefix },
      publicIp: formatIP(this.#o.publicIp),
      mtu: this.mtu,
      lease: l
        ? { subnet: formatIPNet(l.subnet), publicIp: formatIP(l.publicIp), expiresAt: iso(l.expiresAt) }
        : null,
      peers: this.#peers.list().map((p) => ({
        subnet: formatIPNet(p.subnet),
        publicIp: formatIP(p.publicIp),
        backendType: p.backendType,
        expiresAt: iso(p.expiresAt),
      })),
    };
  }

  #halt(): void {
    this.#running = false;
    this.#halted = true;
    this.#manager.close();
    this.#stopped.abort();
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
    this.#closeWatch();
  }

  /** Stop watching and renewing; the backend's userspace parts end, kernel state stays. */
  async stop(): Promise<void> {
    this.#halt();
    await this.#serial(() => this.#backend.stop());
  }

  /** Leave the cluster: remove the backend's state and delete the lease. */
  async leave(): Promise<void> {
    this.#halt();
    await this.#serial(() => this.#backend.teardown());
    await this.#manager.release();
    fs.rmSync(this.#o.subnetEnvPath, { force: true });
    this.#log.info('left the cluster');
  }
}

function readSubnetEnv(p: string): ReturnType<typeof parseSubnetEnv> {
  try {
    return parseSubnetEnv(fs.readFileSync(p, 'utf8'));
  } catch {
    return {};
  }
}
