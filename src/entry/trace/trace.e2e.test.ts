/**
 * `weft trace` on real labs (embedded store, 2 hosts each): vxlan fully (one host's two
 * containers, across hosts, a published port from the internet, a container to the internet,
 * --probe, bad input, one-host mode through `weft lab exec`, then each kind of break injected and
 * reported at its hop, the probe finding it, and last a stopped daemon), host-gw and udp one
 * cross-host trace each (udp also its stopped daemon, which is a real break there). The tests of
 * a lab run in order on one lab; tests that break something repair it before the next one (the
 * daemons would too, within their 10 s resync: injections are retried when a resync wins the
 * race). Lab names carry the run id (the runner's leftover check).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { isRoot, testLabName } from '../../../test/bed.js';
import { type NetHandle, openHandle } from '../../kernel/handle.js';
import { Netns } from '../../kernel/netns.js';
import { Nft } from '../../kernel/nft.js';
import { runTool } from '../../kernel/run.js';
import { formatIP, networkOf, parseIPNet } from '../../lib/ip.js';
import type { Hop } from '../../net/trace/index.js';
import * as lab from '../lab/lab.js';
import { alive } from '../lab/procs.js';
import { assertGone, code } from '../lab/testkit.test.js';
import { DEFAULT_PATHS, nsPath, type Role } from '../lab/topology.js';
import { runTrace, type TraceReport } from './command.js';

const execFileP = promisify(execFile);
const labName = testLabName;

/** `place step` of every hop, in order. */
const steps = (r: TraceReport): string[] => r.trace.hops.map((h) => `${h.place} ${h.step}`);
const hopAt = (r: TraceReport, place: string, step: Hop['step'], nth = 0): Hop => {
  const h = r.trace.hops.filter((x) => x.place === place && x.step === step)[nth];
  assert.ok(h, `no ${step} hop at ${place}: ${steps(r).join(', ')}`);
  return h;
};
const brokenHop = (r: TraceReport): Hop => {
  const b = r.trace.hops.find((h) => h.status === 'broken');
  assert.ok(b, `not broken:\n${r.text}`);
  return b;
};

/** A lab host's namespace and handle, closed by the caller. */
function hostNs(name: string, host: string): { ns: Netns; h: NetHandle } {
  const ns = Netns.open(nsPath(DEFAULT_PATHS, name, host as Role));
  return { ns, h: openHandle(ns) };
}

async function stopDaemon(name: string, host: string): Promise<void> {
  const rec = lab.loadLab(name);
  const d = rec.hosts.find((h) => h.name === host)?.daemon;
  assert.ok(d, `${host} has no daemon`);
  process.kill(d.pid, 'SIGTERM');
  for (let i = 0; i < 100 && alive(d); i++) await new Promise((r) => setTimeout(r, 50));
  assert.equal(alive(d), false, `${host}'s daemon did not stop`);
}

/**
 * Break something and trace until the trace sees it: a daemon's resync (every 10 s) may repair
 * it between the injection and the trace; then inject again (at most 3 times).
 */
async function whileBroken(
  inject: () => Promise<void> | void,
  run: () => Promise<TraceReport>,
  seen: (r: TraceReport) => boolean,
): Promise<TraceReport> {
  let r: TraceReport | undefined;
  for (let i = 0; i < 3; i++) {
    await inject();
    r = await run();
    if (seen(r)) return r;
  }
  assert.fail(`the break was not seen in 3 tries:\n${r?.text}`);
}

interface Lab {
  name: string;
  hosts: { name: string; publicIp: string; subnet: string; containers: { name: string; ip: string }[] }[];
}

async function upLab(name: string, backend: string, containers: number): Promise<Lab> {
  const r = await lab.up({ name, backend, hosts: 2, containers });
  return {
    name,
    hosts: r.status.hosts.map((h) => ({
      name: h.name,
      publicIp: h.publicIp,
      subnet: h.subnet!,
      containers: h.containers.map((c) => ({ name: c.name, ip: c.ip! })),
    })),
  };
}

/**
 * The tests of `body`, in order, on one lab of `backend` (2 hosts, 2 containers each) named
 * `labName(tag)`: up before them (`L` filled in then), down after them leaving nothing.
 */
function onLab(title: string, tag: string, backend: string, body: (name: string, L: Lab) => void): void {
  describe(title, { skip: !isRoot() && 'needs root', concurrency: false }, () => {
    const name = labName(tag);
    const L: Lab = { name, hosts: [] };
    before(async () => {
      Object.assign(L, await upLab(name, backend, 2));
    });
    after(async () => {
      await lab.down(name);
      assertGone(name);
    });
    body(name, L);
  });
}

