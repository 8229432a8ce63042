/**
 * weft's default places and the one rule for where the daemon's API socket is, shared by the
 * daemon, the CLI and the CNI plugin (which must load little, hence a module with no imports but
 * node's path). An empty variable counts as unset, as a shell user means it.
 */
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
