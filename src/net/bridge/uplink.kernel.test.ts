import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type Bed, type BedNs, bed, needsRoot } from '../../../test/bed.js';
import { isWeftError } from '../../lib/errors.js';
import { formatIP, formatIPNet, parseCidr, parseIP, parseIPNet } from '../../lib/ip.js';
import type { EndpointSpec, NetworkSpec } from '../driver.js';
import { BridgeDriver, type BridgeFirewallHook } from './driver.js';
import type { UplinkRecord } from './uplink.js';

function network(over: Partial<NetworkSpec> = {}): NetworkSpec {
  return {
    id: 'n1',
    name: 'lan',
    driver: 'bridge',
    bridge: 'wbr1',
    mtu: 1500,
    // The LAN's subnet; the gateway is the upstream router, not an address of the bridge.
    subnets: [{ subnet: parseCidr('203.0.113.0/24'), gateway: parseIP('203.0.113.1') }],
    internal: false,
    icc: true,
    masquerade: false,
    options: { uplink: 'eth0' },
    ...over,
  };
}

const endpoint = (id: string, addr: string): EndpointSpec => ({
  id,
  networkId: 'n1',
  addresses: [parseIPNet(addr)],
  ifname: 'eth0',
});

/**
 * A "host" whose eth0 (a veth) leads to an "upstream" namespace: the LAN's router 203.0.113.1
 * (and 2001:db8:1::1), with 198.51.100.1 behind it as a far destination. The host's eth0 has
 * 203.0.113.2/24 (+ .3 as a secondary, + 2001:db8:1::2/64), a default route via .1 and a
 * static route 192.0.2.0/24 via .1 metric 5.
 */
function lab(b: Bed) {
  const host = b.ns('host');
  const upstream = b.ns('upstream');
  host.h.links.add({ kind: 'veth', name: 'eth0', up: true, peer: { name: 'up0', netns: upstream.ns } });
  upstream.h.links.setUp('up0');
  upstream.h.addrs.add('up0', '203.0.113.1/24');
  upstream.h.addrs.add('up0', '2001:db8:1::1/64', { noDad: true });
  upstream.h.addrs.add('lo', '198.51.100.1/32');
  upstream.h.addrs.add('lo', '192.0.2.99/32');
  host.h.addrs.add('eth0', '203.0.113.2/24');
  host.h.addrs.add('eth0', '203.0.113.3/24');
  host.h.addrs.add('eth0', '2001:db8:1::2/64', { noDad: true });
  host.h.routes.add({ dst: 'default', via: '203.0.113.1', dev: 'eth0' });
  host.h.routes.add({ dst: '192.0.2.0/24', via: '203.0.113.1', dev: 'eth0', metric: 5 });
  host.h.routes.add({ dst: 'default', family: 6, via: '2001:db8:1::1', dev: 'eth0' });
  return { host, upstream, mac: host.h.links.get('eth0').mac };
}

const addrsOf = (n: BedNs, dev: string) =>
  n.h.addrs
    .list({ dev })
    .filter((a) => a.scope === 0)
    .map((a) => formatIPNet(a.ipnet))
    .sort();
const routesOf = (n: BedNs, dev: string) =>
  n.h.routes
    .list({ dev })
    .filter((r) => r.gateway !== undefined)
    .map(
      (r) =>
        `${r.dst ? formatIPNet(r.dst) : `default${r.family}`} via ${formatIP(r.gateway!)} m${r.priority}`,
    )
    .sort();

const HOST_ADDRS = ['2001:db8:1::2/64', '203.0.113.2/24', '203.0.113.3/24'];
const HOST_ROUTES = [
  '192.0.2.0/24 via 203.0.113.1 m5',
  'default4 via 203.0.113.1 m0',
  'default6 via 2001:db8:1::1 m1024',
];

/** The host as it was before any uplink: addresses and routes on eth0, eth0 free, pings work. */
async function assertRestored(b: Bed, host: BedNs) {
  assert.deepEqual(addrsOf(host, 'eth0'), HOST_ADDRS);
  assert.deepEqual(routesOf(host, 'eth0'), HOST_ROUTES);
  assert.equal(host.h.links.get('eth0').masterIndex, undefined);
  assert.ok(await b.ping(host, '203.0.113.1', { deadlineS: 3 }), 'host reaches the upstream');
  assert.ok(await b.ping(host, '198.51.100.1', { deadlineS: 3 }), 'host reaches beyond (default route)');
  assert.ok(await b.ping(host, '192.0.2.99', { deadlineS: 3 }), 'host reaches via the static route');
}

