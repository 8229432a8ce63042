/**
 * Conntrack against real tables: entries are made inside test namespaces with `conntrack -I`
 * (the reply tuple given explicitly, as a DNAT leaves it), read and deleted through the kept
 * ctnetlink socket, and cross-checked with `conntrack -L`, an independent reader.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Bed, type BedNs, bed, needsRoot } from '../../test/bed.js';
import { isWeftError } from '../lib/errors.js';
import { formatIP, type IPAddr } from '../lib/ip.js';
import { IPPROTO } from '../netlink/conntrack.js';
import { Conntrack, type CtEntry } from './conntrack.js';
import type { Netns } from './netns.js';

/** One entry for `conntrack -I`: client → dst:dport, answered by (rsrc ?? dst):(rsport ?? dport). */
interface Ins {
  readonly proto: 'tcp' | 'udp';
  readonly src: string;
  readonly dst: string;
  readonly sport: number;
  readonly dport: number;
  readonly rsrc?: string;
  readonly rsport?: number;
  readonly zone?: number;
}

async function insert(b: Bed, n: BedNs, list: readonly Ins[]): Promise<void> {
  for (const e of list) {
    await b.exec(n, 'conntrack', [
      '-I',
      '-p',
      e.proto,
      '-s',
      e.src,
      '-d',
      e.dst,
      '--sport',
      String(e.sport),
      '--dport',
      String(e.dport),
      '-r',
      e.rsrc ?? e.dst,
      '-q',
      e.src,
      '--reply-port-src',
      String(e.rsport ?? e.dport),
      '--reply-port-dst',
      String(e.sport),
      '-t',
      '300',
      ...(e.proto === 'tcp' ? ['--state', 'ESTABLISHED', '-u', 'SEEN_REPLY'] : []),
      ...(e.zone === undefined ? [] : ['-w', String(e.zone)]),
    ]);
  }
}

/** `conntrack -L` lines (with extra filter arguments), as the tool prints them. */
async function listed(b: Bed, n: BedNs, ...args: string[]): Promise<string[]> {
  const { stdout } = await b.exec(n, 'conntrack', ['-L', ...args]);
  return String(stdout)
    .split('\n')
    .filter((l) => /^(tcp|udp|icmp)/.test(l));
}

/** User netlink sockets of protocol NETLINK_NETFILTER (12) in a namespace, from /proc. */
function netfilterSockets(ns: Netns): number {
  const text = ns.run(() => fs.readFileSync('/proc/thread-self/net/netlink', 'utf8'));
  return text
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f[1] === '12' && f[2] !== '0').length;
}

function conntrack(b: Bed, ns: Netns, opts: { idleMs?: number } = {}): Conntrack {
  const ct = new Conntrack(ns, opts);
  b.onCleanup(() => ct.close());
  return ct;
}

const at = (ip: IPAddr, port: number | undefined): string =>
  port === undefined ? formatIP(ip) : `${formatIP(ip)}:${port}`;
/** `proto src:sport>dst:dport/rsrc:rsport` of an entry, for readable comparisons. */
const show = (e: CtEntry): string =>
  `${e.proto === IPPROTO.TCP ? 'tcp' : e.proto === IPPROTO.UDP ? 'udp' : e.proto} ` +
  `${at(e.orig.src, e.orig.sport)}>${at(e.orig.dst, e.orig.dport)}/${at(e.reply.src, e.reply.sport)}`;
const shows = (l: CtEntry[]): string[] => l.map(show).sort();

const CLIENT = '198.51.100.2';
const HOST = '198.51.100.1';
const C1 = '10.77.0.2';
const C2 = '10.77.0.3';

