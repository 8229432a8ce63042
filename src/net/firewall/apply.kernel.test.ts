/**
 * HostFirewall against real namespaces: a "host" namespace with a bridge network built by the
 * BridgeDriver (sandboxes under a temp run dir) and an "outside" namespace on a veth uplink
 * (host 198.51.100.1, outside 198.51.100.2, outside's default route via the host), playing a
 * remote client and an internet server. Real packets: published ports from outside, from the
 * host and by hairpin (a neighbour and the container itself), masquerade, an iptables FORWARD
 * policy of DROP; removal of a mapping (conntrack included) and exact removal of everything.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { type Bed, type BedNs, bed, needsRoot, RUN_ID } from '../../../test/bed.js';
import { Conntrack } from '../../kernel/conntrack.js';
import { openHandle } from '../../kernel/handle.js';
import { isWeftError, WeftError } from '../../lib/errors.js';
import { parseCidr, parseIP, parseIPNet } from '../../lib/ip.js';
import { createLogger } from '../../lib/log.js';
import { BridgeDriver } from '../bridge/driver.js';
import type { EndpointSpec, NetworkSpec } from '../driver.js';
import { createSandbox, removeSandbox, type Sandbox } from '../sandbox.js';
import { conntrackFilter, HostFirewall, type HostFirewallOptions, removedPorts } from './apply.js';
import { ep, net, port } from './fixtures.test.js';
import { IPT_CHAIN } from './iptables.js';
import { planFirewall } from './plan.js';
import { renderTable } from './render.js';
import type { FirewallState, PortMapping } from './types.js';

const HOST_IP = '198.51.100.1';
const OUT_IP = '198.51.100.2';

const NETWORK: NetworkSpec = {
  id: 'n1',
  name: 'net1',
  driver: 'bridge',
  bridge: 'wbr1',
  mtu: 1500,
  subnets: [{ subnet: parseCidr('10.77.0.0/24'), gateway: parseIP('10.77.0.1') }],
  internal: false,
  icc: true,
  masquerade: true,
  options: {},
};
const E1: EndpointSpec = {
  id: 'aaaaaaa1111',
  networkId: 'n1',
  addresses: [parseIPNet('10.77.0.2/24')],
  ifname: 'eth0',
};
const E2: EndpointSpec = {
  id: 'bbbbbbb2222',
  networkId: 'n1',
  addresses: [parseIPNet('10.77.0.3/24')],
  ifname: 'eth0',
};

/** The firewall state of the network with e1 publishing `ports`. */
const stateWith = (ports: PortMapping[]): FirewallState => ({
  networks: [
    net('n1', 'wbr1', ['10.77.0.0/24'], {
      endpoints: [ep(E1.id, ['10.77.0.2'], ports), ep(E2.id, ['10.77.0.3'])],
    }),
  ],
});

const asBed = (s: Sandbox): BedNs => ({ ns: s.ns, h: openHandle(s.ns), name: s.id });

/** A firewall whose kept conntrack socket is closed before the bed removes its namespaces. */
function firewall(b: Bed, opts: HostFirewallOptions): HostFirewall {
  const fw = new HostFirewall(opts);
  b.onCleanup(() => fw.close());
  return fw;
}

async function run(b: Bed, ns: BedNs, cmd: string, args: string[]): Promise<string> {
  return String((await b.exec(ns, cmd, args)).stdout);
}

