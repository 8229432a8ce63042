/**
 * Data-plane benchmark of the udp backend: TCP throughput (iperf3, one stream) and ping RTT
 * between containers on two hosts, side by side in one run, over the same topology:
 *   weft udp (2 workers)     the backend as the daemon runs it (one receiver, one sender)
 *   weft udp (1 worker)      one thread for both directions (udptun.c's design)
 *   udptun.c                 the C reference (../shared/bench/udptun.c, cc -O2, one process per host)
 *   kernel vxlan             hand-configured with `ip` (static neighbour/FDB entries, MTU 1450)
 * Topology (src/net/backends/testbed.ts, in namespaces made and removed by this script): a
 * switch namespace with a bridge; two hosts with eth0 on 192.168.100.0/24 (MTU 1500), a bridge
 * weft0 with 10.244.(i+1).1/24 and a container 10.244.(i+1).2 on it; the container side's MTU is
 * set to each data plane's (1472 for udp, 1450 for vxlan). Rounds interleave the variants.
 * Everything is bounded (iperf3 and ping run under timeouts, a watchdog ends the run) and the
 * namespaces, processes and temp files go away at the end, also on failure or Ctrl-C.
 * Usage: node --import tsx bench/udp.ts [--rounds N] [--time SECONDS] [--json]
 */
