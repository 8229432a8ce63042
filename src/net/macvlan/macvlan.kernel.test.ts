import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type Bed, type BedNs, bed, needsRoot } from '../../../test/bed.js';
import { isWeftError } from '../../lib/errors.js';
import { formatIP, formatIPNet, parseCidr, parseIP, parseIPNet } from '../../lib/ip.js';
import type { EndpointSpec, NetworkSpec } from '../driver.js';
import { MacvlanDriver } from './driver.js';

function network(over: Partial<NetworkSpec> = {}): NetworkSpec {
  return {
    id: 'm1',
    name: 'lan',
    driver: 'macvlan',
    bridge: '',
    mtu: 1500,
    subnets: [{ subnet: parseCidr('192.0.2.0/24'), gateway: parseIP('192.0.2.1') }],
    internal: false,
    icc: true,
    masquerade: false,
    options: { parent: 'lan0' },
    ...over,
  };
}

const endpoint = (id: string, addr: string, ifname = 'eth0', mac?: string): EndpointSpec => ({
  id,
  networkId: 'm1',
  addresses: [parseIPNet(addr)],
  ifname,
  ...(mac !== undefined && { mac }),
});

/**
 * A "host" whose `lan0` (one end of a veth) is the parent, and a "peer" namespace on the other
 * end playing a machine on the same L2 (192.0.2.50) and the LAN's router (192.0.2.1, which also
 * holds 198.51.100.7 as a destination beyond the gateway).
 */
function lab(b: Bed) {
  const host = b.ns('host');
  const peer = b.ns('peer');
  host.h.links.add({ kind: 'veth', name: 'lan0', up: true, peer: { name: 'p0', netns: peer.ns } });
  peer.h.links.setUp('p0');
  peer.h.addrs.add('p0', '192.0.2.50/24');
  peer.h.addrs.add('p0', '192.0.2.1/24');
  peer.h.addrs.add('lo', '198.51.100.7/32');
  const driver = new MacvlanDriver({ host: host.h });
  return { host, peer, driver };
}

const names = (n: BedNs) =>
  n.h.links
    .list()
    .map((l) => l.name)
    .sort();