/** Host (with the driver's network and two sandboxes) and outside, linked by a veth pair. */
async function world(b: Bed) {
  const host = b.ns('host');
  const out = b.ns('out');
  host.h.links.add({ kind: 'veth', name: 'up0', up: true, peer: { name: 'eth0', netns: out.ns } });
  out.h.links.setUp('eth0');
  host.h.addrs.add('up0', parseIPNet(`${HOST_IP}/24`));
  out.h.addrs.add('eth0', parseIPNet(`${OUT_IP}/24`));
  out.h.routes.add({ dst: 'default', family: 4, via: HOST_IP, dev: 'eth0' });

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-run-`));
  const made: Sandbox[] = [];
  b.onCleanup(() => {
    for (const s of made) {
      s.ns.close();
      removeSandbox(dir, s.id);
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const driver = new BridgeDriver({ host: host.h });
  await driver.createNetwork(NETWORK);
  const sandboxes: BedNs[] = [];
  for (const [e, id] of [
    [E1, 's1'],
    [E2, 's2'],
  ] as const) {
    const s = createSandbox(dir, id);
    made.push(s);
    await driver.createEndpoint(NETWORK, e);
    await driver.join(NETWORK, e, s);
    sandboxes.push(asBed(s));
  }
  const [s1, s2] = sandboxes as [BedNs, BedNs];
  return { host, out, s1, s2 };
}

/** Start a server (see SERVER) in `where`; resolves once it listens on every port. */
async function serve(b: Bed, where: BedNs, specs: string[]): Promise<void> {
  const child = b.spawn(where, process.execPath, ['-e', SERVER, ...specs], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start in 5 s')), 5000);
    child.stdout!.once('data', () => {
      clearTimeout(timer);
      resolve();
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited ${code}`));
    });
  });
}

/** "<peer address> <local port>" as the server saw it, 'TIMEOUT' or 'ERR <code>'. */
const probe = async (b: Bed, from: BedNs, addr: string, p: number, udpFrom?: number): Promise<string> =>
  (
    await run(b, from, process.execPath, [
      '-e',
      CLIENT,
      udpFrom === undefined ? 'tcp' : 'udp',
      addr,
      String(p),
      String(udpFrom ?? 0),
    ])
  ).trim();

async function check(b: Bed, cases: [BedNs, string, number, string | RegExp, number?][]): Promise<void> {
  const results = await Promise.all(cases.map(([from, addr, p, , u]) => probe(b, from, addr, p, u)));
  const failures = cases.flatMap(([from, addr, p, want], i) => {
    const got = results[i]!;
    const ok = typeof want === 'string' ? got === want : want.test(got);
    return ok ? [] : [`${from.name} -> ${addr}:${p}: got "${got}", want ${String(want)}`];
  });
  assert.deepEqual(failures, []);
}

/** One entry of `conntrack -L` output: the original and reply tuples. */
interface ListedEntry {
  readonly origSrc: string;
  readonly origDst: string;
  readonly origSport: number;
  readonly origDport: number;
  readonly replySrc: string;
  readonly replySport: number;
}

/** Parse `conntrack -L` (default format) lines; lines without two port tuples are skipped. */
function parseConntrack(text: string): ListedEntry[] {
  const out: ListedEntry[] = [];
  for (const line of text.split('\n')) {
    const src: string[] = [];
    const dst: string[] = [];
    const sport: number[] = [];
    const dport: number[] = [];
    for (const m of line.matchAll(/\b(src|dst|sport|dport)=(\S+)/g)) {
      const v = m[2]!;
      if (m[1] === 'src') src.push(v);
      else if (m[1] === 'dst') dst.push(v);
      else if (m[1] === 'sport') sport.push(Number(v));
      else dport.push(Number(v));
    }
    if (src.length < 2 || dst.length < 1 || sport.length < 2 || dport.length < 1) continue;
    out.push({
      origSrc: src[0]!,
      origDst: dst[0]!,
      origSport: sport[0]!,
      origDport: dport[0]!,
      replySrc: src[1]!,
      replySport: sport[1]!,
    });
  }
  return out;
}

/** Conntrack entries in `ns` whose original destination port is `p` (read by the conntrack tool). */
async function ctCount(b: Bed, ns: BedNs, proto: string, p: number): Promise<number> {
  return parseConntrack(await run(b, ns, 'conntrack', ['-L', '-p', proto, '--orig-port-dst', String(p)]))
    .length;
}

