/**
 * Attach/detach benchmark: 200 sandboxes created, attached to one bridge network with one
 * published port each, then removed, through weft's daemon API and through the reference CNI
 * plugins (bridge + host-local with ipMasq, chained with portmap), side by side in one run.
 *
 * Reference: a "host" namespace; per sandbox the benchmark pins a container namespace, then runs
 * the conflist as a runtime does (ADD: bridge, then portmap with prevResult = bridge's result;
 * DEL: portmap, then bridge), each plugin spawned inside the host namespace. Attach = namespace
 * create + ADD chain; detach = DEL chain + namespace removal.
 * weft: a daemon inside a second "host" namespace, two passes on one bridge network:
 *   - containers: attach = POST /v1/containers (which also creates the namespace and starts the
 *     sandbox's process, `sleep 3600`), detach = DELETE ?force=1 — weft's own sandboxes, more
 *     work than the reference does;
 *   - attachments, the same work as the reference: the benchmark pins a container namespace,
 *     then POST /v1/attachments puts it on the network with the port published (what weft's
 *     CNI plugin asks the daemon); detach = DELETE /v1/attachments/… + removing the pin.
 * The daemon's VmRSS is read when it is ready, with all 200 containers up right after the last
 * attach (garbage of the burst not collected yet: the worst case), and again after 15 s without
 * requests (V8's memory reducer runs ~8 s after allocation slows: the steady state of a host
 * with 200 containers).
 *
 * Everything is removed at the end, also on failure: containers through the API, then the
 * daemon (by pid), leftover sandbox processes (found by their namespace), namespace pins, temp dirs.
 * Needs Debian's containernetworking-plugins (/usr/lib/cni).
 * Usage: node --import tsx bench/attach.ts [--json] [--count N] [--daemon-log FILE]
 *   --daemon-log FILE: run the daemon at debug level and copy its log to FILE (to see where its
 *   time goes).
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ApiClient } from '../src/entry/client.js';
import { Netns } from '../src/kernel/netns.js';
import {
  attachmentBody,
  pct,
  pinNs,
  rssKiB,
  runPlugin,
  spawnDaemon,
  stopDaemon,
  waitReady,
} from './common.js';

const countArg = process.argv.indexOf('--count');
const COUNT = countArg > 0 ? Number(process.argv[countArg + 1]) : 200;
const PORT_BASE = 10000;
const REF_SUBNET = '10.201.0.0/24';
const WEFT_SUBNET = '10.202.0.0/24';
const DEFAULT_SUBNET = '10.203.0.0/24';
const CNI_PATH = '/usr/lib/cni';
const CLI = new URL('../src/entry/cli.ts', import.meta.url).pathname;
// The daemon as installed runs the compiled build (bin/weft.js → dist/); use it when built, so
// memory and latency are what a user gets, not what the TypeScript loader adds.
const BUILT = new URL('../dist/entry/cli.js', import.meta.url).pathname;
const json = process.argv.includes('--json');
const logArg = process.argv.indexOf('--daemon-log');
/** Keep the daemon's log (at debug level) in this file, to see where its time goes. */
const DAEMON_LOG = logArg > 0 ? process.argv[logArg + 1] : undefined;
const id = randomBytes(3).toString('hex');
const log = (s: string) => {
  if (!json) process.stderr.write(`${s}\n`);
};

interface Side {
  attach: number[];
  detach: number[];
  attachTotalMs: number;
  detachTotalMs: number;
}
interface Result {
  count: number;
  weft: Side;
  attachments: Side;
  reference: Side;
  daemonRssKiB: number;
  daemonSettledRssKiB: number;
  daemonIdleRssKiB: number;
}

const made: Netns[] = [];
function mkns(label: string): Netns {
  const { ns } = pinNs(`wb-${id}-${label}`);
  made.push(ns);
  return ns;
}

/** Run one reference CNI plugin `type` inside `host`, stdin the config. */
const plugin = (host: Netns, type: string, env: Record<string, string>, conf: unknown) =>
  runPlugin(host, path.join(CNI_PATH, type), env, conf);

