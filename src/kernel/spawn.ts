/**
 * Spawning a program with posix_spawn(3), for the sandbox helper on the daemon's request path.
 *
 * Why not child_process.spawn. libuv forks: the kernel copies the page tables of the whole
 * daemon (~90 MB resident with 200 sandboxes), which holds its main thread ~2 ms per spawn
 * (measured in the daemon's profile). glibc's posix_spawn clones with CLONE_VM | CLONE_VFORK:
 * nothing is copied, the caller waits only until the child has exec'd (~0.35 ms for perl).
 *
 * What the child gets: stdin, stdout and stderr on /dev/null, fd 3 one end of a socket pair
 * (the other is returned as a net.Socket), every signal at its default and none blocked (Node
 * ignores SIGPIPE; a child must not inherit that), its own session (`setsid`), exactly the
 * environment given, and no other fd: close-on-exec or not (libnftables' netlink socket is not),
 * all above 3 are closed in the child (glibc ≥ 2.34's addclosefrom_np).
 *
 * Reaping. libuv waits only for the children it spawned, so ours are reaped here: a SIGCHLD
 * listener (installed before the first spawn, so no signal is missed) polls each child of ours
 * with waitpid(WNOHANG); SIGCHLD may be coalesced, hence the poll of all. The listener does not
 * keep the event loop alive (Node unrefs signal handles): a caller waiting for an exit keeps it
 * alive itself, e.g. with a timeout.
 */
import * as net from 'node:net';
import * as os from 'node:os';
import koffi from 'koffi';
import { KernelError } from '../lib/errors.js';
import { close as closeFd, library as libc } from './libc.js';

const f = {
  socketpair: libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)'),
  faInit: libc.func('int posix_spawn_file_actions_init(void *fa)'),
  faDestroy: libc.func('int posix_spawn_file_actions_destroy(void *fa)'),
  faOpen: libc.func(
    'int posix_spawn_file_actions_addopen(void *fa, int fd, const char *path, int oflag, uint32_t mode)',
  ),
  faDup2: libc.func('int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd)'),
  attrInit: libc.func('int posix_spawnattr_init(void *attr)'),
  attrDestroy: libc.func('int posix_spawnattr_destroy(void *attr)'),
  attrFlags: libc.func('int posix_spawnattr_setflags(void *attr, short flags)'),
  attrSigDefault: libc.func('int posix_spawnattr_setsigdefault(void *attr, const void *set)'),
  attrSigMask: libc.func('int posix_spawnattr_setsigmask(void *attr, const void *set)'),
  sigemptyset: libc.func('int sigemptyset(void *set)'),
  spawn: libc.func(
    'int posix_spawn(_Out_ int *pid, const char *path, const void *fa, const void *attr, const char **argv, const char **envp)',
  ),
  waitpid: libc.func('int waitpid(int pid, _Out_ int *status, int options)'),
};

/** glibc ≥ 2.34 (Debian 12 has 2.36); without it only close-on-exec keeps fds from the child. */
const faCloseFrom = ((): ((fa: Buffer, from: number) => number) | undefined => {
  try {
    return libc.func('int posix_spawn_file_actions_addclosefrom_np(void *fa, int from)');
  } catch {
    return undefined;
  }
})();

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0x80000;
const O_RDONLY = 0;
const O_WRONLY = 1;
const WNOHANG = 1;
const ECHILD = 10;
// glibc's <spawn.h>.
const POSIX_SPAWN_SETSIGDEF = 0x04;
const POSIX_SPAWN_SETSIGMASK = 0x08;
const POSIX_SPAWN_SETSID = 0x80;
// Opaque glibc types, over-allocated (x86_64/arm64: file actions 80 bytes, attr 336, sigset 128).
const FA_SIZE = 512;
const ATTR_SIZE = 1024;
const SIGSET_SIZE = 128;

export interface ExitStatus {
  /** Exit code, or null when a signal ended it. */
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface Spawned {
  readonly pid: number;
  /** Our end of the socket pair whose other end is the child's fd 3. */
  readonly control: net.Socket;
  /** Resolves when the child has ended and was reaped. */
  readonly exited: Promise<ExitStatus>;
  /** Set once it has ended (before `exited` resolves). */
  readonly status: ExitStatus | undefined;
}

const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(os.constants.signals).map(([k, v]) => [v, k as NodeJS.Signals]),
);

function decode(status: number): ExitStatus {
  const sig = status & 0x7f;
  if (sig === 0) return { code: (status >> 8) & 0xff, signal: null };
  // Every signal that can end a process has a name in node; a number it lacks is kept as text.
  return { code: null, signal: signalNames.get(sig) ?? (`SIG${sig}` as NodeJS.Signals) };
}

class Child implements Spawned {
  status: ExitStatus | undefined;
  readonly exited: Promise<ExitStatus>;
  #resolve!: (s: ExitStatus) => void;

  constructor(
    readonly pid: number,
    readonly control: net.Socket,
  ) {
    this.exited = new Promise((r) => {
      this.#resolve = r;
    });
  }

  /** Reap it if it has ended; true when it is done with. */
  poll(): boolean {
    const st = [0];
    const r = f.waitpid(this.pid, st, WNOHANG) as number;
    if (r === 0) return false;
    // ECHILD: not our child any more (cannot happen unless someone else waited); count it ended.
    if (r < 0 && koffi.errno() !== ECHILD) return false;
    this.status = r === this.pid ? decode(st[0] ?? 0) : { code: null, signal: null };
    this.#resolve(this.status);
    return true;
  }
}

