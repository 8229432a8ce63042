/**
 * `weft lab`: a whole cluster on one machine. Every host is a network namespace with its own weft
 * daemon (own state dir, run dir and API socket), joined to the others by an underlay switch,
 * with a router and an "internet" behind it; the daemons lease their subnets from one store
 * (the embedded SQLite file, or etcd started by the lab) and carry packets with the chosen
 * backend; on every host, containers run a tiny HTTP server that says who they are and who asked.
 *
 * How `up` goes (each step shown as a progress line, timed for the benchmark's split):
 *   1. plan: options checked (topology.ts), tools looked for; nothing exists yet on failure;
 *   2. claim: the lab's state dir is created exclusively (a name in use is EXISTS), then the
 *      whole build runs in a transaction whose one undo is the full teardown (`down`), so a
 *      failed or interrupted `up` leaves nothing;
 *   3. namespaces and wires (underlay.ts), the internet server; etcd members when asked (etcd.ts);
 *   4. `weft cluster init` inside host1's namespace (it reaches etcd on lab addresses) while the
 *      daemons start: each spawned detached inside its host's namespace (they outlive the CLI),
 *      `weft daemon --store … --iface eth0 --ip-masq --name hostN` with WEFT_STATE_DIR,
 *      WEFT_RUN_DIR, WEFT_SOCKET and WEFT_HOST_NAME set; waited for on /healthz (the process is
 *      up) and /readyz (it holds its lease and its network is configured);
 *   5. containers through each daemon's API, hosts in parallel.
 *
 * The record (record.ts) says what was made; teardown (`down`) does not depend on it: it finds
 * the lab's namespaces by name, its sandbox pins under its run dir, and kills every process
 * whose network namespace is one of those (procs.ts), then unmounts, deletes and removes. That
 * is what makes `down` work after daemons crashed or were killed, and idempotent. The record
 * only adds: its processes (by pid and start time) and their namespaces, for a namespace whose
 * pin was deleted by hand while its daemon runs on.
 *
 * The weft the lab runs is this installation's: from source through tsx when this file is
 * TypeScript, else bin/weft.js. `weft lab exec HOST -- weft …` finds it first on PATH (a shim
 * in the lab's run dir) and talks to that host's daemon (WEFT_SOCKET).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Netns } from '../../kernel/netns.js';
import { DEFAULT_PATH, findProgram } from '../../kernel/run.js';
import { invalid, notFound, WeftError } from '../../lib/errors.js';
import { formatIPNet, networkOf, parseIPNet } from '../../lib/ip.js';
import { Rollback } from '../../lib/rollback.js';
import { execArgs, readLog } from '../../net/process.js';
import { ApiClient } from '../client.js';
import { findEtcd, startMember, waitHealthy } from './etcd.js';
import {
  alive,
  interrupted,
  killNamespaceProcesses,
  killProcesses,
  logTail,
  nsInode,
  type ProcRef,
  processesIn,
  runIn,
  spawnDetached,
} from './procs.js';
import {
  type HostRecord,
  type LabRecord,
  RECORD_VERSION,
  readRecord,
  withLock,
  writeRecord,
} from './record.js';
import {
  checkLabName,
  containerName,
  DEFAULT_PATHS,
  etcdIp,
  etcdName,
  hostDirs,
  hostIp,
  hostName,
  INTERNET,
  type LabPaths,
  type LabPlan,
  labDirs,
  labsOfNamespaces,
  nameFlag,
  nsPath,
  PUBLISHED_PORT,
  planLab,
  planUnderlay,
  type Role,
  roleOf,
  storeSpec,
  type UpOptions,
} from './topology.js';
import {
  buildHost,
  buildRouter,
  buildSwitch,
  createNs,
  httpdCommand,
  type LabNs,
  openNs,
  startInternetServer,
  writeWebRoot,
} from './underlay.js';

export interface LabOptions {
  /** Where labs live (default /run/netns, /var/lib/weft/lab, /run/weft/lab). */
  readonly paths?: LabPaths;
  /** Progress lines while building (the CLI prints them on stderr). */
  readonly progress?: (line: string) => void;
  /** Stops a running `up` (it then removes what it built). */
  readonly signal?: AbortSignal;
  /** Environment the lab's processes start from (default process.env). */
  readonly env?: NodeJS.ProcessEnv;
  /** The argv prefix that runs weft for the daemons and the lab's shim (default `weftArgv()`). */
  readonly weft?: readonly string[];
}

/** Milliseconds spent in each phase of `up`. */
export interface UpTimings {
  namespaces: number;
  store: number;
  daemons: number;
  leases: number;
  containers: number;
  total: number;
}

export interface ContainerStatus {
  readonly name: string;
  readonly ip: string | undefined;
  readonly status: string;
  readonly pid?: number;
  /** Where the container's network namespace is pinned. */
  readonly netnsPath?: string;
  readonly ports: readonly string[];
}

export interface HostStatus {
  readonly name: string;
  readonly index: number;
  readonly publicIp: string;
  /** The leased subnet (from the daemon, or its subnet.env when it is dead). */
  readonly subnet: string | undefined;
  /** running: answers and is ready; starting: answers, not ready; dead: no process or no answer. */
  readonly daemon: 'running' | 'starting' | 'dead';
  readonly socket: string;
  readonly log: string;
  readonly containers: readonly ContainerStatus[];
  /** The peers the daemon knows (subnet → public IP). */
  readonly peers?: readonly { subnet: string; publicIp: string }[];
  readonly error?: string;
}

export interface LabStatus {
  readonly name: string;
  readonly backend: string;
  readonly store: string;
  readonly storeSpec: string;
  readonly network: string;
  readonly underlay: string;
  readonly ready: boolean;
  readonly internet: { readonly server: string; readonly alive: boolean };
  readonly etcd: readonly { name: string; ip: string; alive: boolean }[];
  readonly hosts: readonly HostStatus[];
  readonly published?: { host: string; container: string; port: number; publicIp: string };
}

/** What the daemon's GET /v1/cluster answers. */
export interface ClusterView {
  readonly network: string;
  readonly backend: string;
  readonly lease: { subnet: string; publicIp: string; expiresAt?: unknown } | null;
  readonly peers: readonly { subnet: string; publicIp: string; backendType?: string; expiresAt?: unknown }[];
}

