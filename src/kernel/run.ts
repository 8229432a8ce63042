/**
 * Running a tool inside a namespace: the child is forked from a switched section (so it starts
 * in the namespace), fed `stdin`, its output collected up to a cap, and killed by pid when it
 * outlives its time limit. Used for the few jobs that have no netlink API here (nft,
 * iptables-save/restore, conntrack).
 */
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WeftError } from '../lib/errors.js';
import type { Netns } from './netns.js';

/** The PATH a process gets when it has none (sandboxes, the lab's tools). */
export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * Where the executable `name` is in the folders of `searchPath` (a PATH string, default this
 * process's PATH or DEFAULT_PATH), first match; undefined when none has it.
 */
export function findProgram(
  name: string,
  searchPath: string = process.env.PATH ?? DEFAULT_PATH,
): string | undefined {
  for (const d of searchPath.split(':')) {
    if (!d) continue;
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

export interface ToolResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

const OUTPUT_MAX = 64 << 20;

/**
 * Run `bin` inside `ns` with `stdin` (or nothing) on its standard input and a time limit.
 * Resolves undefined when the executable does not exist.
 * @throws WeftError TIMEOUT (the process was killed), INTERNAL (cannot start it, too much output).
 */
export function runTool(
  ns: Netns,
  bin: string,
  args: readonly string[],
  stdin: string | undefined,
  timeoutMs: number,
): Promise<ToolResult | undefined> {
  return new Promise((resolve, reject) => {
    let child: ChildProcess;
    try {
      child = ns.spawn(bin, args, {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: { ...process.env, LC_ALL: 'C' },
      });
    } catch (e) {
      reject(e);
      return;
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    let failure: WeftError | undefined;
    const what = `${bin} ${args.join(' ')} in ${ns.path}`;
    const kill = (): void => {
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    };
    const collect = (into: Buffer[]) => (chunk: Buffer) => {
      size += chunk.length;
      if (size > OUTPUT_MAX) {
        failure ??= new WeftError('INTERNAL', `${what}: more than ${OUTPUT_MAX} bytes of output`);
        kill();
        return;
      }
      into.push(chunk);
    };
    const timer = setTimeout(() => {
      failure ??= new WeftError('TIMEOUT', `${what}: no answer in ${timeoutMs} ms`);
      kill();
    }, timeoutMs);
    child.stdout?.on('data', collect(out));
    child.stderr?.on('data', collect(err));
    child.stdin?.on('error', () => {
      // exited before reading everything: its stderr and exit code say why
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (e.code === 'ENOENT') resolve(undefined);
      else reject(new WeftError('INTERNAL', `cannot run ${bin}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (failure) reject(failure);
      else
        resolve({
          code,
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8'),
        });
    });
    child.stdin?.end(stdin ?? '');
  });
}