import { type ChildProcess, execFile, execFileSync, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { formatIPNet } from '../src/lib/ip.js';
import { type Bed, type BedNs, buildTestbed, setPodMtu, type Testbed } from '../src/net/backends/testbed.js';
import { createUdpBackend, type UdpBackend } from '../src/net/backends/udp/udp.js';
import { ipIn, median, pinNs, stopChild, vxlanByHand } from './common.js';

const execFileP = promisify(execFile);
const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const ROUNDS = arg('--rounds', 2);
const SECONDS = arg('--time', 6);
const json = process.argv.includes('--json');
const REFERENCE_C = '/work/shared/bench/udptun.c';
const WATCHDOG_MS = (ROUNDS * 4 * (SECONDS + 15) + 60) * 1000;
const id = randomBytes(3).toString('hex');
const log = (s: string) => {
  if (!json) process.stderr.write(`${s}\n`);
};

/** The Bed that testbed.ts asks for: namespaces pinned as wb-<id>-…, children killed at the end. */
class BenchBed implements Bed {
  readonly made: BedNs[] = [];
  readonly children: ChildProcess[] = [];
  ns(label = 'ns'): BedNs {
    const b = pinNs(`wb-${id}-${label}`);
    this.made.push(b);
    return b;
  }
  spawn(b: BedNs, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    const c = b.ns.spawn(cmd, args, { stdio: 'ignore', ...opts });
    this.children.push(c);
    return c;
  }
  async ipJson<T = unknown>(b: BedNs, ...args: string[]): Promise<T> {
    const { stdout } = await execFileP('ip', ['-n', b.name, '-j', ...args], { timeout: 10_000 });
    return JSON.parse(stdout || '[]') as T;
  }
  async runIn(b: BedNs, cmd: string, args: string[], timeoutMs: number): Promise<string> {
    let running: Promise<{ stdout: string }> | undefined;
    b.ns.run(() => {
      running = execFileP(cmd, args, { encoding: 'utf8', timeout: timeoutMs, killSignal: 'SIGKILL' });
    });
    return (await running!).stdout;
  }
  kill(c: ChildProcess): Promise<void> {
    return stopChild(c, 2000, 4000);
  }
  async cleanup(): Promise<void> {
    for (const c of this.children.splice(0)) await this.kill(c);
    for (const b of this.made.splice(0).reverse()) b.ns.delete();
  }
}

interface Result {
  variant: string;
  round: number;
  gbps: number;
  retransmits: number;
  rttMs: number;
}

async function measure(bed: BenchBed, tb: Testbed, variant: string, round: number): Promise<Result> {
  const [a, z] = [tb.hosts[0]!, tb.hosts[1]!];
  // Warm-up and reachability: the path must work before it is timed.
  const up = await bed
    .runIn(a.container, 'ping', ['-n', '-q', '-c', '3', '-i', '0.2', '-w', '5', z.containerIp], 8000)
    .catch((e: unknown) => String(e));
  if (!/ 0% packet loss/.test(up)) throw new Error(`${variant}: containers do not reach each other: ${up}`);
  const ping = await bed.runIn(
    a.container,
    'ping',
    ['-n', '-q', '-c', '50', '-i', '0.02', '-w', '10', z.containerIp],
    15_000,
  );
  const rtt = /= [\d.]+\/([\d.]+)\//.exec(ping);
  const server = bed.spawn(z.container, 'iperf3', ['-s', '-1', '-p', '5201']);
  try {
    await new Promise((r) => setTimeout(r, 300));
    const out = await bed.runIn(
      a.container,
      'iperf3',
      ['-c', z.containerIp, '-p', '5201', '-t', String(SECONDS), '-J'],
      (SECONDS + 10) * 1000,
    );
    const j = JSON.parse(out) as {
      end: { sum_received: { bits_per_second: number }; sum_sent: { retransmits?: number } };
    };
    return {
      variant,
      round,
      gbps: j.end.sum_received.bits_per_second / 1e9,
      retransmits: j.end.sum_sent.retransmits ?? 0,
      rttMs: rtt ? Number(rtt[1]) : Number.NaN,
    };
  } finally {
    await bed.kill(server);
  }
}

async function weftUdp(bed: BenchBed, tb: Testbed, workers: number, round: number): Promise<Result> {
  const backends: UdpBackend[] = tb.hosts.map((h) => createUdpBackend({ type: 'udp' }, h.ctx, { workers }));
  try {
    for (const [i, h] of tb.hosts.entries()) {
      const { mtu } = await backends[i]!.prepare();
      setPodMtu(h, mtu);
      await backends[i]!.start(h.lease);
      await backends[i]!.resync(tb.hosts.filter((o) => o !== h).map((o) => o.lease));
    }
    const r = await measure(bed, tb, `weft udp, ${workers} worker${workers > 1 ? 's' : ''}`, round);
    const s = backends[0]!.stats();
    log(`    host0 counters: tx ${s.txPackets} rx ${s.rxPackets} drops ${s.dropNoRoute + s.dropSendError}`);
    return r;
  } finally {
    for (const b of backends) await b.teardown();
  }
}

async function udptunC(bed: BenchBed, tb: Testbed, bin: string, round: number): Promise<Result> {
  const procs: ChildProcess[] = [];
  try {
    for (const h of tb.hosts) {
      const routes = tb.hosts
        .filter((o) => o !== h)
        .map((o) => `${formatIPNet(o.lease.subnet)}=${o.publicIp}`);
      procs.push(bed.spawn(h.ns, bin, ['udptun0', '8285', ...routes]));
    }
    for (const [i, h] of tb.hosts.entries()) {
      const deadline = Date.now() + 5000;
      while (!h.ns.h.links.find('udptun0')) {
        if (Date.now() > deadline) throw new Error('udptun did not create its device');
        await new Promise((r) => setTimeout(r, 20));
      }
      ipIn(h.ns, 'link', 'set', 'udptun0', 'mtu', '1472', 'up');
      ipIn(h.ns, 'addr', 'add', `10.244.${i + 1}.0/16`, 'dev', 'udptun0');
      setPodMtu(h, 1472);
    }
    return await measure(bed, tb, 'udptun.c (reference)', round);
  } finally {
    for (const p of procs) await bed.kill(p);
  }
}

async function kernelVxlan(bed: BenchBed, tb: Testbed, round: number): Promise<Result> {
  try {
    vxlanByHand(tb);
    return await measure(bed, tb, 'kernel vxlan (by hand)', round);
  } finally {
    for (const h of tb.hosts) h.ns.h.links.delete('vx0');
  }
}

async function main(): Promise<Result[]> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `wb-${id}-udp-`));
  const bed = new BenchBed();
  const stop = async (why: string) => {
    log(`bench: ${why}; cleaning up`);
    await bed.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
    process.exit(1);
  };
  const watchdog = setTimeout(() => void stop(`watchdog after ${WATCHDOG_MS} ms`), WATCHDOG_MS);
  process.once('SIGINT', () => void stop('interrupted'));
  try {
    const bin = path.join(tmp, 'udptun');
    execFileSync('cc', ['-O2', '-o', bin, REFERENCE_C], { stdio: 'pipe', timeout: 60_000 });
    const tb = buildTestbed(bed, { hosts: 2, backendType: 'udp' });
    const results: Result[] = [];
    for (let round = 1; round <= ROUNDS; round++) {
      log(`round ${round}/${ROUNDS}`);
      for (const run of [
        () => weftUdp(bed, tb, 2, round),
        () => udptunC(bed, tb, bin, round),
        () => weftUdp(bed, tb, 1, round),
        () => kernelVxlan(bed, tb, round),
      ]) {
        const r = await run();
        log(`  ${r.variant}: ${r.gbps.toFixed(2)} Gbit/s, ${r.retransmits} retransmits, ping ${r.rttMs} ms`);
        results.push(r);
      }
    }
    return results;
  } finally {
    clearTimeout(watchdog);
    await bed.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

const results = await main();
const variants = [...new Set(results.map((r) => r.variant))];
const summary = variants.map((v) => {
  const rs = results.filter((r) => r.variant === v);
  return {
    variant: v,
    gbps: median(rs.map((r) => r.gbps)),
    runs: rs.map((r) => Number(r.gbps.toFixed(2))),
    retransmits: median(rs.map((r) => r.retransmits)),
    rttMs: median(rs.map((r) => r.rttMs)),
  };
});
if (json) {
  process.stdout.write(
    `${JSON.stringify({ rounds: ROUNDS, seconds: SECONDS, results, summary }, null, 2)}\n`,
  );
} else {
  const ref = summary.find((s) => s.variant.startsWith('udptun'))?.gbps ?? Number.NaN;
  console.log(`\n| data plane | Gbit/s (median) | runs | vs udptun.c | retransmits | ping RTT ms |`);
  console.log('| --- | ---: | --- | ---: | ---: | ---: |');
  for (const s of summary) {
    console.log(
      `| ${s.variant} | ${s.gbps.toFixed(2)} | ${s.runs.join(', ')} | ${(s.gbps / ref).toFixed(2)}× | ${s.retransmits} | ${s.rttMs.toFixed(3)} |`,
    );
  }
}
process.exit(0);