interface ApiContainer {
  name: string;
  status: string;
  pid?: number;
  netnsPath?: string;
  networks: { network: string; addresses: string[] }[];
  ports: { hostIp?: string; hostPort: number; containerPort: number; proto: string }[];
}

const READY_TIMEOUT_MS = 60_000;
const INIT_TIMEOUT_MS = 30_000;
const DOWN_GRACE_MS = 1500;
const ETCD_GRACE_MS = 200;

const pathsOf = (lo: LabOptions): LabPaths => lo.paths ?? DEFAULT_PATHS;
const since = (t0: number): number => Math.round(performance.now() - t0);

function aborted(lo: LabOptions): void {
  if (lo.signal?.aborted) throw interrupted();
}

/**
 * The argv prefix that runs this installation's weft CLI: from source through tsx when this
 * module is TypeScript (tests, `npx tsx`), else bin/weft.js (the built CLI).
 */
export function weftArgv(): string[] {
  const self = fileURLToPath(import.meta.url);
  if (self.endsWith('.ts')) {
    return [
      process.execPath,
      ...DAEMON_NODE_FLAGS,
      '--import',
      import.meta.resolve('tsx'),
      fileURLToPath(new URL('../cli.ts', import.meta.url)),
    ];
  }
  return [
    process.execPath,
    ...DAEMON_NODE_FLAGS,
    fileURLToPath(new URL('../../../bin/weft.js', import.meta.url)),
  ];
}

/**
 * The node flags bin/weft.js's shebang gives: a small young generation keeps a daemon with
 * 1,000 peers under 100 MB (V8 otherwise keeps the semi-spaces a burst of work grew).
 */
const DAEMON_NODE_FLAGS = ['--max-semi-space-size=2'];

/** Programs a lab needs, on `env`'s PATH; NOT_FOUND naming the Debian package of the first one missing. */
function checkTools(plan: LabPlan | undefined, env: NodeJS.ProcessEnv): void {
  const has = (p: string) => findProgram(p, env.PATH ?? DEFAULT_PATH) !== undefined;
  for (const [prog, pkg] of [
    ['busybox', 'busybox-static'],
    ['curl', 'curl'],
    ['nsenter', 'util-linux'],
    ['unshare', 'util-linux'],
  ] as const) {
    if (!has(prog)) {
      throw notFound(
        `${prog} is not installed: run \`apt-get install ${pkg}\` (scripts/setup.sh installs it)`,
        {
          program: prog,
          package: pkg,
        },
      );
    }
  }
  if (plan?.store === 'etcd') findEtcd(env);
}

/** Environment of the lab's long-running processes. */
function baseEnv(lo: LabOptions, lab: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(lo.env ?? process.env)) if (v !== undefined) env[k] = v;
  for (const k of ['WEFT_SOCKET', 'WEFT_STATE_DIR', 'WEFT_RUN_DIR', 'WEFT_HOST_NAME']) delete env[k];
  env.WEFT_LAB = lab;
  return env;
}

/** The environment of a command run "on" a lab host: a plain `weft …` talks to its daemon. */
function hostEnv(lo: LabOptions, rec: LabRecord, h: HostRecord): Record<string, string> {
  const env = baseEnv(lo, rec.name);
  env.WEFT_STATE_DIR = h.stateDir;
  env.WEFT_RUN_DIR = h.runDir;
  env.WEFT_SOCKET = h.socket;
  env.WEFT_HOST_NAME = h.name;
  env.PATH = `${shimDir(pathsOf(lo), rec.name)}:${env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`;
  return env;
}

const shimDir = (paths: LabPaths, lab: string): string => path.join(labDirs(paths, lab).run, 'bin');
const shq = (s: string): string => `'${s.replaceAll("'", `'\\''`)}'`;

/** A `weft` on the lab's PATH that runs this installation (whatever /usr/local/bin holds). */
function writeShim(paths: LabPaths, lab: string, weft: readonly string[]): void {
  const dir = shimDir(paths, lab);
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = path.join(dir, 'weft');
  fs.writeFileSync(file, `#!/bin/sh\nexec ${weft.map(shq).join(' ')} "$@"\n`, { mode: 0o755 });
  fs.chmodSync(file, 0o755);
}

function newHostRecord(paths: LabPaths, lab: string, index: number, ip: string): HostRecord {
  const name = hostName(index);
  return { name, index, ip, ...hostDirs(paths, lab, name), containers: [] };
}

/** Namespace pins of the lab that exist now (found by name, whatever the record says). */
function labNamespaces(paths: LabPaths, lab: string): { role: Role; path: string }[] {
  let names: string[];
  try {
    names = fs.readdirSync(paths.netnsDir);
  } catch {
    names = [];
  }
  return names.flatMap((n) => {
    const role = roleOf(lab, n);
    return role ? [{ role, path: path.join(paths.netnsDir, n) }] : [];
  });
}

/** Mount points at or under `dir` (deepest first), from /proc/self/mountinfo. */
function mountsUnder(dir: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    const mp = line.split(' ')[4];
    if (!mp) continue;
    // mountinfo escapes space, tab, newline and backslash as octal.
    const p = mp.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
    if (p === dir || p.startsWith(prefix)) out.add(p);
  }
  return [...out].sort((a, b) => b.length - a.length);
}

/** Sandbox pins under a run dir tree: <dir>/<host>/netns/<id>. */
function sandboxPins(runDir: string): string[] {
  const out: string[] = [];
  let hosts: string[];
  try {
    hosts = fs.readdirSync(runDir);
  } catch {
    return [];
  }
  for (const h of hosts) {
    const d = path.join(runDir, h, 'netns');
    try {
      for (const id of fs.readdirSync(d)) out.push(path.join(d, id));
    } catch {
      // not a host dir
    }
  }
  return out;
}

function umount(p: string): void {
  try {
    Netns.remove(p);
  } catch {
    // best effort: reported through what remains
  }
}

// ---- up -----------------------------------------------------------------------------------------

export interface UpResult {
  readonly record: LabRecord;
  readonly status: LabStatus;
  readonly timings: UpTimings;
}