async function reference_(tmp: string): Promise<Side> {
  const host = mkns('rhost');
  const base = { cniVersion: '1.0.0', name: 'benchnet' };
  const bridge = {
    ...base,
    type: 'bridge',
    bridge: 'cni0',
    isGateway: true,
    ipMasq: true,
    ipam: { type: 'host-local', ranges: [[{ subnet: REF_SUBNET }]], dataDir: path.join(tmp, 'ipam') },
  };
  const portmap = { ...base, type: 'portmap', capabilities: { portMappings: true }, snat: true };
  const env = (cmd: string, i: number, netns: string) => ({
    CNI_COMMAND: cmd,
    CNI_CONTAINERID: `wb${id}c${i}`,
    CNI_NETNS: netns,
    CNI_IFNAME: 'eth0',
    CNI_PATH,
  });
  const pm = (i: number) => ({
    runtimeConfig: { portMappings: [{ hostPort: PORT_BASE + i, containerPort: 80, protocol: 'tcp' }] },
  });
  const side: Side = { attach: [], detach: [], attachTotalMs: 0, detachTotalMs: 0 };
  const conts: Netns[] = [];
  const pinOf = (i: number) => `/run/netns/wb-${id}-rc${i}`;
  try {
    let t0 = performance.now();
    for (let i = 0; i < COUNT; i++) {
      const t = performance.now();
      const c = Netns.create(pinOf(i));
      conts.push(c);
      const prev = await plugin(host, 'bridge', env('ADD', i, c.path), bridge);
      await plugin(host, 'portmap', env('ADD', i, c.path), { ...portmap, ...pm(i), prevResult: prev });
      side.attach.push(performance.now() - t);
      if ((i + 1) % 50 === 0) log(`  reference: ${i + 1} attached`);
    }
    side.attachTotalMs = performance.now() - t0;
    t0 = performance.now();
    for (let i = 0; i < COUNT; i++) {
      const t = performance.now();
      const c = conts[i]!;
      await plugin(host, 'portmap', env('DEL', i, c.path), { ...portmap, ...pm(i) });
      await plugin(host, 'bridge', env('DEL', i, c.path), bridge);
      c.delete();
      side.detach.push(performance.now() - t);
      if ((i + 1) % 50 === 0) log(`  reference: ${i + 1} detached`);
    }
    side.detachTotalMs = performance.now() - t0;
    return side;
  } finally {
    for (const c of conts) c.delete();
    for (let i = 0; i < COUNT; i++) Netns.remove(pinOf(i));
  }
}

/** Quiet time before the settled VmRSS is read (see the note at the top). */
const SETTLE_MS = 15_000;

async function weft(
  tmp: string,
): Promise<{ side: Side; attachments: Side; rss: number; settledRss: number; idleRss: number }> {
  const host = mkns('whost');
  const runDir = path.join(tmp, 'run');
  const socket = path.join(runDir, 'weft.sock');
  const logFile = path.join(tmp, 'daemon.log');
  const args = [
    '--max-semi-space-size=2', // as bin/weft.js's shebang starts node
    ...(fs.existsSync(BUILT) ? [BUILT] : ['--import', 'tsx', CLI]),
    'daemon',
    '--state-dir',
    path.join(tmp, 'state'),
    '--run-dir',
    runDir,
  ];
  args.push('--socket', socket, '--default-subnet', DEFAULT_SUBNET, '--upstream', '127.0.0.1');
  if (DAEMON_LOG) args.push('--log-level', 'debug');
  const child = spawnDaemon(host, args, logFile);
  const api = new ApiClient(socket, 60_000);
  const side: Side = { attach: [], detach: [], attachTotalMs: 0, detachTotalMs: 0 };
  const up = new Set<string>();
  try {
    await waitReady(child, api, {
      log: () => fs.readFileSync(logFile, 'utf8'),
      timeoutMs: 30_000,
      pollMs: 100,
    });
    const idleRss = rssKiB(child.pid!).rss;
    await api.request('POST', '/v1/networks', { name: 'bench', subnets: [{ subnet: WEFT_SUBNET }] });
    let t0 = performance.now();
    for (let i = 0; i < COUNT; i++) {
      const t = performance.now();
      await api.request('POST', '/v1/containers', {
        name: `s${i}`,
        cmd: ['sleep', '3600'],
        networks: ['bench'],
        ports: [`${PORT_BASE + i}:80`],
      });
      side.attach.push(performance.now() - t);
      up.add(`s${i}`);
      if ((i + 1) % 50 === 0) log(`  weft: ${i + 1} attached`);
    }
    side.attachTotalMs = performance.now() - t0;
    const rss = rssKiB(child.pid!).rss;
    log(`  weft: ${COUNT} up; ${SETTLE_MS / 1000} s without requests before the settled memory reading`);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const settledRss = rssKiB(child.pid!).rss;
    t0 = performance.now();
    for (let i = 0; i < COUNT; i++) {
      const t = performance.now();
      await api.request('DELETE', `/v1/containers/s${i}?force=1`);
      side.detach.push(performance.now() - t);
      up.delete(`s${i}`);
      if ((i + 1) % 50 === 0) log(`  weft: ${i + 1} detached`);
    }
    side.detachTotalMs = performance.now() - t0;
    const attachments = await attachmentsPass(api);
    await api.request('DELETE', '/v1/networks/bench');
    return { side, attachments, rss, settledRss, idleRss };
  } finally {
    // Containers first (their processes outlive the daemon), then the daemon, then leftovers.
    await stopDaemon(child, api, runDir);
    if (DAEMON_LOG) fs.copyFileSync(logFile, DAEMON_LOG);
  }
}

