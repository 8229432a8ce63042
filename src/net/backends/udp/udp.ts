/**
 * The udp backend: flannel's first backend, a userspace tunnel. Every host has a TUN device
 * (`weft-tun0`) whose address is its own subnet's network address with the cluster network's
 * prefix length (10.244.1.0/16): the kernel's prefix route for that address sends the whole
 * cluster network into the TUN, and the host's bridge route (a /24) stays more specific for
 * local containers. The data path (datapath.ts, worker.ts) reads each packet from the TUN,
 * looks its destination up in the table of peer leases (subnet → public IP, longest prefix)
 * and sends the raw IP packet as the payload of a UDP datagram to the peer's public IP, port
 * 8285 (flannel's); received datagrams from known peers whose inner destination is in this
 * host's subnet are written back into the TUN. Everything else is counted and dropped
 * (`stats()`). Peers need no kernel state: the one cluster route covers them all.
 *
 * Costs: every packet crosses into userspace twice per host (one read or recv, one sendmmsg or
 * write), so throughput is bounded by per-packet syscalls (see BENCHMARKS.md, "udp backend"),
 * far below vxlan's in-kernel path; encapsulation costs 28 bytes of MTU (IP + UDP header), and
 * the datagrams carry no authentication. Use it where VXLAN is not available. The table is a
 * SharedArrayBuffer the workers re-read only when its generation moves, so 1,000 peers cost a
 * few tens of kilobytes and no per-packet work beyond one Map lookup (cached per flow).
 *
 * Life: prepare() gives the MTU (uplink − 28) and no backend data; start(own) creates the TUN,
 * addresses it and starts the workers; addPeer/removePeer/resync only change the table
 * (resync also re-ensures the device, and opens the data path again when a worker died or the
 * last attempt to open it failed, until stop()); stop() ends
 * the workers and closes the fds (the device goes with its last fd, as flannel's does);
 * teardown() also deletes the device if it is still there.
 */
import type { NetHandle } from '../../../kernel/handle.js';
import { invalid } from '../../../lib/errors.js';
import {
  containsNet,
  formatIP,
  formatIPNet,
  type IPNet,
  type IPv4Addr,
  maskIP,
  networkOf,
  overlaps,
} from '../../../lib/ip.js';
import { transaction } from '../../../lib/rollback.js';
import type { Backend, BackendConfig, BackendContext, BackendFactory, LeaseInfo } from '../types.js';
import { DataPath } from './datapath.js';
import { MAX_PEERS, type PeerEntry, STAT_FIELDS, type Stats } from './table.js';

export const UDP_DEFAULT_PORT = 8285;
export const UDP_DEVICE = 'weft-tun0';
/** Bytes of encapsulation: the outer IPv4 (20) and UDP (8) headers. */
export const UDP_OVERHEAD = 28;

export interface UdpOptions {
  /** TUN device name; default weft-tun0. */
  readonly device?: string;
  /**
   * Data-path threads: 1 serves both directions (flannel's and udptun.c's design); n ≥ 2 is one
   * receiver and n-1 senders, each on its own TUN queue. Default 2; at most 16.
   */
  readonly workers?: number;
  /** Packets per sendmmsg/recvmmsg (1-256); default 32. */
  readonly batch?: number;
  /** Poll timeout of the workers: the bound on how long stop() waits for them; default 100 ms. */
  readonly pollMs?: number;
}

/** The data path's counters (cumulative over restarts) and its state. */
export interface UdpStats extends Stats {
  readonly running: boolean;
  readonly workers: number;
  readonly peers: number;
  /** Why the data path is down, when a worker died (restarted by the next resync). */
  readonly broken?: string;
}

export interface UdpBackend extends Backend {
  readonly type: 'udp';
  readonly device: string;
  stats(): UdpStats;
}

interface Peer extends PeerEntry {
  readonly lease: LeaseInfo;
}

const key = (n: IPNet): string => formatIPNet(networkOf(n));
const zeroStats = (): Stats => Object.fromEntries(STAT_FIELDS.map((n) => [n, 0])) as Stats;

/**
 * Build a udp backend. Throws INVALID (nothing changed) for a bad port or options, or a
 * cluster network that is not IPv4.
 */