/**
 * Build a lab (see the note at the top). Throws, before anything changes: INVALID for bad
 * options (plan), NOT_FOUND for a missing program (etcd, busybox, curl: the message says which
 * package), EXISTS when a lab of that name exists (or its namespaces do). After: UNAVAILABLE when
 * etcd or a daemon does not come up (the message names it and quotes its log), TIMEOUT, or the
 * daemon's own error for a container; in every such case the lab is removed again first.
 */
export async function up(o: UpOptions, lo: LabOptions = {}): Promise<UpResult> {
  const plan = planLab(o);
  const paths = pathsOf(lo);
  const env = lo.env ?? process.env;
  checkTools(plan, env);
  const dirs = labDirs(paths, plan.name);
  const inUse = labNamespaces(paths, plan.name);
  if (fs.existsSync(dirs.state) || inUse.length > 0) {
    throw new WeftError(
      'EXISTS',
      `lab "${plan.name}" already exists${inUse.length ? ` (${inUse.map((n) => path.basename(n.path)).join(', ')})` : ''}: see \`weft lab status${nameFlag(plan.name)}\`, remove it with \`weft lab down${nameFlag(plan.name)}\`, or pick another --name`,
      { details: { lab: plan.name } },
    );
  }
  try {
    // Exclusive: the name is ours from here. (The root may vanish meanwhile: a `down` removes it when empty.)
    for (let i = 0; ; i++) {
      fs.mkdirSync(paths.stateRoot, { recursive: true, mode: 0o755 });
      try {
        fs.mkdirSync(dirs.state, { mode: 0o755 });
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || i >= 3) throw e;
      }
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new WeftError('EXISTS', `lab "${plan.name}" already exists (being made by another command?)`, {
        details: { lab: plan.name },
      });
    }
    throw e;
  }
  lo.progress?.(
    `building lab "${plan.name}": ${plan.hosts} host${plan.hosts === 1 ? '' : 's'}, ${plan.backend} backend, ${plan.store} store${plan.store === 'etcd' ? ` (${plan.etcdMembers} member${plan.etcdMembers === 1 ? '' : 's'})` : ''}, ${plan.containers} container${plan.containers === 1 ? '' : 's'} per host`,
  );
  const rb = new Rollback();
  rb.push('remove the lab', async () => {
    await teardown(plan.name, paths);
  });
  try {
    const out = await withLock(dirs.state, () => build(plan, lo));
    rb.release();
    return out;
  } catch (e) {
    lo.progress?.(`failed: ${(e as Error).message.split('\n')[0]}; removing what was built`);
    await rb.unwind();
    throw e;
  }
}

async function build(plan: LabPlan, lo: LabOptions): Promise<UpResult> {
  // Handles opened while building are closed after (an open fd keeps a deleted namespace alive).
  const opened: LabNs[] = [];
  const keep = (n: LabNs): LabNs => {
    opened.push(n);
    return n;
  };
  try {
    return await buildWith(plan, lo, keep);
  } finally {
    for (const n of opened) n.ns.close();
  }
}

async function buildWith(plan: LabPlan, lo: LabOptions, keep: (n: LabNs) => LabNs): Promise<UpResult> {
  const paths = pathsOf(lo);
  const say = lo.progress ?? (() => {});
  const dirs = labDirs(paths, plan.name);
  const t0 = performance.now();
  const timings: UpTimings = { namespaces: 0, store: 0, daemons: 0, leases: 0, containers: 0, total: 0 };
  fs.mkdirSync(dirs.run, { recursive: true, mode: 0o755 });
  const rec: LabRecord = {
    version: RECORD_VERSION,
    name: plan.name,
    created: new Date().toISOString(),
    backend: plan.backend,
    store: plan.store,
    storeSpec: storeSpec(paths, plan),
    network: plan.network,
    subnetLen: plan.subnetLen,
    underlay: plan.underlay.cidr,
    gateway: plan.underlay.gateway,
    containersPerHost: plan.containers,
    internet: { router: INTERNET.router, server: INTERNET.server, log: path.join(dirs.run, 'internet.log') },
    etcd: [],
    hosts: [],
  };
  for (let i = 1; i <= plan.etcdMembers; i++) {
    const name = etcdName(i);
    rec.etcd.push({
      name,
      ip: etcdIp(plan.underlay, i),
      dataDir: path.join(dirs.state, name),
      log: path.join(dirs.run, `${name}.log`),
    });
  }
  for (let i = 1; i <= plan.hosts; i++)
    rec.hosts.push(newHostRecord(paths, plan.name, i, hostIp(plan.underlay, i)));
  writeRecord(dirs.record, rec);
  const env = baseEnv(lo, plan.name);

  // Namespaces and wires.
  let t = performance.now();
  const sw = keep(createNs(paths, plan.name, 'sw'));
  buildSwitch(sw);
  const router = keep(createNs(paths, plan.name, 'router'));
  const inet = keep(createNs(paths, plan.name, 'inet'));
  buildRouter(sw, router, inet, plan.underlay);
  const etcdNs: LabNs[] = [];
  for (const m of rec.etcd) {
    const ns = keep(createNs(paths, plan.name, m.name as Role));
    buildHost(sw, ns, m.ip, plan.underlay);
    etcdNs.push(ns);
  }
  const hostNs = new Map<string, LabNs>();
  for (const h of rec.hosts) {
    const ns = keep(createNs(paths, plan.name, h.name as Role));
    buildHost(sw, ns, h.ip, plan.underlay);
    hostNs.set(h.name, ns);
  }
  rec.internet.proc = await startInternetServer(
    inet,
    path.join(dirs.state, 'www', 'internet'),
    rec.internet.log,
    env,
  );
  writeRecord(dirs.record, rec);
  writeShim(paths, plan.name, lo.weft ?? weftArgv());
  timings.namespaces = since(t);
  const first = rec.hosts[0]!;
  const last = rec.hosts.at(-1)!;
  say(
    `underlay ${plan.underlay.cidr}: switch, router ${plan.underlay.gateway}, internet ${INTERNET.server}, ${plan.hosts} host${plan.hosts > 1 ? 's' : ''} (${first.ip}${plan.hosts > 1 ? ` … ${last.ip}` : ''})  ${timings.namespaces} ms`,
  );
  aborted(lo);

  // The store.
  t = performance.now();
  if (plan.store === 'etcd') {
    const token = `weft-lab-${plan.name}`;
    for (const [i, m] of rec.etcd.entries()) m.proc = await startMember(etcdNs[i]!, m, rec.etcd, token, env);
    writeRecord(dirs.record, rec);
    await Promise.all(rec.etcd.map((m, i) => waitHealthy(etcdNs[i]!, m)));
    timings.store = since(t);
    say(`etcd: ${rec.etcd.map((m) => `${m.name} ${m.ip}`).join(', ')} healthy  ${timings.store} ms`);
  }
  aborted(lo);

  // Cluster config, written once, while the daemons start (they wait for it in the store).
  t = performance.now();
  const init = clusterInit(rec, hostNs.get(first.name)!, lo);
  const daemons = rec.hosts.map((h) => startHostDaemon(rec, h, hostNs.get(h.name)!, lo));
  await Promise.all([init, ...daemons.map((d) => d.running)]);
  writeRecord(dirs.record, rec);
  timings.daemons = since(t);
  if (plan.store === 'embedded') timings.store = 0;
  say(
    `daemons: ${rec.hosts.length} running (store ${rec.storeSpec}, backend ${plan.backend})  ${timings.daemons} ms`,
  );
  aborted(lo);
  t = performance.now();
  await Promise.all(daemons.map((d) => d.ready));
  timings.leases = since(t);
  say(`leases: every host holds a subnet of ${plan.network}, its backend runs  ${timings.leases} ms`);
  aborted(lo);

  // Containers.
  t = performance.now();
  if (plan.containers > 0) {
    rec.published = { host: first.name, container: containerName(first.index, 1), port: PUBLISHED_PORT };
    await Promise.all(rec.hosts.map((h) => startContainers(paths, rec, h, plan.containers, lo)));
    timings.containers = since(t);
    say(
      `containers: ${plan.containers * plan.hosts} (${plan.containers} per host)  ${timings.containers} ms`,
    );
  }
  rec.ready = true;
  writeRecord(dirs.record, rec);
  timings.total = since(t0);
  return { record: rec, status: await statusOf(rec, lo), timings };
}

