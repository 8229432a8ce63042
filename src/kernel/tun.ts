/**
 * TUN devices: the userspace end of the udp backend's data path. `createTun` opens
 * /dev/net/tun and attaches it to a device with ioctl(TUNSETIFF); the device is created in the
 * network namespace of the process that *opened* the file, so the opens happen inside a
 * switched section of the target namespace. Each fd is one queue: with `multiQueue` several
 * fds share one device (IFF_MULTI_QUEUE) and the kernel spreads flows over them, one worker per
 * queue. Packets are raw IP (IFF_NO_PI: no 4-byte packet-information header), optionally led
 * by a virtio-net header (`vnetHdr`, for offloads).
 *
 * The fds are blocking; read them with `libc.read` after `libc.pollIn` (or `fs.readSync`), and
 * never leave an `fs.read` pending when closing: a blocked read holds the file open. A device
 * that is not `persist` disappears when its last fd is closed; a persistent one stays (and can
 * be attached to again by name) until its link is deleted.
 */
import * as fs from 'node:fs';
import { KernelError, WeftError } from '../lib/errors.js';
import { checkIfName, IFNAME_MAX } from '../lib/names.js';
import * as libc from './libc.js';
import { Links } from './links.js';
import type { Netns } from './netns.js';

/** ioctl requests and flags from linux/if_tun.h. */
export const TUN = {
  SETIFF: 0x400454ca,
  SETPERSIST: 0x400454cb,
  GETIFF: 0x800454d2,
} as const;
export const IFF_TUN_FLAGS = {
  TUN: 0x0001,
  TAP: 0x0002,
  MULTI_QUEUE: 0x0100,
  NO_PI: 0x1000,
  VNET_HDR: 0x4000,
} as const;

/** The kernel's limit of queues per TUN device (MAX_TAP_QUEUES). */
export const TUN_MAX_QUEUES = 256;
const IFREQ_SIZE = 40;

export interface TunOptions {
  readonly name: string;
  /** IFF_MULTI_QUEUE: several fds (queues) on one device. */
  readonly multiQueue?: boolean;
  /** Number of fds to open (default 1; more than 1 needs `multiQueue`). */
  readonly queues?: number;
  /** Keep the device when the fds are closed (TUNSETPERSIST). */
  readonly persist?: boolean;
  /** Packets carry a virtio-net header first (IFF_VNET_HDR). */
  readonly vnetHdr?: boolean;
}

export interface Tun {
  /** The device's name as the kernel reports it. */
  readonly name: string;
  /** One fd per queue, blocking, read/write raw IP packets. */
  readonly fds: readonly number[];
  /** Close every fd (idempotent). A non-persistent device disappears with its last fd. */
  close(): void;
  [Symbol.dispose](): void;
}

function checkOptions(opts: TunOptions): number {
  checkIfName(opts.name, 'TUN device name');
  const queues = opts.queues ?? 1;
  if (!Number.isInteger(queues) || queues < 1 || queues > TUN_MAX_QUEUES) {
    throw new WeftError('INVALID', `TUN queues must be 1-${TUN_MAX_QUEUES}, not ${queues}`);
  }
  if (queues > 1 && !opts.multiQueue) {
    throw new WeftError('INVALID', `${queues} TUN queues need multiQueue`);
  }
  return queues;
}

/**
 * Create (or attach to an existing persistent) TUN device `name` in `ns` and open its queues.
 * Throws INVALID for bad options, EXISTS when a link of another kind has the name, BUSY when
 * the device is already attached (a single-queue device holds one fd), UNSUPPORTED without
 * /dev/net/tun, a KernelError otherwise; nothing is left open or created on failure.
 */
export function createTun(ns: Netns, opts: TunOptions): Tun {
  const queues = checkOptions(opts);
  const links = new Links(ns, () => ns.rtnl());
  const existing = links.find(opts.name);
  if (existing && existing.kind !== 'tun') {
    throw new WeftError('EXISTS', `link "${opts.name}" exists and is a ${existing.kind}, not a tun`, {
      details: { link: opts.name, kind: existing.kind },
    });
  }
  let flags = IFF_TUN_FLAGS.TUN | IFF_TUN_FLAGS.NO_PI;
  if (opts.multiQueue) flags |= IFF_TUN_FLAGS.MULTI_QUEUE;
  if (opts.vnetHdr) flags |= IFF_TUN_FLAGS.VNET_HDR;

  const fds: number[] = [];
  let name = opts.name;
  try {
    // One section for all opens: the device is created in the namespace of the first opener.
    ns.run(() => {
      for (let q = 0; q < queues; q++) {
        const fd = openTunFile();
        fds.push(fd);
        name = setIff(fd, name, flags);
      }
    });
    if (opts.persist) libc.ioctlInt(fds[0]!, TUN.SETPERSIST, 1, `TUNSETPERSIST ${name}`);
  } catch (e) {
    // Closing the fds removes a device made here (persist is the last step, so it is not set).
    for (const fd of fds) fs.closeSync(fd);
    if (e instanceof KernelError && e.code === 'BUSY') {
      throw new WeftError('BUSY', `TUN device "${opts.name}" is already attached to another fd`, {
        cause: e,
      });
    }
    throw e;
  }
  let open = true;
  const close = (): void => {
    if (!open) return;
    open = false;
    for (const fd of fds) fs.closeSync(fd);
  };
  return { name, fds, close, [Symbol.dispose]: close };
}

function openTunFile(): number {
  try {
    return fs.openSync('/dev/net/tun', fs.constants.O_RDWR);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT' || err.code === 'ENODEV' || err.code === 'ENXIO') {
      throw new WeftError('UNSUPPORTED', '/dev/net/tun is missing: the kernel has no TUN driver', {
        cause: e,
      });
    }
    throw new KernelError(-(err.errno ?? -5), 'open /dev/net/tun', { cause: e });
  }
}

/** TUNSETIFF on `fd`; returns the device name the kernel chose (it fills in patterns). */
function setIff(fd: number, name: string, flags: number): string {
  const ifr = new Uint8Array(IFREQ_SIZE);
  ifr.set(Buffer.from(name, 'utf8').subarray(0, IFNAME_MAX));
  new DataView(ifr.buffer).setUint16(16, flags, true);
  libc.ioctl(fd, TUN.SETIFF, ifr, `TUNSETIFF ${name}`);
  const nul = ifr.indexOf(0);
  return Buffer.from(ifr.subarray(0, nul < 0 ? 16 : Math.min(nul, 16))).toString('utf8');
}
