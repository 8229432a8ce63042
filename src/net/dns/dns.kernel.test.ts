// The DNS server across real namespaces: it runs in a child process started inside a "host"
// namespace (as the daemon would), listens on bridge gateways (10.77.0.1 for n1), and is queried
// from "container" namespaces attached by veths, with busybox nslookup and glibc's getent
// (independent clients) and with testserver.ts's query mode. An "outside" namespace, linked to
// the host, runs a second server that plays the upstream resolver.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { describe, type TestContext, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type Bed, type BedNs, bed, needsRoot } from '../../../test/bed.js';

const SCRIPT = fileURLToPath(new URL('./testserver.ts', import.meta.url));
const NODE_ARGS = ['--import', 'tsx', SCRIPT];

interface Topology {
  b: Bed;
  host: BedNs;
  ctr: BedNs;
  outside: BedNs;
}

/** host: bridge wbr0 10.77.0.1/24 ← veth → ctr eth0 10.77.0.2; host up0 10.88.0.1/24 ← veth → outside eth0 10.88.0.2. */
function topology(t: TestContext): Topology {
  const b = bed(t);
  const host = b.ns('host');
  const ctr = b.ns('ctr');
  const outside = b.ns('outside');
  host.h.links.add({ kind: 'bridge', name: 'wbr0', up: true });
  host.h.addrs.add('wbr0', '10.77.0.1/24');
  host.h.links.add({
    kind: 'veth',
    name: 'vc0',
    master: 'wbr0',
    up: true,
    peer: { name: 'eth0', netns: ctr.ns },
  });
  ctr.h.links.setUp('eth0');
  ctr.h.addrs.add('eth0', '10.77.0.2/24');
  ctr.h.routes.add({ dst: 'default', via: '10.77.0.1' });
  host.h.links.add({ kind: 'veth', name: 'up0', up: true, peer: { name: 'eth0', netns: outside.ns } });
  host.h.addrs.add('up0', '10.88.0.1/24');
  outside.h.links.setUp('eth0');
  outside.h.addrs.add('eth0', '10.88.0.2/24');
  return { b, host, ctr, outside };
}

interface Served {
  child: ChildProcess;
  /** Send a control line and wait for the reply line. */
  control(msg: unknown): Promise<string>;
}

/** Start testserver.ts in `where`; resolves once it printed `ready`. Killed by pid at cleanup. */
async function serve(b: Bed, where: BedNs, cfg: unknown): Promise<Served> {
  const child = b.spawn(where, process.execPath, [...NODE_ARGS, 'serve', JSON.stringify(cfg)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  b.onCleanup(() => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGKILL');
    }
  });
  const lines = readline.createInterface({ input: child.stdout! });
  const waiters: ((line: string) => void)[] = [];
  const early: string[] = [];
  lines.on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l);
    else early.push(l);
  });
  const next = (what: string, ms = 15_000) =>
    new Promise<string>((resolve, reject) => {
      const queued = early.shift();
      if (queued !== undefined) return resolve(queued);
      const timer = setTimeout(() => reject(new Error(`testserver: no ${what} within ${ms} ms`)), ms);
      const exit = () => reject(new Error(`testserver exited before ${what}`));
      child.once('exit', exit);
      waiters.push((l) => {
        clearTimeout(timer);
        child.off('exit', exit);
        resolve(l);
      });
    });
  const ready = await next('ready');
  assert.match(ready, /^ready /);
  return {
    child,
    control: async (msg) => {
      child.stdin!.write(`${JSON.stringify(msg)}\n`);
      return await next('control reply', 5000);
    },
  };
}

interface QueryResult {
  rcode?: string;
  aa?: boolean;
  tc?: boolean;
  tcp?: boolean;
  answers?: { type: string; data: unknown }[];
  error?: string;
  ms: number;
}