onLab('weft trace on a vxlan lab', 'tv', 'vxlan', (name, L) => {
  const trace = (src: string, dst: string, probe = false) => runTrace({ src, dst, lab: name, probe });

  test('same host: container eth0 → veth → bridge (forward hook of br_netfilter) → veth → container', async () => {
    const r = await trace('h1c1', 'h1c2:80');
    assert.equal(r.ok, true, r.text);
    assert.deepEqual(steps(r), [
      'host1/h1c1 route',
      'host1/h1c1 neighbour',
      'host1 veth',
      'host1 nft',
      'host1 bridge',
      'host1/h1c2 veth',
      'host1/h1c2 route',
      'host1/h1c2 deliver',
    ]);
    const h2 = L.hosts[0]!.containers[1]!;
    assert.equal(hopAt(r, 'host1/h1c1', 'route').entry?.matched, L.hosts[0]!.subnet);
    assert.match(hopAt(r, 'host1', 'nft').decision, /within the network/);
    assert.match(
      hopAt(r, 'host1/h1c2', 'deliver').decision,
      new RegExp(`${h2.ip}.*a socket listens on tcp/80`),
    );
    assert.deepEqual(hopAt(r, 'host1', 'veth').watch, {
      place: 'host1',
      dev: hopAt(r, 'host1', 'veth').dev,
      dir: 'rx',
    });
  });

  test('across hosts: route → weft.1 → neighbour (VTEP MAC) → FDB (host2) → VXLAN → underlay → decap → bridge → container', async () => {
    const r = await trace('host1/h1c1', 'host2/h2c1:80');
    assert.equal(r.ok, true, r.text);
    const [h1, h2] = L.hosts;
    assert.deepEqual(steps(r), [
      'host1/h1c1 route',
      'host1/h1c1 neighbour',
      'host1 veth',
      'host1 bridge',
      'host1 route',
      'host1 neighbour',
      'host1 fdb',
      'host1 encap',
      'host1 route',
      'host1 neighbour',
      'switch veth',
      'switch bridge',
      'host2 veth',
      'host2 route',
      'host2 decap',
      'host2 route',
      'host2 nft',
      'host2 neighbour',
      'host2 bridge',
      'host2/h2c1 veth',
      'host2/h2c1 route',
      'host2/h2c1 deliver',
    ]);
    const route = hopAt(r, 'host1', 'route');
    assert.equal(route.entry?.matched, h2!.subnet, 'the kernel’s FIB entry: the peer subnet');
    assert.equal(route.entry?.dev, 'weft.1');
    assert.equal(route.entry?.gateway, formatIP(networkOf(parseIPNet(h2!.subnet)).ip));
    assert.match(hopAt(r, 'host1', 'neighbour').decision, /permanent \(host2's VTEP\)/);
    assert.equal(hopAt(r, 'host1', 'fdb').entry?.dst, h2!.publicIp);
    const enc = hopAt(r, 'host1', 'encap');
    assert.equal(enc.changed, true);
    assert.deepEqual(
      [enc.packet.src, enc.packet.dst, enc.packet.proto, enc.packet.dport, enc.packet.encap?.vni],
      [h1!.publicIp, h2!.publicIp, 'udp', 8472, 1],
    );
    assert.equal(enc.packet.encap?.inner.dst, h2!.containers[0]!.ip);
    assert.equal(hopAt(r, 'host1', 'route', 1).entry?.dev, 'eth0', 'the outer packet leaves by the underlay');
    assert.equal(hopAt(r, 'host2', 'decap').packet.dst, h2!.containers[0]!.ip);
    assert.match(hopAt(r, 'host2', 'nft').decision, /from the cluster network/);
    assert.equal(r.trace.hops.at(-1)?.packet.src, h1!.containers[0]!.ip, 'no NAT inside the cluster');
  });

  test('a published port from the internet: the DNAT rule and the new destination', async () => {
    const [h1] = L.hosts;
    const r = await trace('internet', `${h1!.publicIp}:8080`);
    assert.equal(r.ok, true, r.text);
    const dnat = hopAt(r, 'host1', 'nft');
    assert.match(dnat.decision, /^prerouting: dnat to .* by inet weft published: .*tcp 8080 -> 80/);
    assert.equal(dnat.changed, true);
    assert.deepEqual([dnat.packet.dst, dnat.packet.dport], [h1!.containers[0]!.ip, 80]);
    const i = r.trace.hops.indexOf(dnat);
    assert.deepEqual(steps(r).slice(i + 1), [
      'host1 route',
      'host1 nft',
      'host1 neighbour',
      'host1 bridge',
      'host1/h1c1 veth',
      'host1/h1c1 route',
      'host1/h1c1 deliver',
    ]);
    assert.match(hopAt(r, 'host1', 'nft', 1).decision, /^forward: accept .*published ports/);
    assert.equal(steps(r)[0], 'internet route');
    assert.ok(steps(r).includes('router route'));
  });

  test('towards the outside: the masquerade rule and the source after it', async () => {
    const [, h2] = L.hosts;
    const r = await trace('h2c1', 'internet:80');
    assert.equal(r.ok, true, r.text);
    const nat = hopAt(r, 'host2', 'nft');
    assert.match(nat.decision, /^postrouting: masquerade to .* outbound NAT/);
    assert.equal(nat.packet.src, h2!.publicIp);
    assert.equal(steps(r).at(-1), 'internet deliver');
    assert.equal(r.trace.hops.at(-1)?.packet.src, h2!.publicIp);
  });

  test('--probe confirms a healthy way across hosts by the kernel’s counters', async () => {
    const r = await trace('h1c1', 'h2c1', true);
    assert.equal(r.ok, true, r.text);
    assert.equal(r.probe?.confirmed, true, r.text);
    assert.equal(r.probe?.answered, true);
    const watched = r.trace.hops.filter((h) => h.watch);
    assert.ok(watched.length >= 8, `${watched.length} watched hops`);
    for (const h of watched) assert.ok(h.probe?.seen && h.probe.packets >= 3, `${h.n} ${h.place} ${h.step}`);
    assert.match(r.text, /every watched hop saw the packets/);
  });

  test('the CLI: --json gives the hops as data; exit 0; bad names exit 3 with a clear message', async () => {
    const argv = lab.weftArgv();
    const { stdout } = await execFileP(
      argv[0]!,
      [...argv.slice(1), 'trace', '--lab', name, 'h1c1', 'h2c1:80', '--json'],
      {
        timeout: 30_000,
      },
    );
    const j = JSON.parse(stdout) as { ok: boolean; hops: Hop[]; backend: string };
    assert.equal(j.ok, true);
    assert.equal(j.backend, 'vxlan');
    assert.deepEqual(
      j.hops.map((h) => h.n),
      j.hops.map((_, i) => i + 1),
    );
    assert.ok(j.hops.some((h) => h.step === 'encap' && h.packet.encap?.kind === 'vxlan'));
    await assert.rejects(
      execFileP(argv[0]!, [...argv.slice(1), 'trace', '--lab', name, 'h1c1', 'nosuch'], { timeout: 30_000 }),
      (e: { code?: number; stderr?: string }) =>
        e.code === 3 && /"nosuch" is no container, host or address/.test(e.stderr ?? ''),
    );
  });

  test('bad input: unknown names and addresses are NOT_FOUND, bad syntax INVALID; no route is a broken trace', async () => {
    await assert.rejects(trace('h1c1', 'h9c9'), code('NOT_FOUND', /"h9c9" is no container/));
    await assert.rejects(trace('host7/h7c1', 'h1c1'), code('NOT_FOUND', /no host "host7"/));
    await assert.rejects(trace('h1c1', '10.99.0.1'), code('NOT_FOUND', /10\.99\.0\.1 belongs to nothing/));
    await assert.rejects(trace('h1c1', 'h2c1:0'), code('INVALID'));
    await assert.rejects(trace('h1c1:80', 'h2c1'), code('INVALID', /takes no port/));
    await assert.rejects(
      runTrace({ src: 'a', dst: 'b', lab: labName('zz') }),
      code('NOT_FOUND', /there is no lab/),
    );
    // Container addresses are not routed outside: from the internet the trace breaks at the router.
    const r = await trace('internet', 'h1c1');
    assert.equal(r.ok, false);
    const b = brokenHop(r);
    assert.deepEqual([b.place, b.step], ['router', 'route']);
    assert.match(b.problem!, /container addresses are not routed outside/);
    assert.match(b.fix!, /published/);
  });

  test('one host (no lab): the daemon on $WEFT_SOCKET names the containers, this namespace is the host', async () => {
    const r = await lab.exec(
      name,
      'host1',
      undefined,
      ['env', '-u', 'WEFT_LAB', 'weft', 'trace', 'h1c1', 'h1c2:80', '--json'],
      {
        capture: true,
        timeoutMs: 30_000,
      },
    );
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { ok: boolean; lab?: string; hops: Hop[] };
    assert.equal(j.ok, true);
    assert.equal(j.lab, undefined);
    assert.deepEqual(
      j.hops.map((h) => `${h.place} ${h.step}`),
      [
        'h1c1 route',
        'h1c1 neighbour',
        'host veth',
        'host nft',
        'host bridge',
        'h1c2 veth',
        'h1c2 route',
        'h1c2 deliver',
      ],
    );
    // An address outside every weft network: the trace ends where the packet leaves the host.
    const out = await lab.exec(
      name,
      'host1',
      undefined,
      ['env', '-u', 'WEFT_LAB', 'weft', 'trace', 'h1c1', '198.51.100.7'],
      {
        capture: true,
        timeoutMs: 30_000,
      },
    );
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /masquerade/);
    assert.match(out.stdout, /ok: \d+ hops until the packet leaves (host|switch)/);
  });

  test('a route deleted by hand: broken at host1’s route hop, with the fix; the probe loses the packets there', async () => {
    const [, h2] = L.hosts;
    const { ns, h } = hostNs(name, 'host1');
    const subnet = networkOf(parseIPNet(h2!.subnet));
    try {
      const r = await whileBroken(
        () => h.routes.delete({ dst: subnet }),
        () => trace('h1c1', 'h2c1', true),
        (x) => !x.ok && x.probe?.lostAt !== undefined,
      );
      const b = brokenHop(r);
      assert.deepEqual([b.place, b.step], ['host1', 'route']);
      assert.match(
        b.problem!,
        new RegExp(
          `no route to ${h2!.subnet.replaceAll('.', '\\.')} \\(host2\\) through the vxlan backend in host1`,
        ),
      );
      assert.match(b.problem!, /default via/);
      assert.match(b.fix!, /resync/);
      assert.match(b.fix!, /weft lab exec --name \S+ host1 -- weft cluster status/);
      assert.equal(r.probe?.lostAt, b.n);
      assert.equal(r.probe?.answered, false);
      assert.deepEqual(b.expect, { place: 'host1', dev: 'weft.1', dir: 'tx' });
    } finally {
      h.routes.replace({ dst: subnet, via: networkOf(subnet).ip, dev: 'weft.1', onlink: true });
      ns.close();
    }
  });

  test('an FDB entry deleted: broken at host1’s fdb hop; the probe sees weft.1 drop them', async () => {
    const [, h2] = L.hosts;
    const { ns, h } = hostNs(name, 'host1');
    const gw = networkOf(parseIPNet(h2!.subnet)).ip;
    const mac = h.neigh.get('weft.1', gw).lladdr!;
    try {
      const r = await whileBroken(
        () => h.fdb.delete({ dev: 'weft.1', mac }),
        () => trace('h1c1', 'h2c1', true),
        (x) => !x.ok && x.probe?.lostAt !== undefined,
      );
      const b = brokenHop(r);
      assert.deepEqual([b.place, b.step], ['host1', 'fdb']);
      assert.match(b.problem!, new RegExp(`does not know which host has ${mac}`));
      assert.match(b.fix!, new RegExp(`${mac} dev weft\\.1 dst ${h2!.publicIp.replaceAll('.', '\\.')}`));
      assert.equal(r.probe?.lostAt, b.n);
      assert.ok((b.probe?.dropped ?? 0) >= 3, `weft.1 tx_dropped moved: ${JSON.stringify(b.probe)}`);
    } finally {
      h.fdb.replace({ dev: 'weft.1', mac, dst: h2!.publicIp, self: true, permanent: true });
      ns.close();
    }
  });

  test('a DROP rule inserted into weft’s forward chain on host2: broken at host2’s forward hook, named', async () => {
    const [, h2] = L.hosts;
    const { ns } = hostNs(name, 'host2');
    const nft = new Nft(ns);
    let handle: number | undefined;
    try {
      await nft.apply(`insert rule inet weft forward ip daddr ${h2!.containers[0]!.ip} drop\n`);
      const r = await trace('h1c1', 'h2c1', true);
      const b = brokenHop(r);
      assert.deepEqual([b.place, b.step], ['host2', 'nft']);
      assert.match(
        b.decision,
        new RegExp(
          `forward: drop by inet weft forward: ip daddr ${h2!.containers[0]!.ip.replaceAll('.', '\\.')} drop`,
        ),
      );
      handle = (b.entry?.rule as { handle?: number } | undefined)?.handle;
      assert.ok(handle !== undefined);
      assert.match(b.fix!, new RegExp(`nft delete rule inet weft forward handle ${handle}`));
      assert.equal(r.probe?.lostAt, b.n);
      // The hops before it were seen by the probe (the decapsulation on host2 among them).
      assert.equal(hopAt(r, 'host2', 'decap').probe?.seen, true);
    } finally {
      if (handle !== undefined) await nft.apply(`delete rule inet weft forward handle ${handle}\n`);
      ns.close();
    }
    assert.equal((await trace('h1c1', 'h2c1')).ok, true);
  });

  test('iptables FORWARD policy DROP without weft’s jump: broken at host2’s forward hook, by the policy', async () => {
    const { ns } = hostNs(name, 'host2');
    const ipt = (...args: string[]) => runTool(ns, 'iptables', args, undefined, 10_000);
    try {
      await ipt('-P', 'FORWARD', 'DROP');
      const withJump = await trace('h1c1', 'h2c1');
      assert.equal(withJump.ok, true, 'weft’s WEFT-FORWARD accepts despite the policy');
      assert.match(
        hopAt(withJump, 'host2', 'nft').decision,
        /accept by ip filter WEFT-FORWARD: oifname weft0/,
      );
      await ipt('-D', 'FORWARD', '-j', 'WEFT-FORWARD');
      const r = await trace('h1c1', 'h2c1');
      const b = brokenHop(r);
      assert.deepEqual([b.place, b.step], ['host2', 'nft']);
      assert.match(b.decision, /policy drop of ip filter FORWARD/);
      assert.match(b.fix!, /iptables -I FORWARD 1 -j WEFT-FORWARD/);
    } finally {
      await ipt('-P', 'FORWARD', 'ACCEPT');
      await ipt('-D', 'FORWARD', '-j', 'WEFT-FORWARD');
      await ipt('-I', 'FORWARD', '1', '-j', 'WEFT-FORWARD');
      ns.close();
    }
  });

  test('a stopped daemon (vxlan): the kernel state still carries packets; the lease and peer state is reported', async () => {
    await stopDaemon(name, 'host2');
    const there = await trace('h1c1', 'h2c1');
    assert.equal(there.ok, true, there.text);
    const r1 = hopAt(there, 'host1', 'route');
    assert.equal(r1.status, 'warning');
    assert.match(
      r1.note!,
      /host2's weft daemon is not running: .* its lease .* is not renewed; when it expires, host1 removes this route/,
    );
    // Its containers are still found (by their sandbox pins); from host2 the warning is its own.
    const back = await trace('h2c1', 'h1c1');
    assert.equal(back.ok, true, back.text);
    assert.match(
      hopAt(back, 'host2', 'route').note!,
      /host2's weft daemon is not running: this route is what it left/,
    );
  });
});

/** Same host, a published port from the internet and a container to the outside, on any backend. */
async function localFlows(name: string, L: Lab): Promise<void> {
  const [h1, h2] = L.hosts;
  const same = await runTrace({ src: 'h1c1', dst: 'h1c2:80', lab: name });
  assert.equal(same.ok, true, same.text);
  assert.equal(steps(same).at(-1), 'host1/h1c2 deliver');
  assert.ok(steps(same).includes('host1 bridge'));
  assert.ok(!steps(same).some((x) => / (encap|decap)$/.test(x)), 'no encapsulation on one host');
  const pub = await runTrace({ src: 'internet', dst: `${h1!.publicIp}:8080`, lab: name });
  assert.equal(pub.ok, true, pub.text);
  const dnat = hopAt(pub, 'host1', 'nft');
  assert.match(dnat.decision, /^prerouting: dnat to .* by inet weft published: .*tcp 8080 -> 80/);
  assert.deepEqual([dnat.packet.dst, dnat.packet.dport], [h1!.containers[0]!.ip, 80]);
  assert.equal(steps(pub).at(-1), 'host1/h1c1 deliver');
  const out = await runTrace({ src: 'h2c1', dst: 'internet:80', lab: name });
  assert.equal(out.ok, true, out.text);
  const nat = hopAt(out, 'host2', 'nft');
  assert.match(nat.decision, /^postrouting: masquerade to .* outbound NAT/);
  assert.equal(out.trace.hops.at(-1)?.packet.src, h2!.publicIp);
  assert.equal(steps(out).at(-1), 'internet deliver');
}

onLab('weft trace on a host-gw lab', 'tg', 'host-gw', (name, L) => {
  test('across hosts: the route via the peer’s public IP, out of eth0, no encapsulation; the probe confirms it', async () => {
    const r = await runTrace({ src: 'h1c1', dst: 'h2c1:80', lab: name, probe: true });
    assert.equal(r.ok, true, r.text);
    const [, h2] = L.hosts;
    assert.deepEqual(steps(r), [
      'host1/h1c1 route',
      'host1/h1c1 neighbour',
      'host1 veth',
      'host1 bridge',
      'host1 route',
      'host1 neighbour',
      'switch veth',
      'switch bridge',
      'host2 veth',
      'host2 route',
      'host2 nft',
      'host2 neighbour',
      'host2 bridge',
      'host2/h2c1 veth',
      'host2/h2c1 route',
      'host2/h2c1 deliver',
    ]);
    const route = hopAt(r, 'host1', 'route');
    assert.equal(route.entry?.matched, h2!.subnet);
    assert.equal(route.entry?.gateway, h2!.publicIp);
    assert.equal(route.entry?.dev, 'eth0');
    assert.equal(r.probe?.confirmed, true, r.text);
  });

  test('same host, a published port from the internet, and the outside', () => localFlows(name, L));
});

onLab('weft trace on a udp lab', 'tu', 'udp', (name, L) => {
  test('across hosts: into weft-tun0, the daemon’s peer table, UDP 8285, the peer’s daemon, its TUN; probe', async () => {
    const r = await runTrace({ src: 'h1c1', dst: 'h2c1:80', lab: name, probe: true });
    assert.equal(r.ok, true, r.text);
    const [h1, h2] = L.hosts;
    const route = hopAt(r, 'host1', 'route');
    assert.equal(route.entry?.dev, 'weft-tun0');
    assert.equal(route.entry?.matched, '10.244.0.0/16');
    const enc = hopAt(r, 'host1', 'encap');
    assert.match(
      enc.decision,
      new RegExp(
        `peer table ${h2!.subnet.replaceAll('.', '\\.')} → ${h2!.publicIp.replaceAll('.', '\\.')} \\(host2\\)`,
      ),
    );
    assert.deepEqual(
      [enc.packet.src, enc.packet.dst, enc.packet.dport, enc.packet.encap?.kind],
      [h1!.publicIp, h2!.publicIp, 8285, 'udp'],
    );
    const dec = hopAt(r, 'host2', 'decap');
    assert.deepEqual(dec.watch, { place: 'host2', dev: 'weft-tun0', dir: 'rx' });
    assert.equal(hopAt(r, 'host2', 'route', 1).entry?.iif, 'weft-tun0');
    assert.equal(steps(r).at(-1), 'host2/h2c1 deliver');
    assert.equal(r.probe?.confirmed, true, r.text);
  });

  test('same host, a published port from the internet, and the outside', () => localFlows(name, L));

  test('a stopped daemon: the TUN’s reader is gone; broken where the datagram finds no one; the probe agrees', async () => {
    await stopDaemon(name, 'host2');
    const { ns, h } = hostNs(name, 'host2');
    try {
      for (let i = 0; i < 50 && h.links.find('weft-tun0'); i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(h.links.find('weft-tun0'), undefined, 'the TUN device went with its reader');
    } finally {
      ns.close();
    }
    const r = await runTrace({ src: 'h1c1', dst: 'h2c1:80', lab: name, probe: true });
    const b = brokenHop(r);
    assert.deepEqual([b.place, b.step], ['host2', 'decap']);
    assert.match(b.problem!, /nothing in host2 takes the udp backend's datagrams on port 8285/);
    assert.match(b.problem!, /host2's weft daemon is not running/);
    assert.match(b.fix!, /weft lab logs --name \S+ host2/);
    assert.equal(r.probe?.lostAt, b.n);
    assert.equal(hopAt(r, 'host2', 'veth').probe?.seen, true, 'the datagrams reached host2');
    // The other way the break is at host2's own route: its TUN is gone.
    const back = await runTrace({ src: 'h2c1', dst: 'h1c1', lab: name });
    const bb = brokenHop(back);
    assert.deepEqual([bb.place, bb.step], ['host2', 'route']);
    assert.match(bb.fix!, /TUN device weft-tun0 went with it/);
  });
});
