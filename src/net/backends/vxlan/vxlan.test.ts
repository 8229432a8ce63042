import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseCidr, parseIP } from '../../../lib/ip.js';
import { nullLogger } from '../../../lib/log.js';
import { checkPeer } from '../hostgw/routes.js';
import type { BackendContext, LeaseInfo } from '../types.js';
import { parseVxlanData, randomMac, vxlanDeviceName } from './vxlan.js';

describe('vxlan lease data and peer checks (pure)', () => {
  test('randomMac gives locally administered unicast MACs, all different', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const mac = randomMac();
      assert.match(mac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      assert.equal(Number.parseInt(mac.slice(0, 2), 16) & 0x03, 0x02);
      seen.add(mac);
    }
    assert.equal(seen.size, 200);
  });

  test('parseVxlanData accepts flannel’s {VNI, VtepMAC} and explains what it refuses', () => {
    assert.deepEqual(parseVxlanData({ VNI: 1, VtepMAC: 'AA:BB:CC:DD:EE:0F' }, 1), {
      VNI: 1,
      VtepMAC: 'aa:bb:cc:dd:ee:0f',
    });
    assert.deepEqual(parseVxlanData({ VtepMAC: '02:00:00:00:00:01' }, 5), {
      VNI: 5,
      VtepMAC: '02:00:00:00:00:01',
    });
    for (const [data, why] of [
      [null, /not an object/],
      ['x', /not an object/],
      [[1], /not an object/],
      [{ VNI: 1 }, /VtepMAC undefined/],
      [{ VNI: 1, VtepMAC: 42 }, /VtepMAC 42/],
      [{ VNI: 1, VtepMAC: '02:00:00:00:00' }, /not a unicast MAC/],
      [{ VNI: 1, VtepMAC: '00:00:00:00:00:00' }, /not a unicast MAC/],
      [{ VNI: 1, VtepMAC: '33:33:00:00:00:01' }, /not a unicast MAC/],
      [{ VNI: 2, VtepMAC: '02:00:00:00:00:01' }, /VNI 2 is not ours \(1\)/],
      [{ VNI: '1', VtepMAC: '02:00:00:00:00:01' }, /VNI "1"/],
    ] as const) {
      const r = parseVxlanData(data, 1);
      assert.equal(typeof r, 'string', JSON.stringify(data));
      assert.match(r as string, why);
    }
  });

  test('checkPeer keeps IPv4 subnets of the cluster network other than our own', () => {
    const ctx = { network: parseCidr('10.244.0.0/16'), log: nullLogger } as unknown as BackendContext;
    const ok: LeaseInfo = {
      subnet: parseCidr('10.244.2.0/24'),
      publicIp: parseIP('192.0.2.2'),
      backendType: 'vxlan',
      backendData: null,
    };
    const own: LeaseInfo = { ...ok, subnet: parseCidr('10.244.1.0/24') };
    const r = checkPeer(ctx, ok, 'vxlan', own);
    assert.ok(typeof r !== 'string');
    assert.equal(r.key, '10.244.2.0/24');
    const bad: [LeaseInfo, RegExp][] = [
      [{ ...ok, backendType: 'udp' }, /backend type is "udp"/],
      [{ ...ok, subnet: parseCidr('10.245.0.0/24') }, /not a subnet of the cluster network/],
      [{ ...ok, subnet: parseCidr('10.244.0.0/16') }, /not a subnet of the cluster network/],
      [{ ...ok, subnet: { ip: parseIP('10.244.2.1'), len: 24 } }, /host bits/],
      [{ ...ok, subnet: parseCidr('fd00::/64') }, /not an IPv4 prefix/],
      [{ ...ok, subnet: 'garbage' as unknown as LeaseInfo['subnet'] }, /not an IPv4 prefix/],
      [{ ...ok, publicIp: parseIP('fd00::1') }, /public IP is not an IPv4/],
      [{ ...ok, subnet: own.subnet }, /this host's own/],
      [null as unknown as LeaseInfo, /not an object/],
    ];
    for (const [l, why] of bad) {
      const x = checkPeer(ctx, l, 'vxlan', own);
      assert.equal(typeof x, 'string');
      assert.match(x as string, why);
    }
  });

  test('the device is weft.<VNI>', () => {
    assert.equal(vxlanDeviceName(1), 'weft.1');
    assert.equal(vxlanDeviceName(16777215), 'weft.16777215');
  });
});