async function query(
  b: Bed,
  from: BedNs,
  name: string,
  type: 'A' | 'AAAA' | 'MX',
  o: { server?: string; mode?: 'udp' | 'tcp' | 'auto' } = {},
): Promise<QueryResult> {
  const { stdout } = await b.exec(
    from,
    process.execPath,
    [...NODE_ARGS, 'query', o.server ?? '10.77.0.1', '53', name, type, '6000', o.mode ?? 'udp'],
    { timeoutMs: 15_000 },
  );
  return JSON.parse(String(stdout)) as QueryResult;
}
const data = (r: QueryResult) => (r.answers ?? []).map((a) => a.data);

/** busybox nslookup from `from`; its output, or the error's output when it fails. */
/** The test server's counters (its `stats` control answer). */
async function statsOf(srv: Served): Promise<Record<string, number>> {
  return JSON.parse((await srv.control({ op: 'stats' })).replace(/^stats /, '')) as Record<string, number>;
}

async function nslookup(b: Bed, from: BedNs, name: string, type: 'a' | 'aaaa', server = '10.77.0.1') {
  try {
    const { stdout } = await b.exec(from, 'busybox', ['nslookup', `-type=${type}`, name, server]);
    return String(stdout);
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string };
    return `${err.stdout ?? ''}${err.stderr ?? ''}`;
  }
}

/**
 * glibc's getaddrinfo from `from` with a resolv.conf naming only `server`, bind-mounted over
 * /etc/resolv.conf in a mount namespace of its own (gone with the process).
 */
async function getent(b: Bed, from: BedNs, name: string, server = '10.77.0.1'): Promise<string[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wt-dns-'));
  b.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  const conf = path.join(dir, 'resolv.conf');
  fs.writeFileSync(conf, `nameserver ${server}\noptions timeout:2 attempts:1\n`);
  const { stdout } = await b.exec(from, 'unshare', [
    '-m',
    'sh',
    '-c',
    'mount --bind "$0" /etc/resolv.conf && exec getent ahostsv4 "$1"',
    conf,
    name,
  ]);
  return [
    ...new Set(
      String(stdout)
        .split('\n')
        .filter(Boolean)
        .map((l) => l.split(/\s+/)[0]!),
    ),
  ];
}

const hostRecords = [
  { name: 'web', ips: ['10.77.0.2', 'fd77::2'], network: 'n1', sandbox: 'W' },
  { name: 'frontend', ips: ['10.77.0.2', 'fd77::2'], network: 'n1', sandbox: 'W' },
];
const n1Listen = { address: '10.77.0.1', network: 'n1', subnets: ['10.77.0.0/24'] };
const upstreamListen = { address: '10.88.0.2', network: 'up', subnets: ['10.88.0.0/24'] };

