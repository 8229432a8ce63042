import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { bed, needsRoot } from '../../test/bed.js';
import { isWeftError } from '../lib/errors.js';
import { parseIP } from '../lib/ip.js';
import { Links } from './links.js';
import { Netns } from './netns.js';

interface IpLink {
  ifname: string;
  mtu: number;
  master?: string;
  flags: string[];
  address?: string;
  linkinfo?: {
    info_kind?: string;
    info_data?: Record<string, unknown>;
    info_slave_data?: Record<string, unknown>;
  };
}

describe('links', needsRoot, () => {
  test('bridge and veth with the peer created directly in a container namespace; packets cross', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const c1 = b.ns('c1');
    const c2 = b.ns('c2');
    host.h.links.add({ kind: 'bridge', name: 'br0', up: true, mtu: 1400 });
    for (const [i, c] of [c1, c2].entries()) {
      const v = host.h.links.add({
        kind: 'veth',
        name: `veth${i}`,
        master: 'br0',
        mtu: 1400,
        up: true,
        peer: { name: 'eth0', netns: c.ns, mtu: 1400 },
      });
      assert.equal(v.kind, 'veth');
      assert.equal(v.masterIndex, host.h.links.get('br0').index);
      const peer = c.h.links.get('eth0');
      assert.equal(peer.kind, 'veth');
      assert.equal(peer.mtu, 1400);
      c.h.links.setUp('eth0');
    }
    // Cross-check with iproute2, an independent reader of the same kernel state.
    const links = await b.ipJson<IpLink[]>(host, '-d', 'link', 'show');
    const br = links.find((l) => l.ifname === 'br0');
    assert.equal(br?.linkinfo?.info_kind, 'bridge');
    assert.equal(br?.mtu, 1400);
    assert.equal(links.find((l) => l.ifname === 'veth0')?.master, 'br0');
    // Addresses through iproute2 until the address API is in: this test is about links.
    await b.exec(c1, 'ip', ['addr', 'add', '10.99.0.1/24', 'dev', 'eth0']);
    await b.exec(c2, 'ip', ['addr', 'add', '10.99.0.2/24', 'dev', 'eth0']);
    assert.ok(await b.ping(c1, '10.99.0.2', { count: 1, deadlineS: 3 }), 'c1 reaches c2 across the bridge');
  });

  test('create makes the link without reading it back; a taken name is EXISTS and changes nothing', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const c = b.ns('c');
    const spec = {
      kind: 'veth',
      name: 'vethc',
      up: true,
      peer: { name: 'eth0', netns: c.ns, mac: '02:00:00:00:00:0c' },
    } as const;
    assert.equal(host.h.links.create(spec), undefined);
    assert.equal(host.h.links.get('vethc').up, true);
    assert.equal(c.h.links.get('eth0').mac, '02:00:00:00:00:0c');
    assert.throws(
      () => host.h.links.create(spec),
      (e) => isWeftError(e, 'EXISTS'),
    );
    // The peer's name is taken in the container only.
    assert.throws(
      () => host.h.links.create({ ...spec, name: 'vethd' }),
      (e) => isWeftError(e, 'EXISTS') && /peer "eth0"/.test(e.message),
    );
    assert.equal(host.h.links.find('vethd'), undefined);
  });

  test('createAsync: made on the thread pool; a second one meanwhile goes the synchronous way; EXISTS', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const c = b.ns('c');
    const pair = (name: string, peer: string) =>
      ({ kind: 'veth', name, up: true, peer: { name: peer, netns: c.ns } }) as const;
    const first = host.h.links.createAsync(pair('vetha1', 'eth0'));
    // The namespace's second socket is busy with it: the next is made at once, synchronously.
    assert.equal(host.ns.rtnlAsync(), undefined);
    const second = host.h.links.createAsync(pair('vetha2', 'eth1'));
    await Promise.all([first, second]);
    assert.equal(host.h.links.get('vetha1').up, true);
    assert.equal(c.h.links.get('eth0').kind, 'veth');
    assert.equal(c.h.links.get('eth1').kind, 'veth');
    assert.ok(host.ns.rtnlAsync() !== undefined, 'free again');
    await assert.rejects(host.h.links.createAsync(pair('vetha3', 'eth0')), (e) => isWeftError(e, 'EXISTS'));
    assert.equal(host.h.links.find('vetha3'), undefined);
    // deleteAsync: the pair is gone once it resolves; a missing link is success unless it must exist.
    await host.h.links.deleteAsync('vetha1');
    assert.equal(host.h.links.find('vetha1'), undefined);
    assert.equal(c.h.links.find('eth0'), undefined, 'the peer went with it');
    await host.h.links.deleteAsync('vetha1');
    await assert.rejects(host.h.links.deleteAsync('vetha1', { mustExist: true }), (e) =>
      isWeftError(e, 'NOT_FOUND'),
    );
  });

  test('createAsync holds its own namespace fds: a handle closed (its number reused) meanwhile changes nothing', async (t) => {
    const b = bed(t);
    const [h, sb, other] = [b.ns('h'), b.ns('sb'), b.ns('other')];
    h.ns.rtnlAsync(); // its socket opened before the pool is busy
    // Four FIFO opens hold libuv's four pool threads until their writers come.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wt-fifo-'));
    const fifos = [0, 1, 2, 3].map((i) => path.join(dir, `f${i}`));
    for (const f of fifos) execFileSync('mkfifo', [f]);
    const readers = fifos.map((f) => fs.promises.open(f, 'r'));
    // The pool threads are let go once, also when an assertion fails first (else the file hangs).
    let released: Promise<void> | undefined;
    const release = () => {
      released ??= (async () => {
        const writers = fifos.map((f) => fs.openSync(f, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
        for (const r of await Promise.all(readers)) await r.close();
        for (const w of writers) fs.closeSync(w);
      })();
      return released;
    };
    t.after(async () => {
      await release();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    await new Promise((r) => setTimeout(r, 100));
    const pending = h.h.links.createAsync({
      kind: 'veth',
      name: 'vx0',
      peer: { name: 'eth9', netns: sb.ns },
    });
    // The caller closes the sandbox's handle and opens another namespace: same fd number.
    const fd = sb.ns.fd;
    sb.ns.close();
    const reused = Netns.open(other.ns.path);
    t.after(() => reused.close());
    const sameNumber = reused.fd === fd;
    await release();
    assert.ok(sameNumber, 'the number went to another namespace');
    await pending;
    const peerIn = (ns: string) => {
      const l = Netns.open(ns);
      try {
        return new Links(l, () => l.rtnl()).find('eth9') !== undefined;
      } finally {
        l.close();
      }
    };
    assert.equal(peerIn(other.ns.path), false, 'not in the namespace that took the number');
    assert.equal(peerIn(sb.ns.path), true, 'in the one asked for');
  });

  test('a master is found where the link is made (a link made in another namespace)', async (t) => {
    const b = bed(t);
    const [a, nb] = [b.ns('a'), b.ns('b')];
    nb.h.links.add({ kind: 'bridge', name: 'brx', up: true });
    nb.h.links.add({ kind: 'bridge', name: 'brb', up: true });
    a.h.links.add({
      kind: 'veth',
      name: 'v0',
      netns: nb.ns,
      master: 'brb',
      peer: { name: 'v0p', netns: nb.ns },
    });
    assert.equal(nb.h.links.get('v0').masterIndex, nb.h.links.get('brb').index);
  });

  test('a netlink socket with an asynchronous request in flight refuses others, and closes after it', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const sock = host.ns.rtnlAsync();
    assert.ok(sock);
    const going = host.h.links.createAsync({ kind: 'veth', name: 'vethb1', peer: { name: 'vethb2' } });
    assert.equal(sock.busy, true);
    assert.throws(
      () => new Links(host.ns, () => sock).list(),
      (e) => isWeftError(e, 'INTERNAL') && /busy/.test(e.message),
    );
    sock.close(); // deferred until the request settles
    await going;
    assert.equal(sock.closed, true);
    assert.equal(host.h.links.get('vethb1').kind, 'veth');
  });

  test('set up/down, mtu, mac, alias, rename, master and namespace moves read back', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const other = b.ns('other');
    const L = host.h.links;
    L.add({ kind: 'bridge', name: 'br0' });
    // A veth end stands in for a plain device: this kernel has no dummy driver, and bridges
    // cannot change namespace.
    L.add({ kind: 'veth', name: 'd0', peer: { name: 'd0peer' } });
    L.setUp('d0');
    assert.equal(L.get('d0').up, true);
    L.setDown('d0');
    assert.equal(L.get('d0').up, false);
    L.setMtu('d0', 1280);
    assert.equal(L.get('d0').mtu, 1280);
    L.setMac('d0', '02:00:00:aa:bb:cc');
    assert.equal(L.get('d0').mac, '02:00:00:aa:bb:cc');
    L.setMaster('d0', 'br0');
    assert.equal(L.get('d0').masterIndex, L.get('br0').index);
    L.setMaster('d0', null);
    assert.equal(L.get('d0').masterIndex, undefined);
    L.rename('d0', 'd1');
    assert.equal(L.find('d0'), undefined);
    assert.equal(L.get('d1').kind, 'veth');
    L.setAlias('d1', 'container side');
    const [aliased] = await b.ipJson<IpLink[]>(host, 'link', 'show', 'd1');
    assert.equal((aliased as IpLink & { ifalias?: string })?.ifalias, 'container side');
    L.setNetns('d1', other.ns, 'moved0');
    assert.equal(L.find('d1'), undefined);
    assert.equal(other.h.links.get('moved0').mac, '02:00:00:aa:bb:cc');
    // Changes find the link by name in the kernel: a missing one is NOT_FOUND, named.
    for (const change of [
      () => L.setUp('nope0'),
      () => L.setMtu('nope0', 1400),
      () => L.rename('nope0', 'x'),
    ]) {
      assert.throws(change, (e) => isWeftError(e, 'NOT_FOUND') && /link "nope0" not found/.test(e.message));
    }
  });

  test('vxlan with id, local, dev, port, learning and ttl', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    host.h.links.add({ kind: 'bridge', name: 'uplink', up: true });
    const vx = host.h.links.add({
      kind: 'vxlan',
      name: 'weft.7',
      vni: 7,
      local: parseIP('192.0.2.10'),
      dev: 'uplink',
      port: 8472,
      learning: false,
      ttl: 64,
    });
    assert.equal(vx.kind, 'vxlan');
    if (vx.kind !== 'vxlan') return;
    assert.equal(vx.vni, 7);
    assert.equal(vx.port, 8472);
    assert.equal(vx.learning, false);
    assert.equal(vx.ttl, 64);
    assert.equal(vx.devIndex, host.h.links.get('uplink').index);
    const [ip] = await b.ipJson<IpLink[]>(host, '-d', 'link', 'show', 'weft.7');
    assert.equal(ip?.linkinfo?.info_data?.id, 7);
    assert.equal(ip?.linkinfo?.info_data?.local, '192.0.2.10');
    assert.equal(ip?.linkinfo?.info_data?.port, 8472);
    assert.equal(ip?.linkinfo?.info_data?.learning, false);
  });

  test('macvlan on a parent, bridge port hairpin', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const c = b.ns('c');
    host.h.links.add({ kind: 'bridge', name: 'parent0', up: true });
    const mv = host.h.links.add({
      kind: 'macvlan',
      name: 'mv0',
      parent: 'parent0',
      mode: 'bridge',
      netns: c.ns,
    });
    assert.equal(mv.kind, 'macvlan');
    assert.equal(mv.kind === 'macvlan' && mv.mode, 'bridge');
    assert.equal(host.h.links.find('mv0'), undefined, 'created directly in the container namespace');
    host.h.links.add({ kind: 'bridge', name: 'br0' });
    host.h.links.add({ kind: 'veth', name: 'vh', master: 'br0', peer: { name: 'vc', netns: c.ns } });
    host.h.links.setBridgePort('vh', { hairpin: true });
    assert.equal(host.h.links.bridgePort('vh').hairpin, true);
    const [ip] = await b.ipJson<IpLink[]>(host, '-d', 'link', 'show', 'vh');
    assert.equal(ip?.linkinfo?.info_slave_data?.hairpin, true);
    host.h.links.setBridgePort('vh', { hairpin: false });
    assert.equal(host.h.links.bridgePort('vh').hairpin, false);
  });

  test('ensure is idempotent and names what differs', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const L = host.h.links;
    const first = L.ensure({ kind: 'vxlan', name: 'vx0', vni: 1, port: 8472, learning: false });
    const again = L.ensure({ kind: 'vxlan', name: 'vx0', vni: 1, port: 8472, learning: false, up: true });
    assert.equal(again.index, first.index, 'not recreated');
    assert.equal(again.up, true);
    assert.throws(
      () => L.ensure({ kind: 'vxlan', name: 'vx0', vni: 2 }),
      (e) => isWeftError(e, 'CONFLICT') && /vni 1 vs 2/.test(e.message),
    );
    const recreated = L.ensure({ kind: 'vxlan', name: 'vx0', vni: 2 }, { recreate: true });
    assert.equal(recreated.kind === 'vxlan' && recreated.vni, 2);
    assert.throws(
      () => L.ensure({ kind: 'bridge', name: 'vx0' }),
      (e) => isWeftError(e, 'CONFLICT') && /kind vxlan vs bridge/.test(e.message),
    );
    L.delete('vx0');
    L.delete('vx0'); // already gone: success
    assert.throws(
      () => L.delete('vx0', { mustExist: true }),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
  });

  test('dummy: created where the kernel has the driver, else a typed UNSUPPORTED error', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    try {
      const d = host.h.links.add({ kind: 'dummy', name: 'dm0', mtu: 1300 });
      assert.equal(d.kind, 'dummy');
      assert.equal(d.mtu, 1300);
    } catch (e) {
      assert.ok(isWeftError(e, 'UNSUPPORTED'), `unexpected ${String(e)}`);
      assert.match((e as Error).message, /add dummy link dm0/);
      assert.equal(host.h.links.find('dm0'), undefined);
    }
  });

  test('bad input: typed errors and nothing half-created', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const c = b.ns('c');
    const L = host.h.links;
    const count = () => L.list().length + c.h.links.list().length;
    const n0 = count();
    assert.throws(
      () => L.add({ kind: 'bridge', name: 'x'.repeat(16) }),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => L.add({ kind: 'bridge', name: 'a/b' }),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => L.add({ kind: 'bridge', name: 'd0', mac: 'zz' }),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => L.add({ kind: 'bridge', name: 'd0', mtu: 10 }),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => L.add({ kind: 'vxlan', name: 'vx', vni: 1 << 24 }),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => L.add({ kind: 'macvlan', name: 'mv', parent: 'missing0' }),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
    assert.equal(count(), n0);
    L.add({ kind: 'bridge', name: 'd0' });
    assert.throws(
      () => L.add({ kind: 'bridge', name: 'd0' }),
      (e) => isWeftError(e, 'EXISTS'),
    );
    // A veth whose peer name is taken in the target namespace: the kernel refuses the pair whole.
    c.h.links.add({ kind: 'bridge', name: 'eth0' });
    assert.throws(
      () => L.add({ kind: 'veth', name: 'vh0', peer: { name: 'eth0', netns: c.ns } }),
      (e) => isWeftError(e, 'EXISTS'),
    );
    assert.equal(L.find('vh0'), undefined, 'no half-made veth');
    assert.throws(
      () => L.get('nope0'),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
  });
});
