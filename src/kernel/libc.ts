/**
 * The few libc calls Node lacks, through koffi (FFI with prebuilt binaries in its npm package, no
 * build step; ~0.3 µs a call). Buffers are passed in place as `void *`. Every wrapper throws a
 * KernelError carrying errno on failure; nothing here knows about netlink or namespaces. The
 * exception is `raw`, for packet loops: calls on native memory (`allocNative`) by address, which
 * return the kernel's answer as is (negative: read `errno()`) and allocate nothing.
 */
import koffi from 'koffi';
import { KernelError } from '../lib/errors.js';

const libc = koffi.load('libc.so.6');
/** The loaded libc, for the modules here that declare calls of their own (spawn, libnftables' helpers). */
export const library = libc;

const f = {
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  bind: libc.func('int bind(int fd, const void *addr, uint32_t len)'),
  setsockopt: libc.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)'),
  sendto: libc.func(
    'intptr_t sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t alen)',
  ),
  recv: libc.func('intptr_t recv(int fd, void *buf, size_t len, int flags)'),
  read: libc.func('intptr_t read(int fd, void *buf, size_t len)'),
  write: libc.func('intptr_t write(int fd, const void *buf, size_t len)'),
  close: libc.func('int close(int fd)'),
  setns: libc.func('int setns(int fd, int nstype)'),
  unshare: libc.func('int unshare(int flags)'),
  mount: libc.func(
    'int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const void *data)',
  ),
  umount2: libc.func('int umount2(const char *target, int flags)'),
  ioctl: libc.func('int ioctl(int fd, unsigned long req, void *arg)'),
  poll: libc.func('int poll(void *fds, unsigned long nfds, int timeout)'),
  // ioctl whose argument is a plain integer (TUNSETPERSIST), not a pointer.
  ioctlInt: libc.func('int ioctl(int fd, unsigned long req, unsigned long arg)'),
  fcntl: libc.func('int fcntl(int fd, int cmd, ...)'),
  malloc: libc.func('void *malloc(size_t size)'),
  free: libc.func('void free(void *ptr)'),
};

// Hot-path calls: buffers are native addresses (see allocNative), so nothing is marshalled.
const r = {
  read: libc.func('intptr_t read(int fd, uintptr_t buf, size_t len)'),
  write: libc.func('intptr_t write(int fd, uintptr_t buf, size_t len)'),
  poll: libc.func('int poll(uintptr_t fds, unsigned long nfds, int timeout)'),
  sendmmsg: libc.func('int sendmmsg(int fd, uintptr_t msgvec, unsigned int vlen, int flags)'),
  recvmmsg: libc.func(
    'int recvmmsg(int fd, uintptr_t msgvec, unsigned int vlen, int flags, uintptr_t timeout)',
  ),
};

export const SOCK = { RAW: 3, DGRAM: 2, CLOEXEC: 0x80000, NONBLOCK: 0x800 } as const;
export const SOL_SOCKET = 1;
export const SO = {
  SNDBUF: 7,
  RCVBUF: 8,
  RCVTIMEO: 20,
  SNDTIMEO: 21,
  SNDBUFFORCE: 32,
  RCVBUFFORCE: 33,
} as const;
export const MSG = { PEEK: 0x2, TRUNC: 0x20, DONTWAIT: 0x40 } as const;
export const CLONE = { NEWNS: 0x20000, NEWUTS: 0x4000000, NEWNET: 0x40000000 } as const;
export const MS = { BIND: 4096, REC: 16384, PRIVATE: 1 << 18, SLAVE: 1 << 19, SHARED: 1 << 20 } as const;
export const MNT_DETACH = 2;
export const POLLIN = 1;
export const AF_INET = 2;
export const O_NONBLOCK = 0x800;
const F_GETFL = 3;
const F_SETFL = 4;
const F_DUPFD_CLOEXEC = 1030;

const check = (ret: number | bigint, op: string): number => {
  const n = Number(ret);
  if (n < 0) throw new KernelError(koffi.errno(), op);
  return n;
};

export function socket(domain: number, type: number, protocol: number): number {
  return check(f.socket(domain, type, protocol), `socket(${domain}, ${type}, ${protocol})`);
}
export function bind(fd: number, addr: Uint8Array): void {
  check(f.bind(fd, addr, addr.length), 'bind');
}
export function setsockopt(fd: number, level: number, name: number, value: Uint8Array): void {
  check(f.setsockopt(fd, level, name, value, value.length), `setsockopt(${level}, ${name})`);
}
export function setsockoptInt(fd: number, level: number, name: number, value: number): void {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setInt32(0, value, true);
  setsockopt(fd, level, name, b);
}
export function sendto(fd: number, buf: Uint8Array, addr: Uint8Array | null): number {
  return check(f.sendto(fd, buf, buf.length, 0, addr, addr ? addr.length : 0), 'sendto');
}
/**
 * sendto() made on libuv's thread pool: for rtnetlink the kernel does the request's work inside
 * the call, so this takes that work off the calling thread. `buf` and `addr` must not change
 * until it settles. Rejects with a KernelError with the pool thread's errno (koffi hands it to
 * the callback's thread).
 */
