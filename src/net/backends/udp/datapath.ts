/**
 * The udp backend's userspace data path: a TUN device, a UDP socket and the worker threads
 * that move packets between them (worker.ts), with the peer table and counters shared through
 * SharedArrayBuffers (table.ts).
 *
 * The TUN device and the socket are created inside the host's namespace (switched sections;
 * Node's dgram would bind in the wrong one), then handed to the workers as plain fds. With one
 * worker it serves both directions, as flannel's proxy and udptun.c do; with n ≥ 2 one worker
 * receives (udp → tun) and n-1 send (tun → udp), each on its own TUN queue (IFF_MULTI_QUEUE
 * when more than one), so the kernel spreads flows over them. One receiver only: several
 * threads reading one socket would reorder a flow's packets.
 *
 * Stopping raises the shared stop flag; each worker sees it within its poll timeout and exits;
 * only then are the fds closed (a worker never uses a closed fd). Workers that do not exit in
 * time are terminated.
 */
import type { Worker } from 'node:worker_threads';
import * as libc from '../../../kernel/libc.js';
import type { Netns } from '../../../kernel/netns.js';
import { createTun, type Tun } from '../../../kernel/tun.js';
import { spawnWorker } from '../../../kernel/worker.js';
import { KernelError, WeftError } from '../../../lib/errors.js';
import { formatIP, type IPv4Addr } from '../../../lib/ip.js';
import type { Logger } from '../../../lib/log.js';
import { createShared, type PeerEntry, readStats, type Shared, type Stats, TableWriter } from './table.js';
import type { WorkerInit, WorkerMessage } from './worker.js';

export interface DataPathOptions {
  readonly ns: Netns;
  readonly device: string;
  /** UDP socket address (this host's public IP) and port. */
  readonly bind: { readonly ip: IPv4Addr; readonly port: number };
  /** TUN MTU: packet slots are sized from it. */
  readonly mtu: number;
  readonly workers: number;
  readonly batch: number;
  readonly pollMs: number;
  readonly log: Logger;
}

const SOCKET_BUFFER = 4 << 20;
const READY_TIMEOUT_MS = 20_000;

export class DataPath {
  readonly tun: Tun;
  readonly #sock: number;
  readonly #shared: Shared;
  readonly #writer: TableWriter;
  readonly #workers: Worker[] = [];
  readonly #log: Logger;
  readonly #pollMs: number;
  #alive = 0;
  #stopping = false;
  #broken: string | undefined;
  #closed = false;

  private constructor(tun: Tun, sock: number, opts: DataPathOptions) {
    this.tun = tun;
    this.#sock = sock;
    this.#log = opts.log;
    this.#pollMs = opts.pollMs;
    this.#shared = createShared(opts.workers);
    this.#writer = new TableWriter(this.#shared);
  }

  /**
   * Create the TUN device (its queues), bind the socket and start the workers; resolves when
   * every worker runs. The device is left unconfigured (address, MTU, up: the caller's).
   * Throws BUSY when the device is held by another process, EXISTS when the port is taken,
   * NOT_FOUND when the address is not on any interface of the namespace, TIMEOUT when a worker
   * does not start; nothing is left open on failure.
   */
  static async open(opts: DataPathOptions): Promise<DataPath> {
    const queues = Math.max(1, opts.workers - 1);
    const tun = createTun(opts.ns, { name: opts.device, multiQueue: queues > 1, queues });
    let sock = -1;
    try {
      sock = openSocket(opts.ns, opts.bind);
    } catch (e) {
      tun.close();
      throw e;
    }
    const dp = new DataPath(tun, sock, opts);
    try {
      await dp.#startWorkers(opts);
    } catch (e) {
      await dp.close();
      throw e;
    }
    return dp;
  }

  /** Why the data path stopped working (a worker died), or undefined while it is healthy. */
  get broken(): string | undefined {
    return this.#broken;
  }

  get workersAlive(): number {
    return this.#alive;
  }

  publish(own: { net: number; len: number }, peers: readonly PeerEntry[]): void {
    this.#writer.publish(own, peers);
  }