export function createUdpBackend(cfg: BackendConfig, ctx: BackendContext, opts: UdpOptions = {}): UdpBackend {
  const port = cfg.port ?? UDP_DEFAULT_PORT;
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalid(`udp backend: port ${port} is out of range (1-65535)`, { port });
  }
  const workers = opts.workers ?? 2;
  if (!Number.isInteger(workers) || workers < 1 || workers > 16) {
    throw invalid(`udp backend: workers must be 1-16, not ${workers}`);
  }
  const batch = opts.batch ?? 32;
  if (!Number.isInteger(batch) || batch < 1 || batch > 256) {
    throw invalid(`udp backend: batch must be 1-256, not ${batch}`);
  }
  const pollMs = opts.pollMs ?? 100;
  if (!Number.isInteger(pollMs) || pollMs < 1 || pollMs > 5000) {
    throw invalid(`udp backend: pollMs must be 1-5000, not ${pollMs}`);
  }
  if (ctx.network.ip.family !== 4) {
    throw invalid(`udp backend: the cluster network must be IPv4, not ${formatIPNet(ctx.network)}`);
  }
  if (ctx.publicIp.family !== 4) {
    throw invalid(`udp backend: the public IP must be IPv4, not ${formatIP(ctx.publicIp)}`);
  }
  return new Udp(ctx, {
    port,
    workers,
    batch,
    pollMs,
    device: opts.device ?? UDP_DEVICE,
    publicIp: ctx.publicIp,
  });
}

/** The registry's factory: createUdpBackend with default options. */
export const udpBackend: BackendFactory = (cfg, ctx) => createUdpBackend(cfg, ctx);

interface Settings {
  readonly port: number;
  readonly workers: number;
  readonly batch: number;
  readonly pollMs: number;
  readonly device: string;
  readonly publicIp: IPv4Addr;
}

