import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { bed, needsRoot } from '../../../test/bed.js';
import { isWeftError } from '../../lib/errors.js';
import { parseCidr, parseIP, parseIPNet } from '../../lib/ip.js';
import type { EndpointSpec, NetworkSpec } from '../driver.js';
import { HostDriver, sharesHostNetns } from './driver.js';

const net: NetworkSpec = {
  id: 'h1',
  name: 'host',
  driver: 'host',
  bridge: '',
  mtu: 1500,
  subnets: [],
  internal: false,
  icc: true,
  masquerade: false,
  options: {},
};
const ep: EndpointSpec = { id: 'hep1', networkId: 'h1', addresses: [], ifname: 'eth0' };

describe('host driver', needsRoot, () => {
  test('the sandbox is the host namespace: a process there sees the host links', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    host.h.links.add({ kind: 'veth', name: 'hostnic0', up: true, peer: { name: 'hostnic1' } });
    const driver = new HostDriver({ host: host.h });
    assert.equal(driver.sharesHostNetns, true);
    assert.equal(sharesHostNetns(driver), true);
    const before = host.h.links.list().map((l) => [l.name, l.up]);

    await driver.createNetwork(net);
    await driver.createEndpoint(net, ep);
    await driver.join(net, ep, { id: 'c1', ns: host.ns });
    assert.deepEqual(
      host.h.links.list().map((l) => [l.name, l.up]),
      before,
      'join changes nothing in the kernel',
    );
    // A process started in the sandbox's (= host's) namespace sees the host's links.
    const { stdout } = await b.exec(host, 'ip', ['-j', 'link', 'show']);
    const names = (JSON.parse(String(stdout)) as { ifname: string }[]).map((l) => l.ifname).sort();
    assert.deepEqual(names, ['hostnic0', 'hostnic1', 'lo']);

    await driver.leave(net, ep, { id: 'c1', ns: host.ns });
    await driver.leave(net, ep, { id: 'c1', ns: host.ns });
    await driver.deleteEndpoint(net, ep);
    await driver.deleteNetwork(net);
    assert.deepEqual(
      host.h.links.list().map((l) => [l.name, l.up]),
      before,
    );
  });

  test('bad input: a namespace of its own, subnets, addresses', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const other = b.ns('c1');
    const driver = new HostDriver({ host: host.h });
    await assert.rejects(driver.join(net, ep, { id: 'c1', ns: other.ns }), (e) => isWeftError(e, 'INVALID'));
    await assert.rejects(
      driver.createNetwork({
        ...net,
        subnets: [{ subnet: parseCidr('10.9.0.0/24'), gateway: parseIP('10.9.0.1') }],
      }),
      (e) => isWeftError(e, 'INVALID'),
    );
    await assert.rejects(driver.createEndpoint(net, { ...ep, addresses: [parseIPNet('10.9.0.2/24')] }), (e) =>
      isWeftError(e, 'INVALID'),
    );
    await assert.rejects(driver.createEndpoint(net, { ...ep, networkId: 'other' }), (e) =>
      isWeftError(e, 'INVALID'),
    );
  });
});