async function iptablesSaved(b: Bed, ns: BedNs): Promise<string[]> {
  return Promise.all(['iptables-save', 'ip6tables-save'].map((c) => run(b, ns, c, ['-t', 'filter'])));
}

describe('HostFirewall', needsRoot, () => {
  test('a published port answers from outside, the host, a neighbour and the container itself; masquerade; also under FORWARD DROP', async (t) => {
    const b = bed(t);
    const { host, out, s1, s2 } = await world(b);
    await Promise.all([serve(b, s1, ['tcp:80']), serve(b, s2, ['tcp:80']), serve(b, out, ['tcp:80'])]);
    // Sysctls read again 300 ms after the last read: long enough for the next few applies.
    const fw = firewall(b, { host: host.h, sysctlRecheckMs: 300 });
    const state = stateWith([port('tcp', 8080, 80)]);
    await fw.apply(state);
    await fw.apply(state); // idempotent

    assert.equal(await run(b, host, 'nft', ['list', 'table', 'inet', 'weft']), renderTable(state));
    assert.equal(host.h.sysctl.get('net.ipv4.ip_forward'), '1');
    assert.equal(host.h.sysctl.get('net/ipv4/conf/wbr1/route_localnet'), '1');
    // Sysctls are read and set when their list changes, on repair, or once the recheck
    // interval has passed; not on every apply.
    const localnet = 'net/ipv4/conf/wbr1/route_localnet';
    host.h.sysctl.set(localnet, '0');
    const read = Date.now();
    await fw.apply(state, { repair: true });
    assert.equal(host.h.sysctl.get(localnet), '1', 'repair sets it again');
    host.h.sysctl.set(localnet, '0');
    await fw.apply(state);
    if (Date.now() - read < 300) assert.equal(host.h.sysctl.get(localnet), '0', 'same list: not read again');
    await new Promise((r) => setTimeout(r, 320));
    await fw.apply(state);
    assert.equal(host.h.sysctl.get(localnet), '1', 'read again after the interval: set again');
    assert.equal(host.h.links.bridgePort('vethaaaaaaa').hairpin, true, 'the driver set hairpin mode');
    assert.equal(host.h.links.bridgePort('vethbbbbbbb').hairpin, true);
    assert.deepEqual(fw.applied, state);

    const cases: [BedNs, string, number, string | RegExp][] = [
      [out, HOST_IP, 8080, `${OUT_IP} 80`], // from outside, client address kept
      [host, HOST_IP, 8080, `${HOST_IP} 80`], // from the host itself
      [host, '127.0.0.1', 8080, '10.77.0.1 80'], // through localhost (route_localnet)
      [s2, HOST_IP, 8080, '10.77.0.1 80'], // a neighbour, hairpin
      [s1, HOST_IP, 8080, '10.77.0.1 80'], // the container itself, hairpin mode on its port
      [s1, OUT_IP, 80, `${HOST_IP} 80`], // masquerade: the internet sees the host
      [s2, '10.77.0.2', 80, '10.77.0.3 80'], // within the network
      [out, '10.77.0.2', 80, /^(TIMEOUT|ERR)/], // no direct access from outside
    ];
    await check(b, cases);

    // A foreign FORWARD policy of DROP (as Docker sets it): weft's jump, first in FORWARD, keeps
    // its traffic flowing; a re-apply keeps it first and single.
    for (const cmd of ['iptables', 'ip6tables']) await b.exec(host, cmd, ['-P', 'FORWARD', 'DROP']);
    await b.exec(host, 'iptables', ['-I', 'FORWARD', '1', '-i', 'foreign0', '-j', 'ACCEPT']);
    await fw.apply(state, { repair: true });
    for (const saved of await iptablesSaved(b, host)) {
      const lines = saved.split('\n');
      assert.ok(lines.some((l) => l.startsWith(':FORWARD DROP')));
      assert.equal(
        lines.find((l) => l.startsWith('-A FORWARD')),
        `-A FORWARD -j ${IPT_CHAIN}`,
      );
      assert.equal(lines.filter((l) => l === `-A FORWARD -j ${IPT_CHAIN}`).length, 1);
    }
    await check(b, cases);
  });

  test('a removed mapping stops answering at once (conntrack too); remove() leaves nothing of weft', async (t) => {
    const b = bed(t);
    const { host, out, s1 } = await world(b);
    await serve(b, s1, ['tcp:80', 'udp:6000', 'udp:5305']);
    for (const cmd of ['iptables', 'ip6tables']) await b.exec(host, cmd, ['-P', 'FORWARD', 'DROP']);
    await b.exec(host, 'iptables', ['-A', 'FORWARD', '-i', 'foreign0', '-j', 'ACCEPT']);
    const logs: string[] = [];
    const fw = firewall(b, {
      host: host.h,
      log: createLogger({ level: 'debug', sink: (l) => logs.push(l) }),
    });
    const ports = [port('tcp', 8080, 80), port('udp', 6000, 6000), port('udp', [5300, 5319], [5300, 5319])];
    await fw.apply(stateWith(ports));

    // UDP from a fixed source port: the same tuple again would ride the old conntrack entry.
    await check(b, [
      [out, HOST_IP, 8080, `${OUT_IP} 80`],
      [out, HOST_IP, 6000, `${OUT_IP} 6000`, 41000],
      [out, HOST_IP, 5305, `${OUT_IP} 5305`, 41005],
    ]);
    assert.ok((await ctCount(b, host, 'tcp', 8080)) > 0);
    assert.equal(await ctCount(b, host, 'udp', 6000), 1);
    assert.equal(await ctCount(b, host, 'udp', 5305), 1);

    // A tentative removal (forget: false) keeps the entries, and a re-apply with the ports back
    // leaves them be; a later forgetRemoved deletes the entries of ports still gone.
    const counts = async () =>
      [(await ctCount(b, host, 'tcp', 8080)) > 0, await ctCount(b, host, 'udp', 5305)] as const;
    await fw.apply(stateWith([port('udp', 6000, 6000)]), { forget: false });
    assert.deepEqual(await counts(), [true, 1], 'held back');
    await fw.apply(stateWith(ports));
    await fw.forgetRemoved();
    assert.deepEqual(await counts(), [true, 1], 'the ports came back: kept');
    await fw.apply(stateWith([port('tcp', 8080, 80), port('udp', 6000, 6000)]), { forget: false });
    await fw.forgetRemoved();
    assert.deepEqual(await counts(), [true, 0], 'forgotten once the removal is settled');
    await fw.forgetRemoved();

    // Keep the single UDP port, drop the rest.
    await fw.apply(stateWith([port('udp', 6000, 6000)]));
    assert.equal(await ctCount(b, host, 'tcp', 8080), 0, 'conntrack entries of tcp 8080 deleted');
    assert.equal(await ctCount(b, host, 'udp', 5305), 0, 'conntrack entries of the udp range deleted');
    assert.equal(await ctCount(b, host, 'udp', 6000), 1, 'the kept mapping keeps its entry');
    await check(b, [
      [out, HOST_IP, 8080, /^(TIMEOUT|ERR)/],
      [out, HOST_IP, 5305, /^(TIMEOUT|ERR)/, 41005],
      [out, HOST_IP, 6000, `${OUT_IP} 6000`, 41000],
    ]);
    assert.ok(logs.some((l) => l.includes('conntrack entries deleted')));

    // Everything goes, exactly, twice; the foreign policy and rule stay.
    await b.exec(host, 'nft', ['add', 'table', 'inet', 'other']);
    await fw.remove();
    await fw.remove();
    assert.equal(fw.applied, undefined);
    const tables = await run(b, host, 'nft', ['list', 'tables']);
    assert.doesNotMatch(tables, /inet weft/);
    assert.match(tables, /inet other/);
    const [v4, v6] = await iptablesSaved(b, host);
    for (const saved of [v4!, v6!]) {
      assert.doesNotMatch(saved, /WEFT-FORWARD/);
      assert.match(saved, /:FORWARD DROP/);
    }
    assert.match(v4!, /-A FORWARD -i foreign0 -j ACCEPT/);
    assert.equal(await ctCount(b, host, 'udp', 6000), 0, 'remove() forgets the last ports’ entries');
    await check(b, [[out, HOST_IP, 6000, /^(TIMEOUT|ERR)/, 41000]]);
  });

  test('bad input changes nothing; a sysctl that cannot be set fails loudly and rolls back', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const fw = firewall(b, { host: host.h });
    await assert.rejects(
      fw.apply(stateWith([port('tcp', 70000, 80)])),
      (e) => isWeftError(e, 'INVALID') && /out of range/.test(e.message),
    );
    const conflicting = stateWith([port('tcp', 8080, 80)]);
    await assert.rejects(
      fw.apply({
        networks: [
          ...conflicting.networks,
          net('n2', 'wbr2', ['10.78.0.0/24'], {
            endpoints: [ep('c3', ['10.78.0.2'], [port('tcp', 8080, 80)])],
          }),
        ],
      }),
      (e) => isWeftError(e, 'CONFLICT'),
    );
    assert.equal(await run(b, host, 'nft', ['list', 'tables']), '');
    assert.equal(host.h.sysctl.get('net.ipv4.ip_forward'), '0');

    // route_localnet on a bridge that does not exist: ip_forward (set first) is restored, no table.
    await assert.rejects(
      fw.apply(stateWith([port('tcp', 8080, 80)])),
      (e) =>
        isWeftError(e, 'NOT_FOUND') && /route_localnet/.test(e.message) && /127\.0\.0\.0\/8/.test(e.message),
    );
    assert.equal(host.h.sysctl.get('net.ipv4.ip_forward'), '0');
    assert.equal(await run(b, host, 'nft', ['list', 'tables']), '');
    assert.doesNotMatch((await iptablesSaved(b, host)).join('\n'), /WEFT/);
    assert.equal(fw.applied, undefined);
  });

  test('missing iptables tools and a kernel without conntrack netlink are skipped cleanly (logged)', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    host.h.links.add({ kind: 'bridge', name: 'wbr1', up: true });
    const logs: string[] = [];
    const missing = '/nonexistent/weft-tool';
    /** What Conntrack answers where the kernel has no nf_conntrack_netlink. */
    class NoConntrack extends Conntrack {
      override delete(): number {
        throw new WeftError('UNSUPPORTED', 'conntrack is not available (test)');
      }
    }
    const conntrack = new NoConntrack(host.ns);
    b.onCleanup(() => conntrack.close());
    const fw = firewall(b, {
      host: host.h,
      log: createLogger({ sink: (l) => logs.push(l) }),
      conntrack,
      tools: {
        'iptables-save': missing,
        'ip6tables-save': missing,
        'iptables-restore': missing,
        'ip6tables-restore': missing,
      },
    });
    await fw.apply(stateWith([port('tcp', 8080, 80)]));
    await fw.apply(stateWith([]));
    assert.match(await run(b, host, 'nft', ['list', 'tables']), /table inet weft/);
    assert.doesNotMatch((await iptablesSaved(b, host)).join('\n'), /WEFT/);
    assert.ok(logs.some((l) => l.includes('iptables-save is not installed')));
    assert.ok(logs.some((l) => l.includes('ip6tables-save is not installed')));
    assert.ok(logs.some((l) => l.includes('conntrack is not available')));
    await fw.remove();
    assert.equal(await run(b, host, 'nft', ['list', 'tables']), '');
  });
});

