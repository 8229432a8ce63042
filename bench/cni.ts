/**
 * CNI benchmark: ADD and DEL latency (p50, p95) for N containers (default 100), one at a time and
 * four at a time, through
 *   - the reference chain of Debian's containernetworking-plugins: `bridge` (isGateway, ipMasq,
 *     host-local IPAM) chained with `portmap` (snat), cniVersion 1.0.0;
 *   - weft's CNI plugin (the bundled executable, built fresh into a temp folder) with weft
 *     publishing the port itself (the portMappings capability on weft), cniVersion 1.1.0;
 *   - weft's plugin chained with `portmap` (what `weft cni install` writes), cniVersion 1.0.0;
 *   - the same attachment through the daemon's API directly (POST/DELETE /v1/attachments from
 *     this process), to show what the plugin's process start costs.
 * Every plugin is driven the same way: spawned inside the side's "host" namespace with the CNI_*
 * environment and its config on stdin, prevResult passed along the chain (DEL in reverse
 * order); each container publishes one TCP port (20000+i → 80). Container namespaces are pinned
 * before ADD and removed after DEL, outside the timed part (that is the runtime's work).
 *
 * Everything is removed at the end, also on failure: attachments, the daemon (by pid), namespace
 * pins, temp dirs. Needs root and /usr/lib/cni (scripts/setup.sh installs it).
 * Usage: node --import tsx bench/cni.ts [--count N] [--json]
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildCniPlugin } from '../scripts/build-cni.js';
import { ApiClient } from '../src/entry/client.js';
import { Netns } from '../src/kernel/netns.js';
import { attachmentBody, pct, pinNs, runPlugin, spawnDaemon, stopChild, waitReady } from './common.js';

const countArg = process.argv.indexOf('--count');
const COUNT = countArg > 0 ? Number(process.argv[countArg + 1]) : 100;
const PARALLEL = 4;
const PORT_BASE = 20000;
const REF = '/usr/lib/cni';
const CLI = new URL('../src/entry/cli.ts', import.meta.url).pathname;
const BUILT = new URL('../dist/entry/cli.js', import.meta.url).pathname;
const json = process.argv.includes('--json');
const id = randomBytes(3).toString('hex');
const log = (s: string) => {
  if (!json) process.stderr.write(`${s}\n`);
};

interface Timing {
  add: number[];
  del: number[];
}
type Mode = 'sequential' | 'parallel';

const made: Netns[] = [];
/** The daemon this run started, to end it by pid on an interrupt. */
let running: ChildProcess | undefined;
// Ctrl-C or SIGTERM in the middle: the daemon (by pid) and the namespaces this run made go too.
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    if (running?.pid !== undefined && running.exitCode === null) running.kill('SIGKILL');
    for (const ns of made.reverse()) {
      try {
        ns.delete();
      } catch {
        // already gone
      }
    }
    process.exit(130);
  });
}
function mkns(label: string): Netns {
  const { ns } = pinNs(`wbc-${id}-${label}`);
  made.push(ns);
  return ns;
}

/** Run one CNI plugin inside `host` (CNI_PATH: the reference plugins); resolves to its parsed stdout, rejects on a non-zero exit. */
const plugin = (host: Netns, file: string, env: Record<string, string>, conf: unknown) =>
  runPlugin(host, file, { CNI_PATH: REF, ...env }, conf);

/** Run `fn(i)` for i in 0..count-1, `width` at a time. */
async function pool(count: number, width: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      for (;;) {
        const i = next++;
        if (i >= count) return;
        await fn(i);
      }
    }),
  );
}

/** The reference portmap plugin's config (snat), as both chains with portmap use it. */
const PORTMAP = {
  cniVersion: '1.0.0',
  name: 'benchnet',
  type: 'portmap',
  capabilities: { portMappings: true },
  snat: true,
};

/** A chain of plugins as a runtime runs a conflist: ADD forward with prevResult, DEL backwards. */
interface Chain {
  files: string[];
  confs: Record<string, unknown>[];
}

