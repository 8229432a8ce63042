/**
 * Attachments end to end (what the CNI and Docker plugins build on): a daemon in a host
 * namespace attaches namespaces it did not make, publishes their ports, checks them, keeps them
 * across a restart and detaches them idempotently; a bare attachment waits in the daemon's
 * namespace for its runtime to move it. Bad input changes nothing.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Bed, type BedNs, needsRoot } from '../../test/bed.js';
import { startDaemon, type TestDaemon } from '../../test/daemon.js';
import type { AttachView } from '../control/service.js';

describe('attachments through the daemon API', needsRoot, () => {
  const b = new Bed();
  let host: BedNs;
  let outside: BedNs;
  let d: TestDaemon;
  const attach = (body: Record<string, unknown>) =>
    d.api.request<AttachView>('POST', '/v1/attachments', body);
  const detach = (id: string, ifname?: string) =>
    d.api.request<{ removed: number }>(
      'DELETE',
      `/v1/attachments/cni/${id}${ifname ? `?ifname=${ifname}` : ''}`,
    );
  const list = () => d.api.request<AttachView[]>('GET', '/v1/attachments?owner=cni');
  const netnsPath = (n: BedNs) => `/run/netns/${n.name}`;

  before(async () => {
    host = b.ns('host');
    outside = b.ns('outside');
    b.uplink(host, outside, { hostIp: '198.51.100.2', outsideIp: '198.51.100.1', defaultRoute: false });
    d = await startDaemon(b, host, {
      args: ['--default-subnet', '10.89.0.0/24', '--upstream', '198.51.100.1'],
    });
    b.onCleanup(() => d.stop());
  });
  after(() => b.cleanup());

  test('attach, idempotent attach, check, ports, detach twice, detach with the netns gone', async () => {
    const c1 = b.ns('c1');
    const c2 = b.ns('c2');
    const v1 = await attach({
      owner: 'cni',
      containerId: 'ctr1',
      netns: netnsPath(c1),
      ifname: 'eth0',
      ports: ['8080:80'],
    });
    assert.equal(v1.network, 'bridge');
    assert.equal(v1.bridge, 'weft0');
    assert.match(v1.addresses[0]!, /^10\.89\.0\.\d+\/24$/);
    assert.deepEqual(v1.gateways, ['10.89.0.1']);
    assert.deepEqual(v1.routes, [{ dst: '0.0.0.0/0', gw: '10.89.0.1' }]);
    assert.deepEqual(v1.dns.nameservers, ['198.51.100.1']);
    assert.match(v1.hostIfname ?? '', /^veth/);
    assert.match(v1.mac ?? '', /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    assert.equal(v1.netns, netnsPath(c1));
    // The container sees its interface, address and route; the host end is on the bridge.
    const addrs = await b.ipJson<{ ifname: string; addr_info: { local: string }[] }[]>(
      c1,
      '-4',
      'addr',
      'show',
      'eth0',
    );
    assert.equal(addrs[0]?.addr_info[0]?.local, v1.addresses[0]!.split('/')[0]);
    const master = await b.ipJson<{ master?: string }[]>(host, 'link', 'show', v1.hostIfname!);
    assert.equal(master[0]?.master, 'weft0');
    assert.deepEqual(
      await attach({ owner: 'cni', containerId: 'ctr1', netns: netnsPath(c1), ifname: 'eth0' }),
      v1,
      'idempotent',
    );

    const v2 = await attach({
      owner: 'cni',
      containerId: 'ctr2',
      netns: netnsPath(c2),
      ifname: 'eth0',
      ip: '10.89.0.77',
      mac: '02:42:0a:59:00:4d',
    });
    assert.deepEqual(v2.addresses, ['10.89.0.77/24']);
    assert.equal(v2.mac, '02:42:0a:59:00:4d');
    assert.ok(await b.ping(c1, '10.89.0.77'), 'c1 → c2');
    // The published port: a server in c1, reached from outside through the host address.
    b.spawn(c1, 'socat', ['-T5', 'TCP-LISTEN:80,fork,reuseaddr', 'SYSTEM:echo hello']);
    let got = '';
    for (let i = 0; i < 30 && !got.includes('hello'); i++) {
      got = (
        await b
          .exec(outside, 'curl', ['-s', '--http0.9', '-m', '2', 'http://198.51.100.2:8080/'])
          .catch(() => ({ stdout: '' }))
      ).stdout;
      if (!got.includes('hello')) await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(got, /hello/);

    const ok = await d.api.request<AttachView>('POST', '/v1/attachments/check', {
      owner: 'cni',
      containerId: 'ctr1',
      ifname: 'eth0',
    });
    assert.equal(ok.containerId, 'ctr1');
    await b.exec(c1, 'ip', ['route', 'del', 'default']);
    await assert.rejects(
      d.api.request('POST', '/v1/attachments/check', { owner: 'cni', containerId: 'ctr1', ifname: 'eth0' }),
      (e: Error & { code?: string }) =>
        e.code === 'CONFLICT' && /default route via 10\.89\.0\.1/.test(e.message),
    );
    assert.equal((await list()).length, 2);
    assert.ok((await d.cli(['ps'])).stdout.includes(v1.container), 'weft ps shows the attachment');

    assert.deepEqual(await detach('ctr1', 'eth0'), { removed: 1 });
    assert.deepEqual(await detach('ctr1', 'eth0'), { removed: 0 }, 'DEL is idempotent');
    assert.equal(host.h.links.find(v1.hostIfname!), undefined, 'host veth gone');
    // The port is free again; the address too.
    const again = await attach({
      owner: 'cni',
      containerId: 'ctr3',
      netns: netnsPath(c1),
      ifname: 'eth0',
      ports: ['8080:80'],
      ip: v1.addresses[0]!.split('/')[0],
    });
    assert.equal(again.addresses[0], v1.addresses[0]);
    await detach('ctr3');

    // The namespace deleted before DEL: still detached cleanly.
    const c2Veth = v2.hostIfname!;
    await b.exec(host, 'ip', ['netns', 'delete', c2.name]).catch(() => undefined);
    c2.ns.close();
    assert.deepEqual(await detach('ctr2'), { removed: 1 });
    assert.equal(host.h.links.find(c2Veth), undefined);
    assert.deepEqual(await list(), []);
  });

  test('a bare attachment waits in the daemon namespace for its runtime; ports can be set later', async () => {
    const v = await d.api.request<AttachView>('POST', '/v1/attachments', {
      owner: 'docker',
      containerId: 'ep1',
      ifname: 'wdabc123',
      ip: '10.89.0.50',
    });
    assert.equal(v.netns, null);
    const l = host.h.links.get('wdabc123');
    assert.equal(l.up, false);
    assert.deepEqual(host.h.addrs.list({ dev: 'wdabc123' }), [], 'no address: the runtime sets it');
    const [p] = await d.api.request<AttachView[]>('PUT', '/v1/attachments/docker/ep1/ports', {
      ports: ['9090:90/udp'],
    });
    assert.deepEqual(p?.ports, [{ proto: 'udp', hostPort: 9090, containerPort: 90 }]);
    // The runtime moves and configures it; then the attachment works like any other.
    const c = b.ns('dk');
    host.h.links.setNetns('wdabc123', c.ns, 'eth0');
    await b.exec(c, 'ip', ['addr', 'add', '10.89.0.50/24', 'dev', 'eth0']);
    await b.exec(c, 'ip', ['link', 'set', 'eth0', 'up']);
    assert.ok(await b.ping(c, '10.89.0.1'));
    assert.deepEqual(await d.api.request('DELETE', '/v1/attachments/docker/ep1'), { removed: 1 });
    assert.equal(host.h.links.find(v.hostIfname!), undefined);
  });

  test('attachments survive a daemon restart', async () => {
    const c = b.ns('c9');
    const v = await attach({ owner: 'cni', containerId: 'keep', netns: netnsPath(c), ifname: 'eth0' });
    await d.stop();
    d = await d.restart();
    const after = await list();
    assert.deepEqual(
      after.map((x) => [x.containerId, x.addresses]),
      [['keep', v.addresses]],
    );
    await d.api.request('POST', '/v1/attachments/check', {
      owner: 'cni',
      containerId: 'keep',
      ifname: 'eth0',
    });
    await detach('keep');
  });

  test('bad input: clear errors and nothing made', async () => {
    const c = b.ns('bad');
    const links = () =>
      host.h.links
        .list()
        .map((l) => l.name)
        .sort();
    const before = links();
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [
        { owner: 'cni', containerId: 'x1', netns: netnsPath(c), ifname: 'eth0', network: 'nope' },
        'NOT_FOUND',
        /network "nope" not found/,
      ],
      [
        { owner: 'cni', containerId: 'x1', netns: '/run/netns/does-not-exist', ifname: 'eth0' },
        'NOT_FOUND',
        /does not exist/,
      ],
      [
        { owner: 'cni', containerId: 'x1', netns: netnsPath(c), ifname: 'eth0', ip: '10.1.2.3' },
        'INVALID',
        /10\.1\.2\.3/,
      ],
      [
        { owner: 'cni', containerId: 'bad id!', netns: netnsPath(c), ifname: 'eth0' },
        'INVALID',
        /container id/,
      ],
      [
        { owner: 'cni', containerId: 'x1', netns: netnsPath(c), ifname: 'eth0', ports: ['70000:80'] },
        'INVALID',
        /70000/,
      ],
      [{ owner: 'rkt', containerId: 'x1', netns: netnsPath(c), ifname: 'eth0' }, 'INVALID', /owner/],
    ];
    for (const [body, code, msg] of cases) {
      await assert.rejects(attach(body), (e: Error & { code?: string }) => {
        assert.equal(e.code, code, `${JSON.stringify(body)}: ${e.message}`);
        assert.match(e.message, msg);
        return true;
      });
    }
    // A host port taken by another attachment.
    const c2 = b.ns('bad2');
    await attach({
      owner: 'cni',
      containerId: 'p1',
      netns: netnsPath(c2),
      ifname: 'eth0',
      ports: ['7070:80'],
    });
    await assert.rejects(
      attach({ owner: 'cni', containerId: 'x1', netns: netnsPath(c), ifname: 'eth0', ports: ['7070:80'] }),
      (e: Error & { code?: string }) => e.code === 'CONFLICT',
    );
    await detach('p1');
    assert.deepEqual(links(), before, 'no link left by the failures');
    assert.deepEqual(await list(), []);
    assert.deepEqual(
      c.h.links.list().map((l) => l.name),
      ['lo'],
    );
  });
});