describe('conntrack', needsRoot, () => {
  test('list: IPv4 and IPv6 entries, NATed reply tuples, per family; another namespace sees none of them', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const other = b.ns('other');
    await insert(b, host, [
      { proto: 'tcp', src: CLIENT, dst: HOST, sport: 40000, dport: 8080, rsrc: C1, rsport: 80 },
      { proto: 'udp', src: 'fd00::2', dst: 'fd00::1', sport: 41000, dport: 53 },
    ]);
    await b.exec(host, 'conntrack', [
      '-I',
      '-p',
      'icmp',
      '-s',
      '192.0.2.1',
      '-d',
      '192.0.2.9',
      '--icmp-type',
      '8',
      '--icmp-code',
      '0',
      '--icmp-id',
      '77',
      '-t',
      '300',
    ]);
    const ct = conntrack(b, host.ns);
    const all = ct.list();
    assert.equal(all.length, (await listed(b, host)).length);
    assert.deepEqual(shows(all), [
      '1 192.0.2.1>192.0.2.9/192.0.2.9',
      `tcp ${CLIENT}:40000>${HOST}:8080/${C1}:80`,
      'udp fd00::2:41000>fd00::1:53/fd00::1:53',
    ]);
    const tcp = all.find((e) => e.proto === IPPROTO.TCP)!;
    assert.equal(tcp.family, 4);
    assert.equal(formatIP(tcp.reply.dst), CLIENT);
    assert.equal(tcp.reply.dport, 40000);
    assert.ok(tcp.timeout !== undefined && tcp.timeout > 200 && tcp.timeout <= 300);
    const icmp = all.find((e) => e.proto === IPPROTO.ICMP)!;
    assert.deepEqual([icmp.orig.icmpType, icmp.orig.icmpCode, icmp.orig.icmpId], [8, 0, 77]);
    assert.deepEqual(
      ct
        .list(4)
        .map((e) => e.proto)
        .sort((x, y) => x - y),
      [IPPROTO.ICMP, IPPROTO.TCP],
    );
    assert.deepEqual(shows(ct.list(6)), ['udp fd00::2:41000>fd00::1:53/fd00::1:53']);

    assert.deepEqual(conntrack(b, other.ns).list(), []);
    assert.throws(
      () => ct.list(5 as 4),
      (e) => isWeftError(e, 'INVALID'),
    );
  });

  test('delete by protocol, port, port range with its target ports, target and host address; cross-checked with conntrack -L', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const clients = [0, 1, 2, 3, 4].map((i) => 40000 + i);
    await insert(b, host, [
      // tcp 8080 -> C1:80 from five clients; the same host port answered by C2 (not this mapping)
      ...clients.map(
        (sport) =>
          ({ proto: 'tcp', src: CLIENT, dst: HOST, sport, dport: 8080, rsrc: C1, rsport: 80 }) as const,
      ),
      { proto: 'tcp', src: CLIENT, dst: HOST, sport: 41000, dport: 8080, rsrc: C2, rsport: 80 },
      // tcp 8081 -> C1:81, udp 8080 -> C1:80
      { proto: 'tcp', src: CLIENT, dst: HOST, sport: 42000, dport: 8081, rsrc: C1, rsport: 81 },
      { proto: 'tcp', src: CLIENT, dst: HOST, sport: 42001, dport: 8081, rsrc: C1, rsport: 81 },
      { proto: 'udp', src: CLIENT, dst: HOST, sport: 43000, dport: 8080, rsrc: C1, rsport: 80 },
      // udp range 5300-5319 -> C1:6300-6319, and one entry in the range that is not this mapping's
      { proto: 'udp', src: CLIENT, dst: HOST, sport: 44000, dport: 5300, rsrc: C1, rsport: 6300 },
      { proto: 'udp', src: CLIENT, dst: HOST, sport: 44005, dport: 5305, rsrc: C1, rsport: 6305 },
      { proto: 'udp', src: CLIENT, dst: HOST, sport: 44019, dport: 5319, rsrc: C1, rsport: 6319 },
      { proto: 'udp', src: CLIENT, dst: HOST, sport: 44006, dport: 5306, rsrc: C1, rsport: 9999 },
      // tcp 9090 bound to the host address, and the same port reached through 127.0.0.1
      { proto: 'tcp', src: CLIENT, dst: HOST, sport: 45000, dport: 9090, rsrc: C1, rsport: 90 },
      { proto: 'tcp', src: '127.0.0.1', dst: '127.0.0.1', sport: 45001, dport: 9090, rsrc: C1, rsport: 90 },
    ]);
    const ct = conntrack(b, host.ns);
    assert.equal(ct.list().length, 15);
    assert.equal(ct.count(), 15);
    assert.match(String((await b.exec(host, 'conntrack', ['-C'])).stdout), /^15\n?$/);

    assert.equal(ct.delete({ proto: 'tcp', dport: 8080, replySrc: C1, replySport: 80 }), 5);
    assert.deepEqual(await listed(b, host, '-p', 'tcp', '--orig-port-dst', '8080', '--reply-src', C1), []);
    assert.equal(
      (await listed(b, host, '-p', 'tcp', '--orig-port-dst', '8080', '--reply-src', C2)).length,
      1,
    );

    assert.equal(ct.delete({ proto: 'udp', dport: [5300, 5319], replySrc: C1, replySport: 6300 }), 3);
    assert.deepEqual(
      (await listed(b, host, '-p', 'udp', '--reply-src', C1)).map((l) => /dport=(\d+)/.exec(l)?.[1]).sort(),
      ['5306', '8080'],
    );

    assert.equal(ct.delete({ proto: 'tcp', dport: 9090, origDst: HOST, replySrc: C1 }), 1);
    assert.equal(
      (await listed(b, host, '-p', 'tcp', '--orig-port-dst', '9090', '--orig-dst', '127.0.0.1')).length,
      1,
    );

    // Several filters: one dump, every match once.
    assert.equal(
      ct.delete([
        { proto: 'tcp', dport: 8081 },
        { proto: 'tcp', dport: [8080, 8081], replySrc: C2 },
      ]),
      3,
    );
    assert.equal(ct.delete({ proto: 'tcp', dport: 8081 }), 0);

    // Bad input deletes nothing, even next to a good filter.
    assert.throws(
      () =>
        ct.delete([
          { proto: 'udp', dport: 8080 },
          { proto: 'udp', dport: 0 },
        ]),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.deepEqual(shows(ct.list()), [
      `tcp 127.0.0.1:45001>127.0.0.1:9090/${C1}:90`,
      `udp ${CLIENT}:43000>${HOST}:8080/${C1}:80`,
      `udp ${CLIENT}:44006>${HOST}:5306/${C1}:9999`,
    ]);
    assert.equal((await listed(b, host)).length, 3);
    assert.equal(ct.count(), 3);
  });

  test('IPv6 entries, the family of a filter, and an entry in another zone', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    await insert(b, host, [
      {
        proto: 'tcp',
        src: 'fd00::2',
        dst: 'fd00::1',
        sport: 40000,
        dport: 8080,
        rsrc: 'fd77::2',
        rsport: 80,
      },
      {
        proto: 'tcp',
        src: 'fd00::3',
        dst: 'fd00::1',
        sport: 40001,
        dport: 8080,
        rsrc: 'fd77::2',
        rsport: 80,
      },
      { proto: 'tcp', src: CLIENT, dst: HOST, sport: 40000, dport: 8080, rsrc: C1, rsport: 80 },
      { proto: 'tcp', src: CLIENT, dst: HOST, sport: 40000, dport: 7070, rsrc: C1, rsport: 70, zone: 7 },
    ]);
    const ct = conntrack(b, host.ns);
    assert.equal(ct.delete({ proto: 'tcp', dport: 8080, family: 6 }), 2);
    assert.deepEqual(await listed(b, host, '-f', 'ipv6'), []);
    assert.equal((await listed(b, host, '-p', 'tcp', '--orig-port-dst', '8080')).length, 1, 'IPv4 kept');

    const zoned = ct.list().find((e) => e.orig.dport === 7070);
    assert.equal(zoned?.zone, 7);
    assert.equal(ct.delete({ proto: 'tcp', dport: 7070, replySrc: C1, replySport: 70 }), 1);
    assert.deepEqual(await listed(b, host, '-w', '7'), []);
    assert.equal(ct.list().length, 1);
  });

  test('entries that vanished since they were listed are skipped, not an error', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    await insert(
      b,
      host,
      [1, 2, 3].map((i) => ({ proto: 'udp', src: CLIENT, dst: HOST, sport: 40000 + i, dport: 53 }) as const),
    );
    const ct = conntrack(b, host.ns);
    const seen = ct.list();
    assert.equal(seen.length, 3);
    // Someone else deletes one of them in between.
    await b.exec(host, 'conntrack', ['-D', '-p', 'udp', '--sport', '40002']);
    assert.equal(ct.deleteEntries(seen), 2);
    assert.deepEqual(ct.list(), []);
    assert.equal(ct.deleteEntries(seen), 0);
    assert.equal(ct.count(), 0);
    assert.equal(ct.delete({ proto: 'udp', dport: 53 }), 0, 'an empty table: nothing to look for');
  });

  test('the socket is kept between calls, closed after the idle time and by close(); nothing to delete opens none', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    assert.throws(
      () => new Conntrack(host.ns, { idleMs: 0 }),
      (e) => isWeftError(e, 'INVALID'),
    );
    const ct = conntrack(b, host.ns, { idleMs: 150 });
    assert.equal(ct.delete([]), 0);
    assert.equal(ct.deleteEntries([]), 0);
    assert.equal(ct.isOpen, false);
    assert.equal(netfilterSockets(host.ns), 0);

    ct.list();
    ct.delete({ proto: 'tcp', dport: 1 });
    assert.equal(ct.isOpen, true);
    assert.equal(netfilterSockets(host.ns), 1, 'one socket for both calls, inside the namespace');
    for (let i = 0; i < 40 && ct.isOpen; i++) await sleep(50);
    assert.equal(ct.isOpen, false, 'closed after the idle time');
    assert.equal(netfilterSockets(host.ns), 0);

    ct.list();
    assert.equal(netfilterSockets(host.ns), 1, 'a later call opens a new one');
    ct.close();
    ct.close();
    assert.equal(ct.isOpen, false);
    assert.equal(netfilterSockets(host.ns), 0);
  });
});
