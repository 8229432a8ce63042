import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { describe, test } from 'node:test';
import { type Bed, bed, needsRoot } from '../../../../test/bed.js';
import { isWeftError } from '../../../lib/errors.js';
import { parseCidr, parseIP } from '../../../lib/ip.js';
import {
  buildTestbed,
  capture,
  clusterRoutes,
  measure,
  networkAddr,
  peersOf,
  type Testbed,
  type TestHost,
  warnings,
} from '../testbed.js';
import type { Backend, LeaseInfo } from '../types.js';
import { hostGwBackend } from './hostgw.js';

interface Cluster {
  b: Bed;
  tb: Testbed;
  backends: Backend[];
  leases: LeaseInfo[];
}

async function cluster(t: TestContext, hosts = 3): Promise<Cluster> {
  const b = bed(t);
  const tb = buildTestbed(b, { backendType: 'host-gw', hosts });
  const backends = tb.hosts.map((h) => hostGwBackend({ type: 'host-gw' }, h.ctx));
  const leases: LeaseInfo[] = [];
  for (const [i, be] of backends.entries()) {
    const { backendData, mtu } = await be.prepare();
    assert.equal(backendData, null);
    assert.equal(mtu, 1500);
    leases.push(tb.hosts[i]!.lease);
  }
  for (const [i, be] of backends.entries()) {
    await be.start(leases[i]!);
    for (const p of peersOf(leases, leases[i]!)) await be.addPeer(p);
  }
  return { b, tb, backends, leases };
}

const expected = (hosts: readonly TestHost[], self: TestHost): string[] =>
  hosts
    .filter((p) => p !== self)
    .map((p) => `${networkAddr(p.lease.subnet)}/24 via ${p.publicIp} dev eth0`)
    .sort();

async function pingAll(c: Cluster): Promise<string[]> {
  const failed: string[] = [];
  for (const from of c.tb.hosts) {
    for (const to of c.tb.hosts) {
      if (from !== to && !(await c.b.ping(from.container, to.containerIp, { count: 1, deadlineS: 3 }))) {
        failed.push(`${from.label} → ${to.label}`);
      }
    }
  }
  return failed;
}

