/**
 * nftables in-process, through libnftables (the library `nft` itself is a thin front end of;
 * Debian's nftables package ships it). One call = one context, one buffer, one transaction:
 * `nft_run_cmd_from_buffer` parses the whole script and sends it to the kernel as one batch, so
 * it is as atomic as `nft -f`, without starting a process (~20 ms of fork and exec saved per
 * apply). The context is made and freed inside the caller's switched section, so its netlink
 * socket belongs to that namespace. Errors come back as nft prints them (same text as `nft -f`).
 * When the library is missing, `available()` says so and callers spawn `nft` instead.
 */
import * as fs from 'node:fs';
import koffi from 'koffi';

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
      memfd: koffi.load('libc.so.6').func('int memfd_create(const char *name, unsigned int flags)'),
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
 * Run one script (synchronously: call it inside the namespace's switched section). Returns
 * nft's exit status as the library gives it (0 ok), its output and its error text. A script
 * (`file`) is read from a memfd as `nft -f FILE` reads a file, so errors name their line and
 * column as nft's do (from a buffer the library would not say the line); a single command
 * (`list …`) runs from the buffer.
 */
export function runBuffer(
  script: string,
  opts: { outputFlags?: number; file?: boolean } = {},
): { code: number; stdout: string; stderr: string } {
  const l = load();
  if (!l) throw new Error('libnftables is not available');
  const ctx = l.ctxNew(0);
  if (!ctx) return { code: 1, stdout: '', stderr: 'Error: nft_ctx_new failed' };
  let fd = -1;
  try {
    l.bufferOutput(ctx);
    l.bufferError(ctx);
    if (opts.outputFlags) l.setOutputFlags(ctx, opts.outputFlags);
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
    l.ctxFree(ctx);
  }
}

const MFD_CLOEXEC = 1;
