/**
 * One data-path worker of the udp backend (a worker_thread; started by udp.ts, never imported).
 *
 * The loop is flannel's proxy.c and ../shared/bench/udptun.c: poll() the fds, then
 *   tun → udp: read packets from a TUN queue (non-blocking, until empty or a bound), look each
 *     inner IPv4 destination up in the peer table, and send the batch with one sendmmsg(), the
 *     raw IP packet as the UDP payload, to the peer's public IP;
 *   udp → tun: recvmmsg() a batch, keep the datagrams whose source is a peer and whose inner
 *     destination is in this host's subnet, and write each to the TUN.
 * Everything the loop touches is allocated once: packet slots, iovecs, mmsghdrs and sockaddrs
 * live in one native block (libc.allocNative) that the syscalls see by address and JS sees
 * through DataViews, so the hot path allocates nothing and marshals nothing. The table and the
 * stop flag come from SharedArrayBuffers (table.ts), checked once per turn; poll() has a
 * timeout so that a stop is seen within `pollMs` (a thread blocked in a native call would keep
 * the process from exiting). A TUN fd reporting an error (its device was deleted) ends the
 * worker with a 'fatal' message: the backend restarts the data path on its next resync.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as libc from '../../../kernel/libc.js';
import { Router, type Shared, STAT, statsRow } from './table.js';

export interface WorkerInit {
  readonly shared: Shared;
  readonly index: number;
  /** TUN queue fds this worker reads (tun → udp); may be empty. */
  readonly tunReadFds: readonly number[];
  /** TUN fd this worker writes received packets to, or -1 when it does not receive. */
  readonly tunWriteFd: number;
  /** The UDP socket: sent on by every worker, received on by the one with tunWriteFd. */
  readonly sockFd: number;
  readonly port: number;
  /** Bytes per packet slot (at least the TUN MTU). */
  readonly slot: number;
  /** Packets per sendmmsg/recvmmsg. */
  readonly batch: number;
  readonly pollMs: number;
}

export type WorkerMessage = { type: 'ready' } | { type: 'fatal'; reason: string };

const MSGHDR = 64; // struct mmsghdr on LP64: msghdr (56) + msg_len (4) + padding
const IOVEC = 16;
const SOCKADDR = 16;
const POLLFD = 8;
const POLLIN = 0x1;
const POLL_BAD = 0x8 | 0x10 | 0x20; // POLLERR | POLLHUP | POLLNVAL
const MSG_TRUNC = 0x20;
const MSG_DONTWAIT = 0x40;
const EAGAIN = 11;
const EINTR = 4;
/** Batches per wake-up before poll() is asked again (fairness between the directions). */
const ROUNDS = 8;

