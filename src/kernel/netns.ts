/**
 * Network namespace handles. A handle owns an fd of the namespace; work inside it happens in a
 * *switched section*: the calling (main) thread setns()es in, runs a synchronous function, and
 * switches back, all without yielding to the event loop. Sockets, TUN fds, files under
 * /proc/sys/net and child processes created in the section belong to the namespace for good;
 * the Node process itself never moves (its libuv threads would stay behind).
 *
 * Rules (../shared/design/NODE-KERNEL-NOTES.md): never await inside a section (enforced: a
 * section returning a promise is an error); libuv's threadpool is warmed at import so its
 * threads are born in the original namespace; dgram/net sockets cannot be bound from a
 * section (they bind on a later tick): long-lived listeners in a namespace live in a process
 * started there.
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { invalid, KernelError, notFound, WeftError } from '../lib/errors.js';
import * as libc from './libc.js';
import { NetlinkSocket } from './rtnl.js';

// Warm libuv's threadpool now, before any section can run: its threads are created on the
// first queued job and inherit the namespace of the thread that queued it.
fs.stat('/', () => {});

const NS_PATH_MAX = 4096;

/** The namespace this process started in (its main thread's, at import time). */
const homeFd = fs.openSync('/proc/thread-self/ns/net', fs.constants.O_RDONLY);

export interface NetnsInfo {
  /** Where the namespace is pinned (a bind mount), or its /proc path. */
  readonly path: string;
  /** The namespace's inode number: equal inodes mean the same namespace. */
  readonly inode: number;
}

export class Netns {
  #fd: number;
  readonly path: string;
  /** True when this handle created the pin and may delete it. */
  readonly pinned: boolean;
  #rtnl: NetlinkSocket | undefined;
  #rtnlAsync: NetlinkSocket | undefined;

  private constructor(fd: number, p: string, pinned: boolean) {
    this.#fd = fd;
    this.path = p;
    this.pinned = pinned;
  }

  /** The namespace the process runs in (the host in production, a lab host inside the lab). */
  static self(): Netns {
    return new Netns(fs.openSync(`/proc/self/fd/${homeFd}`, 'r'), '/proc/self/ns/net', false);
  }

  /** The inode of the namespace this process started in (see `self`). */
  static homeInode(): number {
    return fs.fstatSync(homeFd).ino;
  }

  /** Open a namespace pinned at `p` (e.g. /run/netns/x) or a /proc/PID/ns/net path. */
  static open(p: string): Netns {
    let fd: number;
    try {
      fd = fs.openSync(p, fs.constants.O_RDONLY);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ENOENT') throw notFound(`network namespace ${p} does not exist`, { path: p });
      throw new KernelError(-(err.errno ?? -5), `open namespace ${p}`, { cause: e });
    }
    if (!isNetnsFd(fd)) {
      fs.closeSync(fd);
      throw invalid(`${p} is not a network namespace`, { path: p });
    }
    return new Netns(fd, p, false);
  }

  static openPid(pid: number): Netns {
    if (!Number.isInteger(pid) || pid <= 0) throw invalid(`invalid pid ${pid}`);
    return Netns.open(`/proc/${pid}/ns/net`);
  }

