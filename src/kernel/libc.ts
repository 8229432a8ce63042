/**
 * The few libc calls Node lacks, through koffi (FFI with prebuilt binaries in its npm package, no
 * build step; ~0.3 µs a call). Buffers are passed in place as `void *`. Every wrapper throws a
 * KernelError carrying errno on failure; nothing here knows about netlink or namespaces.
 */
import koffi from 'koffi';
import { KernelError } from '../lib/errors.js';

const libc = koffi.load('libc.so.6');

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
