/**
 * A netlink socket (NETLINK_ROUTE by default; NETLINK_NETFILTER for ctnetlink, see
 * conntrack.ts) and the request/answer exchange over it. rtnetlink and nfnetlink handle a
 * request inside the sendto() call, so the answer is already queued when sendto returns; a
 * blocking recv with a timeout (SO_RCVTIMEO) is therefore both the fastest path and safe from
 * hanging. The socket is bound to the namespace of the thread that created it (see netns.ts).
 *
 * Requests always ask for an ACK and for extended ACK text, so a failure carries the kernel's
 * own explanation ("Nexthop has invalid gateway"). Dumps interrupted by concurrent changes
 * (NLM_F_DUMP_INTR) are retried a few times, as plugins' netlinksafe does.
 */
import { KernelError, WeftError } from '../lib/errors.js';
import { AF, NETLINK_OPT, NLM_F, NLMSG, rtmName, SOL_NETLINK } from '../netlink/consts.js';
import {
  type Body,
  encodeMessage,
  type FixedCodec,
  type NlMessage,
  parseDone,
  parseError,
  parseMessages,
} from '../netlink/message.js';
import * as libc from './libc.js';

const NETLINK_ROUTE = 0;
const RECV_BUF = 1 << 20;
/**
 * One receive buffer for every socket of this thread (a module instance per thread): answers
 * are copied out before the call returns, and a 1 MiB buffer per socket (one per sandbox
 * namespace) cost ~0.4 ms of allocation and GC pressure per container.
 */
let recvBuf: Uint8Array | undefined;
const DUMP_RETRIES = 5;

/** sockaddr_nl of the kernel (pid 0). */
function kernelAddr(): Uint8Array {
  const kernel = new Uint8Array(12);
  new DataView(kernel.buffer).setUint16(0, AF.NETLINK, true);
  return kernel;
}

export interface RequestOptions {
  /** Human description for errors, e.g. `add link veth0`. */
  readonly what?: string;
  /** Extra NLM_F_* flags (CREATE, EXCL, REPLACE, APPEND, DUMP…). */
  readonly flags?: number;
}

export class NetlinkSocket {
  #fd: number;
  #seq = Math.floor(Math.random() * 0x7fffffff);
  /** A `requestAsync` is in flight: its answer must not be read by another request. */
  #busy = false;
  #closeWhenIdle = false;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Open a socket in the calling thread's current network namespace: NETLINK_ROUTE unless
   * `protocol` names another netlink family (e.g. NETLINK_NETFILTER, 12).
   * @throws KernelError from socket() (UNSUPPORTED: EPROTONOSUPPORT for a protocol the kernel lacks).
   */
  static open(opts: { timeoutMs?: number; protocol?: number } = {}): NetlinkSocket {
    const fd = libc.socket(AF.NETLINK, libc.SOCK.RAW | libc.SOCK.CLOEXEC, opts.protocol ?? NETLINK_ROUTE);
    try {
      const addr = new Uint8Array(12); // sockaddr_nl, pid 0: the kernel assigns one
      new DataView(addr.buffer).setUint16(0, AF.NETLINK, true);
      libc.bind(fd, addr);
      libc.setsockoptInt(fd, libc.SOL_SOCKET, libc.SO.SNDBUF, 1 << 20);
      libc.setsockoptInt(fd, libc.SOL_SOCKET, libc.SO.RCVBUF, 1 << 20);
      libc.setsockoptInt(fd, SOL_NETLINK, NETLINK_OPT.EXT_ACK, 1);
      libc.setsockoptInt(fd, SOL_NETLINK, NETLINK_OPT.CAP_ACK, 1);
      const tv = new Uint8Array(16); // struct timeval
      const ms = opts.timeoutMs ?? 10_000;
      new DataView(tv.buffer).setBigInt64(0, BigInt(Math.floor(ms / 1000)), true);
      new DataView(tv.buffer).setBigInt64(8, BigInt((ms % 1000) * 1000), true);
      libc.setsockopt(fd, libc.SOL_SOCKET, libc.SO.RCVTIMEO, tv);
    } catch (e) {
      libc.close(fd);
      throw e;
    }
    return new NetlinkSocket(fd);
  }

  get closed(): boolean {
    return this.#fd < 0;
  }

  close(): void {
    // The pool thread still uses the fd: it is closed once that request settles.
    if (this.#busy) {
      this.#closeWhenIdle = true;
      return;
    }
    if (this.#fd >= 0) {
      libc.close(this.#fd);
      this.#fd = -1;
    }
  }

  #nextSeq(): number {
    this.#seq = (this.#seq + 1) & 0x7fffffff || 1;
    return this.#seq;
  }

  #send(bytes: Uint8Array): void {
    libc.sendto(this.#open(), bytes, kernelAddr());
  }

