import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WeftError } from '../../lib/errors.js';
import type { HostStatus } from '../lab/lab.js';
import { labPath, pathFromTrace, type RawHost, type RawLink, shapeTopology } from './topology.js';

const links = (vni: number): RawLink[] => [
  { index: 1, name: 'lo', kind: 'device', up: true },
  { index: 2, name: 'eth0', kind: 'veth', up: true },
  { index: 3, name: 'weft0', kind: 'bridge', up: true },
  { index: 4, name: 'weft.1', kind: 'vxlan', up: true, vni },
  { index: 5, name: 'vethabc', kind: 'veth', up: true, masterIndex: 3 },
];
const host = (i: number, daemon: HostStatus['daemon'] = 'running'): RawHost => ({
  status: {
    name: `host${i}`,
    index: i,
    publicIp: `192.168.100.${10 + i}`,
    subnet: `10.244.${i}.0/24`,
    daemon,
    socket: '/x',
    log: '/y',
    containers: [{ name: `h${i}c1`, ip: `10.244.${i}.2`, status: 'running', ports: [] }],
  },
  links: links(1),
  peerIndex: { [`h${i}c1`]: 5 },
  cluster: {
    network: '10.244.0.0/16',
    backend: 'vxlan',
    lease: { subnet: `10.244.${i}.0/24`, publicIp: `192.168.100.${10 + i}`, expiresAt: 1_800_000_000_000 },
    peers: [],
  },
});
const raw = (hosts: RawHost[]) => ({
  name: 'lab1',
  backend: 'vxlan',
  network: '10.244.0.0/16',
  underlay: '192.168.100.0/24',
  hosts,
});

test('hosts hold their bridge, devices and containers; veth pairs and underlay links are edges', () => {
  const t = shapeTopology(raw([host(1), host(2)]));
  assert.equal(t.state, 'ok');
  const h1 = t.hosts[0]!;
  assert.deepEqual(
    h1.devices.map((d) => [d.id, d.kind]),
    [
      ['host1/dev/eth0', 'uplink'],
      ['host1/dev/weft0', 'bridge'],
      ['host1/dev/weft.1', 'vxlan'],
      ['host1/dev/vethabc', 'veth'],
    ],
  );
  assert.deepEqual(h1.containers[0], {
    id: 'host1/h1c1',
    name: 'h1c1',
    host: 'host1',
    status: 'running',
    ip: '10.244.1.2',
    veth: 'host1/dev/vethabc',
  });
  const e = new Set(t.edges.map((x) => `${x.kind}:${x.source}>${x.target}`));
  for (const want of [
    'veth:host1/h1c1>host1/dev/vethabc',
    'port:host1/dev/vethabc>host1/dev/weft0',
    'underlay:host1/dev/eth0>underlay',
    'bound:host1/dev/weft.1>host1/dev/eth0',
    'underlay:host2/dev/eth0>underlay',
    'route:host1/dev/weft0>host1/dev/weft.1',
  ])
    assert.ok(e.has(want), want);
  assert.deepEqual(t.leases[1], {
    host: 'host2',
    subnet: '10.244.2.0/24',
    publicIp: '192.168.100.12',
    expiresAt: new Date(1_800_000_000_000).toISOString(),
  });
});

test('a lab whose daemons are all down is the empty state with a sentence', () => {
  const dead = { ...host(1, 'dead'), status: { ...host(1).status, daemon: 'dead' as const, containers: [] } };
  const t = shapeTopology(raw([dead]));
  assert.equal(t.state, 'empty');
  assert.match(t.message ?? '', /No weft daemon answers in lab "lab1"/);
  assert.equal(shapeTopology(raw([])).message, 'Lab "lab1" has no hosts.');
});

test('the lab path crosses veth, bridge, route, VTEP, underlay and back, in order', () => {
  const t = shapeTopology(raw([host(1), host(2)]));
  const p = labPath(t, 'host1/h1c1', 'host2/h2c1');
  assert.equal(p.source, 'lab');
  assert.deepEqual(
    p.hops.map((h) => `${h.n} ${h.where} ${h.what} ${h.node}`),
    [
      '1 host1/h1c1 route host1/h1c1',
      '2 host1 veth host1/dev/vethabc',
      '3 host1 bridge host1/dev/weft0',
      '4 host1 route host1/dev/weft.1',
      '5 host1 vxlan host1/dev/weft.1',
      '6 underlay underlay underlay',
      '7 host2 vxlan host2/dev/weft.1',
      '8 host2 route host2/dev/weft0',
      '9 host2 bridge host2/dev/weft0',
      '10 host2 veth host2/dev/vethabc',
      '11 host2/h2c1 deliver host2/h2c1',
    ],
  );
  assert.match(p.hops[3]!.entry, /10\.244\.2\.0\/24 dev weft\.1 \(lease of host2\)/);
  assert.match(p.hops[4]!.entry, /remote VTEP 192\.168\.100\.12, VNI 1/);
  const same = labPath(t, 'host1/h1c1', 'host1/h1c1');
  assert.deepEqual(
    same.hops.map((h) => h.what),
    ['route', 'veth', 'bridge', 'bridge', 'veth', 'deliver'],
  );
  assert.throws(
    () => labPath(t, 'host1/h1c1', 'host9/x'),
    (e) => e instanceof WeftError && e.code === 'NOT_FOUND',
  );
});

test("trace hops land on the picture's nodes", () => {
  const t = shapeTopology(raw([host(1), host(2)]));
  const p = pathFromTrace(t, 'host1/h1c1', 'host2/h2c1', [
    { n: 1, place: 'host1/h1c1', dev: 'eth0', step: 'route', decision: 'default via 10.244.1.1' },
    { n: 2, place: 'host1', dev: 'weft.1', step: 'encap', decision: 'fdb …' },
    { n: 3, place: 'switch', step: 'bridge', decision: 'port' },
    { n: 4, place: 'host2', dev: 'nosuch', step: 'route', decision: 'x', status: 'broken', problem: 'gone' },
  ]);
  assert.deepEqual(
    p.hops.map((h) => h.node),
    ['host1/h1c1', 'host1/dev/weft.1', 'underlay', 'host2'],
  );
  assert.equal(p.hops[3]!.problem, 'gone');
});
