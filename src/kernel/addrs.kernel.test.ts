import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type BedNs, bed, needsRoot } from '../../test/bed.js';
import { isWeftError } from '../lib/errors.js';
import { formatIP, formatIPNet, parseIPNet } from '../lib/ip.js';
import { IFA_F, RT_SCOPE } from '../netlink/consts.js';

interface IpAddrInfo {
  family: 'inet' | 'inet6';
  local: string;
  prefixlen: number;
  broadcast?: string;
  scope: string;
  label?: string;
  nodad?: boolean;
  noprefixroute?: boolean;
  tentative?: boolean;
  valid_life_time?: number;
  preferred_life_time?: number;
}
interface IpAddrLink {
  ifname: string;
  addr_info: IpAddrInfo[];
}

/** The addresses `ip -j addr show dev DEV` reports, as `ADDR/LEN` strings, link-local ones left out. */
async function ipAddrs(b: ReturnType<typeof bed>, n: BedNs, dev: string): Promise<IpAddrInfo[]> {
  const [link] = await b.ipJson<IpAddrLink[]>(n, 'addr', 'show', 'dev', dev);
  return (link?.addr_info ?? []).filter((x) => !x.local.startsWith('fe80:'));
}
const texts = (xs: IpAddrInfo[]) => xs.map((x) => `${x.local}/${x.prefixlen}`).sort();

/** A namespace with a veth pair d0/d0p, both up: plain devices (this kernel has no dummy driver). */
function withDevice(b: ReturnType<typeof bed>, label = 'host'): BedNs {
  const n = b.ns(label);
  n.h.links.add({ kind: 'veth', name: 'd0', up: true, peer: { name: 'd0p' } });
  n.h.links.setUp('d0p');
  return n;
}

