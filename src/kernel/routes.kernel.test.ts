import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, test } from 'node:test';
import { type Bed, type BedNs, bed, needsRoot } from '../../test/bed.js';
import { isWeftError, type WeftError } from '../lib/errors.js';
import { formatIP, formatIPNet, parseIP, parseIPNet } from '../lib/ip.js';
import { RT_SCOPE, RT_TABLE, RTPROT } from '../netlink/consts.js';
import type { Route } from '../netlink/route.js';

interface IpRoute {
  type?: string;
  dst: string;
  gateway?: string;
  dev?: string;
  table?: string;
  protocol?: string;
  scope?: string;
  prefsrc?: string;
  metric?: number;
  flags: string[];
  metrics?: { mtu?: number }[];
}

/** `ip -j [-6] route show table T`, keyed by destination. */
async function ipRoutes(b: Bed, n: BedNs, family: 4 | 6, table = 'main'): Promise<Map<string, IpRoute>> {
  const list = await b.ipJson<IpRoute[]>(n, `-${family}`, '-d', 'route', 'show', 'table', table);
  return new Map(list.map((r) => [r.dst, r]));
}

/** A namespace with a veth pair d0/d0p up and addresses on d0 (a plain device: no dummy driver here). */
function withDevice(b: Bed, label = 'host'): BedNs {
  const n = b.ns(label);
  n.h.links.add({ kind: 'veth', name: 'd0', up: true, peer: { name: 'd0p' } });
  n.h.links.setUp('d0p');
  n.h.addrs.add('d0', '10.1.0.1/24');
  n.h.addrs.add('d0', '2001:db8:1::1/64', { noDad: true });
  return n;
}

/** Write a sysctl inside the namespace (/proc/sys/net is per namespace of the opener). */
function sysctl(n: BedNs, path: string, value: string): void {
  const fd = n.ns.openFile(`/proc/sys/${path}`, 'w');
  try {
    fs.writeSync(fd, value);
  } finally {
    fs.closeSync(fd);
  }
}

const dstOf = (r: Route) => (r.dst ? formatIPNet(r.dst) : 'default');
const isCode = (code: WeftError['code'], re?: RegExp) => (e: unknown) =>
  isWeftError(e, code) && (re === undefined || re.test(e.message));

