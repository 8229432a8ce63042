import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isWeftError, type WeftError } from '../../lib/errors.js';
import { formatIP, formatIPNet, parseCidr, parseIP } from '../../lib/ip.js';
import {
  makeClusterConfig,
  nthSubnet,
  parseClusterConfig,
  renderClusterConfig,
  subnetCount,
} from './config.js';
import { PeerSet } from './diff.js';
import {
  leaseKey,
  parseLease,
  parseLeaseKey,
  parseSubnetEnv,
  renderLeaseValue,
  renderSubnetEnv,
  subnetKey,
} from './lease.js';
import { inRange, pickFreeSubnet } from './manager.js';

function throwsCode(fn: () => unknown, code: WeftError['code'], ...words: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isWeftError(e, code), `expected ${code}, got ${String(e)}`);
    for (const w of words) assert.ok(e.message.includes(w), `"${e.message}" should mention ${w}`);
    return true;
  });
}

describe('cluster configuration (flannel-compatible)', () => {
  test('defaults: /24 subnets, the first subnet skipped, up to the last', () => {
    const c = makeClusterConfig({ network: '10.244.0.0/16' });
    assert.equal(c.subnetLen, 24);
    assert.equal(formatIP(c.subnetMin), '10.244.1.0');
    assert.equal(formatIP(c.subnetMax), '10.244.255.0');
    assert.equal(c.backend.type, 'vxlan');
    assert.equal(subnetCount(c), 255);
    assert.equal(formatIPNet(nthSubnet(c, 2)), '10.244.3.0/24');
  });

  test('small networks are split in four; /28 is the smallest', () => {
    assert.equal(makeClusterConfig({ network: '10.1.0.0/23' }).subnetLen, 25);
    assert.equal(makeClusterConfig({ network: '10.1.0.0/28' }).subnetLen, 30);
    throwsCode(() => makeClusterConfig({ network: '10.1.0.0/29' }), 'INVALID', 'too small');
  });

  test('validation names the field', () => {
    throwsCode(() => makeClusterConfig({ network: '10.0.0.0/16', subnetLen: 17 }), 'INVALID', 'four subnets');
    throwsCode(() => makeClusterConfig({ network: '10.0.0.0/16', subnetLen: 31 }), 'INVALID', 'SubnetLen');
    throwsCode(
      () => makeClusterConfig({ network: '10.0.0.0/16', subnetMin: '10.1.0.0' }),
      'INVALID',
      'SubnetMin',
      'not in',
    );
    throwsCode(
      () => makeClusterConfig({ network: '10.0.0.0/16', subnetMax: '10.0.5.7' }),
      'INVALID',
      'boundary',
    );
    throwsCode(
      () => makeClusterConfig({ network: '10.0.0.0/16', subnetMin: '10.0.9.0', subnetMax: '10.0.3.0' }),
      'INVALID',
      'after',
    );
    throwsCode(
      () => makeClusterConfig({ network: '10.0.0.0/16', backend: 'ipip' }),
      'INVALID',
      'unknown backend',
    );
    throwsCode(
      () => makeClusterConfig({ network: '10.0.0.0/16', backend: 'udp', vni: 3 }),
      'INVALID',
      'vxlan',
    );
    throwsCode(() => makeClusterConfig({ network: '10.0.0.1/16' }), 'INVALID', 'host bits');
    throwsCode(() => makeClusterConfig({ network: 'fd00::/64' }), 'INVALID', 'IPv4');
  });

  test('reads what flannel writes (0 and "" mean unset, udp is the default backend) and round-trips', () => {
    const c = parseClusterConfig(
      '{"Network":"10.5.0.0/16","SubnetLen":0,"SubnetMin":"","Backend":{"VNI":0}}',
    );
    assert.equal(c.backend.type, 'udp');
    assert.equal(formatIP(c.subnetMin), '10.5.1.0');
    const v = parseClusterConfig(
      '{"Network":"10.244.0.0/16","SubnetLen":26,"Backend":{"Type":"vxlan","VNI":4,"Port":4789,"DirectRouting":true},"EnableIPv4":true}',
    );
    assert.deepEqual(v.backend, { type: 'vxlan', vni: 4, port: 4789, directRouting: true });
    assert.deepEqual(parseClusterConfig(renderClusterConfig(v)), v);
    assert.deepEqual(JSON.parse(renderClusterConfig(v)), {
      Network: '10.244.0.0/16',
      SubnetLen: 26,
      SubnetMin: '10.244.0.64',
      SubnetMax: '10.244.255.192',
      Backend: { Type: 'vxlan', VNI: 4, Port: 4789, DirectRouting: true },
    });
    throwsCode(() => parseClusterConfig('nope'), 'INVALID', 'JSON');
    throwsCode(() => parseClusterConfig('{"Backend":{}}'), 'INVALID', 'Network');
    throwsCode(() => parseClusterConfig('{"Network":"10.0.0.0/8","SubnetLen":"24"}'), 'INVALID', 'SubnetLen');
  });
});

