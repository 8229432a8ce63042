import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type BedNs, bed, needsRoot } from '../../test/bed.js';
import { isWeftError } from '../lib/errors.js';
import { formatIP, parseIP } from '../lib/ip.js';
import { AF, NTF, NUD } from '../netlink/consts.js';

interface IpNeigh {
  dst: string;
  dev: string;
  lladdr?: string;
  state: string[];
}
interface BridgeFdb {
  mac: string;
  ifname: string;
  dst?: string;
  vni?: number;
  port?: number;
  master?: string;
  flags: string[];
  state: string;
}

const ZERO = '00:00:00:00:00:00';

async function bridgeFdb(b: ReturnType<typeof bed>, n: BedNs, ...args: string[]): Promise<BridgeFdb[]> {
  const { stdout } = await b.exec(n, 'bridge', ['-j', 'fdb', 'show', ...args]);
  return JSON.parse(String(stdout) || '[]') as BridgeFdb[];
}

describe('neighbours', needsRoot, () => {
  test('add, get, list, replace and delete permanent entries (IPv4 and IPv6), cross-checked with ip neigh', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const N = host.h.neigh;
    host.h.links.add({ kind: 'veth', name: 'v0', up: true, peer: { name: 'v0p' } });
    host.h.links.add({ kind: 'veth', name: 'v1', up: true, peer: { name: 'v1p' } });

    const n4 = N.add({ dev: 'v0', ip: '10.5.0.2', mac: '02:00:00:00:05:02' });
    assert.equal(n4.family, AF.INET);
    assert.equal(n4.ifindex, host.h.links.get('v0').index);
    assert.equal(n4.state, NUD.PERMANENT);
    assert.equal(n4.lladdr, '02:00:00:00:05:02');
    assert.equal(n4.ip && formatIP(n4.ip), '10.5.0.2');
    const n6 = N.add({ dev: 'v1', ip: parseIP('fd00::2'), mac: '02:00:00:00:06:02' });
    assert.equal(n6.family, AF.INET6);
    assert.equal(n6.state, NUD.PERMANENT);

    const ip4 = await b.ipJson<IpNeigh[]>(host, 'neigh', 'show', 'dev', 'v0');
    const e4 = ip4.find((e) => e.dst === '10.5.0.2');
    assert.deepEqual(e4 && { lladdr: e4.lladdr, state: e4.state }, {
      lladdr: '02:00:00:00:05:02',
      state: ['PERMANENT'],
    });
    const ip6 = await b.ipJson<IpNeigh[]>(host, '-6', 'neigh', 'show', 'dev', 'v1');
    assert.equal(ip6.find((e) => e.dst === 'fd00::2')?.lladdr, '02:00:00:00:06:02');

    // list: filters by device and family
    const onV0 = N.list({ dev: 'v0' });
    assert.ok(onV0.some((e) => e.ip && formatIP(e.ip) === '10.5.0.2'));
    assert.ok(onV0.every((e) => e.ifindex === n4.ifindex));
    const v6 = N.list({ family: 6 });
    assert.ok(v6.some((e) => e.ip && formatIP(e.ip) === 'fd00::2'));
    assert.ok(v6.every((e) => e.family === AF.INET6));
    assert.ok(N.list().some((e) => e.family === AF.INET) && N.list().some((e) => e.family === AF.INET6));

    // add is exclusive; replace is the idempotent ensure and moves the MAC
    assert.throws(
      () => N.add({ dev: 'v0', ip: '10.5.0.2', mac: '02:00:00:00:05:02' }),
      (e) => isWeftError(e, 'EXISTS'),
    );
    const moved = N.replace({ dev: 'v0', ip: '10.5.0.2', mac: '02:00:00:00:05:99' });
    assert.equal(moved.lladdr, '02:00:00:00:05:99');
    assert.equal(
      N.replace({ dev: 'v0', ip: '10.5.0.2', mac: '02:00:00:00:05:99' }).lladdr,
      '02:00:00:00:05:99',
    );
    const fresh = N.replace({ dev: 'v0', ip: '10.5.0.3', mac: '02:00:00:00:05:03' });
    assert.equal(fresh.state, NUD.PERMANENT);
    const after = await b.ipJson<IpNeigh[]>(host, 'neigh', 'show', 'dev', 'v0');
    assert.equal(after.find((e) => e.dst === '10.5.0.2')?.lladdr, '02:00:00:00:05:99');
    assert.equal(after.find((e) => e.dst === '10.5.0.3')?.lladdr, '02:00:00:00:05:03');

    // get / find
    assert.equal(N.get('v0', '10.5.0.3').lladdr, '02:00:00:00:05:03');
    assert.equal(N.find('v0', '10.5.0.77'), undefined);
    assert.equal(N.find('nosuch0', '10.5.0.3'), undefined);
    assert.throws(
      () => N.get('v0', '10.5.0.77'),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );

    // delete: absent is success unless mustExist
    N.delete({ dev: 'v0', ip: '10.5.0.2' });
    assert.equal(N.find('v0', '10.5.0.2'), undefined);
    N.delete({ dev: 'v0', ip: '10.5.0.2' });
    N.delete({ dev: 'gone0', ip: '10.5.0.2' });
    assert.throws(
      () => N.delete({ dev: 'v0', ip: '10.5.0.2' }, { mustExist: true }),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
    assert.throws(
      () => N.delete({ dev: 'gone0', ip: '10.5.0.2' }, { mustExist: true }),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
    N.delete({ dev: 'v1', ip: 'fd00::2' }, { mustExist: true });
    const left = await b.ipJson<IpNeigh[]>(host, 'neigh', 'show', 'dev', 'v0');
    assert.deepEqual(
      left.map((e) => e.dst),
      ['10.5.0.3'],
    );
    assert.equal((await b.ipJson<IpNeigh[]>(host, '-6', 'neigh', 'show', 'dev', 'v1')).length, 0);
  });

  test('bad input: typed errors and nothing changed', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const N = host.h.neigh;
    host.h.links.add({ kind: 'veth', name: 'v0', peer: { name: 'v0p' } });
    const before = N.list().length;
    const bad: [() => unknown, string][] = [
      [() => N.add({ dev: 'v0', ip: '10.5.0.300', mac: '02:00:00:00:00:01' }), 'INVALID'],
      [() => N.add({ dev: 'v0', ip: '10.5.0.3', mac: '02:00:00:00:00' }), 'INVALID'],
      [() => N.add({ dev: 'v0', ip: '10.5.0.3', mac: 'zz:00:00:00:00:01' }), 'INVALID'],
      [() => N.add({ dev: 'a/b', ip: '10.5.0.3', mac: '02:00:00:00:00:01' }), 'INVALID'],
      [() => N.add({ dev: 'missing0', ip: '10.5.0.3', mac: '02:00:00:00:00:01' }), 'NOT_FOUND'],
      [() => N.replace({ dev: 'v0', ip: 'fd00::1::2', mac: '02:00:00:00:00:01' }), 'INVALID'],
      [() => N.list({ dev: 'missing0' }), 'NOT_FOUND'],
      [() => N.list({ family: 5 as 4 }), 'INVALID'],
      [() => N.delete({ dev: 'v0', ip: 'nope' }), 'INVALID'],
    ];
    for (const [fn, code] of bad) assert.throws(fn, (e) => isWeftError(e, code as 'INVALID'));
    assert.equal(N.list().length, before);
    assert.equal((await b.ipJson<IpNeigh[]>(host, 'neigh', 'show', 'dev', 'v0')).length, 0);
  });
});

