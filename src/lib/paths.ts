/**
 * weft's default places and the one rule for where the daemon's API socket is, shared by the
 * daemon, the CLI and the CNI plugin (which must load little, hence a module with no imports but
 * node's own). An empty variable counts as unset, as a shell user means it. And the one way
 * weft replaces a file it owns.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Durable state: the host state database, the embedded store. */
export const DEFAULT_STATE_DIR = '/var/lib/weft';
/** Runtime state: the API socket, sandbox namespace pins, sandbox files, logs. */
export const DEFAULT_RUN_DIR = '/run/weft';

type Env = Readonly<Record<string, string | undefined>>;

/** $WEFT_RUN_DIR, else /run/weft. */
export const runDirFrom = (env: Env): string => env.WEFT_RUN_DIR || DEFAULT_RUN_DIR;

/** $WEFT_STATE_DIR, else /var/lib/weft. */
export const stateDirFrom = (env: Env): string => env.WEFT_STATE_DIR || DEFAULT_STATE_DIR;

/** Where a client finds the daemon: $WEFT_SOCKET, else weft.sock in `runDir` (default the env's). */
export const socketFrom = (env: Env, runDir: string = runDirFrom(env)): string =>
  env.WEFT_SOCKET || path.join(runDir, 'weft.sock');

/**
 * Replace `file` with `text` (folders made as needed) so that a crash leaves the old file or the
 * new one, never a half: a temp file written and fsynced, then renamed over it.
 */
export function writeAtomic(file: string, text: string, mode = 0o644): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    fs.writeSync(fd, text);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}