describe('routes', needsRoot, () => {
  test('IPv4: via, dev, metric, src, mtu, scope, default; defaults as ip route; cross-checked', async (t) => {
    const b = bed(t);
    const n = withDevice(b);
    const R = n.h.routes;
    const d0 = n.h.links.get('d0').index;

    const viaGw = R.add({ dst: '10.2.0.0/24', via: '10.1.0.2' });
    assert.equal(dstOf(viaGw), '10.2.0.0/24');
    assert.equal(viaGw.gateway && formatIP(viaGw.gateway), '10.1.0.2');
    assert.equal(viaGw.oif, d0, 'the kernel picks the device of the gateway');
    assert.equal(viaGw.scope, RT_SCOPE.UNIVERSE);
    assert.equal(viaGw.protocol, RTPROT.BOOT);
    assert.equal(viaGw.table, RT_TABLE.MAIN);
    assert.equal(viaGw.type, 'unicast');
    const onDev = R.add({ dst: '10.3.0.0/24', dev: 'd0' });
    assert.equal(onDev.scope, RT_SCOPE.LINK, 'no gateway: scope link');
    assert.equal(onDev.gateway, undefined);
    const full = R.add({
      dst: parseIPNet('10.4.0.0/16'),
      via: parseIP('10.1.0.3'),
      dev: 'd0',
      metric: 50,
      src: '10.1.0.1',
      mtu: 1400,
      protocol: RTPROT.STATIC,
    });
    assert.equal(full.priority, 50);
    assert.equal(full.prefsrc && formatIP(full.prefsrc), '10.1.0.1');
    assert.equal(full.mtu, 1400);
    assert.equal(full.protocol, RTPROT.STATIC);
    R.add({ dst: '10.5.0.0/24', dev: 'd0', scope: 'host' });
    R.add({ dst: '10.6.0.7', dev: 'd0', scope: 'universe' }); // a bare address is a host route
    const def = R.add({ dst: 'default', via: '10.1.0.254' });
    assert.equal(def.dst, undefined);

    const listed = R.list({ family: 4 });
    for (const d of ['10.2.0.0/24', '10.3.0.0/24', '10.4.0.0/16', '10.5.0.0/24', '10.6.0.7/32', 'default']) {
      assert.ok(
        listed.some((r) => dstOf(r) === d),
        `${d} listed`,
      );
    }
    assert.deepEqual(
      R.list({ dst: 'default' }).map((r) => r.gateway && formatIP(r.gateway)),
      ['10.1.0.254'],
    );
    assert.deepEqual(
      R.list({ dst: '10.4.0.0/16' }).map((r) => r.priority),
      [50],
    );
    assert.ok(R.list({ dev: 'd0p' }).every((r) => r.oif === n.h.links.get('d0p').index));
    assert.ok(
      R.list({ protocol: RTPROT.STATIC }).every((r) => r.protocol === RTPROT.STATIC),
      'protocol filter',
    );

    const ip = await ipRoutes(b, n, 4);
    assert.equal(ip.get('10.2.0.0/24')?.gateway, '10.1.0.2');
    assert.equal(ip.get('10.2.0.0/24')?.dev, 'd0');
    assert.equal(ip.get('10.2.0.0/24')?.protocol, 'boot');
    assert.equal(ip.get('10.2.0.0/24')?.scope, 'global');
    assert.equal(ip.get('10.3.0.0/24')?.scope, 'link');
    assert.equal(ip.get('10.4.0.0/16')?.metric, 50);
    assert.equal(ip.get('10.4.0.0/16')?.prefsrc, '10.1.0.1');
    assert.equal(ip.get('10.4.0.0/16')?.protocol, 'static');
    assert.deepEqual(ip.get('10.4.0.0/16')?.metrics, [{ mtu: 1400 }]);
    assert.equal(ip.get('10.5.0.0/24')?.scope, 'host');
    assert.equal(ip.get('10.6.0.7')?.scope, 'global');
    assert.equal(ip.get('default')?.gateway, '10.1.0.254');
  });

  test('IPv4: tables (main, 100, 1000), EXISTS, replace, delete, onlink, blackhole and friends', async (t) => {
    const b = bed(t);
    const n = withDevice(b);
    const R = n.h.routes;

    const t100 = R.add({ dst: '10.7.0.0/16', via: '10.1.0.4', table: 100 });
    assert.equal(t100.table, 100);
    const t1000 = R.add({ dst: '10.7.0.0/16', via: '10.1.0.5', table: 1000 });
    assert.equal(t1000.table, 1000, 'a table above 255 travels in RTA_TABLE');
    assert.equal(R.list({ dst: '10.7.0.0/16' }).length, 0, 'not in main');
    assert.deepEqual(R.list({ table: 100 }).map(dstOf), ['10.7.0.0/16']);
    assert.deepEqual(
      R.list({ table: 'all', dst: '10.7.0.0/16' })
        .map((r) => r.table)
        .sort((x, y) => x - y),
      [100, 1000],
    );
    assert.ok(R.list({ table: 'all' }).some((r) => r.table === RT_TABLE.LOCAL && r.type === 'local'));
    assert.equal((await ipRoutes(b, n, 4, '100')).get('10.7.0.0/16')?.gateway, '10.1.0.4');
    assert.equal((await ipRoutes(b, n, 4, '1000')).get('10.7.0.0/16')?.gateway, '10.1.0.5');

    assert.throws(
      () => R.add({ dst: '10.7.0.0/16', via: '10.1.0.6', table: 100 }),
      isCode('EXISTS', /10\.7\.0\.0\/16 via 10\.1\.0\.6 table 100 already exists/),
    );
    const replaced = R.replace({ dst: '10.7.0.0/16', via: '10.1.0.6', table: 100 });
    assert.equal(replaced.gateway && formatIP(replaced.gateway), '10.1.0.6');
    R.replace({ dst: '10.7.0.0/16', via: '10.1.0.6', table: 100 }); // idempotent
    assert.deepEqual(
      R.list({ table: 100 }).map((r) => r.gateway && formatIP(r.gateway)),
      ['10.1.0.6'],
    );
    const fresh = R.replace({ dst: '10.8.0.0/24', dev: 'd0' }); // replace creates as well
    assert.equal(fresh.oif, n.h.links.get('d0').index);

    R.delete({ dst: '10.7.0.0/16', table: 100 });
    assert.equal((await ipRoutes(b, n, 4, '100')).size, 0);
    R.delete({ dst: '10.7.0.0/16', table: 100 }); // gone: success
    assert.throws(
      () => R.delete({ dst: '10.7.0.0/16', table: 100 }, { mustExist: true }),
      isCode('NOT_FOUND'),
    );
    // A delete narrowed by gateway leaves a route with another gateway alone.
    R.delete({ dst: '10.7.0.0/16', via: '10.1.0.9', table: 1000 });
    assert.equal(R.list({ table: 1000 }).length, 1);
    R.delete({ dst: '10.7.0.0/16', via: '10.1.0.5', table: 1000 });
    assert.equal(R.list({ table: 1000 }).length, 0);
    R.delete({ dst: '10.8.0.0/24', dev: 'gone0' }); // no such device: no such route
    assert.throws(
      () => R.delete({ dst: '10.8.0.0/24', dev: 'gone0' }, { mustExist: true }),
      isCode('NOT_FOUND'),
    );

    // onlink: a gateway outside every subnet of the device.
    assert.throws(
      () => R.add({ dst: '10.9.0.0/24', via: '192.168.77.1', dev: 'd0' }),
      isCode('INVALID', /gateway 192\.168\.77\.1 is not reachable on-link from dev d0; use onlink/),
    );
    assert.throws(
      () => R.add({ dst: '10.9.0.0/24', via: '192.168.77.1' }),
      isCode('INVALID', /gateway 192\.168\.77\.1 is not reachable on-link/),
    );
    const onlink = R.add({ dst: '10.9.0.0/24', via: '192.168.77.1', dev: 'd0', onlink: true });
    assert.equal(onlink.onlink, true);
    assert.deepEqual((await ipRoutes(b, n, 4)).get('10.9.0.0/24')?.flags, ['onlink']);

    for (const type of ['blackhole', 'unreachable', 'prohibit', 'throw'] as const) {
      const r = R.add({
        dst: `10.66.${['blackhole', 'unreachable', 'prohibit', 'throw'].indexOf(type)}.0/24`,
        type,
      });
      assert.equal(r.type, type);
    }
    const ip = await ipRoutes(b, n, 4);
    assert.equal(ip.get('10.66.0.0/24')?.type, 'blackhole');
    assert.equal(ip.get('10.66.1.0/24')?.type, 'unreachable');
    assert.equal(ip.get('10.66.2.0/24')?.type, 'prohibit');
    assert.equal(ip.get('10.66.3.0/24')?.type, 'throw');
    assert.deepEqual(R.list({ type: 'blackhole' }).map(dstOf), ['10.66.0.0/24']);
    R.delete({ dst: '10.66.0.0/24', type: 'blackhole' });
    assert.equal(R.list({ type: 'blackhole' }).length, 0);

    // A local route goes to the local table by default, as ip does.
    const local = R.add({ dst: '10.1.0.77', type: 'local', dev: 'd0' });
    // (Its table reads main: without policy rules the kernel merges the local and main tables.)
    assert.equal(local.scope, RT_SCOPE.HOST);
    assert.equal((await ipRoutes(b, n, 4, 'local')).get('10.1.0.77')?.type, 'local');
  });

  test('IPv6: via, dev, metric, default, table, blackhole, replace, delete; cross-checked', async (t) => {
    const b = bed(t);
    const n = withDevice(b);
    const R = n.h.routes;
    const d0 = n.h.links.get('d0').index;

    const via = R.add({ dst: '2001:db8:2::/64', via: '2001:db8:1::2' });
    assert.equal(via.family, 6);
    assert.equal(via.priority, 1024, 'the kernel default IPv6 metric');
    assert.equal(via.oif, d0);
    const dev = R.add({ dst: '2001:db8:3::/64', dev: 'd0', metric: 10, mtu: 1400 });
    assert.equal(dev.priority, 10);
    assert.equal(dev.mtu, 1400);
    const def = R.add({ dst: 'default', via: 'fe80::1', dev: 'd0' });
    assert.equal(def.family, 6, 'the family of a default route follows its gateway');
    assert.equal(def.dst, undefined);
    R.add({ dst: '2001:db8:4::/48', via: '2001:db8:1::4', table: 100, src: '2001:db8:1::1' });
    R.add({ dst: '2001:db8:66::/48', type: 'blackhole' });

    const ip = await ipRoutes(b, n, 6);
    assert.equal(ip.get('2001:db8:2::/64')?.gateway, '2001:db8:1::2');
    assert.equal(ip.get('2001:db8:2::/64')?.metric, 1024);
    assert.equal(ip.get('2001:db8:2::/64')?.protocol, 'boot');
    assert.equal(ip.get('2001:db8:3::/64')?.metric, 10);
    assert.deepEqual(ip.get('2001:db8:3::/64')?.metrics, [{ mtu: 1400 }]);
    assert.equal(ip.get('default')?.gateway, 'fe80::1');
    assert.equal(ip.get('default')?.dev, 'd0');
    assert.equal(ip.get('2001:db8:66::/48')?.type, 'blackhole');
    const t100 = await ipRoutes(b, n, 6, '100');
    assert.equal(t100.get('2001:db8:4::/48')?.gateway, '2001:db8:1::4');
    assert.equal(t100.get('2001:db8:4::/48')?.prefsrc, '2001:db8:1::1');
    assert.deepEqual(R.list({ family: 6, table: 100 }).map(dstOf), ['2001:db8:4::/48']);
    assert.deepEqual(
      R.list({ family: 6, dst: 'default' }).map((r) => r.gateway && formatIP(r.gateway)),
      ['fe80::1'],
    );
    assert.ok(R.list({ family: 4 }).every((r) => r.family === 4));
    R.add({ dst: 'default', via: '10.1.0.254' });
    assert.deepEqual(
      R.list({ dst: 'default' })
        .map((r) => r.family)
        .sort(),
      [4, 6],
      'default routes of both families',
    );

    assert.throws(() => R.add({ dst: '2001:db8:2::/64', via: '2001:db8:1::3' }), isCode('EXISTS'));
    const rep = R.replace({ dst: '2001:db8:2::/64', via: '2001:db8:1::3' });
    assert.equal(rep.gateway && formatIP(rep.gateway), '2001:db8:1::3');
    assert.equal(R.list({ dst: '2001:db8:2::/64' }).length, 1);
    assert.throws(
      () => R.add({ dst: '2001:db8:9::/64', via: '2001:db8:99::1', dev: 'd0' }),
      isCode('INVALID', /gateway 2001:db8:99::1 is not reachable on-link from dev d0; use onlink/),
    );
    R.add({ dst: '2001:db8:9::/64', via: '2001:db8:99::1', dev: 'd0', onlink: true });

    R.delete({ dst: '2001:db8:2::/64' });
    R.delete({ dst: '2001:db8:2::/64' });
    assert.throws(() => R.delete({ dst: '2001:db8:2::/64' }, { mustExist: true }), isCode('NOT_FOUND'));
    R.delete({ dst: 'default', via: 'fe80::1', dev: 'd0' });
    R.delete({ dst: '2001:db8:4::/48', table: 100 });
    const after = await ipRoutes(b, n, 6);
    assert.ok(!after.has('2001:db8:2::/64') && !after.has('default'));
    assert.equal((await ipRoutes(b, n, 6, '100')).size, 0);
  });

  test('get: the route the kernel picks, with device, gateway, table, mark, ports; typed errors', async (t) => {
    const b = bed(t);
    const n = withDevice(b);
    const R = n.h.routes;
    R.add({ dst: '10.2.0.0/24', via: '10.1.0.2' });
    R.add({ dst: '10.2.0.128/25', via: '10.1.0.3', metric: 5 });
    R.add({ dst: '2001:db8:2::/64', via: '2001:db8:1::2' });

    const g = R.get('10.2.0.7');
    assert.equal(g.gateway && formatIP(g.gateway), '10.1.0.2');
    assert.equal(g.dev, 'd0');
    assert.equal(g.table, RT_TABLE.MAIN);
    assert.equal(g.prefsrc && formatIP(g.prefsrc), '10.1.0.1');
    assert.equal(g.dst && formatIPNet(g.dst), '10.2.0.7/32');
    const [ipg] = await b.ipJson<IpRoute[]>(n, 'route', 'get', '10.2.0.7');
    assert.equal(ipg?.gateway, '10.1.0.2');
    assert.equal(ipg?.dev, 'd0');
    assert.equal(ipg?.prefsrc, '10.1.0.1');
    // The longest prefix wins; fibMatch names the entry.
    assert.equal(formatIP(R.get('10.2.0.200').gateway!), '10.1.0.3');
    const fib = R.get('10.2.0.200', { fibMatch: true });
    assert.equal(fib.dst && formatIPNet(fib.dst), '10.2.0.128/25');
    assert.equal(fib.priority, 5);
    // Directly connected, and local.
    const conn = R.get(parseIP('10.1.0.9'));
    assert.equal(conn.gateway, undefined);
    assert.equal(conn.dev, 'd0');
    const local = R.get('10.1.0.1');
    assert.equal(local.type, 'local');
    assert.equal(local.dev, 'lo');
    // (Its table reads main: without policy rules the kernel merges the local and main tables.)
    // IPv6.
    const g6 = R.get('2001:db8:2::7');
    assert.equal(g6.family, 6);
    assert.equal(g6.gateway && formatIP(g6.gateway), '2001:db8:1::2');
    assert.equal(g6.dev, 'd0');

    // Mark and protocol/ports reach the kernel: policy rules pick tables by them.
    R.add({ dst: '10.50.0.0/16', via: '10.1.0.50', table: 100 });
    R.add({ dst: '10.50.0.0/16', via: '10.1.0.51', table: 101 });
    await b.exec(n, 'ip', ['rule', 'add', 'fwmark', '7', 'table', '100']);
    await b.exec(n, 'ip', ['rule', 'add', 'ipproto', 'udp', 'dport', '53', 'table', '101']);
    await b.exec(n, 'ip', ['rule', 'add', 'ipproto', 'tcp', 'sport', '1234', 'table', '101']);
    const marked = R.get('10.50.1.1', { mark: 7 });
    assert.equal(marked.table, 100);
    assert.equal(formatIP(marked.gateway!), '10.1.0.50');
    const dns = R.get('10.50.1.1', { ipProto: 'udp', dport: 53 });
    assert.equal(dns.table, 101);
    assert.equal(formatIP(dns.gateway!), '10.1.0.51');
    assert.equal(R.get('10.50.1.1', { ipProto: 'tcp', sport: 1234, dport: 80 }).table, 101);
    assert.equal(R.get('10.50.1.1', { src: '10.1.0.1', oif: 'd0', mark: 7 }).dev, 'd0');

    // No route, and the reject types: NOT_FOUND with the reason.
    const reason = (r: string, re?: RegExp) => (e: unknown) =>
      isCode('NOT_FOUND', re)(e) && (e as WeftError).details.reason === r;
    assert.throws(() => R.get('10.50.1.1'), reason('no-route', /route get 10\.50\.1\.1: no route/));
    assert.throws(() => R.get('2001:db8:77::1'), reason('no-route'));
    R.add({ dst: '10.66.0.0/24', type: 'blackhole' });
    R.add({ dst: '10.66.1.0/24', type: 'unreachable' });
    R.add({ dst: '10.66.2.0/24', type: 'prohibit' });
    R.add({ dst: '2001:db8:66::/64', type: 'unreachable' });
    assert.throws(() => R.get('10.66.0.1'), reason('blackhole'));
    assert.throws(() => R.get('10.66.1.1'), reason('unreachable'));
    assert.throws(() => R.get('10.66.2.1'), reason('prohibit'));
    assert.throws(() => R.get('2001:db8:66::1'), reason('unreachable'));

    // Bad lookups fail before asking.
    assert.throws(() => R.get('10.2.0.7', { src: '2001:db8::1' }), isCode('INVALID', /different families/));
    assert.throws(() => R.get('10.2.0.7', { oif: 'nope0' }), isCode('NOT_FOUND', /nope0/));
    assert.throws(() => R.get('10.2.0.7', { dport: 53 }), isCode('INVALID', /needs ipProto tcp or udp/));
    assert.throws(() => R.get('10.2.0.7', { ipProto: 47 }), isCode('INVALID'));
    assert.throws(() => R.get('10.2.0.7', { ipProto: 'udp', dport: 70000 }), isCode('INVALID'));
    assert.throws(() => R.get('not-an-ip'), isCode('INVALID'));
  });

  test('packets cross a gateway namespace (v4 and v6); get with iif follows the forwarding path', async (t) => {
    const b = bed(t);
    const c1 = b.ns('c1');
    const gw = b.ns('gw');
    const c2 = b.ns('c2');
    gw.h.links.add({ kind: 'veth', name: 'g1', up: true, peer: { name: 'eth0', netns: c1.ns } });
    gw.h.links.add({ kind: 'veth', name: 'g2', up: true, peer: { name: 'eth0', netns: c2.ns } });
    c1.h.links.setUp('eth0');
    c2.h.links.setUp('eth0');
    sysctl(gw, 'net/ipv4/ip_forward', '1');
    sysctl(gw, 'net/ipv6/conf/all/forwarding', '1');
    gw.h.addrs.add('g1', '10.71.0.1/24');
    gw.h.addrs.add('g2', '10.72.0.1/24');
    gw.h.addrs.add('g1', '2001:db8:71::1/64', { noDad: true });
    gw.h.addrs.add('g2', '2001:db8:72::1/64', { noDad: true });
    c1.h.addrs.add('eth0', '10.71.0.2/24');
    c2.h.addrs.add('eth0', '10.72.0.2/24');
    c1.h.addrs.add('eth0', '2001:db8:71::2/64', { noDad: true });
    c2.h.addrs.add('eth0', '2001:db8:72::2/64', { noDad: true });

    assert.equal(await b.ping(c1, '10.72.0.2', { count: 1, deadlineS: 1 }), false, 'no route yet');
    assert.throws(() => c1.h.routes.get('10.72.0.2'), isCode('NOT_FOUND'));

    c1.h.routes.add({ dst: 'default', via: '10.71.0.1' });
    c2.h.routes.add({ dst: '10.71.0.0/24', via: '10.72.0.1', dev: 'eth0' });
    c1.h.routes.add({ dst: 'default', via: '2001:db8:71::1', family: 6 });
    c2.h.routes.add({ dst: '2001:db8:71::/64', via: '2001:db8:72::1' });

    const out = c1.h.routes.get('10.72.0.2');
    assert.equal(out.dev, 'eth0');
    assert.equal(formatIP(out.gateway!), '10.71.0.1');
    // In the gateway, a packet from c1 arriving on g1 leaves on g2, directly.
    const fwd = gw.h.routes.get('10.72.0.2', { iif: 'g1', src: '10.71.0.2' });
    assert.equal(fwd.dev, 'g2');
    assert.equal(fwd.gateway, undefined);
    assert.equal(fwd.iif, gw.h.links.get('g1').index);
    const [ipFwd] = await b.ipJson<IpRoute[]>(
      gw,
      'route',
      'get',
      '10.72.0.2',
      'from',
      '10.71.0.2',
      'iif',
      'g1',
    );
    assert.equal(ipFwd?.dev, 'g2');

    assert.ok(await b.ping(c1, '10.72.0.2', { count: 2, deadlineS: 4 }), 'IPv4 crosses the gateway');
    assert.ok(await b.ping(c2, '10.71.0.2', { count: 1, deadlineS: 3 }), 'and back');
    assert.ok(await b.ping(c1, '2001:db8:72::2', { count: 2, deadlineS: 4 }), 'IPv6 crosses the gateway');

    // Forwarding off: the input lookup says so with a typed error.
    sysctl(gw, 'net/ipv4/conf/all/forwarding', '0');
    assert.throws(
      () => gw.h.routes.get('10.72.0.2', { iif: 'g1', src: '10.71.0.2' }),
      (e) => isCode('NOT_FOUND', /forwarding is off/)(e) && (e as WeftError).details.reason === 'unreachable',
    );
    // Without a source the packet is a martian: refused.
    assert.throws(
      () => gw.h.routes.get('10.72.0.2', { iif: 'g1' }),
      (e) => isCode('NOT_FOUND')(e) && (e as WeftError).details.reason === 'refused',
    );

    c2.h.routes.delete({ dst: '10.71.0.0/24' });
    assert.equal(await b.ping(c1, '10.72.0.2', { count: 1, deadlineS: 1 }), false, 'no way back, no reply');
  });

  test('bad input: typed errors naming the problem, and the kernel unchanged', async (t) => {
    const b = bed(t);
    const n = withDevice(b);
    const R = n.h.routes;
    n.h.links.add({ kind: 'veth', name: 'down0', peer: { name: 'down0p' } });
    R.add({ dst: '10.2.0.0/24', via: '10.1.0.2' });
    const snapshot = async () =>
      JSON.stringify([
        await b.ipJson(n, '-4', 'route', 'show', 'table', 'all'),
        await b.ipJson(n, '-6', 'route', 'show', 'table', 'all'),
      ]);
    const before = await snapshot();
    const invalid = (fn: () => unknown, re: RegExp) => assert.throws(fn, isCode('INVALID', re));

    invalid(() => R.add({ dst: '10.3.0.1/24', dev: 'd0' }), /host bits set; did you mean 10\.3\.0\.0\/24\?/);
    invalid(
      () => R.add({ dst: '10.3.0.0/24', via: '2001:db8:1::2' }),
      /gateway 2001:db8:1::2 is IPv6 but destination 10\.3\.0\.0\/24 is IPv4/,
    );
    invalid(() => R.add({ dst: '2001:db8:3::/64', src: '10.1.0.1', dev: 'd0' }), /src 10\.1\.0\.1 is IPv4/);
    invalid(() => R.add({ dst: '10.3.0.0/24', dev: 'd0', family: 6 }), /is not IPv6/);
    invalid(() => R.add({ dst: 'nowhere', dev: 'd0' }), /destination "nowhere"/);
    invalid(() => R.add({ dst: '10.3.0.0/33', dev: 'd0' }), /destination "10\.3\.0\.0\/33"/);
    invalid(
      () => R.add({ dst: '10.3.0.0/24', via: '10.1.0.300' }),
      /gateway "10\.1\.0\.300" is not an IP address/,
    );
    invalid(() => R.add({ dst: '10.3.0.0/24' }), /needs a gateway \(via\) or a device \(dev\)/);
    invalid(() => R.add({ dst: '10.3.0.0/24', via: '10.1.0.2', onlink: true }), /onlink needs/);
    invalid(
      () => R.add({ dst: '10.3.0.0/24', type: 'blackhole', via: '10.1.0.2' }),
      /blackhole route .* takes no gateway/,
    );
    invalid(() => R.add({ dst: '10.3.0.0/24', type: 'nat' as never, dev: 'd0' }), /route type "nat"/);
    invalid(() => R.add({ dst: '10.3.0.0/24', dev: 'd0', table: 0 }), /table 0/);
    invalid(() => R.add({ dst: '10.3.0.0/24', dev: 'd0', metric: -1 }), /metric -1/);
    invalid(() => R.add({ dst: '10.3.0.0/24', dev: 'd0', mtu: 10 }), /mtu 10/);
    invalid(() => R.add({ dst: '2001:db8:3::/64', dev: 'd0', mtu: 1000 }), /mtu 1000 .* IPv6/);
    invalid(() => R.add({ dst: '10.3.0.0/24', dev: 'd0', scope: 'galaxy' as never }), /unknown scope/);
    invalid(() => R.add({ dst: '10.3.0.0/24', dev: 'd0', protocol: 300 }), /protocol 300/);
    assert.throws(
      () => R.add({ dst: '10.3.0.0/24', dev: 'missing0' }),
      isCode('NOT_FOUND', /link "missing0" not found/),
    );
    assert.throws(() => R.list({ dev: 'missing0' }), isCode('NOT_FOUND'));
    // Refused by the kernel, explained by us.
    invalid(
      () => R.add({ dst: '10.3.0.0/24', via: '10.9.9.9', dev: 'd0' }),
      /not reachable on-link from dev d0; use onlink/,
    );
    invalid(
      () => R.add({ dst: '10.3.0.0/24', dev: 'd0', src: '10.99.0.1' }),
      /src 10\.99\.0\.1 must be an address of this namespace/,
    );
    invalid(() => R.add({ dst: '10.3.0.0/24', dev: 'down0' }), /dev down0 is down/);
    assert.throws(() => R.add({ dst: '10.2.0.0/24', via: '10.1.0.2' }), isCode('EXISTS'));
    assert.equal(await snapshot(), before, 'kernel routes unchanged');
  });
});
