/**
 * The lab's processes: daemons, etcd members and the internet server are started detached inside
 * a namespace (their own session, output appended to a log file, no pipe to us) so they outlive
 * the CLI that made them; each is recorded as pid + start time (field 22 of /proc/PID/stat), so
 * a reused pid is never mistaken for ours.
 *
 * Teardown does not depend on records: whatever runs in one of the lab's namespaces is the lab's.
 * `processesIn` compares /proc/PID/ns/net with the inode numbers of the lab's namespace pins and
 * sandbox pins; `killProcesses` sends SIGTERM, waits a bounded grace, then SIGKILL, all by pid
 * and start time, never by name.
 */
import * as fs from 'node:fs';
import type { Netns } from '../../kernel/netns.js';
import { runTool, type ToolResult } from '../../kernel/run.js';
import { notFound, WeftError } from '../../lib/errors.js';
import { processAlive, readStat } from '../../net/process.js';

export interface ProcRef {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat. */
  readonly startTime: string;
}

/** True while `ref` is still the process we recorded and has not exited (zombies count as gone). */
export function alive(ref: ProcRef): boolean {
  return processAlive(ref.pid, ref.startTime);
}

/**
 * Start `cmd` detached inside `ns` with exactly `env`, stdout and stderr appended to `log`.
 * Resolves once the process exists (its start time read). Throws NOT_FOUND when `cmd` does not
 * exist, INTERNAL when it could not be started.
 */
export async function spawnDetached(
  ns: Netns,
  cmd: string,
  args: readonly string[],
  opts: { env: Record<string, string>; log: string; cwd?: string },
): Promise<ProcRef> {
  const fd = fs.openSync(
    opts.log,
    fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT,
    0o640,
  );
  let child: ReturnType<Netns['spawn']>;
  try {
    child = ns.spawn(cmd, args, {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: opts.env,
      ...(opts.cwd !== undefined && { cwd: opts.cwd }),
    });
  } finally {
    fs.closeSync(fd);
  }
  const started = await new Promise<Error | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined));
    child.once('error', (e) => resolve(e));
  });
  child.on('error', () => {});
  if (started) {
    if ((started as NodeJS.ErrnoException).code === 'ENOENT') {
      throw notFound(`${cmd} is not installed`, { program: cmd });
    }
    throw new WeftError('INTERNAL', `cannot start ${cmd}: ${started.message}`, { cause: started });
  }
  const pid = child.pid;
  const st = pid === undefined ? undefined : readStat(pid);
  child.unref();
  if (pid === undefined || st === undefined) {
    throw new WeftError('INTERNAL', `${cmd} exited at once (see ${opts.log})`, {
      details: { log: opts.log },
    });
  }
  return { pid, startTime: st.startTime };
}

/** What a stopped `up` (Ctrl-C) throws, from whichever step it was in; the CLI says "interrupted". */
export const interrupted = (): WeftError =>
  new WeftError('INTERNAL', 'interrupted', { details: { interrupted: true } });

/**
 * `p`, or `interrupted()` as soon as `signal` fires (without a signal, `p` itself). What `p`
 * waits for is not stopped: its outcome is dropped.
 */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  p.catch(() => {}); // dropped once aborted: never an unhandled rejection
  if (signal.aborted) return Promise.reject(interrupted());
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(interrupted());
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/**
 * Run a tool inside `ns` to completion, bounded. Throws NOT_FOUND when it is not installed,
 * TIMEOUT when it outlives `timeoutMs` (it is killed), `interrupted()` at once when `signal`
 * fires: the tool is then left running, for the teardown that follows to end with everything
 * else in the lab's namespaces (so only pass a signal for a namespace of the lab).
 */
export async function runIn(
  ns: Netns,
  bin: string,
  args: readonly string[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<ToolResult> {
  const r = await untilAborted(runTool(ns, bin, args, undefined, timeoutMs), signal);
  if (!r) throw notFound(`${bin} is not installed`, { program: bin });
  return r;
}

/** The inode of a namespace file (a pin or /proc/PID/ns/net); undefined when it is gone. */
export function nsInode(p: string): number | undefined {
  try {
    return fs.statSync(p).ino;
  } catch {
    return undefined;
  }
}

/** Processes whose network namespace is one of `inodes` (this process excluded). */
export function processesIn(inodes: ReadonlySet<number>): ProcRef[] {
  if (inodes.size === 0) return [];
  const out: ProcRef[] = [];
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return [];
  }
  for (const p of pids) {
    const pid = Number(p);
    if (pid === process.pid) continue;
    let link: string;
    try {
      link = fs.readlinkSync(`/proc/${p}/ns/net`);
    } catch {
      continue; // gone, or a kernel thread
    }
    const m = /^net:\[(\d+)\]$/.exec(link);
    if (!m || !inodes.has(Number(m[1]))) continue;
    const st = readStat(pid);
    if (st && st.state !== 'Z' && st.state !== 'X') out.push({ pid, startTime: st.startTime });
  }
  return out;
}

function signal(ref: ProcRef, sig: NodeJS.Signals): void {
  if (!alive(ref)) return;
  try {
    process.kill(ref.pid, sig);
  } catch {
    // exited meanwhile
  }
}

async function waitGone(refs: readonly ProcRef[], ms: number): Promise<ProcRef[]> {
  const deadline = Date.now() + ms;
  let left = refs.filter(alive);
  let step = 10;
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, Math.min(step, Math.max(1, deadline - Date.now()))));
    step = Math.min(step * 2, 100);
    left = left.filter(alive);
  }
  return left;
}

/**
 * Stop processes: SIGTERM, up to `graceMs` to exit, then SIGKILL and up to `killWaitMs`. Each
 * signal only while pid and start time still match. Resolves with those still alive after all.
 */
export async function killProcesses(
  refs: readonly ProcRef[],
  opts: { graceMs: number; killWaitMs?: number },
): Promise<ProcRef[]> {
  for (const r of refs) signal(r, 'SIGTERM');
  const stubborn = await waitGone(refs, opts.graceMs);
  for (const r of stubborn) signal(r, 'SIGKILL');
  return waitGone(stubborn, opts.killWaitMs ?? 3000);
}

/**
 * Stop every process inside the namespaces `inodes`, repeating (bounded) for processes forked
 * meanwhile. Resolves with what is still alive (normally nothing).
 */
export async function killNamespaceProcesses(
  inodes: ReadonlySet<number>,
  opts: { graceMs: number },
): Promise<ProcRef[]> {
  let left: ProcRef[] = [];
  for (let round = 0; round < 3; round++) {
    const found = processesIn(inodes);
    if (found.length === 0) return [];
    left = await killProcesses(found, { graceMs: round === 0 ? opts.graceMs : 0 });
  }
  return [...left, ...processesIn(inodes).filter((p) => !left.some((l) => l.pid === p.pid))];
}

/** The last `bytes` of a log file ('' when there is none). */
export function logTail(file: string, bytes = 2000): string {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const len = Math.min(size, bytes);
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, size - len);
      return buf.toString('utf8');
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return '';
  }
}
