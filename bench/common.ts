/**
 * What the benchmarks share (bench/attach.ts, cni.ts, overlay.ts, udp.ts): figures (percentile,
 * median); a namespace pinned for a run with lo up; a child process stopped by pid within a
 * bounded grace; a weft daemon spawned inside a namespace, waited for until it answers /readyz,
 * and stopped with its sandboxes (containers through the API, then the daemon by pid, then any
 * process left in its sandbox pins, then the pins); one CNI plugin run as a runtime runs it; and
 * kernel VXLAN configured by hand with `ip` on a testbed of src/net/backends/testbed.ts (the
 * reference the weft backends are measured against). Nothing here keeps state: each benchmark
 * records what it made and removes it.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ApiClient } from '../src/entry/client.js';
import { runCniPlugin } from '../src/entry/cni/testkit.js';
import { openHandle } from '../src/kernel/handle.js';
import { Netns } from '../src/kernel/netns.js';
import { type BedNs, setPodMtu, type Testbed } from '../src/net/backends/testbed.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The p-th percentile (nearest rank) of `xs`; NaN when empty. */
export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN;
}

/** The median of `xs` (the mean of the middle two for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * A namespace pinned at /run/netns/`name`, lo up; the caller records it and deletes it.
 * Throws what Netns.create and the netlink handle throw (EXISTS for a name in use).
 */
export function pinNs(name: string): BedNs {
  const ns = Netns.create(`/run/netns/${name}`);
  const b = { ns, h: openHandle(ns), name };
  b.h.links.setUp('lo');
  return b;
}

/**
 * SIGTERM, then SIGKILL after `graceMs`; resolves once the child exited or `waitMs` passed
 * (bounded). Nothing to do for a child that already ended. Does not throw.
 */
export async function stopChild(c: ChildProcess, graceMs: number, waitMs = graceMs + 2000): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  const t = setTimeout(() => c.kill('SIGKILL'), graceMs);
  await Promise.race([exited, sleep(waitMs)]);
  clearTimeout(t);
}

/**
 * `node ARGS…` (a weft daemon's command line) spawned inside `ns`, its stdout and stderr appended
 * to `logFile`; does not wait. Throws what opening `logFile` throws.
 */
export function spawnDaemon(ns: Netns, args: string[], logFile: string): ChildProcess {
  const fd = fs.openSync(logFile, 'a');
  try {
    return ns.spawn(process.execPath, args, { stdio: ['ignore', fd, fd] });
  } finally {
    fs.closeSync(fd);
  }
}

export interface ReadyOptions {
  /** Named in the errors ("daemon NAME exited"). */
  readonly name?: string;
  /** The log to show in the errors. */
  readonly log: () => string;
  readonly timeoutMs: number;
  readonly pollMs: number;
}

/**
 * Wait (bounded) until the daemon answers GET /readyz. Throws an Error with its log when it
 * exits first or is not ready within `timeoutMs`.
 */
