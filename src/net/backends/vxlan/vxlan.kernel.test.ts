import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type Bed, type BedNs, bed, needsRoot } from '../../../../test/bed.js';
import { isWeftError } from '../../../lib/errors.js';
import { parseCidr, parseIP } from '../../../lib/ip.js';
import {
  buildTestbed,
  capture,
  clusterRoutes,
  measure,
  networkAddr,
  peersOf,
  setPodMtu,
  type Testbed,
  type TestHost,
  warnings,
  withBackendData,
} from '../testbed.js';
import type { Backend, BackendConfig, LeaseInfo } from '../types.js';
import { vxlanBackend } from './vxlan.js';

const execFileP = promisify(execFile);

interface Cluster {
  b: Bed;
  tb: Testbed;
  backends: Backend[];
  leases: LeaseInfo[];
  macs: string[];
}

/** Three hosts with a vxlan backend each, every host programmed with every other one. */
async function cluster(t: TestContext, cfg: Partial<BackendConfig> = {}, hosts = 3): Promise<Cluster> {
  const b = bed(t);
  const tb = buildTestbed(b, { backendType: 'vxlan', hosts });
  const backends = tb.hosts.map((h) => vxlanBackend({ type: 'vxlan', ...cfg }, h.ctx));
  const leases: LeaseInfo[] = [];
  const macs: string[] = [];
  for (const [i, be] of backends.entries()) {
    const host = tb.hosts[i]!;
    const { backendData, mtu } = await be.prepare();
    assert.equal(mtu, 1450);
    setPodMtu(host, mtu);
    const data = backendData as { VNI: number; VtepMAC: string };
    macs.push(data.VtepMAC);
    leases.push(withBackendData(host.lease, backendData));
  }
  for (const [i, be] of backends.entries()) {
    await be.start(leases[i]!);
    for (const p of peersOf(leases, leases[i]!)) await be.addPeer(p);
  }
  return { b, tb, backends, leases, macs };
}

/** The host's vxlan state as iproute2 prints it (the independent cross-check). */
async function kernelState(b: Bed, host: TestHost, dev = 'weft.1') {
  const routes = await clusterRoutes(b, host);
  const link = await b.ipJson<unknown[]>(host.ns, 'link', 'show', 'dev', dev).catch(() => []);
  const neigh =
    link.length === 0
      ? []
      : (
          await b.ipJson<{ dst: string; lladdr: string; state: string[] }[]>(
            host.ns,
            'neigh',
            'show',
            'dev',
            dev,
          )
        )
          .filter((n) => n.dst.startsWith('10.244.'))
          .map((n) => `${n.dst} lladdr ${n.lladdr} ${n.state.join(',')}`)
          .sort();
  const fdb = link.length === 0 ? [] : await fdbOf(host.ns, dev);
  return { routes, neigh, fdb };
}

async function fdbOf(ns: BedNs, dev: string): Promise<string[]> {
  const { stdout } = await execFileP('bridge', ['-n', ns.name, '-j', 'fdb', 'show', 'dev', dev], {
    timeout: 10_000,
  });
  return (JSON.parse(stdout || '[]') as { mac: string; dst?: string; flags: string[]; state: string }[])
    .filter((e) => !e.mac.startsWith('33:33:') && !e.mac.startsWith('01:'))
    .map((e) => `${e.mac} dst ${e.dst ?? '-'} ${e.flags.join(',')} ${e.state}`)
    .sort();
}

/** What flannel would have on host `i` of the cluster for peers `peers`. */
function expected(c: Cluster, i: number, peers = c.tb.hosts.filter((h) => h.index !== i)) {
  return {
    routes: peers
      .map((p) => `${networkAddr(p.lease.subnet)}/24 via ${networkAddr(p.lease.subnet)} dev weft.1 onlink`)
      .sort(),
    neigh: peers.map((p) => `${networkAddr(p.lease.subnet)} lladdr ${c.macs[p.index]} PERMANENT`).sort(),
    fdb: peers.map((p) => `${c.macs[p.index]} dst ${p.publicIp} self permanent`).sort(),
  };
}