/** The uplink attached: eth0 a port of wbr1, its addresses and routes on the bridge. */
async function assertAttached(b: Bed, host: BedNs, mac: string | undefined) {
  const br = host.h.links.get('wbr1');
  assert.equal(host.h.links.get('eth0').masterIndex, br.index);
  assert.deepEqual(addrsOf(host, 'eth0'), []);
  assert.deepEqual(routesOf(host, 'eth0'), []);
  assert.deepEqual(addrsOf(host, 'wbr1'), HOST_ADDRS, 'the host addresses, and no gateway address');
  assert.deepEqual(routesOf(host, 'wbr1'), HOST_ROUTES);
  assert.equal(br.mac, mac, "the bridge has the uplink's MAC");
  assert.ok(await b.ping(host, '203.0.113.1', { deadlineS: 3 }), 'host still reaches the upstream');
  assert.ok(await b.ping(host, '198.51.100.1', { deadlineS: 3 }), 'host still reaches beyond');
  assert.ok(
    await b.ping(host, '2001:db8:1::1', { deadlineS: 4 }),
    'host still reaches the upstream over IPv6',
  );
}

describe('bridge uplink', needsRoot, () => {
  test('uplink=eth0 moves addresses and routes onto the bridge; a sandbox is on the LAN; delete restores', async (t) => {
    const b = bed(t);
    const { host, upstream, mac } = lab(b);
    const driver = new BridgeDriver({ host: host.h });
    const net = network();
    await driver.createNetwork(net);
    await assertAttached(b, host, mac);
    const rec = driver.uplinkRecord('n1');
    assert.ok(rec);
    assert.equal(rec.iface, 'eth0');
    assert.equal(rec.bridge, 'wbr1');
    assert.deepEqual([...rec.addresses].sort(), HOST_ADDRS);
    assert.equal(rec.addresses[0], '203.0.113.2/24', 'the IPv4 primary first');
    assert.deepEqual(
      rec.routes.find((r) => r.dst === 'default' && r.family === 4),
      {
        family: 4,
        dst: 'default',
        via: '203.0.113.1',
        metric: 0,
        protocol: 3,
        onlink: false,
      },
    );
    assert.ok(rec.bridgeMac !== undefined && rec.bridgeMac !== mac);
    assert.deepEqual(JSON.parse(JSON.stringify(rec)), rec, 'the record is plain JSON');

    await driver.createNetwork(net); // idempotent
    assert.deepEqual(driver.uplinkRecord('n1'), rec);
    await assertAttached(b, host, mac);

    // A sandbox with an address of the LAN reaches the upstream directly on L2.
    const s1 = b.ns('s1');
    const e1 = endpoint('upep0001', '203.0.113.20/24');
    await driver.createEndpoint(net, e1);
    await driver.join(net, e1, { id: 's1', ns: s1.ns });
    const [def] = s1.h.routes.list({ family: 4, dst: 'default' });
    assert.equal(def?.gateway && formatIP(def.gateway), '203.0.113.1');
    assert.ok(await b.ping(s1, '203.0.113.1', { deadlineS: 3 }), 'sandbox reaches the upstream on L2');
    assert.ok(await b.ping(s1, '198.51.100.1', { deadlineS: 3 }), 'sandbox reaches beyond the LAN router');
    assert.ok(await b.ping(s1, '203.0.113.2', { deadlineS: 3 }), 'sandbox reaches the host');
    assert.ok(await b.ping(upstream, '203.0.113.20', { deadlineS: 3 }), 'the upstream reaches the sandbox');
    const n = upstream.h.neigh.list({ dev: 'up0' }).find((x) => x.ip && formatIP(x.ip) === '203.0.113.20');
    assert.equal(n?.lladdr, s1.h.links.get('eth0').mac, 'on L2: the upstream knows the sandbox MAC');

    await driver.leave(net, e1, { id: 's1', ns: s1.ns });
    await driver.deleteEndpoint(net, e1);
    await driver.deleteNetwork(net);
    assert.equal(host.h.links.find('wbr1'), undefined);
    assert.equal(driver.uplinkRecord('n1'), undefined);
    await assertRestored(b, host);
    await driver.deleteNetwork(net); // idempotent
    await assertRestored(b, host);
  });

  test('after a restart: the record handed back, or read from the kernel, restores the host', async (t) => {
    const b = bed(t);
    const { host, mac } = lab(b);
    const net = network();
    const first = new BridgeDriver({ host: host.h });
    await first.createNetwork(net);
    const rec = JSON.parse(JSON.stringify(first.uplinkRecord('n1'))) as UplinkRecord;

    // Restarted with the persisted record: createNetwork replays, deleteNetwork restores.
    const second = new BridgeDriver({ host: host.h, uplinks: { n1: rec } });
    await second.createNetwork(net);
    assert.deepEqual(second.uplinkRecord('n1'), rec);
    await assertAttached(b, host, mac);
    // Drift: someone removed the default route from the bridge; the replay puts it back.
    host.h.routes.delete({ dst: 'default', via: '203.0.113.1', dev: 'wbr1' });
    await second.createNetwork(net);
    await assertAttached(b, host, mac);
    await second.deleteNetwork(net);
    await assertRestored(b, host);

    // Restarted without a record: what the bridge carries counts as moved.
    await first.createNetwork(net);
    const third = new BridgeDriver({ host: host.h });
    await third.deleteNetwork(net);
    assert.equal(host.h.links.find('wbr1'), undefined);
    await assertRestored(b, host);

    // After a reboot: no bridge, and the uplink has its addresses again, another one by now
    // (DHCP). The record's old ones are not brought back with it.
    for (const a of ['203.0.113.2/24', '203.0.113.3/24']) host.h.addrs.delete('eth0', parseIPNet(a));
    host.h.addrs.add('eth0', '203.0.113.9/24');
    const now = ['2001:db8:1::2/64', '203.0.113.9/24'];
    const fourth = new BridgeDriver({ host: host.h, uplinks: { n1: rec } });
    await fourth.createNetwork(net);
    assert.deepEqual(addrsOf(host, 'wbr1'), now, 'only what the uplink has now');
    await fourth.deleteNetwork(net);
    assert.deepEqual(addrsOf(host, 'eth0'), now);
  });

  test('failures roll back: a firewall error in create, a foreign port in delete', async (t) => {
    const b = bed(t);
    const { host, mac } = lab(b);
    let fail = true;
    const firewall: BridgeFirewallHook = {
      apply() {
        if (fail) throw new Error('nft refused');
      },
    };
    const driver = new BridgeDriver({ host: host.h, firewall });
    const net = network();
    await assert.rejects(driver.createNetwork(net), /nft refused/);
    assert.equal(host.h.links.find('wbr1'), undefined);
    assert.equal(driver.uplinkRecord('n1'), undefined);
    await assertRestored(b, host);

    fail = false;
    await driver.createNetwork(net);
    const rec = driver.uplinkRecord('n1');
    // A port weft does not own keeps the bridge: the uplink stays attached, nothing lost.
    host.h.links.add({ kind: 'veth', name: 'other0', master: 'wbr1', peer: { name: 'other1' } });
    await assert.rejects(driver.deleteNetwork(net), (e) => isWeftError(e, 'BUSY'));
    await assertAttached(b, host, mac);
    assert.deepEqual(driver.uplinkRecord('n1'), rec);
    host.h.links.delete('other0');
    await driver.deleteNetwork(net);
    await assertRestored(b, host);
  });

  test('bad uplinks fail before anything changes', async (t) => {
    const b = bed(t);
    const { host } = lab(b);
    const driver = new BridgeDriver({ host: host.h });
    const links = () =>
      host.h.links
        .list()
        .map((l) => `${l.name}:${l.masterIndex ?? '-'}`)
        .sort();
    host.h.links.add({ kind: 'bridge', name: 'otherbr', up: true });
    host.h.links.add({ kind: 'veth', name: 'held0', master: 'otherbr', peer: { name: 'held1' } });
    host.h.links.add({ kind: 'veth', name: 'small0', mtu: 1400, peer: { name: 'small1' } });
    const before = links();
    const cases: [Record<string, string>, string, RegExp][] = [
      [{ uplink: 'eth9' }, 'NOT_FOUND', /eth9/],
      [{ uplink: 'held0' }, 'CONFLICT', /held0/],
      [{ uplink: 'small0' }, 'INVALID', /MTU/],
      [{ uplink: 'wbr1' }, 'INVALID', /bridge itself/],
      [{ uplink: 'otherbr' }, 'INVALID', /is a bridge/],
      [{ uplink: 'bad/name' }, 'INVALID', /uplink/],
    ];
    for (const [options, code, re] of cases) {
      await assert.rejects(
        driver.createNetwork(network({ options })),
        (e) => isWeftError(e, code as 'INVALID') && re.test(e.message),
        JSON.stringify(options),
      );
    }
    assert.deepEqual(links(), before);
    await assertRestored(b, host);
  });
});
