/**
 * The Host context: everything that makes one machine for weft. Its network namespace (the
 * process's own in production, a lab host's inside the lab), its state dir, run dir and API
 * socket. Every component takes a Host; nothing reads a global path, which is what lets the lab
 * run several hosts on one machine and every test run in throwaway namespaces.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { Netns } from '../kernel/netns.js';
import { invalid } from '../lib/errors.js';
import { runDirFrom, socketFrom, stateDirFrom } from '../lib/paths.js';

export interface Host {
  /** A name for logs and the lab (defaults to the machine's hostname). */
  readonly name: string;
  readonly ns: Netns;
  /** Durable state (default /var/lib/weft). */
  readonly stateDir: string;
  /** Runtime state: sandbox namespace pins, sandbox files, logs (default /run/weft). */
  readonly runDir: string;
  /** The daemon's API socket (default <runDir>/weft.sock). */
  readonly socketPath: string;
}

export interface HostOptions {
  name?: string;
  stateDir?: string;
  runDir?: string;
  socketPath?: string;
}

/** The Host this process runs on: its own namespace, dirs from options, env or defaults. */
export function localHost(opts: HostOptions = {}, env: NodeJS.ProcessEnv = process.env): Host {
  const stateDir = opts.stateDir ?? stateDirFrom(env);
  const runDir = opts.runDir ?? runDirFrom(env);
  for (const [what, p] of [
    ['state dir', stateDir],
    ['run dir', runDir],
  ] as const) {
    if (!path.isAbsolute(p)) throw invalid(`the ${what} must be an absolute path, not "${p}"`);
  }
  return {
    name: opts.name ?? env.WEFT_HOST_NAME ?? os.hostname(),
    ns: Netns.self(),
    stateDir,
    runDir,
    socketPath: opts.socketPath ?? socketFrom(env, runDir),
  };
}