describe('host-gw backend', needsRoot, () => {
  test('containers on three hosts reach each other both ways over plain routes; packets cross bare', async (t) => {
    const c = await cluster(t);
    assert.deepEqual(await pingAll(c), []);
    for (const host of c.tb.hosts) {
      assert.deepEqual(await clusterRoutes(c.b, host), expected(c.tb.hosts, host));
      assert.deepEqual(warnings(host), []);
    }
    const [h0, h1] = c.tb.hosts as [TestHost, TestHost];
    const lines = await capture(c.b, c.tb.switch, { filter: ['icmp', 'and', 'host', h1.containerIp] }, () =>
      c.b.ping(h0.container, h1.containerIp, { count: 2, deadlineS: 3 }),
    );
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, new RegExp(`IP ${h0.containerIp} > ${h1.containerIp}: ICMP echo request`));
    // And nothing encapsulated.
    const udp = await capture(c.b, c.tb.switch, { filter: ['udp'], timeoutS: 2 }, () =>
      c.b.ping(h0.container, h1.containerIp, { count: 2, deadlineS: 3 }),
    );
    assert.deepEqual(udp, []);
  });

  test('removePeer cuts exactly that peer; addPeer brings it back', async (t) => {
    const c = await cluster(t);
    const [h0, h1, h2] = c.tb.hosts as [TestHost, TestHost, TestHost];
    await c.backends[0]!.removePeer(c.leases[1]!);
    await c.backends[0]!.removePeer(c.leases[1]!);
    assert.deepEqual(await clusterRoutes(c.b, h0), expected([h0, h2], h0));
    assert.equal(await c.b.ping(h0.container, h1.containerIp, { count: 1, deadlineS: 1 }), false);
    assert.equal(await c.b.ping(h0.container, h2.containerIp), true);
    assert.deepEqual(await clusterRoutes(c.b, h1), expected(c.tb.hosts, h1));
    await c.backends[0]!.addPeer(c.leases[1]!);
    await c.backends[0]!.addPeer(c.leases[1]!);
    assert.deepEqual(await clusterRoutes(c.b, h0), expected(c.tb.hosts, h0));
    assert.equal(await c.b.ping(h0.container, h1.containerIp, { count: 1, deadlineS: 3 }), true);
  });

  test('resync removes stale routes, restores deleted ones, repairs drift, leaves the rest alone', async (t) => {
    const c = await cluster(t);
    const [h0] = c.tb.hosts as [TestHost];
    const ip = (...a: string[]) => c.b.exec(h0.ns, 'ip', a);
    await ip('route', 'add', '10.244.99.0/24', 'via', '192.168.100.99', 'dev', 'eth0');
    await ip('route', 'add', '10.244.98.0/24', 'via', '192.168.100.98', 'dev', 'eth0', 'metric', '7');
    await ip('route', 'add', '10.244.97.0/24', 'dev', 'eth0'); // no gateway: not ours
    await ip('route', 'add', '10.99.0.0/24', 'via', '192.168.100.99', 'dev', 'eth0'); // outside the cluster
    await ip('route', 'add', '10.244.96.0/24', 'via', '192.168.100.96', 'dev', 'eth0', 'table', '100');
    await ip('route', 'del', '10.244.2.0/24'); // h1's, deleted
    await ip('route', 'replace', '10.244.3.0/24', 'via', '192.168.100.11', 'dev', 'eth0'); // h2's, drifted
    assert.equal(await c.b.ping(h0.container, c.tb.hosts[1]!.containerIp, { count: 1, deadlineS: 1 }), false);

    await c.backends[0]!.resync(peersOf(c.leases, c.leases[0]!));
    assert.deepEqual(
      await clusterRoutes(c.b, h0),
      [...expected(c.tb.hosts, h0), '10.244.97.0/24 dev eth0'].sort(),
    );
    assert.equal((await c.b.ipJson<unknown[]>(h0.ns, 'route', 'show', '10.99.0.0/24')).length, 1);
    assert.equal((await c.b.ipJson<unknown[]>(h0.ns, 'route', 'show', 'table', '100')).length, 1);
    assert.deepEqual(await pingAll(c), []);
    const n = h0.logs.length;
    await c.backends[0]!.resync(peersOf(c.leases, c.leases[0]!));
    assert.deepEqual(h0.logs.slice(n), [], 'a second resync has nothing to do');
  });

  test('a peer not on-link is skipped with a clear warning, and a route left for it goes', async (t) => {
    const c = await cluster(t, 2);
    const [h0] = c.tb.hosts as [TestHost];
    const far: LeaseInfo = {
      subnet: parseCidr('10.244.40.0/24'),
      publicIp: parseIP('10.10.10.10'),
      backendType: 'host-gw',
      backendData: null,
    };
    await c.b.exec(h0.ns, 'ip', ['route', 'add', '10.244.40.0/24', 'via', '192.168.100.40', 'dev', 'eth0']);
    await c.backends[0]!.addPeer(far);
    const w = warnings(h0);
    assert.equal(w.length, 1);
    assert.match(String(w[0]?.reason), /10\.10\.10\.10 is not on-link from eth0/);
    assert.equal(w[0]?.subnet, '10.244.40.0/24');
    assert.deepEqual(await clusterRoutes(c.b, h0), expected(c.tb.hosts, h0));
    // resync says it once more at most, and keeps it out.
    await c.backends[0]!.resync([...peersOf(c.leases, c.leases[0]!), far]);
    await c.backends[0]!.resync([...peersOf(c.leases, c.leases[0]!), far]);
    assert.equal(warnings(h0).length, 1);
    assert.deepEqual(await clusterRoutes(c.b, h0), expected(c.tb.hosts, h0));
  });

  test('a changed peer (new public IP) is updated', async (t) => {
    const c = await cluster(t);
    const [h0, h1, h2] = c.tb.hosts as [TestHost, TestHost, TestHost];
    await c.b.exec(h1.ns, 'ip', ['addr', 'del', '192.168.100.11/24', 'dev', 'eth0']);
    await c.b.exec(h1.ns, 'ip', ['addr', 'add', '192.168.100.21/24', 'dev', 'eth0']);
    const moved: LeaseInfo = { ...c.leases[1]!, publicIp: parseIP('192.168.100.21') };
    c.leases[1] = moved;
    await c.backends[0]!.addPeer(moved);
    await c.backends[2]!.addPeer(moved);
    // h1 lost its routes with the address change (the kernel drops routes whose gateway is no
    // longer on-link): its resync puts them back.
    const h1b = hostGwBackend({ type: 'host-gw' }, { ...h1.ctx, publicIp: moved.publicIp });
    await h1b.start(moved);
    await h1b.resync(peersOf(c.leases, moved));
    const want0 = [
      '10.244.2.0/24 via 192.168.100.21 dev eth0',
      `${networkAddr(h2.lease.subnet)}/24 via ${h2.publicIp} dev eth0`,
    ];
    assert.deepEqual(await clusterRoutes(c.b, h0), want0);
    assert.deepEqual(await pingAll(c), []);
  });

  test('teardown leaves nothing behind; bad input fails or is skipped', async (t) => {
    const c = await cluster(t);
    const h0 = c.tb.hosts[0]!;
    for (const l of [
      { ...c.leases[1]!, backendType: 'vxlan' },
      { ...c.leases[1]!, subnet: parseCidr('10.99.0.0/24') },
      { ...c.leases[1]!, publicIp: parseIP('fd00::1') },
      { ...c.leases[1]!, subnet: c.leases[0]!.subnet },
    ]) {
      await c.backends[0]!.addPeer(l);
    }
    assert.equal(warnings(h0).length, 4);
    assert.deepEqual(await clusterRoutes(c.b, h0), expected(c.tb.hosts, h0));
    assert.throws(
      () => hostGwBackend({ type: 'vxlan' }, h0.ctx),
      (e) => isWeftError(e, 'INVALID'),
    );
    await assert.rejects(
      () => c.backends[0]!.start({ ...c.leases[0]!, subnet: parseCidr('10.99.0.0/24') }),
      (e) => isWeftError(e, 'INVALID'),
    );
    for (const [i, be] of c.backends.entries()) {
      await be.teardown();
      await be.teardown();
      const host = c.tb.hosts[i]!;
      assert.deepEqual(await clusterRoutes(c.b, host), []);
      const all = await c.b.ipJson<{ dst: string; dev: string }[]>(host.ns, 'route', 'show');
      assert.deepEqual(all.map((r) => `${r.dst} dev ${r.dev}`).sort(), [
        `${networkAddr(host.lease.subnet)}/24 dev weft0`,
        '192.168.100.0/24 dev eth0',
      ]);
    }
  });

  test('figures: ping RTT and iperf3 throughput between containers on two hosts', async (t) => {
    const c = await cluster(t, 2);
    const f = await measure(c.b, c.tb.hosts[0]!, c.tb.hosts[1]!);
    t.diagnostic(`host-gw: ping RTT avg ${f.rttAvgMs} ms (min ${f.rttMinMs}, max ${f.rttMaxMs})`);
    t.diagnostic(
      f.gbps === undefined
        ? 'host-gw: iperf3 not installed'
        : `host-gw: iperf3 TCP, 1 stream, 3 s: ${f.gbps.toFixed(2)} Gbit/s`,
    );
  });
});