export function sendtoAsync(fd: number, buf: Uint8Array, addr: Uint8Array | null): Promise<number> {
  return new Promise((resolve, reject) => {
    f.sendto.async(fd, buf, buf.length, 0, addr, addr ? addr.length : 0, (err: unknown, ret: number) => {
      if (err) reject(err);
      else if (Number(ret) < 0) reject(new KernelError(koffi.errno() || 5, 'sendto (thread pool)'));
      else resolve(Number(ret));
    });
  });
}
/** recv() into `buf`; returns the datagram's real length (may exceed buf with MSG.TRUNC). */
export function recv(fd: number, buf: Uint8Array, flags = 0): number {
  return check(f.recv(fd, buf, buf.length, flags), 'recv');
}
export function read(fd: number, buf: Uint8Array): number {
  return check(f.read(fd, buf, buf.length), 'read');
}
export function write(fd: number, buf: Uint8Array): number {
  return check(f.write(fd, buf, buf.length), 'write');
}
export function close(fd: number): void {
  check(f.close(fd), 'close');
}
export function setns(fd: number, nstype: number, what = 'namespace'): void {
  check(f.setns(fd, nstype), `setns(${what})`);
}
export function unshare(flags: number): void {
  check(f.unshare(flags), 'unshare');
}
export function mount(src: string | null, target: string, fstype: string | null, flags: number): void {
  check(f.mount(src, target, fstype, flags, null), `mount(${src ?? ''} -> ${target})`);
}
export function umount2(target: string, flags: number): void {
  check(f.umount2(target, flags), `umount(${target})`);
}
export function ioctl(fd: number, req: number, arg: Uint8Array, what = 'ioctl'): number {
  return check(f.ioctl(fd, req, arg), what);
}
/** poll() one fd for input; returns true when readable, false on timeout. */
export function pollIn(fd: number, timeoutMs: number): boolean {
  const pfd = new Uint8Array(8);
  const dv = new DataView(pfd.buffer);
  dv.setInt32(0, fd, true);
  dv.setInt16(4, POLLIN, true);
  const n = check(f.poll(pfd, 1, timeoutMs), 'poll');
  return n > 0;
}
/** ioctl() whose third argument is an integer value rather than a pointer (e.g. TUNSETPERSIST). */
export function ioctlInt(fd: number, req: number, arg: number, what = 'ioctl'): number {
  return check(f.ioctlInt(fd, req, arg), what);
}

/** A new close-on-exec fd for what `fd` refers to (fcntl F_DUPFD_CLOEXEC); throws a KernelError. */
export function dup(fd: number): number {
  return check(f.fcntl(fd, F_DUPFD_CLOEXEC, 'int', 0), 'fcntl(F_DUPFD_CLOEXEC)');
}

/** Set O_NONBLOCK on an fd (fcntl F_SETFL); throws a KernelError. */
export function setNonBlocking(fd: number): void {
  const flags = check(f.fcntl(fd, F_GETFL), 'fcntl(F_GETFL)');
  check(f.fcntl(fd, F_SETFL, 'int', flags | O_NONBLOCK), 'fcntl(F_SETFL)');
}

/** errno of the last failed call on this thread. */
export const errno = (): number => koffi.errno();

/**
 * A block of native (malloc'd) memory: its address, for the hot-path calls of `raw`, and an
 * ArrayBuffer over it, to fill and read it from JS without copies. Free it once, after the
 * last call that uses it; the ArrayBuffer must not be touched afterwards.
 */
export interface NativeBlock {
  readonly addr: number;
  readonly buffer: ArrayBuffer;
  free(): void;
}

/** Allocate `len` bytes of zeroed native memory; throws a KernelError (ENOMEM). */
export function allocNative(len: number): NativeBlock {
  const p: unknown = f.malloc(len);
  if (p === null) throw new KernelError(12, `malloc(${len})`);
  const buffer = koffi.view(p, len);
  new Uint8Array(buffer).fill(0);
  let freed = false;
  return {
    addr: Number(koffi.address(p)),
    buffer,
    free: () => {
      if (freed) return;
      freed = true;
      f.free(p);
    },
  };
}

/**
 * Syscalls for packet loops (the udp backend's workers): no checks, no marshalling, no
 * allocation. Buffers are native addresses (`allocNative(...).addr + offset`); each returns the
 * raw result, negative on failure with the reason in `errno()`. Misuse corrupts memory: only
 * code that owns the native layout calls these.
 */
export const raw = {
  read: (fd: number, addr: number, len: number): number => r.read(fd, addr, len) as number,
  write: (fd: number, addr: number, len: number): number => r.write(fd, addr, len) as number,
  poll: (fds: number, nfds: number, timeoutMs: number): number => r.poll(fds, nfds, timeoutMs) as number,
  sendmmsg: (fd: number, msgvec: number, vlen: number, flags: number): number =>
    r.sendmmsg(fd, msgvec, vlen, flags) as number,
  recvmmsg: (fd: number, msgvec: number, vlen: number, flags: number): number =>
    r.recvmmsg(fd, msgvec, vlen, flags, 0) as number,
};