async function runChain(host: Netns, label: string, chain: Chain, mode: Mode): Promise<Timing> {
  const t: Timing = { add: [], del: [] };
  const width = mode === 'parallel' ? PARALLEL : 1;
  const pin = (i: number) => `/run/netns/wbc-${id}-${label}-${mode[0]}${i}`;
  const conts: (Netns | undefined)[] = [];
  const results: unknown[] = [];
  const env = (cmd: string, i: number) => ({
    CNI_COMMAND: cmd,
    CNI_CONTAINERID: `wbc${id}${label}${mode[0]}${i}`,
    CNI_NETNS: pin(i),
    CNI_IFNAME: 'eth0',
  });
  const conf = (k: number, i: number, prev: unknown) => ({
    ...chain.confs[k],
    ...(chain.confs[k]!.capabilities !== undefined && {
      runtimeConfig: { portMappings: [{ hostPort: PORT_BASE + i, containerPort: 80, protocol: 'tcp' }] },
    }),
    ...(prev !== undefined && { prevResult: prev }),
  });
  try {
    await pool(COUNT, width, async (i) => {
      conts[i] = Netns.create(pin(i));
      const t0 = performance.now();
      let prev: unknown;
      for (let k = 0; k < chain.files.length; k++)
        prev = await plugin(host, chain.files[k]!, env('ADD', i), conf(k, i, prev));
      t.add.push(performance.now() - t0);
      results[i] = prev;
    });
    await pool(COUNT, width, async (i) => {
      const t0 = performance.now();
      for (let k = chain.files.length - 1; k >= 0; k--)
        await plugin(host, chain.files[k]!, env('DEL', i), conf(k, i, results[i]));
      t.del.push(performance.now() - t0);
      conts[i]?.delete();
      conts[i] = undefined;
    });
    return t;
  } finally {
    for (const c of conts) c?.delete();
    for (let i = 0; i < COUNT; i++) Netns.remove(pin(i));
  }
}

async function runApi(api: ApiClient, mode: Mode): Promise<Timing> {
  const t: Timing = { add: [], del: [] };
  const width = mode === 'parallel' ? PARALLEL : 1;
  const pin = (i: number) => `/run/netns/wbc-${id}-api-${mode[0]}${i}`;
  const conts: (Netns | undefined)[] = [];
  const cid = (i: number) => `wbc${id}api${mode[0]}${i}`;
  try {
    await pool(COUNT, width, async (i) => {
      conts[i] = Netns.create(pin(i));
      const t0 = performance.now();
      await api.request('POST', '/v1/attachments', attachmentBody(cid(i), pin(i), PORT_BASE + i));
      t.add.push(performance.now() - t0);
    });
    await pool(COUNT, width, async (i) => {
      const t0 = performance.now();
      await api.request('DELETE', `/v1/attachments/cni/${cid(i)}?ifname=eth0`);
      t.del.push(performance.now() - t0);
      conts[i]?.delete();
      conts[i] = undefined;
    });
    return t;
  } finally {
    for (const c of conts) c?.delete();
    for (let i = 0; i < COUNT; i++) Netns.remove(pin(i));
  }
}

/** The compiled daemon when the build is newer than the sources it depends on most, else tsx. */
function daemonCommand(): string[] {
  const newer = (a: string, b: string) =>
    fs.existsSync(a) && fs.statSync(a).mtimeMs >= fs.statSync(b).mtimeMs;
  const src = (p: string) => new URL(`../src/${p}`, import.meta.url).pathname;
  const built =
    newer(BUILT, src('entry/cli.ts')) &&
    newer(new URL('../dist/control/service.js', import.meta.url).pathname, src('control/service.ts')) &&
    newer(new URL('../dist/entry/api.js', import.meta.url).pathname, src('entry/api.ts'));
  log(
    built
      ? 'daemon: the compiled build (dist/)'
      : 'daemon: the sources through tsx (dist/ is missing or older)',
  );
  return ['--max-semi-space-size=2', ...(built ? [BUILT] : ['--import', 'tsx', CLI])];
}

async function startDaemon(
  host: Netns,
  tmp: string,
): Promise<{ child: ChildProcess; api: ApiClient; socket: string }> {
  const runDir = path.join(tmp, 'run');
  const socket = path.join(runDir, 'weft.sock');
  const logFile = path.join(tmp, 'daemon.log');
  const args = [
    ...daemonCommand(),
    'daemon',
    '--state-dir',
    path.join(tmp, 'state'),
    '--run-dir',
    runDir,
    '--socket',
    socket,
    '--default-subnet',
    '10.213.0.0/24',
    '--upstream',
    '127.0.0.1',
  ];
  const child = spawnDaemon(host, args, logFile);
  const api = new ApiClient(socket, 60_000);
  await waitReady(child, api, {
    log: () => fs.readFileSync(logFile, 'utf8'),
    timeoutMs: 30_000,
    pollMs: 100,
  });
  return { child, api, socket };
}

/** The daemon by pid: SIGTERM, SIGKILL after 10 s. */
const stopDaemon = (child: ChildProcess) => stopChild(child, 10_000);

