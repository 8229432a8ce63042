/**
 * The pure parts of `weft trace`: hop rendering (text lines, the summary, probe marks), packet
 * text, route and neighbour-state text, the /proc/net socket parser, the probe's command line.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { RouteLookup } from '../../kernel/routes.js';
import { parseIP, parseIPNet } from '../../lib/ip.js';
import { NUD } from '../../netlink/consts.js';
import { type ProbeResult, probeCommand } from './probe.js';
import { accepts, parseProcNet } from './procnet.js';
import { packetText, probeSummary, renderTrace, summary } from './render.js';
import type { Hop, PacketView, TraceResult } from './types.js';
import { nudText, routeText } from './walk.js';

const inner: PacketView = { src: '10.244.1.2', dst: '10.244.2.3', proto: 'tcp', dport: 80 };
const outer: PacketView = {
  src: '192.168.100.11',
  dst: '192.168.100.12',
  proto: 'udp',
  dport: 8472,
  encap: {
    kind: 'vxlan',
    vni: 1,
    inner: { ...inner, srcMac: '02:00:00:00:00:01', dstMac: '02:00:00:00:00:02' },
  },
};

const hop = (n: number, place: string, step: Hop['step'], decision: string, o: Partial<Hop> = {}): Hop => ({
  n,
  place,
  step,
  decision,
  packet: inner,
  status: 'ok',
  ...o,
});

const okTrace: TraceResult = {
  ok: true,
  packet: inner,
  notes: [],
  hops: [
    hop(1, 'host1/h1c1', 'route', 'default via 10.244.1.1 dev eth0'),
    hop(2, 'host1', 'veth', 'host1/h1c1 eth0 → host1 vethA (port of weft0)', {
      watch: { place: 'host1', dev: 'vethA', dir: 'rx' },
    }),
    hop(3, 'host1', 'encap', 'vxlan vni 1: outer 192.168.100.11 → 192.168.100.12 udp/8472', {
      packet: outer,
      changed: true,
    }),
    hop(4, 'host2/h2c1', 'deliver', '10.244.2.3 is host2/h2c1’s own address', {
      status: 'warning',
      note: 'a warning',
    }),
  ],
};

const brokenTrace: TraceResult = {
  ok: false,
  packet: inner,
  brokenAt: 2,
  notes: ['host1: nft rule … taken as not matching'],
  hops: [
    hop(1, 'host1/h1c1', 'route', 'default via 10.244.1.1 dev eth0'),
    hop(2, 'host1', 'fdb', 'no FDB entry for 02:00:00:00:00:02 on weft.1', {
      status: 'broken',
      problem: 'weft.1 does not know where the MAC is',
      fix: 'restart the daemon',
      expect: { place: 'host1', dev: 'weft.1', dir: 'tx' },
    }),
  ],
};

describe('trace rendering', () => {
  test('packetText: plain, with a port, encapsulated (outer, VNI, inner MACs and packet)', () => {
    assert.equal(packetText(inner), '10.244.1.2 → 10.244.2.3 tcp/80');
    assert.equal(packetText({ src: 'a', dst: 'b', proto: 'icmp' }), 'a → b icmp');
    assert.equal(
      packetText(outer),
      'outer 192.168.100.11 → 192.168.100.12 udp/8472 [vxlan vni 1] | inner eth 02:00:00:00:00:01 → 02:00:00:00:00:02, 10.244.1.2 → 10.244.2.3 tcp/80',
    );
    assert.equal(
      packetText({ ...outer, dport: 8285, encap: { kind: 'udp', inner } }),
      'outer 192.168.100.11 → 192.168.100.12 udp/8285 [udp tunnel] | inner 10.244.1.2 → 10.244.2.3 tcp/80',
    );
  });

  test('one numbered line per hop, in order; a changed packet on its own line; warnings marked', () => {
    const text = renderTrace(okTrace, { title: 'trace h1c1 → h2c1:80' });
    const lines = text.split('\n');
    assert.equal(lines[0], 'trace h1c1 → h2c1:80');
    assert.equal(lines[1], '  packet 10.244.1.2 → 10.244.2.3 tcp/80');
    const numbered = lines.filter((l) => /^ {2}\d /.test(l));
    assert.deepEqual(
      numbered.map((l) => l.trim().split(/\s+/).slice(0, 3)),
      [
        ['1', 'host1/h1c1', 'route'],
        ['2', 'host1', 'veth'],
        ['3', 'host1', 'encap'],
        ['4', 'host2/h2c1', '!'],
      ],
    );
    const i3 = lines.findIndex((l) => l.includes('encap'));
    assert.match(
      lines[i3 + 1]!,
      /^\s+→ outer 192\.168\.100\.11 → 192\.168\.100\.12 udp\/8472 \[vxlan vni 1\]/,
    );
    assert.ok(lines.some((l) => /^\s+note: a warning$/.test(l)));
    assert.equal(lines.at(-1), 'ok: the packet reaches host2/h2c1 in 4 hops (1 warning)');
  });

  test('a broken hop: ✗, problem and fix under it, BROKEN summary, notes last', () => {
    const text = renderTrace(brokenTrace);
    assert.match(text, /\n {2}2 {2}host1 {7}✗ fdb {4}no FDB entry/);
    assert.match(text, /\n\s+problem: weft\.1 does not know where the MAC is\n\s+fix: restart the daemon\n/);
    assert.match(text, /BROKEN at hop 2 \(host1 fdb\): weft\.1 does not know where the MAC is/);
    assert.match(text.split('\n').at(-1)!, /^ {2}note: host1: nft rule/);
    assert.equal(summary(brokenTrace), 'BROKEN at hop 2 (host1 fdb): weft.1 does not know where the MAC is');
  });

  test('a trace that leaves the known world says so', () => {
    const t: TraceResult = {
      ok: true,
      packet: inner,
      notes: [],
      hops: [
        hop(1, 'host', 'route', 'default via 192.0.2.1 dev eth0'),
        hop(2, 'host', 'leave', 'out of eth0'),
      ],
    };
    assert.equal(summary(t), 'ok: 2 hops until the packet leaves host');
  });

  test('probe marks: ✓/✗ with the counter delta, drops, LOST; the probe line', () => {
    const t: TraceResult = structuredClone(brokenTrace);
    t.hops[1]!.probe = { seen: false, packets: 0, dropped: 3, lost: true };
    const p: ProbeResult = {
      command: 'ping -n -c 3 10.244.2.3',
      sent: 3,
      answered: false,
      detail: '3 sent, 0 replies',
      confirmed: false,
      lostAt: 2,
      reason: 'where the trace finds the way broken',
      counters: [],
    };
    const text = renderTrace(t, { probe: p });
    assert.match(text, /✗ fdb +✗ \+0 drop\+3 LOST +no FDB entry/);
    assert.equal(
      probeSummary(p, t),
      'probe: ping -n -c 3 10.244.2.3: no answer (3 sent, 0 replies); lost at hop 2 (host1 fdb): where the trace finds the way broken',
    );
    const ok: ProbeResult = {
      ...p,
      answered: true,
      detail: '3 sent, 3 replies',
      confirmed: true,
      counters: [],
    };
    delete (ok as { lostAt?: number }).lostAt;
    delete (ok as { reason?: string }).reason;
    assert.equal(
      probeSummary(ok, okTrace),
      'probe: ping -n -c 3 10.244.2.3: answered (3 sent, 3 replies); every watched hop saw the packets',
    );
  });
});

describe('route and neighbour text', () => {
  const base = {
    family: 4 as const,
    src: undefined,
    iif: undefined,
    oif: 5,
    prefsrc: undefined,
    table: 254,
    protocol: 3,
    scope: 0,
    tos: 0,
    priority: 0,
    onlink: false,
    flags: 0,
    mtu: undefined,
    nexthops: undefined,
    dev: 'weft.1',
  };
  test('routeText prints routes as ip route does', () => {
    const r = (o: Partial<RouteLookup>): RouteLookup => ({
      ...base,
      dst: undefined,
      gateway: undefined,
      type: 'unicast',
      ...o,
    });
    assert.equal(
      routeText(r({ dst: parseIPNet('10.244.2.0/24'), gateway: parseIP('10.244.2.0'), onlink: true })),
      '10.244.2.0/24 via 10.244.2.0 dev weft.1 onlink',
    );
    assert.equal(
      routeText(r({ gateway: parseIP('192.168.100.1'), dev: 'eth0' })),
      'default via 192.168.100.1 dev eth0',
    );
    assert.equal(
      routeText(
        r({
          type: 'local',
          dst: parseIPNet('10.244.1.1/32'),
          table: 255,
          dev: 'weft0',
          prefsrc: parseIP('10.244.1.1'),
        }),
      ),
      'local 10.244.1.1/32 dev weft0',
    );
    assert.equal(
      routeText(
        r({ dst: parseIPNet('10.244.1.0/24'), dev: 'weft0', prefsrc: parseIP('10.244.1.1'), table: 100 }),
      ),
      '10.244.1.0/24 dev weft0 table 100 src 10.244.1.1',
    );
  });
  test('nudText names states as ip neigh', () => {
    assert.equal(nudText(NUD.PERMANENT), 'permanent');
    assert.equal(nudText(NUD.REACHABLE), 'reachable');
    assert.equal(nudText(NUD.NOARP | NUD.REACHABLE), 'noarp,reachable');
    assert.equal(nudText(0), 'none');
  });
});

describe('/proc/net sockets', () => {
  const tcp = [
    '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
    '   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0',
    '   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0',
    '   2: 0201F40A:0050 0301F40A:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0',
  ].join('\n');
  test('parseProcNet reads address, port and state (little-endian hex)', () => {
    const s = parseProcNet(tcp);
    assert.equal(s.length, 3);
    assert.deepEqual(
      s.map((x) => [x.wildcard, x.port, x.state]),
      [
        [true, 80, 0x0a],
        [false, 8080, 0x0a],
        [false, 80, 0x01],
      ],
    );
    assert.deepEqual(s[1]!.addr, parseIP('127.0.0.1'));
    assert.deepEqual(s[2]!.addr, parseIP('10.244.1.2'));
  });
  test('accepts: a TCP listener on the wildcard or the address; any bound UDP socket', () => {
    const s = parseProcNet(tcp);
    assert.equal(accepts(s, 'tcp', parseIP('10.244.1.2'), 80), true);
    assert.equal(accepts(s, 'tcp', parseIP('10.244.1.2'), 8080), false, 'only on 127.0.0.1');
    assert.equal(accepts(s, 'tcp', parseIP('127.0.0.1'), 8080), true);
    const udp6 = parseProcNet(
      [
        '  sl  local_address                         remote_address                        st',
        '   0: 00000000000000000000000000000000:2065 00000000000000000000000000000000:0000 07 0',
        '   1: 0000000000000000FFFF00000B64A8C0:0035 00000000000000000000000000000000:0000 07 0',
      ].join('\n'),
    );
    assert.equal(accepts(udp6, 'udp', parseIP('192.168.100.12'), 8293), true, 'dual-stack wildcard');
    assert.equal(accepts(udp6, 'udp', parseIP('192.168.100.11'), 53), true, 'v4-mapped');
    assert.equal(accepts(udp6, 'udp', parseIP('192.168.100.12'), 53), false);
  });
});

describe('the probe command', () => {
  test('ping for ICMP (bounded count and wait), nc for TCP and UDP', () => {
    assert.deepEqual(probeCommand({ from: undefined as never, dst: parseIP('10.0.0.2'), proto: 'icmp' }), {
      argv: ['ping', '-n', '-c', '3', '-i', '0.2', '-W', '1', '10.0.0.2'],
      sent: 3,
    });
    assert.deepEqual(
      probeCommand({ from: undefined as never, dst: parseIP('10.0.0.2'), proto: 'tcp', dport: 80 }).argv,
      ['nc', '-z', '-n', '-w', '2', '10.0.0.2', '80'],
    );
    assert.deepEqual(
      probeCommand({ from: undefined as never, dst: parseIP('10.0.0.2'), proto: 'udp', dport: 53 }).argv,
      ['nc', '-z', '-u', '-n', '-w', '1', '10.0.0.2', '53'],
    );
    assert.throws(
      () => probeCommand({ from: undefined as never, dst: parseIP('10.0.0.2'), proto: 'icmp', count: 0 }),
      /count must be 1-20/,
    );
  });
});