class Udp implements UdpBackend {
  readonly type = 'udp' as const;
  readonly device: string;
  readonly #ctx: BackendContext;
  readonly #s: Settings;
  readonly #h: NetHandle;
  readonly #peers = new Map<string, Peer>();
  #own: IPNet | undefined;
  #dp: DataPath | undefined;
  /**
   * start() ran and stop()/teardown() did not: resync opens a data path that is missing (a
   * restart or a start that failed) as well as one that broke.
   */
  #wanted = false;
  /** Counters of data paths that were stopped (so stats() stays cumulative). */
  #past: Stats = zeroStats();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(ctx: BackendContext, s: Settings) {
    this.#ctx = ctx;
    this.#s = s;
    this.#h = ctx.host;
    this.device = s.device;
  }

  get #mtu(): number {
    return this.#ctx.iface.mtu - UDP_OVERHEAD;
  }

  /** Operations run one at a time, in call order. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /** Throws INVALID when the uplink's MTU leaves no room for the encapsulation. */
  async prepare(): Promise<{ backendData: unknown; mtu: number }> {
    if (this.#mtu < 576) {
      throw invalid(
        `udp backend: ${this.#ctx.iface.name} MTU ${this.#ctx.iface.mtu} leaves ${this.#mtu} for the TUN (at least 576 needed)`,
      );
    }
    return { backendData: null, mtu: this.#mtu };
  }

  /**
   * Create and address the TUN device and start the data path. Again with the same lease it
   * only re-ensures the device; with another subnet it re-addresses it. Throws INVALID for a
   * lease outside the cluster network, BUSY when another process holds the device, EXISTS when
   * the UDP port is taken, NOT_FOUND when the public IP is on no interface; on failure nothing
   * is left open.
   */
  start(own: LeaseInfo): Promise<void> {
    return this.#serial(async () => {
      const subnet = this.#checkOwn(own);
      await this.prepare();
      this.#own = subnet;
      this.#wanted = true;
      if (this.#dp) {
        this.#ensureDevice();
        this.#publish();
        return;
      }
      await this.#openDataPath();
      this.#ctx.log.info('udp backend started', {
        device: this.device,
        address: this.#tunAddress(),
        mtu: this.#mtu,
        port: this.#s.port,
        workers: this.#s.workers,
      });
    });
  }

  addPeer(peer: LeaseInfo): Promise<void> {
    return this.#serial(async () => {
      const p = this.#checkPeer(peer);
      if (!p) return;
      this.#peers.set(key(peer.subnet), p);
      if (this.#peers.size > MAX_PEERS) {
        this.#peers.delete(key(peer.subnet));
        this.#ctx.log.error('udp backend: peer table full; peer ignored', {
          subnet: formatIPNet(peer.subnet),
          max: MAX_PEERS,
        });
        return;
      }
      this.#publish();
    });
  }

  removePeer(peer: LeaseInfo): Promise<void> {
    return this.#serial(async () => {
      if (this.#peers.delete(key(peer.subnet))) this.#publish();
    });
  }

  /**
   * Make the table exactly `peers` (bad leases are logged and skipped), re-ensure the device's
   * address, MTU, route and state, and (after start(), before stop()) open the data path again
   * when a worker died or the last attempt failed. Kernel errors propagate.
   */
  resync(peers: readonly LeaseInfo[]): Promise<void> {
    return this.#serial(async () => {
      this.#peers.clear();
      for (const peer of peers) {
        const p = this.#checkPeer(peer);
        if (p && this.#peers.size < MAX_PEERS) this.#peers.set(key(peer.subnet), p);
      }
      if (this.#wanted && (this.#dp === undefined || this.#dp.broken !== undefined)) {
        this.#ctx.log.warn('udp backend: restarting the data path', {
          reason: this.#dp?.broken ?? 'not running (the last start failed)',
        });
        await this.#closeDataPath();
        await this.#openDataPath();
        return;
      }
      if (this.#dp) this.#ensureDevice();
      this.#publish();
    });
  }

  /** End the workers and close the socket and TUN fds. Idempotent; never throws. */
  stop(): Promise<void> {
    return this.#serial(() => {
      this.#wanted = false;
      return this.#closeDataPath();
    });
  }

  /** stop(), then delete the device if it is still there (kernel errors propagate). */
  teardown(): Promise<void> {
    return this.#serial(async () => {
      this.#wanted = false;
      await this.#closeDataPath();
      this.#h.links.delete(this.device);
      this.#own = undefined;
    });
  }

  stats(): UdpStats {
    const live = this.#dp?.stats() ?? zeroStats();
    const sum = Object.fromEntries(STAT_FIELDS.map((n) => [n, this.#past[n] + live[n]])) as Stats;
    const broken = this.#dp?.broken;
    return {
      ...sum,
      running: this.#dp !== undefined && broken === undefined,
      workers: this.#dp?.workersAlive ?? 0,
      peers: this.#peers.size,
      ...(broken !== undefined && { broken }),
    };
  }

  // ---- internals ------------------------------------------------------------------------------

  async #openDataPath(): Promise<void> {
    await transaction(async (rb) => {
      const dp = await DataPath.open({
        ns: this.#h.ns,
        device: this.device,
        bind: { ip: this.#s.publicIp, port: this.#s.port },
        mtu: this.#mtu,
        workers: this.#s.workers,
        batch: this.#s.batch,
        pollMs: this.#s.pollMs,
        log: this.#ctx.log,
      });
      rb.push('close the udp data path', () => dp.close());
      this.#dp = dp;
      rb.push('forget the data path', () => {
        this.#dp = undefined;
      });
      this.#ensureDevice();
      this.#publish();
    });
  }

  async #closeDataPath(): Promise<void> {
    const dp = this.#dp;
    if (!dp) return;
    this.#dp = undefined;
    await dp.close();
    const s = dp.stats();
    for (const n of STAT_FIELDS) this.#past[n] += s[n];
  }

  /** 10.244.1.0/16: the own subnet's network address with the cluster's prefix length. */
  #tunAddress(): IPNet {
    const own = this.#own!;
    return { ip: maskIP(own.ip, own.len), len: this.#ctx.network.len };
  }

  /** MTU, the one address (others removed), up, and the cluster route through the device. */
  #ensureDevice(): void {
    const links = this.#h.links;
    const dev = links.get(this.device);
    if (dev.mtu !== this.#mtu) links.setMtu(this.device, this.#mtu);
    const want = this.#tunAddress();
    for (const a of this.#h.addrs.list({ dev: this.device, family: 4 })) {
      if (a.ipnet.len !== want.len || formatIP(a.ipnet.ip) !== formatIP(want.ip)) {
        this.#h.addrs.delete(this.device, a.ipnet);
      }
    }
    this.#h.addrs.ensure(this.device, want);
    if (!dev.up) links.setUp(this.device);
    const cluster = networkOf(this.#ctx.network);
    if (this.#h.routes.list({ dev: this.device, dst: cluster }).length === 0) {
      this.#h.routes.replace({ dst: cluster, dev: this.device, src: want.ip, scope: 'link' });
    }
  }

  #publish(): void {
    if (!this.#dp || !this.#own) return;
    const own = networkOf(this.#own);
    this.#dp.publish({ net: own.ip.value as number, len: own.len }, [...this.#peers.values()]);
  }

  #checkOwn(own: LeaseInfo): IPNet {
    const s = own.subnet;
    if (s.ip.family !== 4 || !containsNet(this.#ctx.network, s) || s.len <= this.#ctx.network.len) {
      throw invalid(
        `udp backend: lease ${formatIPNet(s)} is not a subnet of the cluster network ${formatIPNet(this.#ctx.network)}`,
        { subnet: formatIPNet(s) },
      );
    }
    return networkOf(s);
  }

  /** The table entry for a peer lease, or undefined (logged) when it cannot be one. */
  #checkPeer(peer: LeaseInfo): Peer | undefined {
    const s = peer.subnet;
    const why =
      s.ip.family !== 4
        ? 'not IPv4'
        : !containsNet(this.#ctx.network, s)
          ? `outside the cluster network ${formatIPNet(this.#ctx.network)}`
          : peer.publicIp.family !== 4
            ? `public IP ${formatIP(peer.publicIp)} is not IPv4`
            : this.#own && overlaps(this.#own, s)
              ? "overlaps this host's own subnet"
              : undefined;
    if (why !== undefined) {
      this.#ctx.log.warn('udp backend: peer lease skipped', { subnet: formatIPNet(s), reason: why });
      return undefined;
    }
    const net = networkOf(s);
    return { net: net.ip.value as number, len: net.len, peer: peer.publicIp.value as number, lease: peer };
  }
}
