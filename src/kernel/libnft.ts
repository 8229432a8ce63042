/**
 * nftables in-process, through libnftables (the library `nft` itself is a thin front end of;
 * Debian's nftables package ships it). One call = one buffer, one transaction:
 * `nft_run_cmd_from_buffer` parses the whole script and sends it to the kernel as one batch, so
 * it is as atomic as `nft -f`, without starting a process (~20 ms of fork and exec saved per
 * apply). A context (NftSession) is made inside the caller's switched section, so its netlink
 * socket belongs to that namespace, and kept between calls (why: see NftSession). Errors come
 * back as nft prints them (same text as `nft -f`).
 * When the library is missing, `available()` says so and callers spawn `nft` instead.
 */
import * as fs from 'node:fs';
import koffi from 'koffi';
import { library as libc } from './libc.js';

interface Lib {
  ctxNew: (flags: number) => unknown;
  ctxFree: (ctx: unknown) => void;
  bufferOutput: (ctx: unknown) => number;
  bufferError: (ctx: unknown) => number;
  outputBuffer: (ctx: unknown) => string | null;
  errorBuffer: (ctx: unknown) => string | null;
  setOutputFlags: (ctx: unknown, flags: number) => void;
  run: (ctx: unknown, buf: string) => number;
  runFile: (ctx: unknown, path: string) => number;
  memfd: (name: string, flags: number) => number;
  mallocTrim: (pad: number) => number;
}

/** NFT_CTX_OUTPUT_JSON of libnftables(3). */
export const NFT_OUTPUT_JSON = 1 << 4;

let lib: Lib | null | undefined;

function load(): Lib | null {
  if (lib !== undefined) return lib;
  try {
    const l = koffi.load('libnftables.so.1');
    lib = {
      ctxNew: l.func('void *nft_ctx_new(uint32_t flags)'),
      ctxFree: l.func('void nft_ctx_free(void *ctx)'),
      bufferOutput: l.func('int nft_ctx_buffer_output(void *ctx)'),
      bufferError: l.func('int nft_ctx_buffer_error(void *ctx)'),
      outputBuffer: l.func('const char *nft_ctx_get_output_buffer(void *ctx)'),
      errorBuffer: l.func('const char *nft_ctx_get_error_buffer(void *ctx)'),
      setOutputFlags: l.func('void nft_ctx_output_set_flags(void *ctx, unsigned int flags)'),
      run: l.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)'),
      runFile: l.func('int nft_run_cmd_from_filename(void *ctx, const char *filename)'),
      memfd: libc.func('int memfd_create(const char *name, unsigned int flags)'),
      mallocTrim: libc.func('int malloc_trim(size_t pad)'),
    };
  } catch {
    lib = null;
  }
  return lib;
}

/** Whether libnftables can be used here (and WEFT_NFT_SPAWN is not set). */
export function available(): boolean {
  return process.env.WEFT_NFT_SPAWN === undefined && load() !== null;
}

/**
 * A libnftables context kept open between scripts. Why kept: the context owns a
 * NETLINK_NETFILTER socket, and releasing such a socket makes nf_tables finish the clean-up of
 * earlier transactions synchronously (its NETLINK_URELEASE notifier flushes the pending
 * destroy work, which waits for an RCU grace period): a fresh context per script made every
 * transaction that deleted a rule or an element cost ~16 ms more (measured: flush of a chain
 * 8-24 ms with a context per call, 0.03 ms with a kept one). The kernel then frees the old
 * rules in its own worker, off our path.
 *
 * Create it inside the namespace's switched section (its socket belongs to that namespace) and
 * call `run` there too. `close()` frees it; closing right after a deleting transaction pays the
 * wait once, closing after an idle moment pays nothing. A kept socket keeps its namespace
 * alive: owners close it when done with the namespace.
 */
export class NftSession {
  #ctx: unknown;

  /** @throws Error when libnftables is missing or no context can be made. */
  constructor() {
    const l = load();
    if (!l) throw new Error('libnftables is not available');
    const ctx = l.ctxNew(0);
    if (!ctx) throw new Error('nft_ctx_new failed');
    l.bufferOutput(ctx);
    l.bufferError(ctx);
    this.#ctx = ctx;
  }

  get closed(): boolean {
    return this.#ctx === undefined;
  }

  /**
   * Run one script (synchronously, inside the namespace's switched section). Returns nft's exit
   * status as the library gives it (0 ok), its output and its error text. A script (`file`) is
   * read from a memfd as `nft -f FILE` reads a file, so errors name their line and column as
   * nft's do (from a buffer the library would not say the line); a single command (`list …`)
   * runs from the buffer. Both buffers are read after every run, which also rewinds them.
   * @throws Error after close().
   */
  run(script: string, opts: { outputFlags?: number; file?: boolean } = {}): NftRunResult {
    const l = load();
    const ctx = this.#ctx;
    if (!l || ctx === undefined) throw new Error('libnftables session is closed');
    let fd = -1;
    try {
      l.setOutputFlags(ctx, opts.outputFlags ?? 0);
      let rc: number;
      if (opts.file) {
        fd = l.memfd('weft-nft', MFD_CLOEXEC);
        if (fd < 0) return { code: 1, stdout: '', stderr: 'Error: memfd_create failed' };
        fs.writeSync(fd, script);
        rc = l.runFile(ctx, `/proc/self/fd/${fd}`);
      } else {
        rc = l.run(ctx, script);
      }
      return { code: rc === 0 ? 0 : 1, stdout: l.outputBuffer(ctx) ?? '', stderr: l.errorBuffer(ctx) ?? '' };
    } finally {
      if (fd >= 0) fs.closeSync(fd);
    }
  }

  /**
   * Free the context and its socket (idempotent), and give the freed memory back to the system
   * (malloc_trim): the library's many small allocations otherwise stay in the process as
   * fragments (measured: ~10 MiB more resident with 200 containers).
   */
  close(): void {
    const ctx = this.#ctx;
    this.#ctx = undefined;
    if (ctx === undefined) return;
    const l = load();
    l?.ctxFree(ctx);
    l?.mallocTrim(0);
  }
}

export interface NftRunResult {
  code: number;
  stdout: string;
  stderr: string;
}

const MFD_CLOEXEC = 1;
