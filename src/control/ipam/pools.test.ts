import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isWeftError, type WeftError } from '../../lib/errors.js';
import { addIP, formatIPNet, type IPNet, overlaps, parseCidr, v4 } from '../../lib/ip.js';
import {
  checkSubnetFree,
  DEFAULT_POOLS,
  DOCKER_DEFAULT_BRIDGE,
  parseAddressPool,
  pickSubnet,
} from './pools.js';

const nets = (...s: string[]): IPNet[] => s.map(parseCidr);
const pick = (opts: Parameters<typeof pickSubnet>[0] = {}): string => formatIPNet(pickSubnet(opts));

function throwsCode(fn: () => unknown, code: WeftError['code'], ...words: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isWeftError(e, code), `expected ${code}, got ${String(e)}`);
    for (const w of words) assert.ok(e.message.includes(w), `"${e.message}" should mention ${w}`);
    return true;
  });
}

describe('default pools', () => {
  test("Docker's defaults without 172.17.0.0/16", () => {
    assert.equal(DEFAULT_POOLS.length, 15);
    assert.equal(formatIPNet(DEFAULT_POOLS[0]!.base), '172.18.0.0/16');
    assert.equal(formatIPNet(DEFAULT_POOLS[13]!.base), '172.31.0.0/16');
    assert.deepEqual(
      { base: formatIPNet(DEFAULT_POOLS[14]!.base), size: DEFAULT_POOLS[14]!.size },
      { base: '192.168.0.0/16', size: 20 },
    );
    for (const p of DEFAULT_POOLS) assert.ok(!overlaps(p.base, DOCKER_DEFAULT_BRIDGE));
  });
});