describe('macvlan driver', needsRoot, () => {
  test('two sandboxes on lan0 reach the peer, the gateway, beyond it, and each other', async (t) => {
    const b = bed(t);
    const { host, peer, driver } = lab(b);
    const lan0 = host.h.links.get('lan0');
    const net = network();
    await driver.createNetwork(net);
    await driver.createNetwork(net); // idempotent
    assert.deepEqual(host.h.addrs.list({ dev: 'lan0', family: 4 }), [], 'no gateway address on the host');

    const s1 = b.ns('s1');
    const s2 = b.ns('s2');
    const e1 = endpoint('mvep0001', '192.0.2.10/24', 'eth0', '02:00:c0:00:02:0a');
    const e2 = endpoint('mvep0002', '192.0.2.11/24');
    await driver.createEndpoint(net, e1);
    await driver.createEndpoint(net, e2);
    await driver.join(net, e1, { id: 's1', ns: s1.ns });
    await driver.join(net, e2, { id: 's2', ns: s2.ns });

    const eth0 = s1.h.links.get('eth0');
    assert.equal(eth0.kind, 'macvlan');
    assert.equal(eth0.kind === 'macvlan' && eth0.mode, 'bridge');
    assert.equal(eth0.mac, '02:00:c0:00:02:0a');
    assert.equal(eth0.mtu, 1500);
    assert.equal(eth0.up, true);
    assert.deepEqual(names(s1), ['eth0', 'lo'], 'no temporary name left');
    assert.deepEqual(names(host), ['lan0', 'lo'], 'nothing created in the host');
    assert.deepEqual(
      s1.h.addrs.list({ dev: 'eth0', family: 4 }).map((a) => formatIPNet(a.ipnet)),
      ['192.0.2.10/24'],
    );
    const [def] = s1.h.routes.list({ family: 4, dst: 'default' });
    assert.equal(def?.gateway && formatIP(def.gateway), '192.0.2.1');
    assert.equal(def?.oif, eth0.index);
    // Cross-check with iproute2 inside the sandbox: a macvlan whose parent is lan0's index.
    const { stdout } = await b.exec(s1, 'ip', ['-j', '-d', 'link', 'show', 'eth0']);
    const [shown] = JSON.parse(String(stdout)) as {
      linkinfo: { info_kind: string; info_data: { mode: string } };
    }[];
    assert.equal(shown?.linkinfo.info_kind, 'macvlan');
    assert.equal(shown?.linkinfo.info_data.mode, 'bridge');
    assert.equal(eth0.parentIndex, lan0.index);

    assert.ok(await b.ping(s1, '192.0.2.50', { deadlineS: 3 }), 's1 reaches the peer on L2');
    assert.ok(await b.ping(s2, '192.0.2.50', { deadlineS: 3 }), 's2 reaches the peer on L2');
    assert.ok(await b.ping(s1, '198.51.100.7', { deadlineS: 3 }), 's1 reaches beyond the gateway');
    assert.ok(await b.ping(s1, '192.0.2.11', { deadlineS: 3 }), 's1 reaches s2 (bridge mode)');
    assert.ok(await b.ping(s2, '192.0.2.10', { deadlineS: 3 }), 's2 reaches s1 (bridge mode)');
    assert.ok(await b.ping(peer, '192.0.2.10', { deadlineS: 3 }), 'the peer reaches s1');
    const neigh = peer.h.neigh.list({ dev: 'p0' }).find((n) => n.ip && formatIP(n.ip) === '192.0.2.10');
    assert.equal(neigh?.lladdr, '02:00:c0:00:02:0a', 'the peer sees s1 with its own MAC');

    await driver.leave(net, e1, { id: 's1', ns: s1.ns });
    await driver.leave(net, e1, { id: 's1', ns: s1.ns }); // idempotent
    assert.deepEqual(names(s1), ['lo']);
    await driver.deleteEndpoint(net, e1);
    await driver.deleteNetwork(net);
    await driver.deleteNetwork(net);
    const after = host.h.links.get('lan0');
    assert.equal(after.up, true, 'the parent is left as it was');
    assert.equal(after.masterIndex, undefined);
    assert.equal(after.mtu, lan0.mtu);
    assert.ok(await b.ping(s2, '192.0.2.50', { deadlineS: 3 }), 'deleteNetwork does nothing to the parent');
  });

  test('mode, MTU clamped to the parent, internal: no default route', async (t) => {
    const b = bed(t);
    const { host, driver } = lab(b);
    host.h.links.setMtu('lan0', 1400);
    const net = network({ mtu: 9000, internal: true, options: { parent: 'lan0', macvlan_mode: 'private' } });
    await driver.createNetwork(net);
    const s1 = b.ns('s1');
    await driver.join(net, endpoint('mvep0003', '192.0.2.12/24'), { id: 's1', ns: s1.ns });
    const eth0 = s1.h.links.get('eth0');
    assert.equal(eth0.kind === 'macvlan' && eth0.mode, 'private');
    assert.equal(eth0.mtu, 1400);
    assert.deepEqual(s1.h.routes.list({ family: 4, dst: 'default' }), []);
    assert.ok(await b.ping(s1, '192.0.2.50', { deadlineS: 3 }), 'the peer is on-link');

    const small = network({ id: 'm2', mtu: 1280 });
    await driver.createNetwork(small);
    const s2 = b.ns('s2');
    await driver.join(
      small,
      { ...endpoint('mvep0004', '192.0.2.13/24'), networkId: 'm2' },
      { id: 's2', ns: s2.ns },
    );
    assert.equal(s2.h.links.get('eth0').mtu, 1280);
  });

  test('a join that fails midway leaves nothing in the sandbox', async (t) => {
    const b = bed(t);
    const { host, driver } = lab(b);
    const net = network();
    await driver.createNetwork(net);
    const s1 = b.ns('s1');
    await driver.join(net, endpoint('mvep0005', '192.0.2.14/24'), { id: 's1', ns: s1.ns });
    const before = names(s1);
    const routesBefore = s1.h.routes.list({ family: 4 }).length;

    // The rename fails: the sandbox already has an eth0 (the macvlan was made by then).
    await assert.rejects(
      driver.join(net, endpoint('mvep0006', '192.0.2.15/24', 'eth0'), { id: 's1', ns: s1.ns }),
      (e) => isWeftError(e, 'EXISTS'),
    );
    assert.deepEqual(names(s1), before, 'the temporary macvlan is gone');
    // The kernel refuses a multicast MAC (after the rename).
    await assert.rejects(
      driver.join(net, endpoint('mvep0007', '192.0.2.16/24', 'eth1', '01:00:5e:00:00:01'), {
        id: 's1',
        ns: s1.ns,
      }),
      (e) => isWeftError(e) && e.code !== 'INTERNAL',
    );
    // The IPv6 address is refused (after rename, up and the IPv4 address): IPv6 is off there.
    const dual = network({
      id: 'm2',
      subnets: [...net.subnets, { subnet: parseCidr('2001:db8::/64'), gateway: parseIP('2001:db8::1') }],
    });
    await driver.createNetwork(dual);
    const s2 = b.ns('s2');
    s2.h.sysctl.set('net.ipv6.conf.default.disable_ipv6', 1);
    const s2Before = names(s2);
    const ep = { ...endpoint('mvep0008', '192.0.2.17/24'), networkId: 'm2' };
    const v6 = { ...ep, addresses: [...ep.addresses, parseIPNet('2001:db8::17/64')] };
    await assert.rejects(
      driver.join(dual, v6, { id: 's2', ns: s2.ns }),
      (e) => isWeftError(e, 'PERMISSION') && /2001:db8::17/.test(e.message),
    );
    assert.deepEqual(names(s2), s2Before);
    assert.deepEqual(names(s1), before);
    assert.equal(s1.h.routes.list({ family: 4 }).length, routesBefore);
    assert.deepEqual(names(host), ['lan0', 'lo']);
  });

  test('bad input is a typed error and changes nothing', async (t) => {
    const b = bed(t);
    const { host, driver } = lab(b);
    const s1 = b.ns('s1');
    const bad = (over: Partial<NetworkSpec>, code: string, why: string, re?: RegExp) =>
      assert.rejects(
        driver.createNetwork(network(over)),
        (e) => isWeftError(e, code as 'INVALID') && (re === undefined || re.test(e.message)),
        why,
      );
    await bad({ options: {} }, 'INVALID', 'no parent option', /parent/);
    await bad({ options: { parent: 'eth9' } }, 'NOT_FOUND', 'a parent that does not exist', /eth9/);
    await bad({ options: { parent: 'lan0', macvlan_mode: 'source' } }, 'INVALID', 'bad mode', /macvlan_mode/);
    await bad({ options: { parent: 'lan0', macvlan_mode: 'bridged' } }, 'INVALID', 'bad mode', /bridged/);
    await bad({ options: { parent: 'a/b' } }, 'INVALID', 'bad parent name');
    await bad({ mtu: 20 }, 'INVALID', 'bad MTU');
    await bad(
      { subnets: [{ subnet: parseCidr('192.0.2.0/24'), gateway: parseIP('10.0.0.1') }] },
      'INVALID',
      'gateway outside the subnet',
    );

    const unknown = network({ id: 'nope' });
    const e = { ...endpoint('mvep0009', '192.0.2.20/24'), networkId: 'nope' };
    await assert.rejects(driver.createEndpoint(unknown, e), (x) => isWeftError(x, 'NOT_FOUND'));
    await assert.rejects(driver.join(unknown, e, { id: 's1', ns: s1.ns }), (x) =>
      isWeftError(x, 'NOT_FOUND'),
    );

    const net = network();
    await driver.createNetwork(net);
    for (const [ep, why] of [
      [endpoint('mvep0010', '10.1.0.2/24'), 'address outside the subnet'],
      [endpoint('mvep0011', '192.0.2.20/16'), 'wrong prefix length'],
      [endpoint('mvep0012', '192.0.2.1/24'), 'the gateway address'],
      [endpoint('mvep0013', '192.0.2.20/24', 'eth0', 'zz'), 'bad MAC'],
      [endpoint('mvep0014', '192.0.2.20/24', 'a-name-far-too-long'), 'ifname too long'],
      [{ ...endpoint('mvep0015', '192.0.2.20/24'), networkId: 'm9' }, 'endpoint of another network'],
    ] as const) {
      await assert.rejects(driver.createEndpoint(net, ep), (x) => isWeftError(x, 'INVALID'), why);
      await assert.rejects(
        driver.join(net, ep, { id: 's1', ns: s1.ns }),
        (x) => isWeftError(x, 'INVALID'),
        why,
      );
    }
    // The parent went away after createNetwork: join names it.
    host.h.links.delete('lan0');
    await assert.rejects(
      driver.join(net, endpoint('mvep0016', '192.0.2.21/24'), { id: 's1', ns: s1.ns }),
      (x) => isWeftError(x, 'NOT_FOUND') && /lan0/.test(x.message),
    );
    assert.deepEqual(names(s1), ['lo']);
    // leave does not remove an interface that is not a macvlan.
    s1.h.links.add({ kind: 'veth', name: 'eth0', peer: { name: 'eth0p' } });
    await assert.rejects(
      driver.leave(net, endpoint('mvep0017', '192.0.2.22/24'), { id: 's1', ns: s1.ns }),
      (x) => isWeftError(x, 'CONFLICT'),
    );
    assert.ok(s1.h.links.find('eth0'));
  });
});