interface Row {
  path: string;
  mode: Mode;
  addP50: number;
  addP95: number;
  delP50: number;
  delP95: number;
}

async function main(): Promise<{ rows: Row[]; bundleBytes: number; versionMs: number[] }> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `wbc-${id}-`));
  const rows: Row[] = [];
  const add = (p: string, mode: Mode, t: Timing) => {
    rows.push({
      path: p,
      mode,
      addP50: pct(t.add, 50),
      addP95: pct(t.add, 95),
      delP50: pct(t.del, 50),
      delP95: pct(t.del, 95),
    });
    log(`  ${p}, ${mode}: ADD p50 ${pct(t.add, 50).toFixed(1)} ms, DEL p50 ${pct(t.del, 50).toFixed(1)} ms`);
  };
  let daemon: ChildProcess | undefined;
  try {
    const weft = path.join(tmp, 'bin', 'weft');
    const bundleBytes = await buildCniPlugin(weft);
    // Process start alone: VERSION, 20 times.
    const rhost = mkns('rhost');
    const versionMs: number[] = [];
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now();
      await plugin(rhost, weft, { CNI_COMMAND: 'VERSION' }, { cniVersion: '1.0.0' });
      versionMs.push(performance.now() - t0);
    }
    const ref: Chain = {
      files: [path.join(REF, 'bridge'), path.join(REF, 'portmap')],
      confs: [
        {
          cniVersion: '1.0.0',
          name: 'benchnet',
          type: 'bridge',
          bridge: 'cni0',
          isGateway: true,
          ipMasq: true,
          ipam: {
            type: 'host-local',
            ranges: [[{ subnet: '10.211.0.0/24' }]],
            dataDir: path.join(tmp, 'ipam'),
          },
        },
        PORTMAP,
      ],
    };
    for (const mode of ['sequential', 'parallel'] as const) {
      log(`reference bridge+host-local+portmap, ${mode}`);
      add('reference bridge + portmap', mode, await runChain(rhost, 'ref', ref, mode));
    }

    const whost = mkns('whost');
    const d = await startDaemon(whost, tmp);
    daemon = d.child;
    running = d.child;
    await d.api.request('POST', '/v1/networks', {
      name: 'bench',
      driver: 'bridge',
      subnets: [{ subnet: '10.212.0.0/24' }],
    });
    const weftConf = {
      cniVersion: '1.1.0',
      name: 'benchnet',
      type: 'weft',
      network: 'bench',
      socket: d.socket,
      dataDir: path.join(tmp, 'cni'),
    };
    const alone: Chain = { files: [weft], confs: [{ ...weftConf, capabilities: { portMappings: true } }] };
    const chained: Chain = {
      files: [weft, path.join(REF, 'portmap')],
      confs: [{ ...weftConf, cniVersion: '1.0.0' }, PORTMAP],
    };
    for (const mode of ['sequential', 'parallel'] as const) {
      log(`weft plugin (weft publishes the port), ${mode}`);
      add('weft plugin', mode, await runChain(whost, 'weft', alone, mode));
    }
    for (const mode of ['sequential', 'parallel'] as const) {
      log(`weft plugin + portmap, ${mode}`);
      add('weft plugin + portmap', mode, await runChain(whost, 'wpm', chained, mode));
    }
    for (const mode of ['sequential', 'parallel'] as const) {
      log(`daemon API, ${mode}`);
      add('daemon API (no plugin process)', mode, await runApi(d.api, mode));
    }
    return { rows, bundleBytes, versionMs };
  } finally {
    if (daemon) await stopDaemon(daemon);
    for (const ns of made.reverse()) ns.delete();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

const r = await main();
if (json) process.stdout.write(`${JSON.stringify({ count: COUNT, parallel: PARALLEL, ...r })}\n`);
else {
  const f = (n: number) => n.toFixed(n < 10 ? 2 : 1);
  console.log(`${COUNT} containers, one published port each; parallel = ${PARALLEL} at a time:\n`);
  console.log('| path | mode | ADD p50 ms | ADD p95 ms | DEL p50 ms | DEL p95 ms |');
  console.log('| --- | --- | ---: | ---: | ---: | ---: |');
  for (const x of r.rows) {
    console.log(
      `| ${x.path} | ${x.mode} | ${f(x.addP50)} | ${f(x.addP95)} | ${f(x.delP50)} | ${f(x.delP95)} |`,
    );
  }
  console.log(
    `\nweft plugin bundle: ${(r.bundleBytes / 1024).toFixed(1)} KiB; VERSION (process start + answer) p50 ${f(pct(r.versionMs, 50))} ms`,
  );
}