  stats(): Stats {
    return readStats(this.#shared);
  }

  async #startWorkers(opts: DataPathOptions): Promise<void> {
    const slot = Math.max(2048, Math.ceil((opts.mtu + 64) / 64) * 64);
    const fds = this.tun.fds;
    const base = {
      shared: this.#shared,
      sockFd: this.#sock,
      port: opts.bind.port,
      slot,
      batch: opts.batch,
      pollMs: opts.pollMs,
    };
    const inits: WorkerInit[] =
      opts.workers === 1
        ? [{ ...base, index: 0, tunReadFds: [fds[0]!], tunWriteFd: fds[0]! }]
        : [
            { ...base, index: 0, tunReadFds: [], tunWriteFd: fds[0]! },
            ...fds.map((fd, i) => ({ ...base, index: i + 1, tunReadFds: [fd], tunWriteFd: -1 })),
          ];
    const ready = inits.map((init) => this.#spawn(init));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(new WeftError('TIMEOUT', `udp data path workers did not start in ${READY_TIMEOUT_MS} ms`)),
        READY_TIMEOUT_MS,
      );
    });
    try {
      await Promise.race([Promise.all(ready), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  #spawn(init: WorkerInit): Promise<void> {
    const w = startWorker(init);
    this.#workers.push(w);
    this.#alive++;
    return new Promise<void>((resolve, reject) => {
      w.on('message', (m: WorkerMessage) => {
        if (m.type === 'ready') resolve();
        else if (m.type === 'fatal') this.#fail(`worker ${init.index}: ${m.reason}`);
      });
      w.on('error', (e) => {
        this.#fail(`worker ${init.index}: ${e.message}`);
        reject(
          new WeftError('INTERNAL', `udp data path worker ${init.index} failed: ${e.message}`, { cause: e }),
        );
      });
      w.on('exit', (code) => {
        this.#alive--;
        if (!this.#stopping) this.#fail(`worker ${init.index} exited (code ${code})`);
        reject(new WeftError('INTERNAL', `udp data path worker ${init.index} exited (code ${code})`));
      });
    });
  }

  #fail(reason: string): void {
    if (this.#stopping || this.#broken !== undefined) return;
    this.#broken = reason;
    this.#log.error('udp data path broken; the next resync restarts it', { reason });
  }

  /**
   * Stop the workers (within about one poll timeout; terminated after `timeoutMs`), then close
   * the socket and the TUN fds. Idempotent; never throws.
   */
  async close(timeoutMs = 3000): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopping = true;
    this.#writer.stop();
    const bound = Math.max(timeoutMs, this.#pollMs * 3);
    await Promise.all(
      this.#workers.map(async (w) => {
        if (w.threadId < 0) return; // already exited
        const exited = new Promise<void>((r) => w.once('exit', () => r()));
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<'late'>((r) => {
          timer = setTimeout(() => r('late'), bound);
        });
        const how = await Promise.race([exited, late]);
        clearTimeout(timer);
        if (how === 'late') {
          this.#log.warn('udp data path worker did not stop in time; terminating it', { ms: bound });
          await w.terminate();
        }
      }),
    );
    try {
      libc.close(this.#sock);
    } catch {
      // already closed
    }
    this.tun.close();
  }
}

/** Start one worker from the sibling module (worker.js when built, worker.ts under tsx). */
const startWorker = (init: WorkerInit): Worker => spawnWorker(import.meta.url, 'worker', init);

/** A UDP socket made inside `ns` and bound to ip:port there. */
function openSocket(ns: Netns, bind: { ip: IPv4Addr; port: number }): number {
  const fd = ns.run(() => libc.socket(libc.AF_INET, libc.SOCK.DGRAM | libc.SOCK.CLOEXEC, 0));
  try {
    for (const [force, plain] of [
      [libc.SO.RCVBUFFORCE, libc.SO.RCVBUF],
      [libc.SO.SNDBUFFORCE, libc.SO.SNDBUF],
    ] as const) {
      try {
        libc.setsockoptInt(fd, libc.SOL_SOCKET, force, SOCKET_BUFFER);
      } catch {
        libc.setsockoptInt(fd, libc.SOL_SOCKET, plain, SOCKET_BUFFER);
      }
    }
    const sa = new Uint8Array(16);
    const dv = new DataView(sa.buffer);
    dv.setUint16(0, libc.AF_INET, true);
    dv.setUint16(2, bind.port, false);
    dv.setUint32(4, bind.ip.value, false);
    try {
      libc.bind(fd, sa);
    } catch (e) {
      const where = `${formatIP(bind.ip)}:${bind.port}`;
      if (e instanceof KernelError && e.code === 'EXISTS') {
        throw new WeftError('EXISTS', `UDP ${where} is already in use (another udp backend?)`, {
          cause: e,
          details: { bind: where },
        });
      }
      if (e instanceof KernelError && e.code === 'NOT_FOUND') {
        throw new WeftError('NOT_FOUND', `cannot bind UDP ${where}: the address is on no interface`, {
          cause: e,
          details: { bind: where },
        });
      }
      throw e;
    }
    return fd;
  } catch (e) {
    libc.close(fd);
    throw e;
  }
}
