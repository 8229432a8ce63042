import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isWeftError, type WeftError } from '../../lib/errors.js';
import { formatIP, formatIPNet, parseCidr, parseIP, v4 } from '../../lib/ip.js';
import { canonicalSubnet, isReserved, rangeContains, type SubnetConfig, usableRange } from './subnet.js';

/** The canonical form as strings, for readable vectors. */
function show(config: SubnetConfig) {
  const c = canonicalSubnet(config);
  return {
    subnet: formatIPNet(c.subnet),
    gateway: formatIP(c.gateway),
    range: `${formatIP(c.range.start)}-${formatIP(c.range.end)}`,
    family: c.family,
  };
}

function throwsCode(fn: () => unknown, code: WeftError['code'], ...words: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isWeftError(e, code), `expected ${code}, got ${String(e)}`);
    for (const w of words) assert.ok(e.message.includes(w), `"${e.message}" should mention ${w}`);
    return true;
  });
}

describe('canonicalSubnet', () => {
  test('IPv4 defaults: gateway is the first usable address, network and broadcast reserved', () => {
    assert.deepEqual(show({ subnet: '172.18.0.0/16' }), {
      subnet: '172.18.0.0/16',
      gateway: '172.18.0.1',
      range: '172.18.0.1-172.18.255.254',
      family: 4,
    });
    assert.deepEqual(show({ subnet: '10.0.0.0/30' }).range, '10.0.0.1-10.0.0.2');
  });

  test('IPv4 /31 and /32 reserve nothing', () => {
    assert.deepEqual(show({ subnet: '10.0.0.0/31' }), {
      subnet: '10.0.0.0/31',
      gateway: '10.0.0.0',
      range: '10.0.0.0-10.0.0.1',
      family: 4,
    });
    assert.deepEqual(show({ subnet: '10.0.0.7/32' }).range, '10.0.0.7-10.0.0.7');
  });

  test('IPv6 reserves only the subnet-router anycast address', () => {
    assert.deepEqual(show({ subnet: 'fd00:1::/64' }), {
      subnet: 'fd00:1::/64',
      gateway: 'fd00:1::1',
      range: 'fd00:1::1-fd00:1::ffff:ffff:ffff:ffff',
      family: 6,
    });
    assert.equal(show({ subnet: 'fd00::/126' }).range, 'fd00::1-fd00::3');
    assert.equal(show({ subnet: 'fd00::/127' }).range, 'fd00::-fd00::1');
  });

  test('explicit gateway, anywhere usable in the subnet', () => {
    assert.equal(show({ subnet: '10.1.0.0/24', gateway: '10.1.0.254' }).gateway, '10.1.0.254');
    assert.equal(show({ subnet: 'fd00::/64', gateway: 'fd00::ffff' }).gateway, 'fd00::ffff');
    const c = canonicalSubnet({ subnet: parseCidr('10.1.0.0/24'), gateway: parseIP('10.1.0.9') });
    assert.equal(formatIP(c.gateway), '10.1.0.9');
  });

  test('ip-range bounds the dynamic range, reserved ends trimmed', () => {
    assert.deepEqual(show({ subnet: '172.28.0.0/16', ipRange: '172.28.5.0/24' }), {
      subnet: '172.28.0.0/16',
      gateway: '172.28.0.1',
      range: '172.28.5.0-172.28.5.255',
      family: 4,
    });
    assert.equal(show({ subnet: '10.0.0.0/24', ipRange: '10.0.0.0/29' }).range, '10.0.0.1-10.0.0.7');
    assert.equal(show({ subnet: '10.0.0.0/24', ipRange: '10.0.0.248/29' }).range, '10.0.0.248-10.0.0.254');
    assert.equal(show({ subnet: '10.0.0.0/24', ipRange: '10.0.0.0/24' }).range, '10.0.0.1-10.0.0.254');
    assert.equal(show({ subnet: 'fd00::/64', ipRange: 'fd00::/112' }).range, 'fd00::1-fd00::ffff');
    assert.equal(
      formatIPNet(canonicalSubnet({ subnet: '10.0.0.0/24', ipRange: '10.0.0.8/29' }).ipRange!),
      '10.0.0.8/29',
    );
    assert.equal(canonicalSubnet({ subnet: '10.0.0.0/24' }).ipRange, undefined);
  });

  test('host bits set: INVALID suggesting the network', () => {
    throwsCode(
      () => canonicalSubnet({ subnet: '10.1.2.3/16' }),
      'INVALID',
      '10.1.2.3/16',
      'did you mean 10.1.0.0/16',
    );
    throwsCode(
      () => canonicalSubnet({ subnet: { ip: parseIP('fd00::1'), len: 64 } }),
      'INVALID',
      'fd00::/64',
    );
    throwsCode(
      () => canonicalSubnet({ subnet: '10.0.0.0/16', ipRange: '10.0.5.1/24' }),
      'INVALID',
      'ip range',
      'did you mean 10.0.5.0/24',
    );
    assert.throws(
      () => canonicalSubnet({ subnet: '192.168.1.77/24' }),
      (e: unknown) => isWeftError(e, 'INVALID') && e.details.suggested === '192.168.1.0/24',
    );
  });

  test('gateway outside the subnet: INVALID naming both', () => {
    throwsCode(
      () => canonicalSubnet({ subnet: '10.0.0.0/24', gateway: '10.0.1.1' }),
      'INVALID',
      '10.0.1.1',
      '10.0.0.0/24',
    );
    throwsCode(
      () => canonicalSubnet({ subnet: '10.0.0.0/24', gateway: 'fd00::1' }),
      'INVALID',
      'fd00::1',
      '10.0.0.0/24',
    );
  });

  test('gateway on a reserved address: INVALID', () => {
    throwsCode(
      () => canonicalSubnet({ subnet: '10.0.0.0/24', gateway: '10.0.0.0' }),
      'INVALID',
      'network address',
    );
    throwsCode(
      () => canonicalSubnet({ subnet: '10.0.0.0/24', gateway: '10.0.0.255' }),
      'INVALID',
      'broadcast',
    );
    throwsCode(() => canonicalSubnet({ subnet: 'fd00::/64', gateway: 'fd00::' }), 'INVALID', 'anycast');
  });

  test('ip-range outside or straddling the subnet, or without a usable address: INVALID naming both', () => {
    throwsCode(
      () => canonicalSubnet({ subnet: '10.0.0.0/24', ipRange: '10.0.1.0/28' }),
      'INVALID',
      '10.0.1.0/28',
      '10.0.0.0/24',
    );
    throwsCode(
      () => canonicalSubnet({ subnet: '10.0.0.0/24', ipRange: '10.0.0.0/23' }),
      'INVALID',
      '10.0.0.0/23',
    );
    throwsCode(
      () => canonicalSubnet({ subnet: '10.0.0.0/24', ipRange: 'fd00::/120' }),
      'INVALID',
      'fd00::/120',
    );
    throwsCode(
      () => canonicalSubnet({ subnet: '10.0.0.0/24', ipRange: '10.0.0.255/32' }),
      'INVALID',
      'no usable',
    );
  });

  test('garbage: INVALID naming the field', () => {
    throwsCode(() => canonicalSubnet({ subnet: 'nope' }), 'INVALID', 'subnet', 'nope');
    throwsCode(() => canonicalSubnet({ subnet: '10.0.0.0' }), 'INVALID', 'subnet', 'CIDR');
    throwsCode(() => canonicalSubnet({ subnet: '10.0.0.0/33' }), 'INVALID', 'subnet');
    throwsCode(() => canonicalSubnet({ subnet: { ip: parseIP('10.0.0.0'), len: 40 } }), 'INVALID', 'subnet');
    throwsCode(() => canonicalSubnet({ subnet: '10.0.0.0/8', gateway: '10.0.0' }), 'INVALID', 'gateway');
    throwsCode(() => canonicalSubnet({ subnet: '10.0.0.0/8', ipRange: 'x/8' }), 'INVALID', 'ip range');
  });

  test('property: gateway and range are usable addresses of the subnet', () => {
    const arb = fc.record({
      value: fc.integer({ min: 0, max: 0xffffffff }),
      len: fc.integer({ min: 0, max: 32 }),
    });
    fc.assert(
      fc.property(arb, ({ value, len }) => {
        const subnet = { ip: v4(len === 0 ? 0 : (value & (0xffffffff << (32 - len))) >>> 0), len };
        const c = canonicalSubnet({ subnet });
        assert.ok(rangeContains(c.range, c.gateway));
        assert.ok(!isReserved(c.subnet, c.range.start) && !isReserved(c.subnet, c.range.end));
        assert.deepEqual(c.range, usableRange(c.subnet));
      }),
    );
  });
});