  /**
   * Create a new, empty namespace pinned at `pinPath` (its folder is created if missing). Fails
   * with EXISTS if something is already pinned there.
   */
  static create(pinPath: string): Netns {
    if (pinPath.length === 0 || pinPath.length > NS_PATH_MAX || !path.isAbsolute(pinPath)) {
      throw invalid(`namespace pin path must be absolute: "${pinPath}"`);
    }
    fs.mkdirSync(path.dirname(pinPath), { recursive: true });
    try {
      fs.closeSync(
        fs.openSync(pinPath, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_RDONLY, 0o444),
      );
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new WeftError('EXISTS', `a namespace is already pinned at ${pinPath}`, {
          details: { path: pinPath },
        });
      }
      throw e;
    }
    try {
      inSection(undefined, pinPath, () => {
        libc.unshare(libc.CLONE.NEWNET);
        libc.mount('/proc/thread-self/ns/net', pinPath, 'none', libc.MS.BIND);
      });
    } catch (e) {
      fs.rmSync(pinPath, { force: true });
      throw e;
    }
    const fd = fs.openSync(pinPath, fs.constants.O_RDONLY);
    return new Netns(fd, pinPath, true);
  }

  /** Remove the pin of a namespace by path (idempotent: a missing pin is success). */
  static remove(pinPath: string): void {
    try {
      libc.umount2(pinPath, libc.MNT_DETACH);
    } catch (e) {
      // EINVAL: not a mount point (a stale file); ENOENT: already gone.
      if (!(e instanceof KernelError) || (e.code !== 'INVALID' && e.code !== 'NOT_FOUND')) throw e;
    }
    fs.rmSync(pinPath, { force: true });
  }

  get fd(): number {
    if (this.#fd < 0) throw new WeftError('INTERNAL', `namespace handle ${this.path} is closed`);
    return this.#fd;
  }

  get inode(): number {
    return fs.fstatSync(this.fd).ino;
  }

  /** Run `fn` synchronously with the calling thread inside this namespace. */
  run<T>(fn: () => T): T {
    return inSection(this.fd, this.path, fn);
  }

  /** The netlink socket of this namespace, opened inside it on first use and kept. */
  rtnl(): NetlinkSocket {
    if (!this.#rtnl || this.#rtnl.closed) this.#rtnl = this.run(() => NetlinkSocket.open());
    return this.#rtnl;
  }

  /**
   * A second netlink socket of this namespace for `requestAsync` (which holds its socket until
   * it settles), opened on first use and kept; undefined while it is busy with one already.
   */
  rtnlAsync(): NetlinkSocket | undefined {
    if (!this.#rtnlAsync || this.#rtnlAsync.closed) this.#rtnlAsync = this.run(() => NetlinkSocket.open());
    return this.#rtnlAsync.busy ? undefined : this.#rtnlAsync;
  }

  /** Spawn a process inside this namespace (forked from the switched thread). */
  spawn(cmd: string, args: readonly string[], opts: SpawnOptions = {}): ChildProcess {
    return this.run(() => spawn(cmd, args, opts));
  }

  /** Open a file inside the namespace (for /proc/sys/net/…, which is per namespace of the opener). */
  openFile(p: string, flags: string | number): number {
    return this.run(() => fs.openSync(p, flags));
  }

  /** True when both handles refer to the same namespace. */
  sameAs(other: Netns): boolean {
    return this.inode === other.inode;
  }

  close(): void {
    this.#rtnl?.close();
    this.#rtnl = undefined;
    this.#rtnlAsync?.close();
    this.#rtnlAsync = undefined;
    if (this.#fd >= 0) {
      fs.closeSync(this.#fd);
      this.#fd = -1;
    }
  }

  /** Close the handle and remove the pin (only if this handle created it, or `force`). */
  delete(opts: { force?: boolean } = {}): void {
    const p = this.path;
    const mine = this.pinned || opts.force === true;
    this.close();
    if (mine) Netns.remove(p);
  }

  [Symbol.dispose](): void {
    this.close();
  }
}

// Sections may nest; leaving one returns the thread to the namespace of the section around it.
const sectionStack: number[] = [];

function inSection<T>(fd: number | undefined, what: string, fn: () => T): T {
  if (fd !== undefined) libc.setns(fd, libc.CLONE.NEWNET, what);
  sectionStack.push(fd ?? -1);
  try {
    const out = fn();
    if (out !== null && typeof out === 'object' && typeof (out as { then?: unknown }).then === 'function') {
      throw new WeftError('INTERNAL', 'a namespace section must be synchronous (it returned a promise)');
    }
    return out;
  } finally {
    sectionStack.pop();
    const outer = sectionStack.findLast((x) => x >= 0) ?? homeFd;
    libc.setns(outer, libc.CLONE.NEWNET, 'the outer namespace');
  }
}

const NS_GET_NSTYPE = 0xb703;

/** True when `fd` refers to a network namespace (asked of the kernel with NS_GET_NSTYPE). */
function isNetnsFd(fd: number): boolean {
  try {
    return libc.ioctl(fd, NS_GET_NSTYPE, new Uint8Array(8)) === libc.CLONE.NEWNET;
  } catch {
    return false;
  }
}

/** Names of namespaces pinned in a folder (default iproute2's /run/netns). */
export function listPinned(dir = '/run/netns'): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}