describe('pickSubnet', () => {
  test('first free subnet of the default pools', () => {
    assert.equal(pick(), '172.18.0.0/16');
    assert.equal(pick({ inUse: nets('172.18.0.0/16', '172.19.0.0/16') }), '172.20.0.0/16');
  });

  test('never 172.17.0.0/16, even with everything else of 172.16.0.0/12 taken', () => {
    const inUse = nets('172.16.0.0/16', ...Array.from({ length: 14 }, (_, i) => `172.${18 + i}.0.0/16`));
    assert.equal(pick({ inUse }), '192.168.0.0/20');
  });

  test('avoids host routes, of any length, and ignores the default route', () => {
    const avoid = nets('0.0.0.0/0', '172.18.5.0/24', '172.19.0.0/16', '172.16.0.0/12');
    assert.equal(pick({ avoid: avoid.slice(0, 3) }), '172.20.0.0/16');
    assert.equal(pick({ avoid }), '192.168.0.0/20');
    assert.equal(pick({ avoid: [...avoid, ...nets('192.168.1.77/32')] }), '192.168.16.0/20');
    // A route with host bits set (as a kernel dump can show) still counts.
    assert.equal(pick({ avoid: [{ ip: parseCidr('172.18.9.9/32').ip, len: 16 }] }), '172.19.0.0/16');
  });

  test('in-use networks may be named; both kinds are avoided', () => {
    const inUse = [{ name: 'front', subnet: parseCidr('172.18.0.0/16') }, parseCidr('172.19.128.0/17')];
    assert.equal(pick({ inUse }), '172.20.0.0/16');
  });

  test('custom pools and a requested size', () => {
    const pools = [parseAddressPool({ base: '10.10.0.0/16', size: 24 })];
    assert.equal(pick({ pools }), '10.10.0.0/24');
    assert.equal(pick({ pools, inUse: nets('10.10.0.0/23', '10.10.2.128/25') }), '10.10.3.0/24');
    assert.equal(pick({ pools, size: 28, inUse: nets('10.10.0.0/28') }), '10.10.0.16/28');
    // Pools smaller than the requested size are skipped.
    assert.equal(pick({ size: 18 }), '172.18.0.0/18');
    assert.equal(
      pick({ size: 12, pools: [...pools, parseAddressPool({ base: '10.0.0.0/8', size: 16 })] }),
      '10.0.0.0/12',
    );
  });

  test('IPv6 pools: a /48 split into /64s, jumping over big conflicts without enumerating', () => {
    const pools = [parseAddressPool({ base: 'fd00:1::/48', size: 64 })];
    assert.equal(pick({ pools }), 'fd00:1::/64');
    assert.equal(pick({ pools, inUse: nets('fd00:1::/49') }), 'fd00:1:0:8000::/64');
    assert.equal(pick({ pools: [...pools, ...DEFAULT_POOLS], family: 4 }), '172.18.0.0/16');
    assert.equal(pick({ pools: [...DEFAULT_POOLS, ...pools], family: 6 }), 'fd00:1::/64');
    const t0 = performance.now();
    throwsCode(
      () =>
        pickSubnet({ pools: [parseAddressPool({ base: 'fd00::/8', size: 64 })], avoid: nets('fc00::/7') }),
      'BUSY',
    );
    assert.ok(performance.now() - t0 < 50);
  });

  test('every pool exhausted: BUSY', () => {
    throwsCode(() => pickSubnet({ avoid: nets('172.16.0.0/12', '192.168.0.0/16') }), 'BUSY', 'no free');
    throwsCode(() => pickSubnet({ size: 8 }), 'BUSY', '/8');
    throwsCode(() => pickSubnet({ family: 6 }), 'BUSY', 'IPv6');
    const pools = [parseAddressPool({ base: '10.0.0.0/30', size: 31 })];
    throwsCode(() => pickSubnet({ pools, inUse: nets('10.0.0.0/31', '10.0.0.2/32') }), 'BUSY');
  });

  test('bad pools and sizes: INVALID', () => {
    throwsCode(() => parseAddressPool({ base: '10.0.0.0/16', size: 8 }), 'INVALID', '10.0.0.0/16');
    throwsCode(() => parseAddressPool({ base: '10.0.0.0/16', size: 33 }), 'INVALID');
    throwsCode(() => parseAddressPool({ base: '10.0.0.1/16', size: 24 }), 'INVALID', 'host bits');
    throwsCode(() => pickSubnet({ size: 129 }), 'INVALID');
    throwsCode(() => pickSubnet({ size: 1.5 }), 'INVALID');
  });

  test('property: the pick lies in a pool, has the size, overlaps nothing in use nor routed; BUSY only if brute force agrees', () => {
    const pools = [
      parseAddressPool({ base: '10.0.0.0/24', size: 28 }),
      parseAddressPool({ base: '10.1.0.0/26', size: 28 }),
    ];
    const arbNet = fc
      .record({
        base: fc.constantFrom(0x0a000000, 0x0a010000),
        off: fc.nat(255),
        len: fc.integer({ min: 22, max: 32 }),
      })
      .map(({ base, off, len }) => ({ ip: v4(base + off), len }));
    fc.assert(
      fc.property(fc.array(arbNet, { maxLength: 12 }), fc.array(arbNet, { maxLength: 6 }), (inUse, avoid) => {
        const candidates = pools.flatMap((p) =>
          Array.from({ length: 2 ** (p.size - p.base.len) }, (_, i) => ({
            ip: addIP(p.base.ip, i * 16),
            len: 28,
          })),
        );
        const free = candidates.filter((c) => ![...inUse, ...avoid].some((n) => overlaps(n, c)));
        try {
          const got = pickSubnet({ pools, inUse, avoid });
          assert.equal(formatIPNet(got), formatIPNet(free[0]!));
        } catch (e) {
          if (e instanceof assert.AssertionError) throw e;
          assert.ok(isWeftError(e, 'BUSY') && free.length === 0, String(e));
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('checkSubnetFree', () => {
  test('passes when nothing overlaps', () => {
    checkSubnetFree(parseCidr('10.5.0.0/16'), nets('10.4.0.0/16', '10.6.0.0/16', 'fd00::/8'));
    checkSubnetFree(parseCidr('10.5.0.0/16'), []);
  });

  test('CONFLICT naming the overlapping network, wider or narrower', () => {
    throwsCode(
      () => checkSubnetFree(parseCidr('10.5.0.0/16'), nets('10.0.0.0/8')),
      'CONFLICT',
      '10.5.0.0/16',
      '10.0.0.0/8',
    );
    throwsCode(
      () =>
        checkSubnetFree(parseCidr('10.5.0.0/16'), [{ name: 'backend', subnet: parseCidr('10.5.3.0/24') }]),
      'CONFLICT',
      'backend',
      '10.5.3.0/24',
    );
    throwsCode(() => checkSubnetFree(parseCidr('fd00::/64'), nets('fd00::/48')), 'CONFLICT', 'fd00::/48');
  });
});