  #open(): number {
    if (this.#fd < 0) throw new WeftError('INTERNAL', 'netlink socket is closed');
    if (this.#busy) throw new WeftError('INTERNAL', 'netlink socket is busy with an asynchronous request');
    return this.#fd;
  }

  /** True while a `requestAsync` is in flight (other requests must use another socket). */
  get busy(): boolean {
    return this.#busy;
  }

  #recv(what: string): NlMessage[] {
    let n: number;
    recvBuf ??= new Uint8Array(RECV_BUF);
    const buf = recvBuf;
    try {
      n = libc.recv(this.#fd, buf, libc.MSG.TRUNC);
    } catch (e) {
      if (e instanceof KernelError && e.code === 'TIMEOUT') {
        throw new KernelError(e.errno, what, { message: 'the kernel did not answer in time', cause: e });
      }
      throw e;
    }
    if (n > buf.length) throw new WeftError('INTERNAL', `${what}: netlink answer truncated (${n} bytes)`);
    // Copy: the receive buffer is reused by the next call.
    return parseMessages(buf.slice(0, n));
  }

  /**
   * Send one request and return the messages answering it (for a GET, the object; for changes,
   * usually none). Throws a KernelError with the kernel's errno and extended ACK text.
   */
  request<H>(type: number, codec: FixedCodec<H>, body: Body<H>, opts: RequestOptions = {}): NlMessage[] {
    const seq = this.#nextSeq();
    const what = opts.what ?? rtmName(type);
    const flags = NLM_F.REQUEST | NLM_F.ACK | (opts.flags ?? 0);
    this.#send(encodeMessage({ type, flags, seq, pid: 0 }, codec, body));
    return this.#answer(seq, what);
  }

  /**
   * `request` with the sendto() — and so the kernel's work on it — on libuv's thread pool: the
   * calling thread is free meanwhile (creating a veth pair costs ~1.2 ms of kernel time). The
   * socket takes no other request until it settles (they throw INTERNAL): give it one of its
   * own. Throws what `request` throws.
   */
  async requestAsync<H>(
    type: number,
    codec: FixedCodec<H>,
    body: Body<H>,
    opts: RequestOptions = {},
  ): Promise<NlMessage[]> {
    const fd = this.#open();
    const seq = this.#nextSeq();
    const what = opts.what ?? rtmName(type);
    const flags = NLM_F.REQUEST | NLM_F.ACK | (opts.flags ?? 0);
    this.#busy = true;
    try {
      await libc.sendtoAsync(fd, encodeMessage({ type, flags, seq, pid: 0 }, codec, body), kernelAddr());
      // The answer was queued before sendto returned.
      return this.#answer(seq, what);
    } finally {
      this.#busy = false;
      if (this.#closeWhenIdle) this.close();
    }
  }

  /** The answer to request `seq`: its messages, or the kernel's error thrown. */
  #answer(seq: number, what: string): NlMessage[] {
    const out: NlMessage[] = [];
    for (;;) {
      for (const m of this.#recv(what)) {
        if (m.seq !== seq) continue; // a stale answer of an earlier, timed-out request
        if (m.type === NLMSG.ERROR) {
          const err = parseError(m);
          if (err.errno === 0) return out;
          throw new KernelError(err.errno, what, err.message ? { message: err.message } : {});
        }
        if (m.type === NLMSG.DONE) return out;
        out.push(m);
      }
    }
  }

  /** A dump request (NLM_F_DUMP): every object of a kind, retried when the kernel says interrupted. */
  dump<H>(type: number, codec: FixedCodec<H>, body: Body<H>, opts: RequestOptions = {}): NlMessage[] {
    const what = opts.what ?? `dump ${rtmName(type)}`;
    for (let attempt = 1; ; attempt++) {
      const seq = this.#nextSeq();
      const flags = NLM_F.REQUEST | NLM_F.DUMP | (opts.flags ?? 0);
      this.#send(encodeMessage({ type, flags, seq, pid: 0 }, codec, body));
      const out: NlMessage[] = [];
      let interrupted = false;
      let done = false;
      while (!done) {
        for (const m of this.#recv(what)) {
          if (m.seq !== seq) continue;
          if (m.flags & NLM_F.DUMP_INTR) interrupted = true;
          if (m.type === NLMSG.DONE) {
            const errno = parseDone(m);
            if (errno !== 0) throw new KernelError(errno, what);
            done = true;
            break;
          }
          if (m.type === NLMSG.ERROR) {
            const err = parseError(m);
            if (err.errno === 0) {
              done = true;
              break;
            }
            throw new KernelError(err.errno, what, err.message ? { message: err.message } : {});
          }
          out.push(m);
        }
      }
      if (!interrupted) return out;
      if (attempt >= DUMP_RETRIES) {
        throw new WeftError('BUSY', `${what}: dump interrupted ${attempt} times by concurrent changes`);
      }
    }
  }
}