describe('HostFirewall helpers (pure)', () => {
  test('removedPorts: exactly the mappings that went or changed', () => {
    const a = planFirewall(stateWith([port('tcp', 8080, 80), port('udp', 53, 53), port('tcp', 9000, 90)]));
    const b = planFirewall(stateWith([port('tcp', 8080, 80), port('tcp', 9000, 91)]));
    assert.deepEqual(
      removedPorts(a, b).map((p) => `${p.proto} ${p.hostStart}->${p.containerStart}`),
      ['udp 53->53', 'tcp 9000->90'],
    );
    assert.deepEqual(removedPorts(undefined, b), []);
    assert.equal(removedPorts(a, undefined).length, 3);
  });

  test('conntrackFilter: the entries of a removed mapping, by family, protocol, ports, target and host address', () => {
    const plan = planFirewall(
      stateWith([port('udp', [5300, 5319], [6300, 6319]), port('tcp', 8080, 80, '198.51.100.1')]),
    );
    assert.deepEqual(plan.networks[0]!.ports.map(conntrackFilter), [
      { family: 4, proto: 'udp', dport: [5300, 5319], replySrc: parseIP('10.77.0.2'), replySport: 6300 },
      {
        family: 4,
        proto: 'tcp',
        dport: [8080, 8080],
        replySrc: parseIP('10.77.0.2'),
        replySport: 80,
        origDst: parseIP('198.51.100.1'),
      },
    ]);
  });

  test("parseConntrack (the tests' reader) reads the original and reply tuples", () => {
    const text = [
      'tcp      6 118 TIME_WAIT src=198.51.100.2 dst=198.51.100.1 sport=40000 dport=8080 src=10.77.0.2 dst=198.51.100.2 sport=80 dport=40000 [ASSURED] mark=0 use=1',
      'udp      17 29 src=fd00::2 dst=fd00::1 sport=41005 dport=5305 [UNREPLIED] src=fd77::2 dst=fd00::2 sport=5305 dport=41005 mark=0 use=1',
      'conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.',
    ].join('\n');
    assert.deepEqual(parseConntrack(text), [
      {
        origSrc: '198.51.100.2',
        origDst: '198.51.100.1',
        origSport: 40000,
        origDport: 8080,
        replySrc: '10.77.0.2',
        replySport: 80,
      },
      {
        origSrc: 'fd00::2',
        origDst: 'fd00::1',
        origSport: 41005,
        origDport: 5305,
        replySrc: 'fd77::2',
        replySport: 5305,
      },
    ]);
  });
});