export async function waitReady(child: ChildProcess, api: ApiClient, o: ReadyOptions): Promise<void> {
  const what = o.name === undefined ? 'daemon' : `daemon ${o.name}`;
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited:\n${o.log()}`);
    try {
      await api.request('GET', '/readyz');
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`${what} not ready:\n${o.log()}`);
      await sleep(o.pollMs);
    }
  }
}

/** Pids whose network namespace is one of the pins under `dir` (the sandboxes' processes). */
export function pidsInPins(dir: string): number[] {
  let pins: string[];
  try {
    pins = fs.readdirSync(dir).map((f) => path.join(dir, f));
  } catch {
    return [];
  }
  const inodes = new Set<number>();
  for (const p of pins) {
    try {
      inodes.add(fs.statSync(p).ino);
    } catch {}
  }
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      if (inodes.has(fs.statSync(`/proc/${e}/ns/net`).ino)) out.push(Number(e));
    } catch {}
  }
  return out;
}

/**
 * A daemon and its sandboxes gone: while it runs, its containers removed through the API (their
 * processes outlive it) and then the daemon (by pid, SIGKILL after 10 s); then any process left
 * in the sandbox pins under `runDir`/netns (SIGKILL) and the pins. Does not throw.
 */
export async function stopDaemon(child: ChildProcess, api: ApiClient, runDir: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    try {
      const list = await api.request<{ name: string }[]>('GET', '/v1/containers');
      for (const c of list) await api.request('DELETE', `/v1/containers/${c.name}?force=1`).catch(() => {});
    } catch {}
    await stopChild(child, 10_000);
  }
  const pinDir = path.join(runDir, 'netns');
  for (const pid of pidsInPins(pinDir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  try {
    for (const f of fs.readdirSync(pinDir)) Netns.remove(path.join(pinDir, f));
  } catch {}
}

/** VmRSS of a process, and the anonymous part of it (heap, stacks: not the mapped binaries), KiB. */
export function rssKiB(pid: number): { rss: number; anon: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status)?.[1] ?? Number.NaN);
  return { rss: kib('VmRSS'), anon: kib('RssAnon') };
}

/**
 * Run one CNI plugin executable `file` inside `host` with the CNI_* environment `env` (PATH is
 * added) and `conf` on stdin, killed after 30 s. Resolves to its parsed stdout (undefined when
 * empty); rejects with its output on a non-zero exit.
 */
export async function runPlugin(
  host: Netns,
  file: string,
  env: Record<string, string>,
  conf: unknown,
): Promise<unknown> {
  const r = await runCniPlugin(host, file, env, conf);
  if (r.code !== 0) {
    throw new Error(`${path.basename(file)} ${env.CNI_COMMAND} exited ${r.code}: ${r.stdout} ${r.stderr}`);
  }
  return r.stdout.trim() ? JSON.parse(r.stdout) : undefined;
}

/** `ip -n NS ARGS…`, bounded; throws with ip's stderr on a failure. */
export const ipIn = (b: BedNs, ...args: string[]) =>
  execFileSync('ip', ['-n', b.name, ...args], { stdio: 'pipe', timeout: 10_000 });

/**
 * Kernel VXLAN by hand on a testbed's hosts (vx0, VNI 1, port 8472, MTU 1450, no learning):
 * per peer a permanent neighbour, an FDB entry to its underlay address and a route to its /24
 * (10.244.<i+1>.0/24); the pods' MTU set to match. Undo: delete vx0 on each host.
 * Throws the failing `ip`/`bridge` command's error.
 */
export function vxlanByHand(tb: Testbed): void {
  const macs = tb.hosts.map((_, i) => `02:42:0a:f4:${(i + 1).toString(16).padStart(2, '0')}:00`);
  for (const [i, h] of tb.hosts.entries()) {
    ipIn(h.ns, 'link', 'add', 'vx0', 'address', macs[i]!, 'type', 'vxlan', 'id', '1', 'dstport', '8472');
    ipIn(
      h.ns,
      'link',
      'set',
      'vx0',
      'type',
      'vxlan',
      'id',
      '1',
      'local',
      h.publicIp,
      'dev',
      'eth0',
      'nolearning',
    );
    ipIn(h.ns, 'link', 'set', 'vx0', 'mtu', '1450', 'up');
    ipIn(h.ns, 'addr', 'add', `10.244.${i + 1}.0/32`, 'dev', 'vx0');
    setPodMtu(h, 1450);
  }
  for (const [i, h] of tb.hosts.entries()) {
    for (const [j, o] of tb.hosts.entries()) {
      if (i === j) continue;
      const gw = `10.244.${j + 1}.0`;
      ipIn(h.ns, 'neigh', 'add', gw, 'lladdr', macs[j]!, 'dev', 'vx0', 'nud', 'permanent');
      execFileSync('bridge', ['-n', h.ns.name, 'fdb', 'append', macs[j]!, 'dev', 'vx0', 'dst', o.publicIp], {
        stdio: 'pipe',
      });
      ipIn(h.ns, 'route', 'add', `10.244.${j + 1}.0/24`, 'via', gw, 'dev', 'vx0', 'onlink');
    }
  }
}

/**
 * The body of `POST /v1/attachments` the benchmarks send: what weft's CNI plugin asks for one
 * container (eth0 on network `bench`, one published TCP port → 80).
 */
export const attachmentBody = (containerId: string, netns: string, hostPort: number) => ({
  owner: 'cni',
  containerId,
  netns,
  ifname: 'eth0',
  network: 'bench',
  ports: [`${hostPort}:80/tcp`],
});