describe('DNS server in a host namespace, queried from a container', needsRoot, () => {
  test('A and AAAA for a record and an alias; a name that changes after setRecords', async (t) => {
    const { b, host, ctr } = topology(t);
    const srv = await serve(b, host, {
      listen: [n1Listen],
      upstreams: [],
      records: hostRecords,
    });

    // Independent client first: busybox's resolver code.
    const a = await nslookup(b, ctr, 'web', 'a');
    assert.match(a, /Address:\s*10\.77\.0\.2\b/, a);
    const aaaa = await nslookup(b, ctr, 'frontend', 'aaaa');
    assert.match(aaaa, /Address:\s*fd77::2\b/, aaaa);

    const webA = await query(b, ctr, 'web', 'A');
    assert.equal(webA.rcode, 'NOERROR');
    assert.equal(webA.aa, true);
    assert.deepEqual(data(webA), ['10.77.0.2']);
    assert.deepEqual(data(await query(b, ctr, 'FRONTEND.', 'AAAA')), ['fd77::2']);

    // The sandbox moves to a new address and gets a new alias.
    const reply = await srv.control({
      op: 'setRecords',
      records: [
        { name: 'web', ips: ['10.77.0.9'], network: 'n1', sandbox: 'W' },
        { name: 'api', ips: ['10.77.0.9'], network: 'n1', sandbox: 'W' },
      ],
    });
    assert.equal(reply, 'ok');
    assert.deepEqual(data(await query(b, ctr, 'web', 'A')), ['10.77.0.9']);
    assert.match(await nslookup(b, ctr, 'api', 'a'), /Address:\s*10\.77\.0\.9\b/);
    // The old alias is no longer ours: forwarded, and with no upstream that is SERVFAIL.
    assert.equal((await query(b, ctr, 'frontend', 'A')).rcode, 'SERVFAIL');

    const stats = await statsOf(srv);
    assert.ok((stats.answered ?? 0) >= 5, JSON.stringify(stats));
    assert.equal(stats.malformed, 0);
  });

  test('unknown names are forwarded to the upstream; SERVFAIL in bounded time when it is down', async (t) => {
    const { b, host, ctr, outside } = topology(t);
    const upstream = await serve(b, outside, {
      listen: [upstreamListen],
      upstreams: [],
      records: [{ name: 'example.org', ips: ['192.0.2.80', '2001:db8::80'] }],
    });
    const timeoutMs = 1000;
    await serve(b, host, {
      listen: [n1Listen],
      upstreams: ['10.88.0.2'],
      timeoutMs,
      records: hostRecords,
    });

    const fwd = await query(b, ctr, 'example.org', 'A');
    assert.equal(fwd.rcode, 'NOERROR');
    assert.deepEqual(data(fwd), ['192.0.2.80']);
    assert.match(await nslookup(b, ctr, 'example.org', 'aaaa'), /Address:\s*2001:db8::80\b/);
    // Our own names are still answered locally.
    assert.deepEqual(data(await query(b, ctr, 'web', 'A')), ['10.77.0.2']);

    // The upstream dies: the client gets SERVFAIL after about the timeout, not a hang.
    const exited = new Promise((r) => upstream.child.once('exit', r));
    process.kill(upstream.child.pid!, 'SIGKILL');
    await exited;
    const down = await query(b, ctr, 'example.org', 'A');
    assert.equal(down.rcode, 'SERVFAIL', JSON.stringify(down));
    // ms includes the query tool's start-up (tsx, a few hundred ms): bound generously.
    assert.ok(down.ms >= timeoutMs - 50 && down.ms < timeoutMs + 3000, `${down.ms} ms`);
    assert.deepEqual(data(await query(b, ctr, 'web', 'AAAA')), ['fd77::2']);
  });

  test('glibc resolves a name whose answer needs TCP; names not ours go upstream over TCP', async (t) => {
    const { b, host, ctr, outside } = topology(t);
    await serve(b, outside, {
      listen: [upstreamListen],
      upstreams: [],
      records: [{ name: 'example.org', ips: ['192.0.2.80', '2001:db8::80'] }],
    });
    // 60 addresses: about 1 KB, over the 512 bytes of a UDP answer without EDNS.
    const many = Array.from({ length: 60 }, (_, i) => `10.99.0.${i + 1}`);
    const srv = await serve(b, host, {
      listen: [n1Listen],
      upstreams: ['10.88.0.2'],
      records: [...hostRecords, { name: 'many', ips: many, network: 'n1', sandbox: 'M' }],
    });

    // glibc gets TC over UDP and asks again over TCP; `many.n1` is `many` on n1.
    const addrs = await getent(b, ctr, 'many.n1');
    assert.deepEqual([...addrs].sort(), [...many].sort());
    assert.deepEqual(await getent(b, ctr, 'web'), ['10.77.0.2']);

    const auto = await query(b, ctr, 'many', 'A', { mode: 'auto' });
    assert.equal(auto.tcp, true);
    assert.equal(auto.answers?.length, 60);
    const fwd = await query(b, ctr, 'example.org', 'A', { mode: 'tcp' });
    assert.equal(fwd.rcode, 'NOERROR', JSON.stringify(fwd));
    assert.deepEqual(data(fwd), ['192.0.2.80']);

    const stats = await statsOf(srv);
    assert.ok((stats.tcpQueries ?? 0) >= 3, JSON.stringify(stats));
    assert.equal(stats.malformed, 0);
  });

  test('a sandbox on two networks sees both; another network’s clients are refused', async (t) => {
    // host: wbr0 10.77.0.1/24 (n1), wbr1 10.78.0.1/24 (n2).
    // ctr (sandbox A): 10.77.0.2 on n1 and 10.78.0.2 on n2. ctr2 (sandbox B): 10.78.0.3 on n2 only.
    const b = bed(t);
    const host = b.ns('host');
    const ctr = b.ns('ctr');
    const ctr2 = b.ns('ctr2');
    host.h.links.add({ kind: 'bridge', name: 'wbr0', up: true });
    host.h.addrs.add('wbr0', '10.77.0.1/24');
    host.h.links.add({ kind: 'bridge', name: 'wbr1', up: true });
    host.h.addrs.add('wbr1', '10.78.0.1/24');
    const attach = (c: BedNs, ifname: string, hostSide: string, bridge: string, cidr: string) => {
      host.h.links.add({
        kind: 'veth',
        name: hostSide,
        master: bridge,
        up: true,
        peer: { name: ifname, netns: c.ns },
      });
      c.h.links.setUp(ifname);
      c.h.addrs.add(ifname, cidr);
    };
    attach(ctr, 'eth0', 'va0', 'wbr0', '10.77.0.2/24');
    attach(ctr, 'eth1', 'va1', 'wbr1', '10.78.0.2/24');
    ctr.h.routes.add({ dst: 'default', via: '10.77.0.1' });
    attach(ctr2, 'eth0', 'vb0', 'wbr1', '10.78.0.3/24');
    ctr2.h.routes.add({ dst: 'default', via: '10.78.0.1' });
    await serve(b, host, {
      listen: [n1Listen, { address: '10.78.0.1', network: 'n2', subnets: ['10.78.0.0/24'] }],
      upstreams: [],
      records: [
        { name: 'web', ips: ['10.77.0.2'], network: 'n1', sandbox: 'A' },
        { name: 'web', ips: ['10.78.0.2'], network: 'n2', sandbox: 'A' },
        { name: 'peer', ips: ['10.78.0.3'], network: 'n2', sandbox: 'B' },
        { name: 'only1', ips: ['10.77.0.50'], network: 'n1', sandbox: 'C' },
      ],
    });

    // A asks n1's gateway for B, which is on n2 only.
    assert.match(await nslookup(b, ctr, 'peer', 'a'), /Address:\s*10\.78\.0\.3\b/);
    assert.deepEqual(data(await query(b, ctr, 'PEER.n2.', 'A')), ['10.78.0.3']);
    assert.deepEqual(await getent(b, ctr, 'only1'), ['10.77.0.50']);
    // B sees A at its n2 address, and nothing only on n1 (forwarded: no upstream, SERVFAIL).
    const n2 = { server: '10.78.0.1' };
    assert.deepEqual(data(await query(b, ctr2, 'web', 'A', n2)), ['10.78.0.2']);
    assert.equal((await query(b, ctr2, 'only1', 'A', n2)).rcode, 'SERVFAIL');
    assert.equal((await query(b, ctr2, 'only1.n1', 'A', n2)).rcode, 'SERVFAIL');
    // B reaches n1's gateway through its default route: refused over UDP; over TCP the
    // connection is closed at once.
    assert.equal((await query(b, ctr2, 'web', 'A')).rcode, 'REFUSED');
    const tcp = await query(b, ctr2, 'example.org', 'A', { mode: 'tcp' });
    assert.ok(tcp.error === 'closed' || tcp.error === 'ECONNRESET', JSON.stringify(tcp));
    assert.doesNotMatch(await nslookup(b, ctr2, 'only1', 'a'), /10\.77\.0\.50/);
  });
});