/** Servers for `tcp:PORT` / `udp:PORT` answering "<peer address> <local port>"; prints "ready". */
const SERVER = `
const net = require('node:net');
const dgram = require('node:dgram');
const specs = process.argv.slice(1);
let pending = specs.length;
const ready = () => { if (--pending === 0) console.log('ready'); };
const peer = (a) => a.replace(/^::ffff:/, '');
for (const spec of specs) {
  const [proto, p] = spec.split(':');
  if (proto === 'tcp') {
    net.createServer((s) => s.end(peer(s.remoteAddress) + ' ' + s.localPort))
      .listen({ port: Number(p), host: '0.0.0.0' }, ready);
  } else {
    const u = dgram.createSocket('udp4');
    u.on('message', (m, r) => u.send(peer(r.address) + ' ' + p, r.port, r.address));
    u.bind(Number(p), '0.0.0.0', ready);
  }
}`;

/** tcp|udp HOST PORT UDP_SOURCE_PORT: prints the answer, TIMEOUT or ERR <code>; never hangs. */
const CLIENT = `
const net = require('node:net');
const dgram = require('node:dgram');
const [proto, host, port, from] = process.argv.slice(1);
const done = (s) => { console.log(s); process.exit(0); };
setTimeout(() => done('TIMEOUT'), 1500);
if (proto === 'tcp') {
  let out = '';
  const s = net.connect({ host, port: Number(port) });
  s.on('data', (d) => (out += d));
  s.on('end', () => done(out.trim()));
  s.on('error', (e) => done('ERR ' + e.code));
} else {
  const u = dgram.createSocket('udp4');
  u.on('message', (m) => done(String(m).trim()));
  u.on('error', (e) => done('ERR ' + e.code));
  u.bind(Number(from), () => u.send('x', Number(port), host));
}`;