const children = new Map<number, Child>();
/** Spawns in flight on the thread pool: the SIGCHLD listener stays while there are any. */
let inFlight = 0;

function listen(): void {
  if (children.size === 0 && inFlight === 0) process.on('SIGCHLD', reap);
}

function unlistenIfIdle(): void {
  if (children.size === 0 && inFlight === 0) process.off('SIGCHLD', reap);
}

function reap(): void {
  for (const c of children.values()) if (c.poll()) children.delete(c.pid);
  unlistenIfIdle();
}

// Signal sets: every bit (signals to reset to default), none (the child's mask). Every bit, not
// sigfillset: that leaves out glibc's internal signals (32, 33), which posix_spawn would then
// set to SIG_IGN in the child, and an ignored signal stays ignored across exec.
let sigAll: Buffer | undefined;
let sigNone: Buffer | undefined;

/** A spawn set up: the socket pair, file actions and attributes, argv and envp. */
interface Setup {
  readonly ours: number;
  readonly theirs: number;
  readonly fa: Buffer;
  readonly attr: Buffer;
  readonly argv: (string | null)[];
  readonly envp: (string | null)[];
  readonly pid: number[];
}

function setUp(argv: readonly string[], env: Readonly<Record<string, string>>): Setup {
  if (!sigAll || !sigNone) {
    sigAll = Buffer.alloc(SIGSET_SIZE, 0xff);
    sigNone = Buffer.alloc(SIGSET_SIZE);
    f.sigemptyset(sigNone);
  }
  const sv = [-1, -1];
  if ((f.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) as number) < 0) {
    throw new KernelError(koffi.errno(), 'socketpair');
  }
  const [ours, theirs] = sv as [number, number];
  const fa = Buffer.alloc(FA_SIZE);
  const attr = Buffer.alloc(ATTR_SIZE);
  f.faInit(fa);
  f.attrInit(attr);
  f.faOpen(fa, 0, '/dev/null', O_RDONLY, 0);
  f.faOpen(fa, 1, '/dev/null', O_WRONLY, 0);
  f.faOpen(fa, 2, '/dev/null', O_WRONLY, 0);
  // dup2 onto 3 clears close-on-exec there; socketpair's fds are above 3 in a Node process.
  f.faDup2(fa, theirs, 3);
  // Then every fd above 3 closed, close-on-exec or not (a library's socket may not be).
  faCloseFrom?.(fa, 4);
  f.attrFlags(attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSID);
  f.attrSigDefault(attr, sigAll);
  f.attrSigMask(attr, sigNone);
  const envp = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  return { ours, theirs, fa, attr, argv: [...argv, null], envp: [...envp, null], pid: [0] };
}

function release(s: Setup): void {
  f.faDestroy(s.fa);
  f.attrDestroy(s.attr);
  closeFd(s.theirs);
}

/** After posix_spawn returned `rc`: release the set-up, and register the child or throw. */
function finish(s: Setup, rc: number, file: string): Spawned {
  release(s);
  if (rc !== 0) {
    closeFd(s.ours);
    throw new KernelError(rc, `posix_spawn ${file}`);
  }
  const child = new Child(s.pid[0] as number, new net.Socket({ fd: s.ours, readable: true, writable: true }));
  children.set(child.pid, child);
  return child;
}

/**
 * Spawn `file` with `argv` (argv[0] included) and exactly `env`, detached in its own session,
 * stdio on /dev/null and fd 3 a socket pair. The calling thread waits until the child has
 * exec'd. Throws a KernelError with the errno posix_spawn returns (ENOENT: no such program,
 * EACCES…); nothing is left behind then.
 */
export function spawnWithControl(
  file: string,
  argv: readonly string[],
  env: Readonly<Record<string, string>>,
): Spawned {
  const s = setUp(argv, env);
  listen();
  let rc: number;
  try {
    rc = f.spawn(s.pid, file, s.fa, s.attr, s.argv, s.envp) as number;
  } catch (e) {
    release(s);
    closeFd(s.ours);
    unlistenIfIdle();
    throw e;
  }
  try {
    return finish(s, rc, file);
  } finally {
    unlistenIfIdle();
  }
}

/**
 * `spawnWithControl` with posix_spawn called on libuv's thread pool: the calling thread does not
 * wait for the exec (~0.3-1 ms) at all. Rejects as `spawnWithControl` throws.
 */
export function spawnWithControlAsync(
  file: string,
  argv: readonly string[],
  env: Readonly<Record<string, string>>,
): Promise<Spawned> {
  const s = setUp(argv, env);
  listen();
  inFlight++;
  return new Promise((resolve, reject) => {
    try {
      f.spawn.async(s.pid, file, s.fa, s.attr, s.argv, s.envp, (err: unknown, rc: number) => {
        inFlight--;
        try {
          const child = finish(s, err ? -1 : rc, file);
          // It may have ended before it was registered, its SIGCHLD handled without it.
          reap();
          resolve(child);
        } catch (e) {
          unlistenIfIdle();
          reject(err ?? e);
        }
      });
    } catch (e) {
      // Refused before it was queued (koffi's own checks): the callback never comes.
      inFlight--;
      release(s);
      closeFd(s.ours);
      unlistenIfIdle();
      reject(e);
    }
  });
}