async function clusterInit(rec: LabRecord, host1: LabNs, lo: LabOptions): Promise<void> {
  const [node, ...pre] = lo.weft ?? weftArgv();
  const args = [
    ...pre,
    'cluster',
    'init',
    '--store',
    rec.storeSpec,
    '--network',
    rec.network,
    '--subnet-len',
    String(rec.subnetLen),
    '--backend',
    rec.backend,
  ];
  const r = await runIn(host1.ns, node!, args, INIT_TIMEOUT_MS);
  if (r.code === null && lo.signal && !lo.signal.aborted) {
    // Killed by a signal: a terminal's Ctrl-C reaches it together with us, and its end may be
    // seen before our own SIGINT handler aborts; give that a moment to tell an interruption.
    await new Promise((res) => setTimeout(res, 200));
  }
  aborted(lo);
  if (r.code !== 0) {
    throw new WeftError(
      'UNAVAILABLE',
      `weft cluster init failed (${r.code === null ? 'killed by a signal' : `exit ${r.code}`}): ${(r.stderr || r.stdout).trim()}`,
      {
        details: { store: rec.storeSpec },
      },
    );
  }
}

interface StartingDaemon {
  /** Resolves once the daemon runs weft's code (its first log line: node and weft are loaded). */
  readonly running: Promise<void>;
  /** Resolves once it is ready (/readyz: lease held, backend running, network configured). */
  readonly ready: Promise<void>;
}

function startHostDaemon(rec: LabRecord, h: HostRecord, ns: LabNs, lo: LabOptions): StartingDaemon {
  const start = async () => {
    fs.mkdirSync(h.stateDir, { recursive: true, mode: 0o755 });
    fs.mkdirSync(h.runDir, { recursive: true, mode: 0o755 });
    const [node, ...pre] = lo.weft ?? weftArgv();
    const args = [
      ...pre,
      'daemon',
      '--store',
      rec.storeSpec,
      '--iface',
      'eth0',
      '--ip-masq',
      '--name',
      h.name,
    ];
    const env = hostEnv(lo, rec, h);
    fs.appendFileSync(h.log, `--- ${new Date().toISOString()} weft lab: starting the daemon of ${h.name}\n`);
    const offset = fs.statSync(h.log).size;
    h.daemon = await spawnDetached(ns.ns, node!, args, { env, log: h.log, cwd: '/' });
    return { proc: h.daemon, offset };
  };
  const started = start();
  const running = started.then(({ proc, offset }) => waitLogged(h, proc, offset, lo));
  const ready = started.then(({ proc }) => waitApi(h, proc, '/readyz', lo));
  // The caller awaits `running` first; keep `ready` from rejecting unobserved meanwhile.
  ready.catch(() => {});
  return { running, ready };
}