describe('fdb', needsRoot, () => {
  test('bridge port (master) entries and vxlan (self) entries with several destinations, cross-checked with bridge fdb', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const F = host.h.fdb;
    const L = host.h.links;
    L.add({ kind: 'bridge', name: 'br0' });
    L.add({ kind: 'veth', name: 'vh', master: 'br0', peer: { name: 'vp' } });
    L.add({ kind: 'vxlan', name: 'vx0', vni: 5, local: parseIP('192.0.2.1'), port: 4789, learning: false });

    // A static entry in the bridge's table, on one of its ports.
    F.append({ dev: 'vh', mac: '02:00:00:00:00:01', master: true });
    // The bridge marks its entries with NDA_MASTER (its index), not with NTF_MASTER.
    const [br] = F.get('vh', '02:00:00:00:00:01').filter((e) => e.master !== undefined);
    assert.ok(br, 'master entry read back');
    assert.equal(br.master, L.get('br0').index);
    assert.equal(br.state & NUD.NOARP, NUD.NOARP);
    assert.ok(F.list({ master: 'br0' }).some((e) => e.lladdr === '02:00:00:00:00:01'));
    const brShown = (await bridgeFdb(b, host, 'dev', 'vh')).find((e) => e.mac === '02:00:00:00:00:01');
    assert.equal(brShown?.master, 'br0');
    assert.equal(brShown?.state, 'static');

    // vxlan flooding: the all-zeros MAC gets one destination per remote VTEP.
    F.append({ dev: 'vx0', mac: ZERO, dst: '192.0.2.2' });
    F.append({ dev: 'vx0', mac: ZERO, dst: parseIP('192.0.2.3'), vni: 9, port: 4790, permanent: true });
    F.append({ dev: 'vx0', mac: ZERO, dst: '192.0.2.2' }); // already there: success, no duplicate
    const zero = F.get('vx0', ZERO);
    assert.deepEqual(zero.map((e) => e.dst && formatIP(e.dst)).sort(), ['192.0.2.2', '192.0.2.3']);
    const r3 = zero.find((e) => e.dst && formatIP(e.dst) === '192.0.2.3');
    assert.equal(r3?.vni, 9);
    assert.equal(r3?.port, 4790);
    assert.equal(r3?.family, AF.BRIDGE);
    assert.ok((r3?.flags ?? 0) & NTF.SELF);
    assert.equal(r3?.ip, undefined, 'NDA_DST of an FDB entry is dst, not ip');
    const shown = (await bridgeFdb(b, host, 'dev', 'vx0')).filter((e) => e.mac === ZERO);
    assert.deepEqual(shown.map((e) => e.dst).sort(), ['192.0.2.2', '192.0.2.3']);
    assert.equal(shown.find((e) => e.dst === '192.0.2.3')?.vni, 9);
    assert.equal(shown.find((e) => e.dst === '192.0.2.3')?.port, 4790);
    assert.ok(shown.every((e) => e.flags.includes('self')));

    // flannel's static mac → VTEP entry: replace moves it, append of another dst is a CONFLICT.
    const mac = '0a:58:0a:01:0f:00';
    F.replace({ dev: 'vx0', mac, dst: '192.0.2.2', permanent: true });
    F.replace({ dev: 'vx0', mac, dst: '192.0.2.2', permanent: true }); // idempotent
    F.replace({ dev: 'vx0', mac, dst: '192.0.2.4', permanent: true });
    assert.deepEqual(
      F.get('vx0', mac).map((e) => e.dst && formatIP(e.dst)),
      ['192.0.2.4'],
    );
    F.append({ dev: 'vx0', mac, dst: '192.0.2.4', permanent: true }); // same dst: fine
    assert.throws(
      () => F.append({ dev: 'vx0', mac, dst: '192.0.2.5' }),
      (e) => isWeftError(e, 'CONFLICT') && /192\.0\.2\.4/.test(e.message),
    );
    const uni = (await bridgeFdb(b, host, 'dev', 'vx0')).filter((e) => e.mac === mac);
    assert.deepEqual(
      uni.map((e) => [e.dst, e.state]),
      [['192.0.2.4', 'permanent']],
    );

    // delete one destination, then the whole entry; absent is success unless mustExist
    F.delete({ dev: 'vx0', mac: ZERO, dst: '192.0.2.2' });
    assert.deepEqual(
      F.get('vx0', ZERO).map((e) => e.dst && formatIP(e.dst)),
      ['192.0.2.3'],
    );
    F.delete({ dev: 'vx0', mac: ZERO, dst: '192.0.2.2' });
    F.delete({ dev: 'vx0', mac: ZERO });
    assert.deepEqual(F.find('vx0', ZERO), []);
    F.delete({ dev: 'vx0', mac });
    F.delete({ dev: 'vh', mac: '02:00:00:00:00:01', master: true });
    assert.equal(F.find('vh', '02:00:00:00:00:01').filter((e) => e.master !== undefined).length, 0);
    F.delete({ dev: 'vh', mac: '02:00:00:00:00:01', master: true });
    F.delete({ dev: 'gone0', mac });
    assert.throws(
      () => F.delete({ dev: 'vx0', mac }, { mustExist: true }),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
    assert.throws(
      () => F.get('vx0', mac),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
    const rest = await bridgeFdb(b, host, 'dev', 'vx0');
    assert.deepEqual(rest, []);
  });

  test('bad input: typed errors and nothing changed', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const F = host.h.fdb;
    host.h.links.add({ kind: 'bridge', name: 'br0' });
    host.h.links.add({ kind: 'veth', name: 'vh', master: 'br0', peer: { name: 'vp' } });
    host.h.links.add({ kind: 'vxlan', name: 'vx0', vni: 5, port: 4789, learning: false });
    const before = F.list().length;
    const bad: [() => unknown, string][] = [
      [() => F.append({ dev: 'vx0', mac: '00:00:00:00:00', dst: '192.0.2.2' }), 'INVALID'],
      [() => F.append({ dev: 'vx0', mac: ZERO, dst: '192.0.2' }), 'INVALID'],
      [() => F.append({ dev: 'vx0', mac: ZERO, dst: '192.0.2.2', vni: 1 << 24 }), 'INVALID'],
      [() => F.append({ dev: 'vx0', mac: ZERO, dst: '192.0.2.2', port: 0 }), 'INVALID'],
      [() => F.replace({ dev: 'vx0', mac: ZERO, dst: '192.0.2.2', port: 70000 }), 'INVALID'],
      [() => F.append({ dev: 'vh', mac: '02:00:00:00:00:01', master: true, dst: '192.0.2.2' }), 'INVALID'],
      [() => F.append({ dev: 'x'.repeat(16), mac: ZERO }), 'INVALID'],
      [() => F.append({ dev: 'missing0', mac: ZERO, dst: '192.0.2.2' }), 'NOT_FOUND'],
      [() => F.list({ master: 'missing0' }), 'NOT_FOUND'],
      [() => F.delete({ dev: 'vx0', mac: 'nope' }), 'INVALID'],
      [() => F.delete({ dev: 'gone0', mac: ZERO, dst: '192.0.2.300' }), 'INVALID'],
    ];
    for (const [fn, code] of bad) assert.throws(fn, (e) => isWeftError(e, code as 'INVALID'));
    assert.equal(F.list().length, before);
    assert.deepEqual(await bridgeFdb(b, host, 'dev', 'vx0'), []);
  });

  test('real packets over a vxlan overlay: flannel-style neigh + fdb entries, then flooding entries', async (t) => {
    const b = bed(t);
    const A = b.ns('hostA');
    const B = b.ns('hostB');
    // The underlay: one veth between the two "hosts".
    A.h.links.add({ kind: 'veth', name: 'ul', up: true, peer: { name: 'ul', netns: B.ns } });
    B.h.links.setUp('ul');
    await b.exec(A, 'ip', ['addr', 'add', '192.0.2.1/24', 'dev', 'ul']);
    await b.exec(B, 'ip', ['addr', 'add', '192.0.2.2/24', 'dev', 'ul']);
    const side = [
      { n: A, local: '192.0.2.1', remote: '192.0.2.2', overlay: '10.200.0.1', mac: '02:42:0a:c8:00:01' },
      { n: B, local: '192.0.2.2', remote: '192.0.2.1', overlay: '10.200.0.2', mac: '02:42:0a:c8:00:02' },
    ];
    for (const s of side) {
      s.n.h.links.add({
        kind: 'vxlan',
        name: 'weft.1',
        vni: 1,
        local: parseIP(s.local),
        dev: 'ul',
        port: 4789,
        learning: false,
        mac: s.mac,
        up: true,
      });
      await b.exec(s.n, 'ip', ['addr', 'add', `${s.overlay}/24`, 'dev', 'weft.1']);
    }
    assert.equal(await b.ping(A, '10.200.0.2', { deadlineS: 1 }), false, 'no FDB entry: nowhere to send');

    // flannel: a permanent neighbour (overlay IP → remote VTEP MAC) and an FDB entry (MAC → host).
    const [a, bb] = side as [(typeof side)[0], (typeof side)[0]];
    for (const [me, peer] of [
      [a, bb],
      [bb, a],
    ] as const) {
      me.n.h.neigh.replace({ dev: 'weft.1', ip: peer.overlay, mac: peer.mac });
      me.n.h.fdb.replace({ dev: 'weft.1', mac: peer.mac, dst: peer.local, permanent: true });
    }
    assert.ok(await b.ping(A, '10.200.0.2', { count: 2, deadlineS: 3 }), 'overlay ping with static entries');
    const neighShown = await b.ipJson<IpNeigh[]>(A, 'neigh', 'show', 'dev', 'weft.1');
    assert.deepEqual(
      neighShown.map((e) => [e.dst, e.lladdr, e.state]),
      [['10.200.0.2', bb.mac, ['PERMANENT']]],
    );

    // Remove them: traffic stops again (ARP has nowhere to go) …
    for (const [me, peer] of [
      [a, bb],
      [bb, a],
    ] as const) {
      me.n.h.neigh.delete({ dev: 'weft.1', ip: peer.overlay }, { mustExist: true });
      me.n.h.fdb.delete({ dev: 'weft.1', mac: peer.mac }, { mustExist: true });
    }
    assert.equal(await b.ping(A, '10.200.0.2', { deadlineS: 1 }), false, 'entries removed: no path');
    // … until flooding entries send ARP to the remote VTEP (the all-zeros MAC).
    A.h.fdb.append({ dev: 'weft.1', mac: ZERO, dst: '192.0.2.2' });
    B.h.fdb.append({ dev: 'weft.1', mac: ZERO, dst: '192.0.2.1' });
    assert.ok(await b.ping(A, '10.200.0.2', { count: 2, deadlineS: 3 }), 'overlay ping through flooding');
    const learned = A.h.neigh.get('weft.1', '10.200.0.2');
    assert.equal(learned.lladdr, bb.mac, 'ARP answered across the overlay');
  });
});