function run(init: WorkerInit): void {
  const { slot, batch, sockFd, tunWriteFd } = init;
  const readFds = init.tunReadFds;
  const receives = tunWriteFd >= 0;
  const router = new Router(init.shared.control);
  const st = statsRow(init.shared, init.index);

  // One native block: [pollfds][tx: pkts iov msgs addrs][rx: pkts iov msgs addrs]
  const nPoll = readFds.length + (receives ? 1 : 0);
  const dirSize = batch * (slot + IOVEC + MSGHDR + SOCKADDR);
  const pollOff = 0;
  const txOff = align(nPoll * POLLFD);
  const rxOff = txOff + dirSize;
  const mem = libc.allocNative(rxOff + dirSize);
  const base = mem.addr;
  const dv = new DataView(mem.buffer);
  const u8 = new Uint8Array(mem.buffer);

  interface Dir {
    pkts: number;
    iov: number;
    msgs: number;
    addrs: number;
  }
  const layout = (off: number): Dir => ({
    pkts: off,
    iov: off + batch * slot,
    msgs: off + batch * (slot + IOVEC),
    addrs: off + batch * (slot + IOVEC + MSGHDR),
  });
  const tx = layout(txOff);
  const rx = layout(rxOff);
  const setPtr = (off: number, addr: number) => dv.setBigUint64(off, BigInt(addr), true);
  for (const d of [tx, rx]) {
    for (let i = 0; i < batch; i++) {
      const iov = d.iov + i * IOVEC;
      const msg = d.msgs + i * MSGHDR;
      const addr = d.addrs + i * SOCKADDR;
      setPtr(iov, base + d.pkts + i * slot);
      dv.setUint32(iov + 8, slot, true);
      setPtr(msg, base + addr); // msg_name
      dv.setUint32(msg + 8, SOCKADDR, true); // msg_namelen
      setPtr(msg + 16, base + iov); // msg_iov
      dv.setUint32(msg + 24, 1, true); // msg_iovlen
      dv.setUint16(addr, libc.AF_INET, true);
      dv.setUint16(addr + 2, init.port, false);
    }
  }
  let p = pollOff;
  for (const fd of readFds) {
    dv.setInt32(p, fd, true);
    dv.setInt16(p + 4, POLLIN, true);
    p += POLLFD;
  }
  const sockPoll = receives ? p : -1;
  if (receives) {
    dv.setInt32(p, sockFd, true);
    dv.setInt16(p + 4, POLLIN, true);
  }
  for (const fd of readFds) libc.setNonBlocking(fd);
  const txLen = new Int32Array(batch);

  const flush = (k: number): void => {
    let off = 0;
    while (off < k) {
      const r = libc.raw.sendmmsg(sockFd, base + tx.msgs + off * MSGHDR, k - off, 0);
      if (r < 0) {
        if (libc.errno() === EINTR) continue;
        st[STAT.dropSendError]! += 1; // the first of the rest failed: skip it
        off++;
        continue;
      }
      for (let i = off; i < off + r; i++) {
        st[STAT.txPackets]! += 1;
        st[STAT.txBytes]! += txLen[i]!;
      }
      off += r;
    }
  };

  /** tun → udp for one queue; false when the fd failed (not EAGAIN). */
  const fromTun = (fd: number): boolean => {
    let k = 0;
    let seen = 0;
    const limit = batch * ROUNDS;
    while (seen < limit) {
      const at = tx.pkts + k * slot;
      const n = libc.raw.read(fd, base + at, slot);
      if (n < 0) {
        const e = libc.errno();
        if (e === EINTR) continue;
        if (k > 0) flush(k);
        return e === EAGAIN;
      }
      seen++;
      if (n < 20 || u8[at]! >> 4 !== 4) {
        st[STAT.dropMalformed]! += 1;
        continue;
      }
      const peer = router.lookup(dv.getUint32(at + 16, false));
      if (peer < 0) {
        st[STAT.dropNoRoute]! += 1;
        continue;
      }
      dv.setUint32(tx.addrs + k * SOCKADDR + 4, peer, false);
      dv.setUint32(tx.iov + k * IOVEC + 8, n, true);
      txLen[k] = n;
      if (++k === batch) {
        flush(k);
        k = 0;
      }
    }
    if (k > 0) flush(k);
    return true;
  };

  let used = batch;
  const fromUdp = (): void => {
    for (let round = 0; round < ROUNDS; round++) {
      for (let i = 0; i < used; i++) {
        const msg = rx.msgs + i * MSGHDR;
        dv.setUint32(msg + 8, SOCKADDR, true); // msg_namelen is value-result
        dv.setUint32(rx.iov + i * IOVEC + 8, slot, true);
      }
      const r = libc.raw.recvmmsg(sockFd, base + rx.msgs, batch, MSG_DONTWAIT);
      if (r <= 0) {
        used = 0;
        return;
      }
      used = r;
      for (let i = 0; i < r; i++) {
        const msg = rx.msgs + i * MSGHDR;
        const at = rx.pkts + i * slot;
        const len = dv.getUint32(msg + 56, true);
        if ((dv.getInt32(msg + 48, true) & MSG_TRUNC) !== 0 || len < 20 || u8[at]! >> 4 !== 4) {
          st[STAT.dropMalformed]! += 1;
          continue;
        }
        if (!router.knownPeer(dv.getUint32(rx.addrs + i * SOCKADDR + 4, false))) {
          st[STAT.dropUnknownPeer]! += 1;
          continue;
        }
        if (!router.isOwn(dv.getUint32(at + 16, false))) {
          st[STAT.dropNotOurs]! += 1;
          continue;
        }
        if (libc.raw.write(tunWriteFd, base + at, len) < 0) {
          st[STAT.dropWriteError]! += 1;
          continue;
        }
        st[STAT.rxPackets]! += 1;
        st[STAT.rxBytes]! += len;
      }
      if (r < batch) return;
    }
  };

  router.refresh();
  parentPort?.postMessage({ type: 'ready' } satisfies WorkerMessage);
  let fatal: string | undefined;
  try {
    while (!router.stopped) {
      const n = libc.raw.poll(base + pollOff, nPoll, init.pollMs);
      // After the wait, not before: a table published while we slept applies to these packets.
      router.refresh();
      if (n <= 0) continue; // timeout or EINTR
      for (let i = 0; i < readFds.length; i++) {
        const rev = dv.getInt16(pollOff + i * POLLFD + 6, true);
        if (rev === 0) continue;
        if ((rev & POLLIN) !== 0 ? !fromTun(readFds[i]!) : (rev & POLL_BAD) !== 0) {
          fatal = `TUN queue fd ${readFds[i]} failed (poll events 0x${rev.toString(16)}, errno ${libc.errno()})`;
        }
      }
      if (fatal !== undefined) break;
      if (sockPoll >= 0 && dv.getInt16(sockPoll + 6, true) !== 0) fromUdp();
    }
  } finally {
    mem.free();
  }
  if (fatal !== undefined) parentPort?.postMessage({ type: 'fatal', reason: fatal } satisfies WorkerMessage);
}

const align = (n: number): number => Math.ceil(n / 64) * 64;

run(workerData as WorkerInit);
