/**
 * The other drivers through the daemon: host and none, macvlan on a parent's L2, a dual-stack
 * bridge network, and a bridge with `-o uplink` that must be restored after a daemon restart.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Bed, type BedNs, needsRoot } from '../../test/bed.js';
import { removeAllContainers, startDaemon, type TestDaemon } from '../../test/daemon.js';
import type { ContainerView } from '../control/service.js';
import { Netns } from '../kernel/netns.js';
import { formatIPNet } from '../lib/ip.js';
import { sandboxPath } from '../net/sandbox.js';

describe('drivers through the daemon', needsRoot, () => {
  const b = new Bed();
  let host: BedNs;
  let lan: BedNs;
  let upstream: BedNs;
  let d: TestDaemon;
  const run = (body: Record<string, unknown>) => d.api.request<ContainerView>('POST', '/v1/containers', body);
  const exec = (name: string, ...cmd: string[]) => d.cli(['exec', name, '--', ...cmd], { timeoutMs: 20_000 });

  before(async () => {
    host = b.ns('host');
    lan = b.ns('lan');
    upstream = b.ns('upstream');
    // lan0: the parent of the macvlan network; its peer namespace is a machine (and the router) on that L2.
    host.h.links.add({ kind: 'veth', name: 'lan0', up: true, peer: { name: 'eth0', netns: lan.ns } });
    lan.h.links.setUp('eth0');
    lan.h.addrs.add('eth0', '192.0.2.50/24');
    lan.h.addrs.add('eth0', '192.0.2.1/24');
    // up0: the host's uplink, with its address and default route, to be moved onto a bridge.
    host.h.links.add({ kind: 'veth', name: 'up0', up: true, peer: { name: 'eth0', netns: upstream.ns } });
    upstream.h.links.setUp('eth0');
    upstream.h.addrs.add('eth0', '203.0.113.1/24');
    host.h.addrs.add('up0', '203.0.113.2/24');
    host.h.routes.add({ dst: 'default', via: '203.0.113.1' });
    d = await startDaemon(b, host, { args: ['--default-subnet', '10.89.0.0/24'] });
    b.onCleanup(() => d.stop());
    b.onCleanup(() => removeAllContainers(d));
  });
  after(() => b.cleanup());

  test('host: the host stack with its own hostname; none: only lo', async () => {
    await run({ name: 'h1', networks: ['host'], hostname: 'onhost', cmd: ['sleep', '600'] });
    const links = (await exec('h1', 'ip', '-br', 'link')).stdout;
    assert.match(links, /^lan0/m, "the host's links");
    assert.equal((await exec('h1', 'hostname')).stdout.trim(), 'onhost');
    await run({ name: 'n1', networks: ['none'], cmd: ['sleep', '600'] });
    const only = (await exec('n1', 'ip', '-br', 'link')).stdout.trim().split('\n');
    assert.deepEqual(
      only.map((l) => l.split(/\s+/)[0]),
      ['lo'],
    );
    const r = await d.cli(['run', '-d', '--network', 'host', '-p', '80:80', '--', 'sleep', '1']);
    assert.equal(r.code, 2, 'ports cannot be published with host networking');
  });

  test('macvlan: containers on the parent L2 reach a machine there and each other', async () => {
    const made = await d.cli([
      'network',
      'create',
      '-d',
      'macvlan',
      '-o',
      'parent=lan0',
      '--subnet',
      '192.0.2.0/24',
      '--gateway',
      '192.0.2.1',
      '--ip-range',
      '192.0.2.128/25',
      'lannet',
    ]);
    assert.equal(made.code, 0, made.stderr);
    const m1 = await run({ name: 'm1', networks: ['lannet'], cmd: ['sleep', '600'] });
    await run({ name: 'm2', networks: ['lannet'], cmd: ['sleep', '600'] });
    assert.match(m1.networks[0]!.addresses[0]!, /^192\.0\.2\.(1[2-9]\d|2\d\d)\/24$/, 'from the ip-range');
    assert.equal(
      (await exec('m1', 'ping', '-c', '1', '-W', '2', '192.0.2.50')).code,
      0,
      'a machine on the L2',
    );
    assert.equal(
      (await exec('m2', 'ping', '-c', '1', '-W', '2', m1.networks[0]!.addresses[0]!.split('/')[0]!)).code,
      0,
    );
    assert.match((await exec('m1', 'ip', 'route')).stdout, /^default via 192\.0\.2\.1/m);

    // A container whose namespace is gone (as after a reboot: process and pin gone) is removed
    // without looking for its interfaces among the host's: the host's own eth0 stays.
    host.h.links.add({ kind: 'veth', name: 'eth0', peer: { name: 'eth0p' } });
    const m3 = await run({ name: 'm3', networks: ['lannet'], cmd: ['sleep', '600'] });
    process.kill(m3.pid!, 'SIGKILL');
    Netns.remove(sandboxPath(d.runDir, m3.id));
    const rm = await d.cli(['rm', '-f', 'm3']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.ok(host.h.links.find('eth0'), "the host's eth0 is untouched");
    host.h.links.delete('eth0');
  });

  test('dual stack: IPv4 and IPv6 addresses, and ping over IPv6', async () => {
    const made = await d.cli([
      'network',
      'create',
      '--ipv6',
      '--subnet',
      '10.130.0.0/24',
      '--subnet',
      'fd00:130::/64',
      'v6net',
    ]);
    assert.equal(made.code, 0, made.stderr);
    const a = await run({ name: 'six1', networks: ['v6net'], cmd: ['sleep', '600'] });
    await run({ name: 'six2', networks: ['v6net'], cmd: ['sleep', '600'] });
    const v6 = a.networks[0]!.addresses.find((x) => x.includes(':'))!;
    assert.match(v6, /^fd00:130::[0-9a-f]+\/64$/);
    assert.equal((await exec('six2', 'ping', '-6', '-c', '1', '-W', '3', v6.split('/')[0]!)).code, 0);
  });

  test('bridge with an uplink: the host keeps its connectivity, and it is restored after a restart', async () => {
    const made = await d.cli([
      'network',
      'create',
      '--subnet',
      '203.0.113.0/24',
      '--gateway',
      '203.0.113.1',
      '--ip-range',
      '203.0.113.128/25',
      '-o',
      'uplink=up0',
      '-o',
      'bridge-name=brlan',
      'uplinked',
    ]);
    assert.equal(made.code, 0, made.stderr);
    assert.deepEqual(
      host.h.addrs.list({ dev: 'brlan', family: 4 }).map((a) => formatIPNet(a.ipnet)),
      ['203.0.113.2/24'],
      'the address moved to the bridge',
    );
    assert.ok(await b.ping(host, '203.0.113.1'), 'the host still reaches its upstream');
    await run({ name: 'u1', networks: ['uplinked'], cmd: ['sleep', '600'] });
    assert.equal(
      (await exec('u1', 'ping', '-c', '1', '-W', '2', '203.0.113.1')).code,
      0,
      'a container on the LAN',
    );
    await d.stop();
    d = await d.restart();
    await d.api.request('DELETE', '/v1/containers/u1?force=1');
    const rm = await d.cli(['network', 'rm', 'uplinked']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.deepEqual(
      host.h.addrs.list({ dev: 'up0', family: 4 }).map((x) => formatIPNet(x.ipnet)),
      ['203.0.113.2/24'],
      'the address is back on up0',
    );
    assert.equal(host.h.links.find('brlan'), undefined);
    assert.ok(await b.ping(host, '203.0.113.1'), 'and the host reaches its upstream through up0 again');
  });
});
