/**
 * Overlay benchmark (issue 5): the data plane of each backend against the same paths configured
 * by hand, and the control plane's convergence, scale and memory, side by side in one run.
 *
 * Data plane. Two hosts (namespaces) on an underlay switch (a bridge in its own namespace), one
 * container on each, TCP between the containers: iperf3 throughput with 1 and 2 streams (`-t`
 * seconds each) and request/response latency (a tiny node ping-pong, 64-byte messages: RR = one
 * connection, N round trips; CRR = connect + request + response + close, N times). Paths:
 *   veth pair            two namespaces joined by one veth pair (the floor of the machine)
 *   vxlan by hand        kernel VXLAN set up with `ip`: static neighbour/FDB entries, onlink
 *                        routes, MTU 1450 (src/net/backends/testbed.ts builds hosts and containers)
 *   host-gw by hand      plain routes via the peer's underlay address, same testbed
 *   weft <backend>       `weft cluster init --backend B` in an embedded store, a `weft daemon
 *                        --store … --iface eth0 --ip-masq` per host, a container on each through
 *                        the API (POST /v1/containers), for vxlan, host-gw and udp
 * Rounds interleave the paths (the order reverses every other round); medians are reported. The
 * udp backend's yardstick, the C tunnel /work/shared/bench/udptun.c, is measured side by side by
 * bench/udp.ts (`npm run bench:udp`), not again here.
 *
 * Control plane (vxlan). (a) Convergence: N daemons up; a synthetic peer lease (flannel's JSON,
 * with a fresh VTEP MAC and a public IP on the underlay) is created in the store with
 * EmbeddedRegistry, then every host's kernel is polled (every 5 ms, netlink dumps from this
 * process) until it has the route, the neighbour and the FDB entry; then the lease is deleted and
 * the same is timed for their removal. p50/p95 over the repetitions. (b) Scale: one daemon on a
 * /16 underlay in a cluster network of 1,024 subnets; 1,000 synthetic leases are created one after
 * the other (the store's own write cost is reported apart), and the time until the kernel holds
 * all 1,000 routes, neighbour and FDB entries is measured; then a full resync (POST
 * /v1/cluster/resync) is timed, and a second daemon joins the 1,001-host cluster (spawn → all
 * entries programmed). (c) VmRSS of the daemons (/proc/PID/status) before and with 1,000 peers.
 *
 * `--diagnose` adds the weft vxlan and host-gw paths measured again after flushing their hosts'
 * nftables rulesets (what weft's firewall and conntrack cost on the data path).
 *
 * Daemons run from the compiled build when it exists (`npm run build`), else through tsx. Every
 * namespace, process, store and temp folder is made by this script and removed at the end, also
 * on failure, SIGINT/SIGTERM or the watchdog; every wait is bounded. No traffic leaves the
 * namespaces (the synthetic peers' public IPs exist nowhere and nothing is sent to them).
 * Usage: node --import tsx bench/overlay.ts [--rounds N] [--time S] [--reps N] [--peers N]
 *          [--hosts N] [--only data|control] [--keep-logs DIR]
 *          [--node-flag FLAG]… [--diagnose] [--json]
 */