async function pingAll(c: Cluster): Promise<string[]> {
  const failed: string[] = [];
  for (const from of c.tb.hosts) {
    for (const to of c.tb.hosts) {
      if (from === to) continue;
      if (!(await c.b.ping(from.container, to.containerIp, { count: 1, deadlineS: 3 }))) {
        failed.push(`${from.label} → ${to.label}`);
      }
    }
  }
  return failed;
}

describe('vxlan backend', needsRoot, () => {
  test('containers on three hosts reach each other both ways; the kernel state is flannel’s', async (t) => {
    const c = await cluster(t);
    assert.deepEqual(await pingAll(c), []);
    for (const host of c.tb.hosts) {
      const [link] = await c.b.ipJson<
        {
          mtu: number;
          address: string;
          flags: string[];
          linkinfo: { info_kind: string; info_data: Record<string, unknown> };
        }[]
      >(host.ns, '-d', 'link', 'show', 'dev', 'weft.1');
      assert.ok(link);
      assert.equal(link.linkinfo.info_kind, 'vxlan');
      const d = link.linkinfo.info_data;
      assert.equal(d.id, 1);
      assert.equal(d.local, host.publicIp);
      assert.equal(d.link, 'eth0');
      assert.equal(d.port, 8472);
      assert.equal(d.learning, false);
      assert.ok(!d.proxy, 'no proxy');
      assert.equal(d.group, undefined);
      assert.equal(d.remote, undefined);
      assert.equal(link.mtu, 1450);
      assert.equal(link.address, c.macs[host.index]);
      assert.ok(link.flags.includes('UP'));
      // Locally administered unicast.
      const first = Number.parseInt(link.address.slice(0, 2), 16);
      assert.equal(first & 0x03, 0x02);

      const addrs = await c.b.ipJson<{ addr_info: { family: string; local: string; prefixlen: number }[] }[]>(
        host.ns,
        'addr',
        'show',
        'dev',
        'weft.1',
      );
      assert.deepEqual(
        addrs[0]?.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`),
        [`${networkAddr(host.lease.subnet)}/32`],
      );
      assert.deepEqual(await kernelState(c.b, host), expected(c, host.index));
      assert.deepEqual(warnings(host), []);
    }
    // The backend's own reading agrees with iproute2's.
    const h0 = c.tb.hosts[0]!.ns.h;
    const vx = h0.links.get('weft.1');
    assert.ok(vx.kind === 'vxlan' && !vx.learning && !vx.proxy && vx.port === 8472 && vx.vni === 1);
  });

  test('packets between hosts cross the underlay as VXLAN on UDP 8472, never bare', async (t) => {
    const c = await cluster(t);
    const [h0, h1] = c.tb.hosts as [TestHost, TestHost];
    const lines = await capture(
      c.b,
      c.tb.switch,
      { filter: ['udp', 'dst', 'port', '8472'], flags: ['-T', 'vxlan'], count: 1 },
      () => c.b.ping(h0.container, h1.containerIp, { count: 2, deadlineS: 3 }),
    );
    // One packet: tcpdump prints the outer headers, then the inner packet on its own line.
    const line = lines.join(' ');
    assert.equal(lines.filter((l) => l.includes('VXLAN')).length, 1, line);
    assert.match(
      line,
      new RegExp(
        `IP ${h0.publicIp.replaceAll('.', '\\.')}\\.\\d+ > ${h1.publicIp.replaceAll('.', '\\.')}\\.8472: VXLAN`,
      ),
    );
    assert.match(line, /vni 1\b/);
    assert.match(
      line,
      new RegExp(
        `IP ${h0.containerIp.replaceAll('.', '\\.')} > ${h1.containerIp.replaceAll('.', '\\.')}: ICMP echo request`,
      ),
    );
    // And no bare container packet on the underlay.
    const bare = await capture(
      c.b,
      c.tb.switch,
      { filter: ['icmp', 'and', 'host', h1.containerIp], count: 1, timeoutS: 2 },
      () => c.b.ping(h0.container, h1.containerIp, { count: 2, deadlineS: 3 }),
    );
    assert.deepEqual(bare, []);
  });

  test('removePeer cuts exactly that peer; addPeer brings it back', async (t) => {
    const c = await cluster(t);
    const [h0, h1, h2] = c.tb.hosts as [TestHost, TestHost, TestHost];
    await c.backends[0]!.removePeer(c.leases[1]!);
    await c.backends[0]!.removePeer(c.leases[1]!); // idempotent
    assert.deepEqual(await kernelState(c.b, h0), expected(c, 0, [h2]));
    assert.equal(await c.b.ping(h0.container, h1.containerIp, { count: 1, deadlineS: 1 }), false);
    assert.equal(await c.b.ping(h0.container, h2.containerIp), true);
    // The other hosts are untouched.
    assert.deepEqual(await kernelState(c.b, h1), expected(c, 1));
    await c.backends[0]!.addPeer(c.leases[1]!);
    assert.deepEqual(await kernelState(c.b, h0), expected(c, 0));
    assert.equal(await c.b.ping(h0.container, h1.containerIp, { count: 1, deadlineS: 3 }), true);
  });

  test('resync removes stale entries of leaseless subnets, restores deleted ones, repairs drift, leaves the rest alone', async (t) => {
    const c = await cluster(t);
    const [h0, h1] = c.tb.hosts as [TestHost, TestHost];
    const ip = (...a: string[]) => c.b.exec(h0.ns, 'ip', a);
    const staleMac = '02:00:00:00:00:99';
    // Stale: a subnet of the cluster network with no lease.
    await ip('route', 'add', '10.244.99.0/24', 'via', '10.244.99.0', 'dev', 'weft.1', 'onlink');
    await ip('neigh', 'add', '10.244.99.0', 'lladdr', staleMac, 'dev', 'weft.1', 'nud', 'permanent');
    await c.b.exec(h0.ns, 'bridge', [
      'fdb',
      'append',
      staleMac,
      'dev',
      'weft.1',
      'dst',
      '192.168.100.99',
      'self',
      'permanent',
    ]);
    await ip('route', 'add', '10.244.98.0/24', 'via', '192.168.100.98', 'dev', 'eth0');
    // Not ours: outside the cluster network, or a cluster route without gateway on eth0.
    await ip('route', 'add', '10.99.0.0/24', 'dev', 'weft.1');
    await ip('neigh', 'add', '10.99.0.1', 'lladdr', '02:00:00:00:01:01', 'dev', 'weft.1', 'nud', 'permanent');
    await ip('route', 'add', '10.244.97.0/24', 'dev', 'eth0');
    // Deleted: h1's three entries. Drifted: h2's FDB entry points elsewhere, its route lost its gateway.
    await ip('route', 'del', '10.244.2.0/24', 'dev', 'weft.1');
    await ip('neigh', 'del', '10.244.2.0', 'dev', 'weft.1');
    await c.b.exec(h0.ns, 'bridge', ['fdb', 'del', c.macs[1]!, 'dev', 'weft.1', 'self']);
    await c.b.exec(h0.ns, 'bridge', [
      'fdb',
      'replace',
      c.macs[2]!,
      'dev',
      'weft.1',
      'dst',
      '192.168.100.77',
      'self',
      'permanent',
    ]);
    await ip('route', 'replace', '10.244.3.0/24', 'dev', 'weft.1');
    assert.equal(await c.b.ping(h0.container, h1.containerIp, { count: 1, deadlineS: 1 }), false);

    await c.backends[0]!.resync(peersOf(c.leases, c.leases[0]!));
    const after = await kernelState(c.b, h0);
    const want = expected(c, 0);
    assert.deepEqual(
      after.routes.filter((r) => !r.startsWith('10.244.97.')),
      want.routes,
    );
    assert.ok(
      after.routes.includes('10.244.97.0/24 dev eth0'),
      'a cluster route without gateway on eth0 is not ours',
    );
    assert.deepEqual(after.neigh, want.neigh);
    assert.deepEqual(after.fdb, want.fdb);
    const outside = await c.b.ipJson<{ dst: string }[]>(h0.ns, 'route', 'show', '10.99.0.0/24');
    assert.equal(outside.length, 1, 'the route outside the cluster network stays');
    const outsideNeigh = await c.b.ipJson<{ dst: string }[]>(
      h0.ns,
      'neigh',
      'show',
      '10.99.0.1',
      'dev',
      'weft.1',
    );
    assert.equal(outsideNeigh.length, 1, 'the neighbour outside the cluster network stays');
    assert.deepEqual(await pingAll(c), []);
    // A second resync finds nothing to do.
    const before = h0.logs.length;
    await c.backends[0]!.resync(peersOf(c.leases, c.leases[0]!));
    assert.deepEqual(h0.logs.slice(before), []);
  });

  test('resync recreates a VTEP deleted by hand with the same MAC and address', async (t) => {
    const c = await cluster(t);
    const [h0, h1] = c.tb.hosts as [TestHost, TestHost];
    await c.b.exec(h0.ns, 'ip', ['link', 'del', 'weft.1']);
    await c.backends[0]!.resync(peersOf(c.leases, c.leases[0]!));
    assert.equal(h0.ns.h.links.get('weft.1').mac, c.macs[0]);
    assert.deepEqual(await kernelState(c.b, h0), expected(c, 0));
    assert.equal(await c.b.ping(h0.container, h1.containerIp, { count: 1, deadlineS: 3 }), true);
    assert.equal(await c.b.ping(h1.container, h0.containerIp, { count: 1, deadlineS: 3 }), true);
  });

  test('prepare is idempotent, keeps the MAC across restarts, and recreates a drifted device with it', async (t) => {
    const c = await cluster(t);
    const [h0, h1] = c.tb.hosts as [TestHost, TestHost];
    const index = h0.ns.h.links.get('weft.1').index;
    const again = await c.backends[0]!.prepare();
    assert.deepEqual(again.backendData, { VNI: 1, VtepMAC: c.macs[0] });
    // A restarted daemon: a new backend object finds the device and its MAC; nothing is flushed.
    const restarted = vxlanBackend({ type: 'vxlan' }, h0.ctx);
    const r = await restarted.prepare();
    assert.deepEqual(r, { backendData: { VNI: 1, VtepMAC: c.macs[0] }, mtu: 1450 });
    await restarted.start(c.leases[0]!);
    assert.equal(h0.ns.h.links.get('weft.1').index, index, 'not recreated');
    assert.deepEqual(await kernelState(c.b, h0), expected(c, 0));
    assert.deepEqual(warnings(h0), []);

    // MTU drift is fixed in place.
    await c.b.exec(h0.ns, 'ip', ['link', 'set', 'weft.1', 'mtu', '1400']);
    await restarted.prepare();
    assert.equal(h0.ns.h.links.get('weft.1').mtu, 1450);
    assert.equal(h0.ns.h.links.get('weft.1').index, index);

    // Learning switched on by hand: recreated with the same MAC, with a warning.
    await c.b.exec(h0.ns, 'ip', ['link', 'set', 'weft.1', 'type', 'vxlan', 'learning']);
    const fixed = await restarted.prepare();
    assert.deepEqual(fixed.backendData, { VNI: 1, VtepMAC: c.macs[0] });
    const vx = h0.ns.h.links.get('weft.1');
    assert.ok(vx.kind === 'vxlan' && !vx.learning);
    assert.notEqual(vx.index, index);
    assert.match(String(warnings(h0)[0]?.diff), /learning/);
    await restarted.start(c.leases[0]!);
    await restarted.resync(peersOf(c.leases, c.leases[0]!));
    assert.deepEqual(await kernelState(c.b, h0), expected(c, 0));
    assert.equal(await c.b.ping(h0.container, h1.containerIp, { count: 1, deadlineS: 3 }), true);

    // A device of another kind under our name is replaced.
    await c.b.exec(h0.ns, 'ip', ['link', 'del', 'weft.1']);
    await c.b.exec(h0.ns, 'ip', ['link', 'add', 'weft.1', 'type', 'bridge']);
    await restarted.prepare();
    assert.equal(h0.ns.h.links.get('weft.1').kind, 'vxlan');

    // start() removes stale addresses from the device.
    await c.b.exec(h0.ns, 'ip', ['addr', 'add', '10.244.50.7/24', 'dev', 'weft.1']);
    await restarted.start(c.leases[0]!);
    const addrs = h0.ns.h.addrs
      .list({ dev: 'weft.1', family: 4 })
      .map((a) => `${a.ipnet.ip.value}/${a.ipnet.len}`);
    assert.deepEqual(addrs, [`${parseIP('10.244.1.0').value}/32`]);
  });

  test('DirectRouting: peers on the same underlay subnet get plain routes and bare packets', async (t) => {
    const c = await cluster(t, { directRouting: true });
    const [h0, h1] = c.tb.hosts as [TestHost, TestHost];
    assert.deepEqual(await pingAll(c), []);
    for (const host of c.tb.hosts) {
      const peers = c.tb.hosts.filter((p) => p !== host);
      assert.deepEqual(await kernelState(c.b, host), {
        routes: peers.map((p) => `${networkAddr(p.lease.subnet)}/24 via ${p.publicIp} dev eth0`).sort(),
        neigh: [],
        fdb: [],
      });
    }
    const bare = await capture(
      c.b,
      c.tb.switch,
      { filter: ['icmp', 'and', 'host', h1.containerIp], count: 1 },
      () => c.b.ping(h0.container, h1.containerIp, { count: 2, deadlineS: 3 }),
    );
    assert.equal(bare.length, 1);
    assert.match(
      bare[0]!,
      new RegExp(
        `IP ${h0.containerIp.replaceAll('.', '\\.')} > ${h1.containerIp.replaceAll('.', '\\.')}: ICMP echo request`,
      ),
    );

    // A peer that is not on the underlay subnet is still encapsulated.
    const far: LeaseInfo = {
      subnet: parseCidr('10.244.40.0/24'),
      publicIp: parseIP('10.10.10.10'),
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: '02:aa:bb:cc:dd:ee' },
    };
    await c.backends[0]!.addPeer(far);
    const s = await kernelState(c.b, h0);
    assert.ok(s.routes.includes('10.244.40.0/24 via 10.244.40.0 dev weft.1 onlink'));
    assert.deepEqual(s.neigh, ['10.244.40.0 lladdr 02:aa:bb:cc:dd:ee PERMANENT']);
    assert.deepEqual(s.fdb, ['02:aa:bb:cc:dd:ee dst 10.10.10.10 self permanent']);
    // Resync without it removes its three entries; teardown removes the direct routes.
    await c.backends[0]!.resync(peersOf(c.leases, c.leases[0]!));
    assert.deepEqual((await kernelState(c.b, h0)).neigh, []);
    await c.backends[0]!.teardown();
    assert.deepEqual(await kernelState(c.b, h0), { routes: [], neigh: [], fdb: [] });
  });

  test('a changed peer is updated: a new VTEP MAC, then a new public IP', async (t) => {
    const c = await cluster(t);
    const [h0, h1, h2] = c.tb.hosts as [TestHost, TestHost, TestHost];
    const peersOfH1 = () => peersOf(c.leases, c.leases[1]!);

    // h1 loses its device (and its MAC): it comes back with a new one.
    await c.backends[1]!.teardown();
    const fresh = vxlanBackend({ type: 'vxlan' }, h1.ctx);
    const p = await fresh.prepare();
    const newMac = (p.backendData as { VtepMAC: string }).VtepMAC;
    assert.notEqual(newMac, c.macs[1]);
    c.macs[1] = newMac;
    c.leases[1] = withBackendData(h1.lease, p.backendData);
    c.backends[1] = fresh;
    await fresh.start(c.leases[1]!);
    for (const peer of peersOfH1()) await fresh.addPeer(peer);
    await c.backends[0]!.addPeer(c.leases[1]!);
    await c.backends[2]!.addPeer(c.leases[1]!);
    assert.deepEqual(await kernelState(c.b, h0), expected(c, 0));
    assert.deepEqual(await kernelState(c.b, h2), expected(c, 2));
    assert.deepEqual(await pingAll(c), []);

    // h1 moves to another underlay address: its VTEP is recreated (same MAC), peers follow.
    await c.b.exec(h1.ns, 'ip', ['addr', 'del', '192.168.100.11/24', 'dev', 'eth0']);
    await c.b.exec(h1.ns, 'ip', ['addr', 'add', '192.168.100.21/24', 'dev', 'eth0']);
    const moved = { ...h1.ctx, publicIp: parseIP('192.168.100.21') };
    const h1b = vxlanBackend({ type: 'vxlan' }, moved);
    const p2 = await h1b.prepare();
    assert.deepEqual(p2.backendData, { VNI: 1, VtepMAC: newMac });
    c.leases[1] = { ...c.leases[1]!, publicIp: moved.publicIp };
    await h1b.start(c.leases[1]!);
    await h1b.resync(peersOfH1());
    await c.backends[0]!.addPeer(c.leases[1]!);
    await c.backends[2]!.addPeer(c.leases[1]!);
    const s0 = await kernelState(c.b, h0);
    assert.ok(s0.fdb.includes(`${newMac} dst 192.168.100.21 self permanent`));
    assert.equal(s0.fdb.length, 2);
    for (const [from, to] of [
      [h0, h1],
      [h1, h0],
      [h2, h1],
      [h1, h2],
    ] as const) {
      assert.equal(
        await c.b.ping(from.container, to.containerIp, { count: 1, deadlineS: 3 }),
        true,
        `${from.label} → ${to.label}`,
      );
    }
  });

  test('one VTEP MAC in two leases (a host whose public IP changed): the newest lease has the FDB entry', async (t) => {
    const c = await cluster(t, {}, 2);
    const [h0, h1] = c.tb.hosts as [TestHost, TestHost];
    // h1's lease now (revision 7) and its old one from before the move, kept until it expires:
    // the same MAC, the old public IP, and a subnet listed after the new one.
    const now = { ...c.leases[1]!, modRevision: 7 };
    const stale = {
      ...now,
      subnet: parseCidr('10.244.9.0/24'),
      publicIp: parseIP('192.168.100.99'),
      modRevision: 3,
    };
    await c.backends[0]!.addPeer(stale);
    await c.backends[0]!.addPeer(now); // the watch delivers in revision order
    assert.ok(await c.b.ping(h0.container, h1.containerIp, { count: 1, deadlineS: 3 }));
    await c.backends[0]!.resync([now, stale]); // a resync lists by subnet
    const fdb = await fdbOf(h0.ns, 'weft.1');
    assert.deepEqual(fdb, [`${c.macs[1]} dst ${h1.publicIp} self permanent`]);
    assert.ok(await c.b.ping(h0.container, h1.containerIp, { count: 1, deadlineS: 3 }));
    assert.ok(
      warnings(h0).some((w) => /newest lease wins/.test(w.msg)),
      'the clash is logged',
    );
    // The old lease expires: the entry stays (h1's lease still uses the MAC).
    await c.backends[0]!.removePeer(stale);
    assert.deepEqual(await fdbOf(h0.ns, 'weft.1'), fdb);
    assert.ok(await c.b.ping(h0.container, h1.containerIp, { count: 1, deadlineS: 3 }));
  });

  test('teardown leaves nothing of the backend behind', async (t) => {
    const c = await cluster(t);
    for (const [i, be] of c.backends.entries()) {
      await be.teardown();
      await be.teardown(); // idempotent
      const host = c.tb.hosts[i]!;
      assert.equal(host.ns.h.links.find('weft.1'), undefined);
      const routes = await c.b.ipJson<{ dst: string; dev: string }[]>(host.ns, 'route', 'show');
      assert.deepEqual(routes.map((r) => `${r.dst} dev ${r.dev}`).sort(), [
        `${networkAddr(host.lease.subnet)}/24 dev weft0`,
        '192.168.100.0/24 dev eth0',
      ]);
    }
  });

  test('bad leases are skipped with a warning; bad configuration fails before anything changes', async (t) => {
    const c = await cluster(t, {}, 2);
    const h0 = c.tb.hosts[0]!;
    const before = await kernelState(c.b, h0);
    const base: LeaseInfo = {
      subnet: parseCidr('10.244.60.0/24'),
      publicIp: parseIP('192.168.100.60'),
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:60' },
    };
    const bad: LeaseInfo[] = [
      { ...base, backendType: 'host-gw' },
      { ...base, backendData: null },
      { ...base, backendData: 'garbage' },
      { ...base, backendData: { VNI: 1 } },
      { ...base, backendData: { VNI: 1, VtepMAC: 'zz:00:00:00:00:00' } },
      { ...base, backendData: { VNI: 1, VtepMAC: '01:00:5e:00:00:01' } },
      { ...base, backendData: { VNI: 7, VtepMAC: '02:00:00:00:00:60' } },
      { ...base, subnet: parseCidr('10.99.0.0/24') },
      { ...base, subnet: parseCidr('10.244.0.0/16') },
      { ...base, subnet: { ip: parseIP('10.244.60.1'), len: 24 } },
      { ...base, subnet: parseCidr('fd00::/64') },
      { ...base, publicIp: parseIP('fd00::1') },
      { ...base, subnet: c.leases[0]!.subnet },
    ];
    for (const l of bad) await c.backends[0]!.addPeer(l);
    assert.equal(warnings(h0).length, bad.length, JSON.stringify(warnings(h0), null, 1));
    assert.deepEqual(await kernelState(c.b, h0), before);
    // resync with them logs each once and keeps the good peer.
    await c.backends[0]!.resync([...bad, c.leases[1]!]);
    await c.backends[0]!.resync([...bad, c.leases[1]!]);
    assert.deepEqual(await kernelState(c.b, h0), before);
    for (const l of bad) await c.backends[0]!.removePeer(l);
    assert.deepEqual(await kernelState(c.b, h0), before);

    for (const cfg of [{ vni: -1 }, { vni: 1 << 24 }, { port: 0 }, { port: 70000 }, { vni: 1.5 }]) {
      assert.throws(
        () => vxlanBackend({ type: 'vxlan', ...cfg }, h0.ctx),
        (e) => isWeftError(e, 'INVALID'),
      );
    }
    assert.throws(
      () => vxlanBackend({ type: 'host-gw' }, h0.ctx),
      (e) => isWeftError(e, 'INVALID'),
    );
    await assert.rejects(
      () => c.backends[0]!.start({ ...c.leases[0]!, subnet: parseCidr('10.99.0.0/24') }),
      (e) => isWeftError(e, 'INVALID'),
    );
  });

  test('a configured VNI and port: device weft.<VNI>, packets on that port', async (t) => {
    const c = await cluster(t, { vni: 42, port: 4789 }, 2);
    const [h0, h1] = c.tb.hosts as [TestHost, TestHost];
    const vx = h0.ns.h.links.get('weft.42');
    assert.ok(vx.kind === 'vxlan' && vx.vni === 42 && vx.port === 4789);
    assert.deepEqual(c.leases[0]!.backendData, { VNI: 42, VtepMAC: c.macs[0] });
    const lines = await capture(
      c.b,
      c.tb.switch,
      { filter: ['udp', 'dst', 'port', '4789'], flags: ['-T', 'vxlan'], count: 1 },
      () => c.b.ping(h0.container, h1.containerIp, { count: 2, deadlineS: 3 }),
    );
    assert.match(lines.join(' '), /VXLAN.*vni 42/);
  });

  test('figures: ping RTT and iperf3 throughput between containers on two hosts', async (t) => {
    const c = await cluster(t, {}, 2);
    const f = await measure(c.b, c.tb.hosts[0]!, c.tb.hosts[1]!);
    t.diagnostic(`vxlan: ping RTT avg ${f.rttAvgMs} ms (min ${f.rttMinMs}, max ${f.rttMaxMs})`);
    t.diagnostic(
      f.gbps === undefined
        ? 'vxlan: iperf3 not installed'
        : `vxlan: iperf3 TCP, 1 stream, 3 s: ${f.gbps.toFixed(2)} Gbit/s`,
    );
  });
});
