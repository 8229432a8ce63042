/**
 * The `weft` CNI plugin executable (bundled into one file, dist/cni/weft, by
 * scripts/build-cni.ts). It reads the environment and stdin, runs one command against the weft
 * daemon and prints the result or a CNI error object; stack traces go to stderr only, and only
 * with WEFT_DEBUG set. It loads node:fs, node:net and a few small modules of weft: a CNI call
 * costs little more than Node's own start.
 */
import * as fs from 'node:fs';
import { isatty } from 'node:tty';
import { ResultCache } from './cache.js';
import { DaemonClient } from './client.js';
import { CniCode, CniError } from './errors.js';
import { runCni } from './plugin.js';
import { LATEST, SUPPORTED_VERSIONS } from './result.js';

/** statfs f_type of nsfs (the filesystem of /proc/PID/ns/net and its bind mounts). */
const NSFS_MAGIC = 0x6e736673;

function netnsState(p: string): 'netns' | 'missing' | 'other' {
  try {
    if (!fs.statSync(p).isFile()) return 'other';
    return fs.statfsSync(p).type === NSFS_MAGIC ? 'netns' : 'other';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'other';
  }
}

function readStdin(): string {
  const chunks: Buffer[] = [];
  const buf = Buffer.alloc(65536);
  for (let guard = 0; guard < 1 << 16; guard++) {
    let n: number;
    try {
      n = fs.readSync(0, buf, 0, buf.length, null);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') {
        // A non-blocking pipe with nothing yet: wait a little (bounded by the guard).
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
        continue;
      }
      if (code === 'EOF' || code === 'EBADF') break;
      throw new CniError(CniCode.IOFailure, `error reading from stdin: ${(e as Error).message}`);
    }
    if (n === 0) break;
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function main(): Promise<number> {
  const env = process.env;
  if (!env.CNI_COMMAND) {
    // Run by hand, as libcni's skel answers: the about text, exit 0, stdin never read.
    process.stderr.write(
      `CNI plugin weft (a client of the weft daemon)\nCNI protocol versions supported: ${SUPPORTED_VERSIONS.join(', ')}\n`,
    );
    return 0;
  }
  let stdin = '';
  // VERSION may come without a config (or from a terminal): do not wait for one then.
  if (!(env.CNI_COMMAND === 'VERSION' && isatty(0))) stdin = readStdin();
  const out = await runCni(stdin, {
    env,
    daemon: (socket) => new DaemonClient(socket),
    cache: (dir) => new ResultCache(dir),
    netnsState,
    warn: (msg) => process.stderr.write(`weft: ${msg}\n`),
  });
  if (out.stdout) fs.writeSync(1, out.stdout);
  return out.exitCode;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    // Not reached in normal operation (runCni never throws); still never a trace on stdout.
    const msg = e instanceof Error ? e.message : String(e);
    fs.writeSync(
      1,
      `${JSON.stringify({ cniVersion: LATEST, code: CniCode.Internal, msg: `internal error: ${msg}` })}\n`,
    );
    if (process.env.WEFT_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    process.exit(1);
  },
);