import { type ChildProcess, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { leaseKey, renderLeaseValue } from '../src/control/leases/lease.js';
import type { ContainerView } from '../src/control/service.js';
import { EmbeddedRegistry } from '../src/control/store/embedded.js';
import { ApiClient } from '../src/entry/client.js';
import type { NetHandle } from '../src/kernel/handle.js';
import { Netns } from '../src/kernel/netns.js';
import { addIP, formatIP, formatIPNet, type IPNet, parseCidr, parseIP } from '../src/lib/ip.js';
import { type BedNs, buildTestbed, type Testbed } from '../src/net/backends/testbed.js';
import {
  ipIn,
  median,
  pct,
  pinNs,
  rssKiB,
  spawnDaemon as spawnDaemonProcess,
  stopChild,
  stopDaemon as stopDaemonAndSandboxes,
  vxlanByHand,
  waitReady,
} from './common.js';

const execFileP = promisify(execFile);
const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? Number(process.argv[i + 1]) : dflt;
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer`);
  return v;
};
const ROUNDS = arg('--rounds', 3);
const SECONDS = arg('--time', 4);
const REPS = arg('--reps', 20);
const PEERS = arg('--peers', 1000);
const CONV_HOSTS = arg('--hosts', 4);
/** Also measure the weft vxlan and host-gw paths once more with the hosts' nftables rulesets flushed. */
const DIAGNOSE = process.argv.includes('--diagnose');
const onlyArg = process.argv.indexOf('--only');
const ONLY = onlyArg > 0 ? process.argv[onlyArg + 1] : undefined;
const json = process.argv.includes('--json');
const logsArg = process.argv.indexOf('--keep-logs');
/** Copy every daemon's log into this folder at the end (e.g. with NODE_OPTIONS=--trace-gc). */
const KEEP_LOGS = logsArg > 0 ? process.argv[logsArg + 1] : undefined;
/** Extra node flags for the daemons (repeatable), e.g. --node-flag --trace-gc with --keep-logs. */
// The daemons run as bin/weft.js's shebang runs them (--max-semi-space-size=2), plus these.
const NODE_FLAGS = [
  '--max-semi-space-size=2',
  ...process.argv.flatMap((a, i) => (process.argv[i - 1] === '--node-flag' ? [a] : [])),
];
const RR_COUNT = 2000;
const CRR_COUNT = 300;
const PREFIX = '/weft/network';
const VXLAN_DEV = 'weft.1';
const CLI = new URL('../src/entry/cli.ts', import.meta.url).pathname;
const BUILT = new URL('../dist/entry/cli.js', import.meta.url).pathname;
const WEFT = fs.existsSync(BUILT) ? [BUILT] : ['--import', 'tsx', CLI];
const id = randomBytes(3).toString('hex');
const log = (s: string) => {
  if (!json) process.stderr.write(`${s}\n`);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- resources: everything made is recorded here and removed by cleanup() ----------------------

const made: BedNs[] = [];
const children: ChildProcess[] = [];
const daemons: Daemon[] = [];
const opened: Netns[] = [];
const registries: EmbeddedRegistry[] = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `wb-${id}-overlay-`));

function mkns(label: string): BedNs {
  const b = pinNs(`wb-${id}-${label}`);
  made.push(b);
  return b;
}

/** The Bed that testbed.ts asks for; `prefix` keeps two testbeds' namespace names apart. */
const bedOf = (prefix: string) => ({
  ns: (label = 'ns') => mkns(`${prefix}${label}`),
  spawn: (b: BedNs, cmd: string, args: string[]) => spawnIn(b.ns, cmd, args),
  async ipJson<T = unknown>(b: BedNs, ...args: string[]): Promise<T> {
    const { stdout } = await execFileP('ip', ['-n', b.name, '-j', ...args], { timeout: 10_000 });
    return JSON.parse(stdout || '[]') as T;
  },
});

function spawnIn(ns: Netns, cmd: string, args: string[]): ChildProcess {
  const c = ns.spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(c);
  return c;
}

/** Run a command inside `ns` to completion (bounded); resolves to its stdout. */
async function runIn(ns: Netns, cmd: string, args: string[], timeoutMs: number): Promise<string> {
  let running: Promise<{ stdout: string }> | undefined;
  ns.run(() => {
    running = execFileP(cmd, args, {
      encoding: 'utf8',
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
      maxBuffer: 16 << 20,
    });
  });
  return (await running!).stdout;
}

const kill = (c: ChildProcess, graceMs = 3000) => stopChild(c, graceMs);

/** Wait (bounded) until a spawned process prints `word` on stdout or stderr. */
function waitOutput(c: ChildProcess, word: string, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    let seen = '';
    const done = (ok: boolean) => {
      clearTimeout(timer);
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), ms);
    const on = (d: Buffer) => {
      seen += d.toString('utf8');
      if (seen.includes(word)) done(true);
    };
    c.stdout?.on('data', on);
    c.stderr?.on('data', on);
    c.once('exit', () => done(false));
  });
}

// ---- weft daemons -----------------------------------------------------------------------------

interface Daemon {
  readonly name: string;
  readonly host: BedNs;
  readonly dir: string;
  readonly runDir: string;
  readonly api: ApiClient;
  readonly child: ChildProcess;
  readonly logFile: string;
  readonly spawnedAt: number;
}

const tail = (file: string) => {
  try {
    return fs.readFileSync(file, 'utf8').slice(-3000);
  } catch {
    return '(no log)';
  }
};

async function weftCli(args: string[]): Promise<string> {
  const { stdout } = await execFileP(process.execPath, [...WEFT, ...args], { timeout: 30_000 });
  return stdout;
}

/** `weft cluster init` of `network` with `backend` in the embedded store file `store`. */
const clusterInit = (store: string, backend: string, network = '10.244.0.0/16') =>
  weftCli(['cluster', 'init', '--store', `embedded:${store}`, '--network', network, '--backend', backend]);

/** Spawn `weft daemon` inside `host` (its own state/run dirs and socket); does not wait. */
function spawnDaemon(host: BedNs, name: string, store: string, extra: string[] = []): Daemon {
  const dir = path.join(tmp, name);
  const runDir = path.join(dir, 'run');
  const socket = path.join(runDir, 'weft.sock');
  fs.mkdirSync(dir, { recursive: true });
  const logFile = path.join(dir, 'daemon.log');
  const args = [
    ...NODE_FLAGS,
    ...WEFT,
    'daemon',
    '--state-dir',
    path.join(dir, 'state'),
    '--run-dir',
    runDir,
    '--socket',
    socket,
    '--upstream',
    '127.0.0.1',
    '--store',
    `embedded:${store}`,
    '--iface',
    'eth0',
    '--ip-masq',
    '--name',
    name,
    ...extra,
  ];
  const spawnedAt = performance.now();
  const child = spawnDaemonProcess(host.ns, args, logFile);
  const d = { name, host, dir, runDir, api: new ApiClient(socket, 30_000), child, logFile, spawnedAt };
  daemons.push(d);
  return d;
}

/** Wait (bounded) until the daemon answers /readyz; resolves to ms since it was spawned. */
async function ready(d: Daemon, ms = 60_000): Promise<number> {
  await waitReady(d.child, d.api, { name: d.name, log: () => tail(d.logFile), timeoutMs: ms, pollMs: 20 });
  return performance.now() - d.spawnedAt;
}

interface ClusterView {
  lease: { subnet: string } | null;
  peers: { subnet: string }[];
  mtu: number;
}

/** Containers through the API, then the daemon (by pid), then leftover sandbox processes and pins. */
async function stopDaemon(d: Daemon): Promise<void> {
  if (KEEP_LOGS) {
    fs.mkdirSync(KEEP_LOGS, { recursive: true });
    fs.copyFileSync(d.logFile, path.join(KEEP_LOGS, `${d.name}.log`));
  }
  await stopDaemonAndSandboxes(d.child, d.api, d.runDir);
}

let cleaning: Promise<void> | undefined;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const c of children.splice(0)) await kill(c);
    for (const d of daemons.splice(0)) await stopDaemon(d).catch(() => {});
    for (const r of registries.splice(0)) await r.close().catch(() => {});
    for (const n of opened.splice(0)) n.close();
    for (const b of made.splice(0).reverse()) {
      try {
        b.ns.delete();
      } catch (e) {
        process.stderr.write(`could not remove ${b.name}: ${String(e)}\n`);
      }
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  })();
  return cleaning;
}

// ---- an underlay: a switch namespace and hosts with eth0 on it --------------------------------

interface Underlay {
  readonly hosts: { ns: BedNs; ip: string }[];
  add(i: number): { ns: BedNs; ip: string };
}

/** `count` hosts `<label>h<i>` with eth0 = base + 1 + i on `cidr` (MTU 1500), joined by a bridge. */
function underlay(label: string, cidr: string, count: number): Underlay {
  const net = parseCidr(cidr);
  const sw = mkns(`${label}sw`);
  sw.h.links.add({ kind: 'bridge', name: 'br0', up: true, stp: false });
  const hosts: { ns: BedNs; ip: string }[] = [];
  const add = (i: number) => {
    const ns = mkns(`${label}h${i}`);
    sw.h.links.add({
      kind: 'veth',
      name: `p${i}`,
      master: 'br0',
      up: true,
      peer: { name: 'eth0', netns: ns.ns },
    });
    ns.h.links.setUp('eth0');
    const ip = addIP(net.ip, 1 + i);
    ns.h.addrs.add('eth0', { ip, len: net.len });
    const h = { ns, ip: formatIP(ip) };
    hosts.push(h);
    return h;
  };
  for (let i = 0; i < count; i++) add(i);
  return { hosts, add };
}

// ---- data plane --------------------------------------------------------------------------------

/** One end of a measured path: the namespace a client or server runs in, and its address. */
interface End {
  readonly ns: Netns;
  readonly ip: string;
}
interface Path {
  readonly name: string;
  readonly from: End;
  readonly to: End;
  /** The two hosts' namespaces (weft paths: for --diagnose). */
  readonly hosts?: readonly BedNs[];
}
interface Sample {
  path: string;
  round: number;
  gbps1: number;
  gbps2: number;
  retransmits1: number;
  rrP50Us: number;
  rrP99Us: number;
  crrP50Us: number;
}

/**
 * The ping-pong: `server PORT` echoes what it reads (TCP_NODELAY); `client IP PORT RR CRR` does
 * RR round trips of 64 bytes on one connection (after 200 unmeasured ones), then CRR
 * connect-request-response-close transactions, and prints the sorted-percentiles as JSON (µs).
 */
const PINGPONG = `
const net = require('node:net');
const [mode, a, b, c, d] = process.argv.slice(1);
if (mode === 'server') {
  net.createServer((s) => { s.setNoDelay(true); s.on('data', (x) => s.write(x)); s.on('error', () => {}); })
    .listen(Number(a), () => console.log('listening'));
} else {
  const host = a, port = Number(b), rrN = Number(c), crrN = Number(d);
  const msg = Buffer.alloc(64, 120);
  const pct = (xs, p) => { const s = [...xs].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.ceil(p / 100 * s.length) - 1)]; };
  const us = () => Number(process.hrtime.bigint()) / 1000;
  const rr = () => new Promise((resolve, reject) => {
    const out = []; let got = 0, i = -200, t = 0;
    const s = net.connect({ host, port, noDelay: true }, () => { t = us(); s.write(msg); });
    s.on('error', reject);
    s.on('data', (x) => {
      got += x.length; if (got < 64) return; got -= 64;
      if (i++ >= 0) out.push(us() - t);
      if (i >= rrN) { s.destroy(); resolve(out); return; }
      t = us(); s.write(msg);
    });
  });
  const crrOne = () => new Promise((resolve, reject) => {
    const t = us(); let got = 0;
    const s = net.connect({ host, port, noDelay: true }, () => s.write(msg));
    s.on('error', reject);
    s.on('data', (x) => { got += x.length; if (got >= 64) { const dt = us() - t; s.end(); s.once('close', () => resolve(dt)); } });
  });
  (async () => {
    const r = await rr();
    const cr = [];
    for (let j = 0; j < crrN; j++) cr.push(await crrOne());
    console.log(JSON.stringify({ rrP50: pct(r, 50), rrP99: pct(r, 99), crrP50: pct(cr, 50) }));
  })().catch((e) => { console.error(String(e)); process.exit(1); });
}
`;

async function iperf(p: Path, streams: number): Promise<{ gbps: number; retransmits: number }> {
  const out = await runIn(
    p.from.ns,
    'iperf3',
    ['-c', p.to.ip, '-p', '5201', '-t', String(SECONDS), '-P', String(streams), '-J'],
    (SECONDS + 15) * 1000,
  );
  const j = JSON.parse(out) as {
    error?: string;
    end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits?: number } };
  };
  if (!j.end?.sum_received)
    throw new Error(`${p.name}: iperf3 -P ${streams}: ${j.error ?? out.slice(0, 500)}`);
  return { gbps: j.end.sum_received.bits_per_second / 1e9, retransmits: j.end.sum_sent?.retransmits ?? 0 };
}

async function measure(p: Path, round: number): Promise<Sample> {
  // The path must work before it is timed.
  const ping = await runIn(
    p.from.ns,
    'ping',
    ['-n', '-q', '-c', '3', '-i', '0.2', '-w', '5', p.to.ip],
    8000,
  ).catch((e: unknown) => String(e));
  if (!/ 0% packet loss/.test(ping)) throw new Error(`${p.name}: no reachability: ${ping}`);
  const srv = spawnIn(p.to.ns, 'iperf3', ['-s', '-p', '5201', '--forceflush']);
  const pp = spawnIn(p.to.ns, process.execPath, ['-e', PINGPONG, 'server', '7777']);
  try {
    const [a, b] = await Promise.all([waitOutput(srv, 'listening', 5000), waitOutput(pp, 'listening', 5000)]);
    if (!a || !b) throw new Error(`${p.name}: servers did not start`);
    const one = await iperf(p, 1);
    const two = await iperf(p, 2);
    const lat = JSON.parse(
      await runIn(
        p.from.ns,
        process.execPath,
        ['-e', PINGPONG, 'client', p.to.ip, '7777', String(RR_COUNT), String(CRR_COUNT)],
        30_000,
      ),
    ) as { rrP50: number; rrP99: number; crrP50: number };
    return {
      path: p.name,
      round,
      gbps1: one.gbps,
      gbps2: two.gbps,
      retransmits1: one.retransmits,
      rrP50Us: lat.rrP50,
      rrP99Us: lat.rrP99,
      crrP50Us: lat.crrP50,
    };
  } finally {
    await kill(srv);
    await kill(pp);
  }
}

function vethPath(): Path {
  const a = mkns('va');
  const b = mkns('vb');
  a.h.links.add({ kind: 'veth', name: 'eth0', up: true, peer: { name: 'eth0', netns: b.ns } });
  b.h.links.setUp('eth0');
  a.h.addrs.add('eth0', '10.99.0.1/24');
  b.h.addrs.add('eth0', '10.99.0.2/24');
  return { name: 'veth pair', from: { ns: a.ns, ip: '10.99.0.1' }, to: { ns: b.ns, ip: '10.99.0.2' } };
}

/** The testbed with kernel VXLAN configured by hand by `ip` commands (as bench/udp.ts does). */
function handVxlanPath(): Path {
  const tb: Testbed = buildTestbed(bedOf('hv'), {
    hosts: 2,
    backendType: 'vxlan',
    underlay: '192.168.101.0/24',
  });
  vxlanByHand(tb);
  const [a, z] = [tb.hosts[0]!, tb.hosts[1]!];
  return {
    name: 'vxlan by hand',
    from: { ns: a.container.ns, ip: a.containerIp },
    to: { ns: z.container.ns, ip: z.containerIp },
  };
}

/** The testbed with plain routes via the peer's underlay address. */
function handHostGwPath(): Path {
  const tb = buildTestbed(bedOf('hh'), { hosts: 2, backendType: 'host-gw', underlay: '192.168.102.0/24' });
  for (const [i, h] of tb.hosts.entries()) {
    for (const [j, o] of tb.hosts.entries()) {
      if (i !== j) ipIn(h.ns, 'route', 'add', `10.244.${j + 1}.0/24`, 'via', o.publicIp, 'dev', 'eth0');
    }
  }
  const [a, z] = [tb.hosts[0]!, tb.hosts[1]!];
  return {
    name: 'host-gw by hand',
    from: { ns: a.container.ns, ip: a.containerIp },
    to: { ns: z.container.ns, ip: z.containerIp },
  };
}

/** Two weft daemons in a fresh cluster of `backend`, a container (sleep) on each. */
async function weftPath(backend: 'vxlan' | 'host-gw' | 'udp', octet: number): Promise<Path> {
  const label = backend === 'host-gw' ? 'hg' : backend === 'vxlan' ? 'vx' : 'ud';
  const store = path.join(tmp, `${label}-store.db`);
  await clusterInit(store, backend);
  const u = underlay(label, `192.168.${octet}.0/24`, 2);
  const ds = u.hosts.map((h, i) => spawnDaemon(h.ns, `${label}${i + 1}`, store));
  await Promise.all(ds.map((d) => ready(d)));
  const ends: End[] = [];
  for (const d of ds) {
    const c = await d.api.request<ContainerView>('POST', '/v1/containers', {
      name: 'c',
      cmd: ['sleep', '3600'],
    });
    if (!c.netnsPath) throw new Error(`${d.name}: the container has no namespace`);
    const ns = Netns.open(c.netnsPath);
    opened.push(ns);
    ends.push({ ns, ip: c.networks[0]!.addresses[0]!.split('/')[0]! });
  }
  // Both hosts know each other (bounded).
  const deadline = Date.now() + 10_000;
  for (;;) {
    const vs = await Promise.all(ds.map((d) => d.api.request<ClusterView>('GET', '/v1/cluster')));
    if (vs.every((v) => v.peers.length === 1)) break;
    if (Date.now() > deadline) throw new Error(`weft ${backend}: hosts do not see each other`);
    await sleep(50);
  }
  return { name: `weft ${backend}`, from: ends[0]!, to: ends[1]!, hosts: u.hosts.map((h) => h.ns) };
}

interface DataSummary {
  path: string;
  gbps1: number;
  gbps2: number;
  rrP50Us: number;
  rrP99Us: number;
  crrP50Us: number;
  runs1: number[];
}

async function dataPlane(): Promise<{ samples: Sample[]; summary: DataSummary[] }> {
  log('data plane: building the paths');
  const paths: Path[] = [vethPath(), handVxlanPath()];
  paths.push(await weftPath('vxlan', 111));
  paths.push(handHostGwPath());
  paths.push(await weftPath('host-gw', 112));
  paths.push(await weftPath('udp', 113));
  const samples: Sample[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    log(`data plane round ${round}/${ROUNDS}`);
    const order = round % 2 === 1 ? paths : [...paths].reverse();
    for (const p of order) {
      const s = await measure(p, round);
      log(
        `  ${p.name}: ${s.gbps1.toFixed(2)} / ${s.gbps2.toFixed(2)} Gbit/s (1/2 streams), RR p50 ${s.rrP50Us.toFixed(0)} µs, CRR p50 ${s.crrP50Us.toFixed(0)} µs`,
      );
      samples.push(s);
    }
  }
  if (DIAGNOSE) {
    // What weft's firewall costs: the same paths with the hosts' rulesets (weft's tables, the
    // iptables-nft ones) flushed, which also unregisters conntrack and NAT hooks there.
    for (const p of paths.filter((x) => x.name === 'weft vxlan' || x.name === 'weft host-gw')) {
      const rules = await runIn(p.hosts![0]!.ns, 'nft', ['list', 'ruleset'], 10_000);
      if (KEEP_LOGS) fs.writeFileSync(path.join(KEEP_LOGS, `${p.name.replace(/\W+/g, '-')}.nft`), rules);
      log(`  ${p.name}: host ruleset ${rules.split('\n').length} lines; flushing it on both hosts`);
      for (const h of p.hosts!) await runIn(h.ns, 'nft', ['flush', 'ruleset'], 10_000);
      const flushed = { ...p, name: `${p.name}, nftables flushed` };
      paths.push(flushed);
      for (let round = 1; round <= ROUNDS; round++) {
        const s = await measure(flushed, round);
        log(
          `  ${flushed.name}: ${s.gbps1.toFixed(2)} / ${s.gbps2.toFixed(2)} Gbit/s, RR p50 ${s.rrP50Us.toFixed(0)} µs`,
        );
        samples.push(s);
      }
    }
  }
  const summary = paths.map((p) => {
    const ss = samples.filter((s) => s.path === p.name);
    return {
      path: p.name,
      gbps1: median(ss.map((s) => s.gbps1)),
      gbps2: median(ss.map((s) => s.gbps2)),
      rrP50Us: median(ss.map((s) => s.rrP50Us)),
      rrP99Us: median(ss.map((s) => s.rrP99Us)),
      crrP50Us: median(ss.map((s) => s.crrP50Us)),
      runs1: ss.map((s) => Number(s.gbps1.toFixed(2))),
    };
  });
  // The data-plane daemons and namespaces are not needed any more: free the CPU for what follows.
  await cleanupPartial();
  return { samples, summary };
}

/** Remove everything made so far (the data plane) but keep the temp folder. */
async function cleanupPartial(): Promise<void> {
  for (const c of children.splice(0)) await kill(c);
  for (const d of daemons.splice(0)) await stopDaemon(d);
  for (const n of opened.splice(0)) n.close();
  for (const b of made.splice(0).reverse()) b.ns.delete();
}

// ---- control plane -----------------------------------------------------------------------------

interface Synthetic {
  readonly subnet: IPNet;
  readonly gw: string;
  readonly mac: string;
  readonly publicIp: string;
}

const macOf = (i: number) =>
  `02:77:00:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`;

async function writeLease(reg: EmbeddedRegistry, s: Synthetic): Promise<void> {
  const value = renderLeaseValue({
    publicIp: parseIP(s.publicIp),
    backendType: 'vxlan',
    backendData: { VNI: 1, VtepMAC: s.mac },
  });
  const e = await reg.create(leaseKey(PREFIX, s.subnet), value, { ttlSeconds: 3600 });
  if (!e) throw new Error(`lease ${formatIPNet(s.subnet)} exists already`);
}

/** Whether `h` has the route, neighbour and FDB entry of `s` (all three: true; none: false). */
function entries(h: NetHandle, s: Synthetic): { route: boolean; neigh: boolean; fdb: boolean } {
  const vx = h.links.find(VXLAN_DEV);
  if (!vx) return { route: false, neigh: false, fdb: false };
  return {
    route: h.routes.list({ family: 4, dst: s.subnet }).some((r) => r.oif === vx.index),
    neigh: h.neigh.find(VXLAN_DEV, s.gw)?.lladdr === s.mac,
    fdb: h.fdb.find(VXLAN_DEV, s.mac).some((n) => n.dst !== undefined && formatIP(n.dst) === s.publicIp),
  };
}

/** ms from `t0` until `done(h)` holds on every host (polled every 5 ms, bounded); per host too. */
async function untilAll(
  hs: NetHandle[],
  t0: number,
  done: (h: NetHandle) => boolean,
  ms = 5000,
): Promise<number[]> {
  const at: (number | undefined)[] = hs.map(() => undefined);
  const deadline = t0 + ms;
  for (;;) {
    const now = performance.now();
    for (const [i, h] of hs.entries()) if (at[i] === undefined && done(h)) at[i] = now - t0;
    if (at.every((x) => x !== undefined)) return at as number[];
    if (now > deadline) throw new Error(`not converged after ${ms} ms (hosts done: ${at.join(', ')})`);
    await sleep(5);
  }
}

interface Convergence {
  hosts: number;
  reps: number;
  addMs: number[];
  removeMs: number[];
  writeMs: number[];
}

async function convergence(): Promise<Convergence> {
  log(`control plane (a): convergence with ${CONV_HOSTS} vxlan hosts, ${REPS} synthetic leases`);
  const store = path.join(tmp, 'conv-store.db');
  await clusterInit(store, 'vxlan');
  const u = underlay('cv', '192.168.120.0/24', CONV_HOSTS);
  const ds = u.hosts.map((h, i) => spawnDaemon(h.ns, `cv${i + 1}`, store));
  await Promise.all(ds.map((d) => ready(d)));
  const taken = new Set<string>();
  for (const d of ds) {
    const v = await d.api.request<ClusterView>('GET', '/v1/cluster');
    if (v.lease) taken.add(v.lease.subnet);
  }
  const reg = EmbeddedRegistry.open(store);
  registries.push(reg);
  const hs = u.hosts.map((h) => h.ns.h);
  const out: Convergence = { hosts: CONV_HOSTS, reps: REPS, addMs: [], removeMs: [], writeMs: [] };
  let n = 0;
  for (let rep = 0; rep < REPS; rep++) {
    let subnet: IPNet;
    do subnet = parseCidr(`10.244.${200 + (n++ % 50)}.0/24`);
    while (taken.has(formatIPNet(subnet)));
    const s: Synthetic = {
      subnet,
      gw: formatIP(subnet.ip),
      mac: macOf(0x10000 + rep),
      publicIp: `192.168.120.${100 + rep}`,
    };
    const t0 = performance.now();
    await writeLease(reg, s);
    const t1 = performance.now();
    const add = await untilAll(hs, t0, (h) => {
      const e = entries(h, s);
      return e.route && e.neigh && e.fdb;
    });
    // Random pauses: the daemons poll the store on a fixed 100 ms period; a loop of fixed length
    // would phase-lock to it and always measure the same point of the period.
    await sleep(20 + Math.random() * 100);
    const t2 = performance.now();
    if (!(await reg.delete(leaseKey(PREFIX, s.subnet)))) throw new Error('lease vanished');
    const gone = await untilAll(hs, t2, (h) => {
      const e = entries(h, s);
      return !e.route && !e.neigh && !e.fdb;
    });
    out.writeMs.push(t1 - t0);
    out.addMs.push(Math.max(...add));
    out.removeMs.push(Math.max(...gone));
    await sleep(20 + Math.random() * 100);
  }
  log(
    `  programmed on all: p50 ${pct(out.addMs, 50).toFixed(1)} ms; removed from all: p50 ${pct(out.removeMs, 50).toFixed(1)} ms`,
  );
  return out;
}

interface Scale {
  peers: number;
  writeMs: number;
  /** From the first write to every entry present. */
  programmedMs: number;
  /** From the last write committed to every entry present. */
  afterLastWriteMs: number;
  resyncMs: number;
  idleRss: { rss: number; anon: number };
  rss: { rss: number; anon: number };
  joinReadyMs: number;
  joinProgrammedMs: number;
  joinRss: { rss: number; anon: number };
}

/** How many of `want` the host has: routes on weft.1, neighbour entries and FDB entries. */
function counts(h: NetHandle, want: Synthetic[]): { routes: number; neighs: number; fdbs: number } {
  const vx = h.links.find(VXLAN_DEV);
  if (!vx) return { routes: 0, neighs: 0, fdbs: 0 };
  const subnets = new Set(want.map((s) => formatIPNet(s.subnet)));
  const macs = new Map(want.map((s) => [s.mac, s.publicIp]));
  const gws = new Map(want.map((s) => [s.gw, s.mac]));
  const routes = h.routes
    .list({ family: 4, dev: VXLAN_DEV })
    .filter((r) => r.dst !== undefined && subnets.has(formatIPNet(r.dst))).length;
  const neighs = h.neigh
    .list({ dev: VXLAN_DEV, family: 4 })
    .filter((n) => n.ip !== undefined && gws.get(formatIP(n.ip)) === n.lladdr).length;
  const fdbs = h.fdb
    .list({ dev: VXLAN_DEV })
    .filter(
      (n) => n.lladdr !== undefined && n.dst !== undefined && macs.get(n.lladdr) === formatIP(n.dst),
    ).length;
  return { routes, neighs, fdbs };
}

async function untilCounts(h: NetHandle, want: Synthetic[], t0: number, ms: number): Promise<number> {
  const deadline = t0 + ms;
  for (;;) {
    const c = counts(h, want);
    const now = performance.now();
    if (c.routes === want.length && c.neighs === want.length && c.fdbs === want.length) return now - t0;
    if (now > deadline) throw new Error(`after ${ms} ms: ${JSON.stringify(c)} of ${want.length}`);
    await sleep(25);
  }
}

async function scale(): Promise<Scale> {
  log(`control plane (b, c): ${PEERS} peers on one vxlan host`);
  // 10.64.0.0/14 holds 1,024 /24 subnets (1,023 handed out); the underlay is a /16.
  const store = path.join(tmp, 'big-store.db');
  await clusterInit(store, 'vxlan', '10.64.0.0/14');
  const u = underlay('bg', '172.20.0.0/16', 1);
  const d1 = spawnDaemon(u.hosts[0]!.ns, 'big1', store);
  await ready(d1);
  await sleep(500);
  const idleRss = rssKiB(d1.child.pid!);
  const own = (await d1.api.request<ClusterView>('GET', '/v1/cluster')).lease?.subnet;
  const want: Synthetic[] = [];
  for (let k = 1; want.length < PEERS && k < 1024; k++) {
    const subnet = parseCidr(`10.${64 + (k >> 8)}.${k & 255}.0/24`);
    if (formatIPNet(subnet) === own) continue;
    const i = want.length;
    want.push({
      subnet,
      gw: formatIP(subnet.ip),
      mac: macOf(i),
      publicIp: `172.20.${10 + Math.floor(i / 250)}.${1 + (i % 250)}`,
    });
  }
  if (want.length < PEERS) throw new Error(`only ${want.length} subnets free for synthetic peers`);
  const reg = EmbeddedRegistry.open(store);
  registries.push(reg);
  const h1 = u.hosts[0]!.ns.h;
  const t0 = performance.now();
  for (const s of want) await writeLease(reg, s);
  const t1 = performance.now();
  log(`  ${PEERS} leases written in ${(t1 - t0).toFixed(0)} ms`);
  const programmedMs = await untilCounts(h1, want, t0, 60_000);
  log(`  all programmed ${programmedMs.toFixed(0)} ms after the first write`);
  await sleep(500);
  const rss = rssKiB(d1.child.pid!);
  const tr = performance.now();
  await d1.api.request('POST', '/v1/cluster/resync');
  const resyncMs = performance.now() - tr;
  log(`  full resync with ${PEERS} peers: ${resyncMs.toFixed(0)} ms`);

  // A second host joins the cluster of PEERS + 1 hosts.
  const h2 = u.add(1);
  const d2 = spawnDaemon(h2.ns, 'big2', store);
  const joinReadyMs = await ready(d2, 120_000);
  const joinProgrammedMs = await untilCounts(h2.ns.h, want, d2.spawnedAt, 120_000);
  const b1 = parseCidr((await d1.api.request<ClusterView>('GET', '/v1/cluster')).lease!.subnet);
  if (h2.ns.h.routes.list({ family: 4, dst: b1, dev: VXLAN_DEV }).length !== 1)
    throw new Error('big2 has no route to big1');
  await sleep(500);
  const joinRss = rssKiB(d2.child.pid!);
  log(
    `  a new host joined: ready ${joinReadyMs.toFixed(0)} ms, all programmed ${joinProgrammedMs.toFixed(0)} ms after spawn`,
  );
  return {
    peers: PEERS,
    writeMs: t1 - t0,
    programmedMs,
    afterLastWriteMs: programmedMs - (t1 - t0),
    resyncMs,
    idleRss,
    rss,
    joinReadyMs,
    joinProgrammedMs,
    joinRss,
  };
}

// ---- figures -----------------------------------------------------------------------------------

async function main() {
  const WATCHDOG_MS = (ROUNDS * 6 * (2 * SECONDS + 30) + 600) * 1000;
  const stop = (why: string, code: number) => {
    log(`bench: ${why}; cleaning up`);
    void cleanup().finally(() => process.exit(code));
  };
  const watchdog = setTimeout(() => stop(`watchdog after ${WATCHDOG_MS} ms`, 1), WATCHDOG_MS);
  process.once('SIGINT', () => stop('interrupted', 130));
  process.once('SIGTERM', () => stop('terminated', 143));
  log(`daemons from ${WEFT.length === 1 ? 'the compiled build (dist/)' : 'the sources through tsx'}`);
  try {
    const data = ONLY === 'control' ? undefined : await dataPlane();
    const conv = ONLY === 'data' ? undefined : await convergence();
    const big = ONLY === 'data' ? undefined : await scale();
    return { data, conv, big };
  } finally {
    clearTimeout(watchdog);
    await cleanup();
  }
}

let r: Awaited<ReturnType<typeof main>>;
try {
  r = await main();
} catch (e) {
  process.stderr.write(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
}
const { data, conv, big } = r;
if (json) {
  process.stdout.write(
    `${JSON.stringify(
      {
        rounds: ROUNDS,
        seconds: SECONDS,
        dataPlane: data,
        convergence: conv && {
          ...conv,
          addP50Ms: pct(conv.addMs, 50),
          addP95Ms: pct(conv.addMs, 95),
          removeP50Ms: pct(conv.removeMs, 50),
          removeP95Ms: pct(conv.removeMs, 95),
        },
        scale: big,
      },
      null,
      2,
    )}\n`,
  );
} else {
  if (data) {
    const by = (n: string) => data.summary.find((s) => s.path === n);
    const ref: Record<string, string> = {
      'weft vxlan': 'vxlan by hand',
      'weft host-gw': 'host-gw by hand',
      'weft udp': 'vxlan by hand',
      'weft vxlan, nftables flushed': 'vxlan by hand',
      'weft host-gw, nftables flushed': 'host-gw by hand',
    };
    console.log(
      `\nData plane: ${ROUNDS} rounds, iperf3 -t ${SECONDS}, medians; RR/CRR: 64-byte TCP ping-pong\n`,
    );
    console.log(
      '| path | 1 stream Gbit/s | 2 streams Gbit/s | RR p50 µs | RR p99 µs | CRR p50 µs | runs (1 stream) |',
    );
    console.log('| --- | ---: | ---: | ---: | ---: | ---: | --- |');
    for (const s of data.summary) {
      console.log(
        `| ${s.path} | ${s.gbps1.toFixed(2)} | ${s.gbps2.toFixed(2)} | ${s.rrP50Us.toFixed(0)} | ${s.rrP99Us.toFixed(0)} | ${s.crrP50Us.toFixed(0)} | ${s.runs1.join(', ')} |`,
      );
    }
    console.log('\n| weft path | vs | 1 stream | 2 streams | RR p50 (lower is better) | CRR p50 |');
    console.log('| --- | --- | ---: | ---: | ---: | ---: |');
    for (const [w, h] of Object.entries(ref)) {
      const a = by(w);
      const b = by(h);
      if (!a || !b) continue;
      console.log(
        `| ${w} | ${h} | ${(a.gbps1 / b.gbps1).toFixed(2)} | ${(a.gbps2 / b.gbps2).toFixed(2)} | ${(a.rrP50Us / b.rrP50Us).toFixed(2)} | ${(a.crrP50Us / b.crrP50Us).toFixed(2)} |`,
      );
    }
    const udp = by('weft udp');
    if (udp) {
      console.log(
        `\nweft udp through the daemon: ${udp.gbps1.toFixed(2)} Gbit/s, 1 stream; its yardstick, udptun.c, runs side by side in npm run bench:udp`,
      );
    }
  }
  if (conv) {
    console.log(`\nControl plane (vxlan, ${conv.hosts} hosts, ${conv.reps} synthetic leases):\n`);
    console.log('| measure | p50 ms | p95 ms | max ms |');
    console.log('| --- | ---: | ---: | ---: |');
    const row = (l: string, xs: number[]) =>
      console.log(
        `| ${l} | ${pct(xs, 50).toFixed(1)} | ${pct(xs, 95).toFixed(1)} | ${Math.max(...xs).toFixed(1)} |`,
      );
    row('lease written → route+neigh+fdb on every host', conv.addMs);
    row('lease deleted → gone from every host', conv.removeMs);
    row('(the store write itself)', conv.writeMs);
  }
  if (big) {
    const mib = (k: { rss: number; anon: number }) =>
      `${(k.rss / 1024).toFixed(1)} MiB (anonymous ${(k.anon / 1024).toFixed(1)})`;
    console.log(`\nScale (${big.peers} peers, vxlan):\n`);
    console.log('| measure | value |');
    console.log('| --- | ---: |');
    console.log(
      `| ${big.peers} leases written to the store, one after the other | ${big.writeMs.toFixed(0)} ms |`,
    );
    console.log(
      `| first write → all ${big.peers * 3} entries on the host | ${big.programmedMs.toFixed(0)} ms |`,
    );
    console.log(`| last write → all entries on the host | ${big.afterLastWriteMs.toFixed(0)} ms |`);
    console.log(`| full resync (POST /v1/cluster/resync) | ${big.resyncMs.toFixed(0)} ms |`);
    console.log(`| a new host joins: spawn → ready | ${big.joinReadyMs.toFixed(0)} ms |`);
    console.log(`| a new host joins: spawn → all entries | ${big.joinProgrammedMs.toFixed(0)} ms |`);
    console.log(`| daemon VmRSS, ready, no peers | ${mib(big.idleRss)} |`);
    console.log(`| daemon VmRSS, ${big.peers} peers (watch path) | ${mib(big.rss)} |`);
    console.log(`| daemon VmRSS, ${big.peers + 1} peers (joined) | ${mib(big.joinRss)} |`);
  }
}
process.exit(0);
