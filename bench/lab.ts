/**
 * Lab benchmark: how long `weft lab up` takes for 3 hosts with 2 containers each (6 containers)
 * and for 10 hosts (20 containers), split into its phases, and how long `weft lab down` takes.
 * Goals (issue 4): 3 hosts up in under 10 s, down in under 3 s, on these 2-core machines.
 *
 * Each run builds a lab through the lab library (what `weft lab up` calls), checks it (every
 * container to every other, to the internet, the published port: the lab must work, not only
 * exist), and takes it down. The daemons run the compiled CLI (bin/weft.js → dist/) when it is
 * built, as an installed weft does; `--src` runs them from source through tsx instead.
 * Phases: namespaces (namespaces, wires, the internet server), store (etcd only), daemons (spawn
 * until every daemon runs weft's code: node and module loading), leases (until every daemon is
 * ready: store opened, lease acquired, backend running, default network configured),
 * containers (6 or 20 POST /v1/containers, hosts in parallel).
 * Labs are named bn-<random>; everything is removed at the end, also on failure.
 * Usage: node --import tsx bench/lab.ts [--json] [--runs N] [--backend vxlan|host-gw|udp]
 *        [--store embedded|etcd] [--big N] [--src]
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { check } from '../src/entry/lab/check.js';
import { down, type UpTimings, up, weftArgv } from '../src/entry/lab/lab.js';

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const RUNS = Number(arg('--runs') ?? 3);
const BIG = Number(arg('--big') ?? 10);
const backend = arg('--backend') ?? 'vxlan';
const store = arg('--store') ?? 'embedded';
const json = process.argv.includes('--json');
const BIN = new URL('../bin/weft.js', import.meta.url).pathname;
const BUILT = new URL('../dist/entry/cli.js', import.meta.url).pathname;
const fromSrc = process.argv.includes('--src') || !fs.existsSync(BUILT);
const weft = fromSrc ? weftArgv() : [process.execPath, BIN];
const log = (s: string) => {
  if (!json) process.stderr.write(`${s}\n`);
};

interface Run {
  hosts: number;
  containers: number;
  timings: UpTimings;
  checkMs: number;
  checks: number;
  downMs: number;
}

const made = new Set<string>();
async function cleanup(): Promise<void> {
  for (const n of made) await down(n).catch(() => {});
}
process.once('SIGINT', () => {
  void cleanup().then(() => process.exit(130));
});

async function one(hosts: number): Promise<Run> {
  const name = `bn-${randomBytes(3).toString('hex')}`;
  made.add(name);
  const r = await up({ name, hosts, containers: 2, backend, store }, { weft });
  const c = await check(name);
  if (!c.ok) throw new Error(`lab ${name}: ${c.failed} checks failed`);
  const t = performance.now();
  await down(name);
  const downMs = Math.round(performance.now() - t);
  made.delete(name);
  const run = { hosts, containers: hosts * 2, timings: r.timings, checkMs: c.ms, checks: c.passed, downMs };
  log(
    `  ${hosts} hosts: up ${r.timings.total} ms (namespaces ${r.timings.namespaces}, store ${r.timings.store}, daemons ${r.timings.daemons}, leases ${r.timings.leases}, containers ${r.timings.containers}), check ${c.ms} ms (${c.passed} ✓), down ${downMs} ms`,
  );
  return run;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : Math.round((s[m - 1]! + s[m]!) / 2);
};

try {
  log(
    `lab benchmark: ${backend} backend, ${store} store, daemons from ${fromSrc ? 'source (tsx)' : 'dist (bin/weft.js)'}`,
  );
  const small: Run[] = [];
  for (let i = 0; i < RUNS; i++) small.push(await one(3));
  const big: Run[] = BIG > 0 ? [await one(BIG)] : [];
  const summary = (runs: Run[]) => ({
    hosts: runs[0]?.hosts,
    runs: runs.length,
    upMs: median(runs.map((r) => r.timings.total)),
    namespacesMs: median(runs.map((r) => r.timings.namespaces)),
    storeMs: median(runs.map((r) => r.timings.store)),
    daemonsMs: median(runs.map((r) => r.timings.daemons)),
    leasesMs: median(runs.map((r) => r.timings.leases)),
    containersMs: median(runs.map((r) => r.timings.containers)),
    checkMs: median(runs.map((r) => r.checkMs)),
    downMs: median(runs.map((r) => r.downMs)),
  });
  const result = {
    backend,
    store,
    daemons: fromSrc ? 'src' : 'dist',
    small: summary(small),
    ...(big.length > 0 && { big: summary(big) }),
    runs: [...small, ...big],
  };
  if (json) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } else {
    const rows = [result.small, ...(result.big ? [result.big] : [])];
    console.log('');
    console.log(
      '| hosts (containers) | runs | up ms | namespaces | store | daemons | leases | containers | check ms | down ms |',
    );
    console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const s of rows) {
      console.log(
        `| ${s.hosts} (${(s.hosts ?? 0) * 2}) | ${s.runs} | ${s.upMs} | ${s.namespacesMs} | ${s.storeMs} | ${s.daemonsMs} | ${s.leasesMs} | ${s.containersMs} | ${s.checkMs} | ${s.downMs} |`,
      );
    }
    console.log('');
    console.log(
      `goals: 3 hosts up < 10000 ms: ${result.small.upMs < 10_000 ? 'met' : 'MISSED'} (${result.small.upMs}); down < 3000 ms: ${result.small.downMs < 3000 ? 'met' : 'MISSED'} (${result.small.downMs})`,
    );
  }
} finally {
  await cleanup();
}