describe('addresses', needsRoot, () => {
  test('IPv4: add with the default broadcast, label, scope; list; cross-checked with ip', async (t) => {
    const b = bed(t);
    const n = withDevice(b);
    const A = n.h.addrs;
    const idx = n.h.links.get('d0').index;

    const x = A.add('d0', '10.20.0.1/24');
    assert.equal(x.index, idx);
    assert.equal(x.family, 4);
    assert.equal(formatIPNet(x.ipnet), '10.20.0.1/24');
    assert.equal(x.broadcast && formatIP(x.broadcast), '10.20.0.255', 'brd + by default');
    assert.equal(x.scope, RT_SCOPE.UNIVERSE);
    assert.equal(x.label, 'd0');
    assert.equal(x.validLft, 0xffffffff);
    A.add('d0', parseIPNet('10.21.0.0/31'));
    A.add('d0', '10.22.0.1/16', { broadcast: false, label: 'd0:two' });
    A.add('d0', '10.23.0.1/24', { broadcast: '10.23.0.7', scope: 'link' });
    A.add('d0p', '127.0.0.2/8');

    const mine = A.list({ dev: 'd0', family: 4 });
    assert.deepEqual(mine.map((a) => formatIPNet(a.ipnet)).sort(), [
      '10.20.0.1/24',
      '10.21.0.0/31',
      '10.22.0.1/16',
      '10.23.0.1/24',
    ]);
    assert.equal(A.list({ dev: 'd0', family: 6 }).filter((a) => a.scope !== RT_SCOPE.LINK).length, 0);
    assert.ok(
      A.list().some((a) => formatIPNet(a.ipnet) === '127.0.0.1/8'),
      'all devices: lo too',
    );

    const ip = await ipAddrs(b, n, 'd0');
    assert.deepEqual(texts(ip), ['10.20.0.1/24', '10.21.0.0/31', '10.22.0.1/16', '10.23.0.1/24']);
    const by = (s: string) => ip.find((i) => `${i.local}/${i.prefixlen}` === s);
    assert.equal(by('10.20.0.1/24')?.broadcast, '10.20.0.255');
    assert.equal(by('10.21.0.0/31')?.broadcast, undefined, 'no broadcast for /31, as ip');
    assert.equal(by('10.22.0.1/16')?.broadcast, undefined);
    assert.equal(by('10.22.0.1/16')?.label, 'd0:two');
    assert.equal(by('10.23.0.1/24')?.broadcast, '10.23.0.7');
    assert.equal(by('10.23.0.1/24')?.scope, 'link');
    const [lo] = await ipAddrs(b, n, 'd0p');
    assert.equal(lo?.scope, 'host', '127/8 gets host scope, as ip');
  });

  test('IPv4: ensure, EXISTS, delete exact and bare, flush', async (t) => {
    const b = bed(t);
    const n = withDevice(b);
    const A = n.h.addrs;
    const first = A.ensure('d0', '10.30.0.1/24');
    const again = A.ensure('d0', '10.30.0.1/24');
    assert.deepEqual(again.ipnet, first.ipnet);
    assert.equal(A.list({ dev: 'd0', family: 4 }).length, 1, 'ensure did not add twice');
    assert.throws(
      () => A.add('d0', '10.30.0.1/24'),
      (e) => isWeftError(e, 'EXISTS') && /10\.30\.0\.1\/24 is already on d0/.test(e.message),
    );
    assert.throws(
      () => A.ensure('d0', '10.30.0.1/16'),
      (e) => isWeftError(e, 'CONFLICT') && /as 10\.30\.0\.1\/24, not \/16/.test(e.message),
    );
    assert.throws(
      () => A.ensure('d0', '10.30.0.1/24', { label: 'd0:x' }),
      (e) => isWeftError(e, 'CONFLICT') && /label d0 vs d0:x/.test(e.message),
    );

    A.delete('d0', '10.30.0.1/24');
    assert.deepEqual(texts(await ipAddrs(b, n, 'd0')), []);
    A.delete('d0', '10.30.0.1/24'); // gone already: success
    assert.throws(
      () => A.delete('d0', '10.30.0.1/24', { mustExist: true }),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
    A.delete('gone0', '10.30.0.1/24'); // no such device: nothing to delete
    assert.throws(
      () => A.delete('gone0', '10.30.0.1/24', { mustExist: true }),
      (e) => isWeftError(e, 'NOT_FOUND') && /gone0/.test(e.message),
    );

    // A bare address deletes it whatever its prefix length.
    A.add('d0', '10.31.0.5/20');
    A.delete('d0', '10.31.0.5');
    assert.deepEqual(texts(await ipAddrs(b, n, 'd0')), []);

    // Flush: primaries and secondaries of one family, the other family untouched.
    A.add('d0', '10.32.0.1/24');
    A.add('d0', '10.32.0.2/24'); // a secondary
    A.add('d0', '10.33.0.1/24');
    A.add('d0', '2001:db8:32::1/64', { noDad: true });
    const flushed = A.flush('d0', 4);
    assert.equal(flushed.length, 3);
    assert.ok(flushed.some((x) => (x.flags & IFA_F.SECONDARY) !== 0));
    assert.deepEqual(texts(await ipAddrs(b, n, 'd0')), ['2001:db8:32::1/64']);
    // A point-to-point address made by ip: read with its peer, and flushed (the kernel matches
    // an IPv4 delete on the peer).
    await b.exec(n, 'ip', ['addr', 'add', '10.34.0.1', 'peer', '10.34.0.2/32', 'dev', 'd0']);
    const ptp = A.list({ dev: 'd0', family: 4 }).find((x) => formatIP(x.ipnet.ip) === '10.34.0.1');
    assert.equal(ptp?.peer && formatIP(ptp.peer), '10.34.0.2');
    A.flush('d0');
    assert.deepEqual(await ipAddrs(b, n, 'd0'), []);
    assert.equal(A.list({ dev: 'd0' }).length, 0, 'link-local addresses flushed as well');
  });

  test('IPv6: nodad, noprefixroute, ensure, delete, flush; cross-checked with ip', async (t) => {
    const b = bed(t);
    const n = withDevice(b);
    const A = n.h.addrs;
    const x = A.add('d0', '2001:db8:40::1/64', { noDad: true });
    assert.equal(x.family, 6);
    assert.equal(formatIPNet(x.ipnet), '2001:db8:40::1/64');
    assert.ok(x.flags & IFA_F.NODAD);
    assert.equal(x.flags & IFA_F.TENTATIVE, 0, 'usable at once');
    assert.equal(x.label, undefined);
    A.add('d0', '2001:db8:41::1/64', { noDad: true, noPrefixRoute: true });
    A.add('d0', '2001:db8:42::1/64', { noDad: true, validLft: 3600, preferredLft: 1800 });

    const ip = await ipAddrs(b, n, 'd0');
    assert.deepEqual(texts(ip), ['2001:db8:40::1/64', '2001:db8:41::1/64', '2001:db8:42::1/64']);
    const by = (s: string) => ip.find((i) => `${i.local}/${i.prefixlen}` === s);
    assert.equal(by('2001:db8:40::1/64')?.nodad, true);
    assert.equal(by('2001:db8:40::1/64')?.tentative, undefined);
    assert.equal(by('2001:db8:41::1/64')?.noprefixroute, true);
    assert.ok((by('2001:db8:42::1/64')?.valid_life_time ?? 0) <= 3600);
    const lft = A.list({ dev: 'd0', family: 6 }).find((a) => formatIPNet(a.ipnet) === '2001:db8:42::1/64');
    assert.ok(lft?.validLft !== undefined && lft.validLft <= 3600 && lft.validLft > 3500);
    assert.ok(lft?.preferredLft !== undefined && lft.preferredLft <= 1800);

    // The prefix route exists for one, not for the noprefixroute address.
    const routes = await b.ipJson<{ dst: string }[]>(n, '-6', 'route', 'show', 'dev', 'd0');
    assert.ok(routes.some((r) => r.dst === '2001:db8:40::/64'));
    assert.ok(!routes.some((r) => r.dst === '2001:db8:41::/64'));
    assert.ok(n.h.routes.list({ family: 6, dst: '2001:db8:40::/64' }).length === 1);

    assert.equal(
      formatIPNet(A.ensure('d0', '2001:db8:40::1/64', { noDad: true }).ipnet),
      '2001:db8:40::1/64',
    );
    assert.throws(
      () => A.ensure('d0', '2001:db8:40::1/80'),
      (e) => isWeftError(e, 'CONFLICT'),
    );
    assert.throws(
      () => A.add('d0', '2001:db8:40::1/64', { noDad: true }),
      (e) => isWeftError(e, 'EXISTS'),
    );
    A.delete('d0', '2001:db8:40::1/64');
    A.delete('d0', '2001:db8:40::1/64');
    A.delete('d0', '2001:db8:41::1');
    assert.deepEqual(texts(await ipAddrs(b, n, 'd0')), ['2001:db8:42::1/64']);
    A.add('d0', '10.40.0.1/24');
    A.flush('d0', 6);
    assert.deepEqual(texts(await ipAddrs(b, n, 'd0')), ['10.40.0.1/24']);
    assert.equal(A.list({ dev: 'd0', family: 6 }).length, 0);
  });

  test('addresses on both ends of a veth pair between namespaces: ping crosses, v4 and v6', async (t) => {
    const b = bed(t);
    const left = b.ns('left');
    const right = b.ns('right');
    left.h.links.add({ kind: 'veth', name: 'l0', up: true, peer: { name: 'r0', netns: right.ns } });
    right.h.links.setUp('r0');
    left.h.addrs.add('l0', '10.50.0.1/24');
    right.h.addrs.add('r0', '10.50.0.2/24');
    left.h.addrs.add('l0', '2001:db8:50::1/64', { noDad: true });
    right.h.addrs.add('r0', '2001:db8:50::2/64', { noDad: true });
    assert.ok(await b.ping(left, '10.50.0.2', { count: 1, deadlineS: 3 }), 'IPv4 ping crosses');
    assert.ok(await b.ping(left, '2001:db8:50::2', { count: 1, deadlineS: 3 }), 'IPv6 ping crosses');
    right.h.addrs.delete('r0', '10.50.0.2/24');
    assert.equal(await b.ping(left, '10.50.0.2', { count: 1, deadlineS: 1 }), false, 'gone with the address');
  });

  test('bad input: typed errors and nothing changed', async (t) => {
    const b = bed(t);
    const n = withDevice(b);
    const A = n.h.addrs;
    A.add('d0', '10.60.0.1/24');
    // The addresses we could have changed: not the kernel's own link-local ones, nor carrier
    // flags, which a fresh veth pair still changes by itself meanwhile (DAD, carrier up).
    const ours = async () =>
      JSON.stringify(
        (await b.ipJson<IpAddrLink[]>(n, 'addr', 'show')).map((l) => [
          l.ifname,
          (l.addr_info ?? []).filter((a) => a.scope !== 'link').map((a) => `${a.local}/${a.prefixlen}`),
        ]),
      );
    const before = await ours();
    const invalid = (fn: () => unknown, re?: RegExp) =>
      assert.throws(fn, (e) => isWeftError(e, 'INVALID') && (re === undefined || re.test(e.message)));
    invalid(() => A.add('d0', '10.60.0.300/24'), /not an IP address/);
    invalid(() => A.add('d0', '10.60.0.2/33'), /prefix length/);
    invalid(() => A.add('d0', { ip: parseIPNet('10.0.0.1/8').ip, len: 40 }), /prefix length 40/);
    invalid(() => A.add('d0', '2001:db8::1/64', { broadcast: '10.0.0.255' }), /broadcast .* IPv4/);
    invalid(() => A.add('d0', '2001:db8::1/64', { label: 'd0:x' }), /label .* IPv4/);
    invalid(() => A.add('d0', '10.60.0.2/24', { label: 'eth0:x' }), /must start with the device name "d0"/);
    invalid(() => A.add('d0', '10.60.0.2/24', { broadcast: '2001:db8::ff' }), /not an IPv4 address/);
    invalid(() => A.add('d0', '10.60.0.2/24', { scope: 'galaxy' as never }), /unknown scope/);
    invalid(() => A.add('d0', '10.60.0.2/24', { validLft: 10, preferredLft: 20 }), /exceeds/);
    assert.throws(
      () => A.add('missing0', '10.60.0.2/24'),
      (e) => isWeftError(e, 'NOT_FOUND') && /missing0/.test(e.message),
    );
    assert.throws(
      () => A.list({ dev: 'missing0' }),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
    assert.throws(
      () => A.flush('missing0'),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
    assert.equal(await ours(), before, 'kernel state unchanged');
  });
});