describe('lease keys, values and subnet.env', () => {
  const P = '/coreos.com/network';
  test('keys are flannel’s', () => {
    const s = parseCidr('10.244.3.0/24');
    assert.equal(leaseKey(P, s), '/coreos.com/network/subnets/10.244.3.0-24');
    assert.equal(formatIPNet(parseLeaseKey(P, leaseKey(P, s))!), '10.244.3.0/24');
    for (const bad of [
      `${P}/config`,
      `${P}/subnets/10.244.3.1-24`,
      `${P}/subnets/x`,
      '/other/subnets/10.0.0.0-24',
    ]) {
      assert.equal(parseLeaseKey(P, bad), undefined, bad);
    }
  });

  test('values are flannel’s; foreign or corrupt ones are skipped', () => {
    const value = renderLeaseValue({
      publicIp: parseIP('192.168.100.11'),
      backendType: 'vxlan',
      backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' },
    });
    assert.deepEqual(JSON.parse(value), {
      PublicIP: '192.168.100.11',
      BackendType: 'vxlan',
      BackendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' },
    });
    const l = parseLease(P, { key: `${P}/subnets/10.244.3.0-24`, value, modRevision: 7, expiresAt: 5 });
    assert.equal(l && formatIP(l.publicIp), '192.168.100.11');
    assert.equal(l?.modRevision, 7);
    assert.equal(parseLease(P, { key: `${P}/subnets/10.244.3.0-24`, value: '{', modRevision: 1 }), undefined);
    assert.equal(
      parseLease(P, { key: `${P}/subnets/10.244.3.0-24`, value: '{"PublicIP":"fd00::1"}', modRevision: 1 }),
      undefined,
    );
  });

  test('subnet.env as flannel writes it, and read back', () => {
    const text = renderSubnetEnv({
      network: parseCidr('10.244.0.0/16'),
      subnet: parseCidr('10.244.3.0/24'),
      mtu: 1450,
      ipMasq: true,
    });
    assert.equal(
      text,
      'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
    );
    const back = parseSubnetEnv(text);
    assert.equal(formatIPNet(back.subnet!), '10.244.3.0/24');
    assert.equal(back.mtu, 1450);
    assert.equal(back.ipMasq, true);
    assert.deepEqual(parseSubnetEnv('garbage\nFLANNEL_SUBNET=nope\nFLANNEL_MTU=-3'), {});
  });
});

describe('subnet choice', () => {
  const cfg = makeClusterConfig({ network: '10.9.0.0/20', subnetLen: 24 });
  test('a free subnet is always in range and never taken; none when all are taken', () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 0, max: 14 }), { maxLength: 15 }),
        fc.double({ min: 0, max: 0.999, noNaN: true }),
        (idx, r) => {
          const taken = idx.map((i) => nthSubnet(cfg, i));
          const got = pickFreeSubnet(cfg, taken, () => r);
          if (taken.length === subnetCount(cfg)) return got === undefined;
          return (
            got !== undefined && inRange(cfg, got) && !taken.some((t) => subnetKey(t) === subnetKey(got))
          );
        },
      ),
    );
    assert.equal(subnetCount(cfg), 15);
    assert.equal(inRange(cfg, parseCidr('10.9.0.0/24')), false, 'the first subnet is never handed out');
  });
});