/** Wait until the daemon wrote to its log past `offset`; UNAVAILABLE when it exits or stays silent. */
async function waitLogged(h: HostRecord, proc: ProcRef, offset: number, lo: LabOptions): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    let size = 0;
    try {
      size = fs.statSync(h.log).size;
    } catch {
      size = 0;
    }
    if (size > offset) return;
    if (!alive(proc)) {
      throw new WeftError(
        'UNAVAILABLE',
        `the daemon of ${h.name} exited; the end of ${h.log}:\n${logTail(h.log)}`,
        {
          details: { host: h.name, log: h.log },
        },
      );
    }
    aborted(lo);
    if (Date.now() > deadline) {
      throw new WeftError(
        'UNAVAILABLE',
        `the daemon of ${h.name} said nothing in ${READY_TIMEOUT_MS / 1000} s`,
        {
          details: { host: h.name, log: h.log },
        },
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Poll a daemon endpoint until it answers 200; UNAVAILABLE with the log's tail on exit or timeout. */
async function waitApi(h: HostRecord, proc: ProcRef, endpoint: string, lo: LabOptions): Promise<void> {
  const api = new ApiClient(h.socket, 2000);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastError = '';
  for (;;) {
    if (!alive(proc)) {
      throw new WeftError(
        'UNAVAILABLE',
        `the daemon of ${h.name} exited; the end of ${h.log}:\n${logTail(h.log)}`,
        {
          details: { host: h.name, log: h.log },
        },
      );
    }
    try {
      await api.request('GET', endpoint);
      return;
    } catch (e) {
      lastError = (e as Error).message;
    }
    if (lo.signal?.aborted) aborted(lo);
    if (Date.now() > deadline) {
      throw new WeftError(
        'UNAVAILABLE',
        `the daemon of ${h.name} is not ${endpoint === '/readyz' ? 'ready' : 'answering'} after ${READY_TIMEOUT_MS / 1000} s (${lastError}); the end of ${h.log}:\n${logTail(h.log)}`,
        { details: { host: h.name, log: h.log } },
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Start `n` hello containers on a host through its daemon, one after the other. */
async function startContainers(paths: LabPaths, rec: LabRecord, h: HostRecord, n: number, lo: LabOptions) {
  const api = new ApiClient(h.socket, 60_000);
  for (let j = 1; j <= n; j++) {
    aborted(lo);
    const name = containerName(h.index, j);
    const root = path.join(labDirs(paths, rec.name).state, 'www', name);
    writeWebRoot(root, `hello from ${name} on ${h.name}`);
    const publish = rec.published?.host === h.name && rec.published.container === name;
    try {
      await api.request('POST', '/v1/containers', {
        name,
        cmd: httpdCommand(root),
        ports: publish ? [`${rec.published!.port}:80`] : [],
      });
    } catch (e) {
      // A daemon that crashed mid-request resets the connection a moment before it is gone.
      for (let i = 0; i < 10 && h.daemon && alive(h.daemon) && (e as WeftError).code === 'UNAVAILABLE'; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      if (h.daemon && !alive(h.daemon)) {
        throw new WeftError(
          'UNAVAILABLE',
          `the daemon of ${h.name} exited while starting ${name}; the end of ${h.log}:\n${logTail(h.log)}`,
          { cause: e, details: { host: h.name, log: h.log } },
        );
      }
      throw e;
    }
    h.containers.push(name);
  }
}

// ---- status -------------------------------------------------------------------------------------

function readSubnetEnv(runDir: string): string | undefined {
  try {
    const m = /^FLANNEL_SUBNET=(\S+)$/m.exec(fs.readFileSync(path.join(runDir, 'subnet.env'), 'utf8'));
    // flannel's file gives the gateway with the prefix length (10.244.3.1/24): show the subnet.
    return m?.[1] ? formatIPNet(networkOf(parseIPNet(m[1]))) : undefined;
  } catch {
    return undefined;
  }
}

/** The first IPv4 address of a container on its first network. */
function containerIp(c: ApiContainer): string | undefined {
  for (const n of c.networks) {
    for (const a of n.addresses) {
      const ip = a.split('/')[0]!;
      if (ip.includes('.')) return ip;
    }
  }
  return undefined;
}

async function hostStatus(h: HostRecord): Promise<HostStatus> {
  const base = { name: h.name, index: h.index, publicIp: h.ip, socket: h.socket, log: h.log };
  const procAlive = h.daemon !== undefined && alive(h.daemon);
  if (!procAlive) {
    return {
      ...base,
      subnet: readSubnetEnv(h.runDir),
      daemon: 'dead',
      containers: [],
      error: h.daemon
        ? `the daemon (pid ${h.daemon.pid}) is not running; see ${h.log}`
        : 'no daemon was started',
    };
  }
  const api = new ApiClient(h.socket, 5000);
  try {
    const [cluster, list] = await Promise.all([
      api.request<ClusterView>('GET', '/v1/cluster'),
      api.request<ApiContainer[]>('GET', '/v1/containers'),
    ]);
    let ready = true;
    try {
      await api.request('GET', '/readyz');
    } catch {
      ready = false;
    }
    return {
      ...base,
      subnet: cluster.lease?.subnet ?? readSubnetEnv(h.runDir),
      daemon: ready ? 'running' : 'starting',
      containers: list.map((c) => ({
        name: c.name,
        ip: containerIp(c),
        status: c.status,
        ...(c.pid !== undefined && { pid: c.pid }),
        ...(c.netnsPath !== undefined && { netnsPath: c.netnsPath }),
        ports: c.ports.map((p) => `${p.hostPort}->${p.containerPort}/${p.proto}`),
      })),
      peers: cluster.peers.map((p) => ({ subnet: p.subnet, publicIp: p.publicIp })),
    };
  } catch (e) {
    return {
      ...base,
      subnet: readSubnetEnv(h.runDir),
      daemon: 'dead',
      containers: [],
      error: `the daemon does not answer: ${(e as Error).message}`,
    };
  }
}

async function statusOf(rec: LabRecord, _lo: LabOptions): Promise<LabStatus> {
  const hosts = await Promise.all(rec.hosts.map(hostStatus));
  const pub = rec.published;
  const pubHost = pub && rec.hosts.find((h) => h.name === pub.host);
  return {
    name: rec.name,
    backend: rec.backend,
    store: rec.store,
    storeSpec: rec.storeSpec,
    network: rec.network,
    underlay: rec.underlay,
    ready: rec.ready === true,
    internet: {
      server: rec.internet.server,
      alive: rec.internet.proc !== undefined && alive(rec.internet.proc),
    },
    etcd: rec.etcd.map((m) => ({ name: m.name, ip: m.ip, alive: m.proc !== undefined && alive(m.proc) })),
    hosts,
    ...(pub && pubHost && { published: { ...pub, publicIp: pubHost.ip } }),
  };
}

/** Read a lab's record; NOT_FOUND (listing the labs there are) when there is no such lab. */
export function loadLab(name: string, lo: LabOptions = {}): LabRecord {
  checkLabName(name);
  const rec = readRecord(labDirs(pathsOf(lo), name).record);
  if (!rec) {
    const labs = listLabs(lo).map((l) => l.name);
    throw notFound(
      `there is no lab "${name}"${labs.length ? ` (labs: ${labs.join(', ')})` : ''}; make one with \`weft lab up${nameFlag(name)}\``,
      { lab: name },
    );
  }
  return rec;
}

/** The lab's hosts, containers, subnets and processes, asked of each daemon. Throws NOT_FOUND. */
export async function status(name: string, lo: LabOptions = {}): Promise<LabStatus> {
  return statusOf(loadLab(name, lo), lo);
}

export interface LabSummary {
  readonly name: string;
  readonly hosts: number;
  readonly backend?: string;
  readonly store?: string;
  /** up: made and every daemon process alive; degraded: some dead; partial: no record or not finished. */
  readonly state: 'up' | 'degraded' | 'partial';
}

/** Labs on this machine: those with a record, and any whose namespaces exist without one. */
export function listLabs(lo: LabOptions = {}): LabSummary[] {
  const paths = pathsOf(lo);
  const out = new Map<string, LabSummary>();
  let dirs: string[] = [];
  try {
    dirs = fs.readdirSync(paths.stateRoot);
  } catch {
    dirs = [];
  }
  for (const d of dirs) {
    let rec: LabRecord | undefined;
    try {
      rec = readRecord(path.join(paths.stateRoot, d, 'lab.json'));
    } catch {
      rec = undefined;
    }
    if (!rec) {
      out.set(d, { name: d, hosts: 0, state: 'partial' });
      continue;
    }
    const dead = rec.hosts.filter((h) => !h.daemon || !alive(h.daemon)).length;
    out.set(d, {
      name: rec.name,
      hosts: rec.hosts.length,
      backend: rec.backend,
      store: rec.store,
      state: !rec.ready ? 'partial' : dead > 0 ? 'degraded' : 'up',
    });
  }
  let pinned: string[] = [];
  try {
    pinned = fs.readdirSync(paths.netnsDir);
  } catch {
    pinned = [];
  }
  for (const lab of labsOfNamespaces(pinned)) {
    if (!out.has(lab)) out.set(lab, { name: lab, hosts: 0, state: 'partial' });
  }
  return [...out.values()].sort((a, b) => a.name.localeCompare(b.name));
}

// ---- down ---------------------------------------------------------------------------------------

export interface DownResult {
  readonly name: string;
  /** False when there was nothing to remove. */
  readonly existed: boolean;
  readonly namespaces: number;
  readonly processes: number;
  readonly mounts: number;
  readonly ms: number;
}

/**
 * Remove everything of lab `name` (see the note at the top): processes in its namespaces and
 * sandboxes and those its record names (SIGTERM, then SIGKILL, bounded), sandbox pins and any mount under its dirs, its
 * namespaces, its state and run dirs. Idempotent: a lab that is not there is success
 * (existed: false). Throws INVALID for a bad name; INTERNAL when a process or mount survives.
 */
export async function down(name: string, lo: LabOptions = {}): Promise<DownResult> {
  checkLabName(name);
  const paths = pathsOf(lo);
  const dirs = labDirs(paths, name);
  if (fs.existsSync(dirs.state)) return withLock(dirs.state, () => teardown(name, paths));
  return teardown(name, paths);
}

/** `down` for every lab `listLabs` finds. */
export async function downAll(lo: LabOptions = {}): Promise<DownResult[]> {
  const out: DownResult[] = [];
  for (const l of listLabs(lo)) out.push(await down(l.name, lo));
  return out;
}

/**
 * The processes the lab's record names (daemons, etcd members, the internet server) that are
 * still those processes (pid and start time: a reused pid is not ours). Empty without a
 * readable record: `down` does not need one.
 */
function recordedProcesses(file: string): { etcd: ProcRef[]; others: ProcRef[] } {
  let rec: LabRecord | undefined;
  try {
    rec = readRecord(file);
  } catch {
    rec = undefined;
  }
  const live = (refs: readonly (ProcRef | undefined)[]): ProcRef[] =>
    refs.filter(
      (r): r is ProcRef =>
        r !== undefined &&
        Number.isInteger(r.pid) &&
        r.pid > 0 &&
        typeof r.startTime === 'string' &&
        alive(r),
    );
  return {
    etcd: live((rec?.etcd ?? []).map((m) => m.proc)),
    others: live([rec?.internet?.proc, ...(rec?.hosts ?? []).map((h) => h.daemon)]),
  };
}

async function teardown(name: string, paths: LabPaths): Promise<DownResult> {
  const t0 = performance.now();
  const dirs = labDirs(paths, name);
  const nss = labNamespaces(paths, name);
  const pins = sandboxPins(dirs.run);
  const mounts = [...new Set([...mountsUnder(dirs.run), ...mountsUnder(dirs.state)])];
  const existed = nss.length > 0 || fs.existsSync(dirs.state) || fs.existsSync(dirs.run);
  const inodes = new Set<number>();
  for (const p of [...nss.map((n) => n.path), ...pins, ...mounts]) {
    const ino = nsInode(p);
    if (ino !== undefined) inodes.add(ino);
  }
  // etcd members first and briefly: their data goes anyway, and a member told to stop while its
  // peers stop too waits for a leader transfer that cannot happen.
  const etcdInodes = new Set<number>();
  for (const n of nss) {
    const ino = n.role.startsWith('etcd') ? nsInode(n.path) : undefined;
    if (ino !== undefined) etcdInodes.add(ino);
  }
  // The record's processes too: one whose namespace pin was deleted by hand is found by no pin,
  // and its namespace (which it keeps alive) is the lab's all the same.
  const recorded = recordedProcesses(dirs.record);
  const self = nsInode('/proc/self/ns/net');
  for (const [refs, into] of [
    [recorded.etcd, [inodes, etcdInodes]],
    [recorded.others, [inodes]],
  ] as const) {
    for (const r of refs) {
      const ino = nsInode(`/proc/${r.pid}/ns/net`);
      // Never our own namespace (the root one): only the process itself is the lab's there.
      if (ino !== undefined && ino !== self && alive(r)) for (const set of into) set.add(ino);
    }
  }
  // The processes: daemons, containers, etcd, the internet server, shells of `lab exec`.
  const found = processesIn(inodes);
  const before =
    found.length +
    [...recorded.etcd, ...recorded.others].filter((r) => !found.some((f) => f.pid === r.pid)).length;
  await killProcesses(recorded.etcd, { graceMs: ETCD_GRACE_MS });
  await killNamespaceProcesses(etcdInodes, { graceMs: ETCD_GRACE_MS });
  const swept = await killNamespaceProcesses(inodes, { graceMs: DOWN_GRACE_MS });
  // Normally gone with their namespaces; by pid for the rest.
  const stray = await killProcesses([...recorded.etcd, ...recorded.others].filter(alive), {
    graceMs: DOWN_GRACE_MS,
  });
  const left = [...swept, ...stray.filter((r) => !swept.some((s) => s.pid === r.pid))];
  // Mounts: sandbox pins and anything else under the lab's dirs, then the lab's namespaces.
  for (const p of [...new Set([...pins, ...mounts])].sort((a, b) => b.length - a.length)) umount(p);
  for (const n of nss) umount(n.path);
  const mountsLeft = [...mountsUnder(dirs.run), ...mountsUnder(dirs.state)];
  const nsLeft = labNamespaces(paths, name);
  if (left.length === 0 && mountsLeft.length === 0) {
    fs.rmSync(dirs.run, { recursive: true, force: true });
    fs.rmSync(dirs.state, { recursive: true, force: true });
    // The roots too, when this was the last lab (rmdir only removes an empty folder).
    for (const root of [paths.runRoot, paths.stateRoot]) {
      try {
        fs.rmdirSync(root);
      } catch {
        // other labs, or not there
      }
    }
  }
  if (left.length > 0 || mountsLeft.length > 0 || nsLeft.length > 0) {
    throw new WeftError(
      'INTERNAL',
      `lab "${name}" could not be removed completely: ${[
        left.length ? `processes ${left.map((p) => p.pid).join(' ')}` : '',
        mountsLeft.length ? `mounts ${mountsLeft.join(' ')}` : '',
        nsLeft.length ? `namespaces ${nsLeft.map((n) => path.basename(n.path)).join(' ')}` : '',
      ]
        .filter(Boolean)
        .join('; ')}`,
      { details: { lab: name } },
    );
  }
  return {
    name,
    existed,
    namespaces: nss.length,
    processes: before,
    mounts: pins.length,
    ms: since(t0),
  };
}

// ---- add-host / rm-host ------------------------------------------------------------------------

/**
 * Add a host with the next free index: namespace, daemon (waited for until ready), the lab's
 * containers per host. Throws NOT_FOUND for an unknown lab, INVALID when the underlay or the
 * cluster network holds no more hosts, UNAVAILABLE when its daemon does not come up (the host
 * is removed again first).
 */
export async function addHost(name: string, lo: LabOptions = {}): Promise<HostStatus> {
  const paths = pathsOf(lo);
  loadLab(name, lo);
  return withLock(labDirs(paths, name).state, async () => {
    const rec = loadLab(name, lo);
    const used = new Set(rec.hosts.map((h) => h.index));
    let index = 1;
    while (used.has(index)) index++;
    const u = planUnderlay(rec.underlay);
    const ip = hostIp(u, index);
    const h = newHostRecord(paths, name, index, ip);
    const rb = new Rollback();
    const opened: LabNs[] = [];
    try {
      const ns = createNs(paths, name, h.name as Role);
      opened.push(ns);
      rb.push(`remove ${h.name}`, async () => {
        await removeHost(paths, rec, h, { leave: true });
      });
      const sw = openNs(paths, name, 'sw');
      opened.push(sw);
      buildHost(sw, ns, ip, u);
      rec.hosts.push(h);
      rec.hosts.sort((a, b) => a.index - b.index);
      writeRecord(labDirs(paths, name).record, rec);
      const d = startHostDaemon(rec, h, ns, lo);
      await d.running;
      writeRecord(labDirs(paths, name).record, rec);
      await d.ready;
      await startContainers(paths, rec, h, rec.containersPerHost, lo);
      writeRecord(labDirs(paths, name).record, rec);
      rb.release();
      return await hostStatus(h);
    } catch (e) {
      for (const n of opened.splice(0)) n.ns.close();
      await rb.unwind();
      rec.hosts = rec.hosts.filter((x) => x.name !== h.name);
      writeRecord(labDirs(paths, name).record, rec);
      throw e;
    } finally {
      for (const n of opened) n.ns.close();
    }
  });
}

/**
 * Restart the lab's etcd (every member, one after the other, on its own data): to watch the
 * daemons ride out a store outage and lose no lease. Throws INVALID for a lab on the embedded
 * store (a file: nothing to restart), NOT_FOUND for an unknown lab, UNAVAILABLE when a member
 * does not come back healthy.
 */
export async function restartStore(
  name: string,
  lo: LabOptions = {},
): Promise<{ members: string[]; ms: number }> {
  const paths = pathsOf(lo);
  loadLab(name, lo);
  return withLock(labDirs(paths, name).state, async () => {
    const rec = loadLab(name, lo);
    if (rec.etcd.length === 0) {
      throw new WeftError(
        'INVALID',
        `lab "${name}" uses the embedded store (a file): there is no store process to restart`,
      );
    }
    const t = performance.now();
    const env = baseEnv(lo, rec.name);
    const token = `weft-lab-${rec.name}`;
    for (const m of rec.etcd) {
      if (m.proc) await killProcesses([m.proc], { graceMs: 3000 });
      const ns = openNs(paths, name, m.name as Role);
      try {
        m.proc = await startMember(ns, m, rec.etcd, token, env);
        writeRecord(labDirs(paths, name).record, rec);
        // One at a time, each back before the next goes: a multi-member cluster keeps its quorum.
        await waitHealthy(ns, m);
      } finally {
        ns.ns.close();
      }
    }
    return { members: rec.etcd.map((m) => m.name), ms: Math.round(performance.now() - t) };
  });
}

/**
 * Remove a host: it leaves the cluster (its daemon deletes its backend state and its lease, so
 * peers converge), its containers are removed, its daemon stopped, its namespace deleted.
 * Throws NOT_FOUND for an unknown lab or host. Resolves with whether the host left cleanly
 * (false when its daemon was dead: its lease then stays until it expires).
 */
export async function rmHost(name: string, host: string, lo: LabOptions = {}): Promise<{ left: boolean }> {
  const paths = pathsOf(lo);
  loadLab(name, lo);
  return withLock(labDirs(paths, name).state, async () => {
    const rec = loadLab(name, lo);
    const h = findHost(rec, host);
    const left = await removeHost(paths, rec, h, { leave: true });
    rec.hosts = rec.hosts.filter((x) => x.name !== h.name);
    if (rec.published?.host === h.name) delete rec.published;
    writeRecord(labDirs(paths, name).record, rec);
    return { left };
  });
}

function findHost(rec: LabRecord, host: string): HostRecord {
  const h = rec.hosts.find((x) => x.name === host);
  if (!h) {
    throw notFound(
      `lab "${rec.name}" has no host "${host}" (hosts: ${rec.hosts.map((x) => x.name).join(', ') || 'none'})`,
      { lab: rec.name, host },
    );
  }
  return h;
}

async function removeHost(
  paths: LabPaths,
  rec: LabRecord,
  h: HostRecord,
  o: { leave: boolean },
): Promise<boolean> {
  let left = false;
  if (h.daemon && alive(h.daemon)) {
    const api = new ApiClient(h.socket, 10_000);
    if (o.leave) {
      try {
        await api.request('POST', '/v1/cluster/leave');
        left = true;
      } catch {
        left = false;
      }
    }
    try {
      const list = await api.request<{ name: string }[]>('GET', '/v1/containers');
      for (const c of list) {
        await api.request('DELETE', `/v1/containers/${encodeURIComponent(c.name)}?force=1`).catch(() => {});
      }
    } catch {
      // the namespace sweep below ends them
    }
    await killProcesses([h.daemon], { graceMs: 5000 });
  }
  const pin = nsPath(paths, rec.name, h.name as Role);
  const pins = sandboxPins(path.dirname(h.runDir)).filter((p) => p.startsWith(`${h.runDir}/`));
  const inodes = new Set<number>();
  for (const p of [pin, ...pins]) {
    const ino = nsInode(p);
    if (ino !== undefined) inodes.add(ino);
  }
  await killNamespaceProcesses(inodes, { graceMs: DOWN_GRACE_MS });
  for (const p of [...pins, ...mountsUnder(h.runDir)].sort((a, b) => b.length - a.length)) umount(p);
  umount(pin);
  fs.rmSync(h.runDir, { recursive: true, force: true });
  fs.rmSync(h.stateDir, { recursive: true, force: true });
  return left;
}

// ---- exec / logs --------------------------------------------------------------------------------

export interface ExecOptions extends LabOptions {
  /** Capture output instead of inheriting the terminal (tests, scripts). */
  readonly capture?: boolean;
  readonly timeoutMs?: number;
}

export interface ExecResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

const ROLE_ALIASES: Record<string, Role> = {
  internet: 'inet',
  inet: 'inet',
  router: 'router',
  switch: 'sw',
  sw: 'sw',
};

/**
 * Run `cmd` inside a lab: in a host (its namespace, with WEFT_SOCKET and friends set, so `weft …`
 * talks to that host's daemon), in a container of a host (its network, UTS and mount namespaces,
 * found through the host's daemon), or in `internet`, `router`, `switch`, `etcdN`. Resolves with
 * the exit status (128+n for a signal). Throws NOT_FOUND for an unknown lab, host or container,
 * INVALID for an empty command, CONFLICT for a container that is not running.
 */
export async function exec(
  name: string,
  target: string,
  container: string | undefined,
  cmd: readonly string[],
  o: ExecOptions = {},
): Promise<ExecResult> {
  const paths = pathsOf(o);
  const rec = loadLab(name, o);
  if (cmd.length === 0 || !cmd[0]) throw invalid('give the command to run after --');
  let ns: Netns;
  let argv: string[];
  let env: Record<string, string> = baseEnv(o, name);
  const role =
    ROLE_ALIASES[target] ?? (rec.etcd.some((m) => m.name === target) ? (target as Role) : undefined);
  if (role) {
    if (container !== undefined) throw invalid(`${target} has no containers; containers live on hosts`);
    ns = Netns.open(nsPath(paths, name, role));
    argv = [...cmd];
  } else {
    const h = findHost(rec, target);
    env = hostEnv(o, rec, h);
    if (container === undefined) {
      ns = Netns.open(nsPath(paths, name, h.name as Role));
      argv = [...cmd];
    } else {
      const c = await new ApiClient(h.socket, 10_000).request<ApiContainer>(
        'GET',
        `/v1/containers/${encodeURIComponent(container)}`,
      );
      if (c.status !== 'running' || c.pid === undefined) {
        throw new WeftError('CONFLICT', `container "${container}" on ${h.name} is not running`);
      }
      ns = Netns.self();
      argv = [...execArgs(c.pid), ...cmd];
    }
  }
  try {
    return await runAttached(ns, argv, env, o);
  } finally {
    ns.close();
  }
}

function runAttached(
  ns: Netns,
  argv: string[],
  env: Record<string, string>,
  o: ExecOptions,
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = ns.spawn(argv[0]!, argv.slice(1), {
      stdio: o.capture ? ['ignore', 'pipe', 'pipe'] : 'inherit',
      env,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    const timer =
      o.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            if (child.pid !== undefined) process.kill(child.pid, 'SIGKILL');
          }, o.timeoutMs);
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (timer) clearTimeout(timer);
      if (e.code === 'ENOENT') reject(notFound(`${argv[0]}: command not found`, { command: argv[0] }));
      else reject(new WeftError('INTERNAL', `cannot run ${argv[0]}: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, sig) => {
      if (timer) clearTimeout(timer);
      resolve({
        code: code ?? (sig ? 128 + (signalNumber(sig) ?? 1) : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

function signalNumber(sig: NodeJS.Signals): number | undefined {
  const n = (
    {
      SIGHUP: 1,
      SIGINT: 2,
      SIGQUIT: 3,
      SIGKILL: 9,
      SIGTERM: 15,
    } as Record<string, number>
  )[sig];
  return n;
}

/**
 * The log of a host's daemon (or of `internet`'s server, or an etcd member): the last `tail`
 * lines, or all. Throws NOT_FOUND for an unknown lab, host or a missing log.
 */
export function logs(name: string, target: string, o: LabOptions & { tail?: number } = {}): string {
  const rec = loadLab(name, o);
  let file: string;
  if (target === 'internet' || target === 'inet') file = rec.internet.log;
  else {
    const m = rec.etcd.find((x) => x.name === target);
    file = m ? m.log : findHost(rec, target).log;
  }
  return readLog(file, o.tail === undefined ? {} : { tail: o.tail });
}
