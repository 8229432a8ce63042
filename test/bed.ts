/**
 * The namespace test bed. Each test gets a Bed: it creates "host" and "container" namespaces
 * with unique names (pinned under /run/netns so `ip netns` and `ip -n` can cross-check), and
 * removes them after the test, also when it fails or times out. Every name carries the run id
 * (WEFT_TEST_RUN, set by scripts/test.mjs), whose leftover check fails the run if anything with
 * that id survives: namespaces, links, mounts, processes.
 */
import { type ChildProcess, execFile, type SpawnOptions } from 'node:child_process';
import type { TestContext } from 'node:test';
import { promisify } from 'node:util';
import { type NetHandle, openHandle } from '../src/kernel/handle.js';
import { Netns } from '../src/kernel/netns.js';

const execFileP = promisify(execFile);

/** Short id of this test run; a stable per-process fallback when run outside scripts/test.mjs. */
export const RUN_ID = process.env.WEFT_TEST_RUN ?? `x${process.pid.toString(36)}`;
export const NS_DIR = '/run/netns';
let counter = 0;

export const isRoot = (): boolean => process.getuid?.() === 0;

export interface BedNs {
  readonly ns: Netns;
  readonly h: NetHandle;
  /** Name as `ip netns` shows it, for `ip -n NAME` cross-checks. */
  readonly name: string;
}

export class Bed {
  readonly #made: BedNs[] = [];
  readonly #children: ChildProcess[] = [];
  readonly #cleanups: (() => void | Promise<void>)[] = [];

  /** A fresh namespace with `lo` up. `label` makes failures readable (host, c1, outside…). */
  ns(label = 'ns'): BedNs {
    const name = `wt-${RUN_ID}-${process.pid.toString(36)}-${(counter++).toString(36)}-${label}`;
    const ns = Netns.create(`${NS_DIR}/${name}`);
    const h = openHandle(ns);
    const b = { ns, h, name };
    this.#made.push(b);
    h.links.setUp('lo');
    return b;
  }

  /**
   * The uplink of a test "host" to its "outside" namespace (the remote client and the internet):
   * a veth pair named eth0 on both sides, both up, `hostIp`/`outsideIp` on a /24, and (unless
   * `defaultRoute` is false) the host's default route via the outside.
   */
  uplink(
    host: BedNs,
    outside: BedNs,
    o: { hostIp: string; outsideIp: string; defaultRoute?: boolean },
  ): void {
    host.h.links.add({ kind: 'veth', name: 'eth0', up: true, peer: { name: 'eth0', netns: outside.ns } });
    outside.h.links.setUp('eth0');
    host.h.addrs.add('eth0', `${o.hostIp}/24`);
    outside.h.addrs.add('eth0', `${o.outsideIp}/24`);
    if (o.defaultRoute !== false) host.h.routes.add({ dst: 'default', via: o.outsideIp });
  }

  /** Run a command inside a namespace of this bed and return its output (throws on non-zero exit). */
  async exec(b: BedNs, cmd: string, args: string[], opts: { timeoutMs?: number } = {}) {
    // Spawned inside the section (the child starts in the namespace); awaited outside it.
    let running: Promise<{ stdout: string; stderr: string }> | undefined;
    b.ns.run(() => {
      running = execFileP(cmd, args, {
        encoding: 'utf8',
        timeout: opts.timeoutMs ?? 10_000,
        killSignal: 'SIGKILL',
      });
    });
    return await running!;
  }

  /** Start a long-running process inside a namespace; it is killed at cleanup. */
  spawn(b: BedNs, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const child = b.ns.spawn(cmd, args, { stdio: 'ignore', ...opts });
    this.#children.push(child);
    return child;
  }

  /** Ping `dst` from `b` (count and deadline bounded); resolves to true when replies came back. */
  async ping(b: BedNs, dst: string, opts: { count?: number; deadlineS?: number } = {}): Promise<boolean> {
    try {
      await this.exec(b, 'ping', [
        '-n',
        '-q',
        '-c',
        String(opts.count ?? 1),
        '-w',
        String(opts.deadlineS ?? 2),
        dst,
      ]);
      return true;
    } catch {
      return false;
    }
  }

  /** `ip -j ...` inside a namespace, parsed: the cross-check against an independent reader. */
  async ipJson<T = unknown>(b: BedNs, ...args: string[]): Promise<T> {
    const { stdout } = await execFileP('ip', ['-n', b.name, '-j', ...args], { timeout: 10_000 });
    return JSON.parse(stdout || '[]') as T;
  }

  onCleanup(fn: () => void | Promise<void>): void {
    this.#cleanups.push(fn);
  }

  async cleanup(): Promise<void> {
    for (const fn of this.#cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch {
        // keep cleaning
      }
    }
    for (const c of this.#children.splice(0)) {
      if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
        const exited = new Promise((r) => c.once('exit', r));
        c.kill('SIGKILL');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
      }
    }
    // Deleting the namespace takes every link inside it along.
    for (const b of this.#made.splice(0).reverse()) b.ns.delete();
  }
}

/** A bed whose namespaces are removed after the test, whatever its outcome. */
export function bed(t: TestContext): Bed {
  const b = new Bed();
  t.after(() => b.cleanup());
  return b;
}

/** Options for tests that need root (all kernel tests): skipped with a reason otherwise. */
export const needsRoot = { skip: isRoot() ? false : 'needs root (kernel test)' } as const;

/** A lab name for a test: carries the run id (the leftover check finds what it leaves), ≤ 12 characters. */
export function testLabName(suffix: string): string {
  const n = `wt-${RUN_ID}-${suffix}`;
  if (n.length > 12) throw new Error(`lab name ${n} is too long (12 characters at most)`);
  return n;
}