/** The reference's work through weft: a pinned namespace put on the network by the daemon. */
async function attachmentsPass(api: ApiClient): Promise<Side> {
  const side: Side = { attach: [], detach: [], attachTotalMs: 0, detachTotalMs: 0 };
  const pinOf = (i: number) => `/run/netns/wb-${id}-wa${i}`;
  const cid = (i: number) => `wb${id}a${i}`;
  const conts: (Netns | undefined)[] = [];
  try {
    let t0 = performance.now();
    for (let i = 0; i < COUNT; i++) {
      const t = performance.now();
      conts[i] = Netns.create(pinOf(i));
      await api.request('POST', '/v1/attachments', attachmentBody(cid(i), pinOf(i), PORT_BASE + i));
      side.attach.push(performance.now() - t);
      if ((i + 1) % 50 === 0) log(`  weft attachments: ${i + 1} attached`);
    }
    side.attachTotalMs = performance.now() - t0;
    t0 = performance.now();
    for (let i = 0; i < COUNT; i++) {
      const t = performance.now();
      await api.request('DELETE', `/v1/attachments/cni/${cid(i)}?ifname=eth0`);
      conts[i]?.delete();
      conts[i] = undefined;
      side.detach.push(performance.now() - t);
      if ((i + 1) % 50 === 0) log(`  weft attachments: ${i + 1} detached`);
    }
    side.detachTotalMs = performance.now() - t0;
    return side;
  } finally {
    for (const c of conts) c?.delete();
    for (let i = 0; i < COUNT; i++) Netns.remove(pinOf(i));
  }
}

async function main(): Promise<Result> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `wb-${id}-`));
  try {
    log(`reference CNI plugins: ${COUNT} sandboxes on ${REF_SUBNET}`);
    const reference = await reference_(tmp);
    log(`weft daemon: ${COUNT} sandboxes on ${WEFT_SUBNET}`);
    const w = await weft(tmp);
    return {
      count: COUNT,
      weft: w.side,
      attachments: w.attachments,
      reference,
      daemonRssKiB: w.rss,
      daemonSettledRssKiB: w.settledRss,
      daemonIdleRssKiB: w.idleRss,
    };
  } finally {
    for (const ns of made.reverse()) ns.delete();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

const r = await main();
if (json) {
  const sum = (s: Side) => ({
    attachP50Ms: pct(s.attach, 50),
    attachP95Ms: pct(s.attach, 95),
    detachP50Ms: pct(s.detach, 50),
    detachP95Ms: pct(s.detach, 95),
    attachTotalMs: s.attachTotalMs,
    detachTotalMs: s.detachTotalMs,
  });
  process.stdout.write(
    `${JSON.stringify({ count: r.count, weft: sum(r.weft), attachments: sum(r.attachments), reference: sum(r.reference), daemonRssKiB: r.daemonRssKiB, daemonSettledRssKiB: r.daemonSettledRssKiB, daemonIdleRssKiB: r.daemonIdleRssKiB })}\n`,
  );
} else {
  const f = (n: number) => n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0);
  console.log(`${r.count} sandboxes, one published port each, sequential:\n`);
  console.log(
    '| measure | weft containers | weft attachments | reference CNI | reference / containers | reference / attachments |',
  );
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  const row = (label: string, get: (s: Side) => number) => {
    const [c, a, ref] = [get(r.weft), get(r.attachments), get(r.reference)];
    console.log(
      `| ${label} | ${f(c)} | ${f(a)} | ${f(ref)} | ${(ref / c).toFixed(1)}× | ${(ref / a).toFixed(1)}× |`,
    );
  };
  row('attach p50 ms', (s) => pct(s.attach, 50));
  row('attach p95 ms', (s) => pct(s.attach, 95));
  row('detach p50 ms', (s) => pct(s.detach, 50));
  row('detach p95 ms', (s) => pct(s.detach, 95));
  row(`attach total ms (${r.count})`, (s) => s.attachTotalMs);
  row(`detach total ms (${r.count})`, (s) => s.detachTotalMs);
  const mem = (k: number) => `${(k / 1024).toFixed(1)} MiB (${((k * 1024) / 1e6).toFixed(1)} MB)`;
  console.log(
    `\nweft daemon VmRSS with ${r.count} sandboxes up: ${mem(r.daemonRssKiB)} right after the last attach, ${mem(r.daemonSettledRssKiB)} after ${SETTLE_MS / 1000} s without requests; ${mem(r.daemonIdleRssKiB)} when ready, before any`,
  );
}
