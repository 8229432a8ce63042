import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { bed, needsRoot } from '../../../test/bed.js';
import { isWeftError } from '../../lib/errors.js';
import { parseCidr, parseIP, parseIPNet } from '../../lib/ip.js';
import type { EndpointSpec, NetworkSpec } from '../driver.js';
import { NoneDriver } from './driver.js';

const net: NetworkSpec = {
  id: 'z1',
  name: 'none',
  driver: 'none',
  bridge: '',
  mtu: 1500,
  subnets: [],
  internal: true,
  icc: false,
  masquerade: false,
  options: {},
};
const ep: EndpointSpec = { id: 'zep1', networkId: 'z1', addresses: [], ifname: 'eth0' };

describe('none driver', needsRoot, () => {
  test('the sandbox has only lo, up, with loopback addresses and no route out', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const sb = b.ns('c1');
    sb.h.links.setDown('lo');
    const driver = new NoneDriver({ host: host.h });
    await driver.createNetwork(net);
    await driver.createEndpoint(net, ep);
    await driver.join(net, ep, { id: 'c1', ns: sb.ns });
    await driver.join(net, ep, { id: 'c1', ns: sb.ns }); // idempotent

    // Seen from a process inside the sandbox.
    const { stdout } = await b.exec(sb, 'ip', ['-j', 'addr', 'show']);
    const links = JSON.parse(String(stdout)) as {
      ifname: string;
      flags: string[];
      addr_info: { local: string }[];
    }[];
    assert.deepEqual(
      links.map((l) => l.ifname),
      ['lo'],
    );
    assert.ok(links[0]?.flags.includes('UP'));
    assert.deepEqual(links[0]?.addr_info.map((a) => a.local).sort(), ['127.0.0.1', '::1']);
    assert.deepEqual(sb.h.routes.list({ family: 4 }), []);
    assert.equal(await b.ping(sb, '127.0.0.1'), true);
    assert.equal(await b.ping(sb, '192.0.2.1', { deadlineS: 1 }), false);

    await driver.leave(net, ep, { id: 'c1', ns: sb.ns });
    assert.equal(sb.h.links.get('lo').up, true, 'leave leaves lo alone');
    await driver.deleteEndpoint(net, ep);
    await driver.deleteNetwork(net);
  });

  test('bad input: the host namespace, subnets, addresses', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const driver = new NoneDriver({ host: host.h });
    await assert.rejects(driver.join(net, ep, { id: 'c1', ns: host.ns }), (e) => isWeftError(e, 'INVALID'));
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
  });
});