describe('PeerSet: snapshots and events into backend changes', () => {
  const P = '/weft/network';
  const own = parseCidr('10.244.1.0/24');
  const entry = (subnet: string, ip: string, mac = 'm', rev = 1) => ({
    key: leaseKey(P, parseCidr(subnet)),
    value: renderLeaseValue({ publicIp: parseIP(ip), backendType: 'vxlan', backendData: { VtepMAC: mac } }),
    modRevision: rev,
  });
  const subnets = (ls: readonly { subnet: { ip: unknown; len: number } }[]) =>
    ls.map((l) => formatIPNet(l.subnet as never)).sort();
  /** A watch event putting `e` at `revision`. */
  const put = (e: ReturnType<typeof entry>, revision: number) => ({
    type: 'put' as const,
    key: e.key,
    value: e.value,
    revision,
  });

  test('reset diffs against what was known; own subnet excluded; renewals are no change', () => {
    const ps = new PeerSet(P, () => own);
    let c = ps.reset([
      entry('10.244.1.0/24', '1.0.0.1'),
      entry('10.244.2.0/24', '1.0.0.2'),
      entry('10.244.3.0/24', '1.0.0.3'),
    ]);
    assert.deepEqual(subnets(c.added), ['10.244.2.0/24', '10.244.3.0/24']);
    assert.equal(c.ownLost, false);
    c = ps.reset([entry('10.244.2.0/24', '1.0.0.2', 'm', 9), entry('10.244.3.0/24', '1.0.0.9')]);
    assert.deepEqual(subnets(c.removed), ['10.244.3.0/24'], 'changed: the old one is removed');
    assert.deepEqual(
      subnets(c.added),
      ['10.244.3.0/24'],
      'and the new one added; the renewal of .2 is no change',
    );
    assert.equal(c.ownLost, true);
  });

  test('events: put, renew, change, delete, own delete, garbage', () => {
    const ps = new PeerSet(P, () => own);
    let c = ps.apply([put(entry('10.244.2.0/24', '1.0.0.2'), 2), put(entry('10.244.2.0/24', '1.0.0.2'), 3)]);
    assert.deepEqual(subnets(c.added), ['10.244.2.0/24']);
    c = ps.apply([put(entry('10.244.2.0/24', '1.0.0.2', 'other'), 4)]);
    assert.deepEqual([subnets(c.removed), subnets(c.added)], [['10.244.2.0/24'], ['10.244.2.0/24']]);
    c = ps.apply([
      { type: 'delete', key: leaseKey(P, parseCidr('10.244.2.0/24')), revision: 5 },
      { type: 'delete', key: leaseKey(P, own), revision: 6 },
      { type: 'put', key: leaseKey(P, parseCidr('10.244.7.0/24')), value: 'x', revision: 7 },
      { type: 'put', key: `${P}/config`, value: '{}', revision: 8 },
    ]);
    assert.deepEqual(subnets(c.removed), ['10.244.2.0/24']);
    assert.equal(c.ownLost, true);
    assert.deepEqual(c.skipped, [leaseKey(P, parseCidr('10.244.7.0/24'))]);
    assert.deepEqual(ps.list(), []);
  });
  test('a batch is applied as its net change per key (removals first, then additions)', () => {
    const ps = new PeerSet(P, () => own);
    const del = (subnet: string, revision: number) => ({
      type: 'delete' as const,
      key: leaseKey(P, parseCidr(subnet)),
      revision,
    });
    // What a backend ends with when it applies `removed`, then `added`, as the agent does.
    const kernel = new Map<string, string>();
    const run = (c: ReturnType<PeerSet['apply']>) => {
      for (const l of c.removed) kernel.delete(formatIPNet(l.subnet));
      for (const l of c.added) kernel.set(formatIPNet(l.subnet), formatIP(l.publicIp));
    };
    run(ps.apply([put(entry('10.244.7.0/24', '1.0.0.7'), 5), del('10.244.7.0/24', 6)]));
    assert.deepEqual([...kernel], [], 'put then deleted: never programmed');
    run(ps.apply([put(entry('10.244.8.0/24', '1.0.0.8'), 7)]));
    run(ps.apply([put(entry('10.244.8.0/24', '1.0.0.9'), 8), del('10.244.8.0/24', 9)]));
    assert.deepEqual([...kernel], [], 'changed then deleted: gone');
    run(ps.apply([put(entry('10.244.8.0/24', '1.0.0.8'), 10)]));
    let c = ps.apply([del('10.244.8.0/24', 11), put(entry('10.244.8.0/24', '1.0.0.8'), 12)]);
    assert.deepEqual([c.removed.length, c.added.length], [0, 0], 'deleted and put back unchanged: nothing');
    c = ps.apply([del('10.244.8.0/24', 13), put(entry('10.244.8.0/24', '1.0.0.3'), 14)]);
    run(c);
    assert.deepEqual([subnets(c.removed), subnets(c.added)], [['10.244.8.0/24'], ['10.244.8.0/24']]);
    assert.equal(c.removed[0]?.modRevision, 12, 'the removal is the lease before the batch');
    assert.deepEqual([...kernel], [['10.244.8.0/24', '1.0.0.3']]);
    assert.deepEqual(subnets(ps.list()), ['10.244.8.0/24']);
  });
});
