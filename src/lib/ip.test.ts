import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isWeftError } from './errors.js';
import {
  addIP,
  compareIP,
  containsIP,
  containsNet,
  formatIP,
  formatIPNet,
  type IPAddr,
  type IPNet,
  ipEqual,
  ipFromBytes,
  ipToBytes,
  lastIP,
  maskIP,
  networkOf,
  nextNet,
  overlaps,
  parseCidr,
  parseIP,
  parseIPNet,
  parseIPv4,
  sizeOf,
  tryParseIP,
  v4,
  v6,
} from './ip.js';

const MAX128 = (1n << 128n) - 1n;
const bitsLen = (n: IPNet): number => (n.ip.family === 4 ? 32 : 128);

const arbV4 = fc.integer({ min: 0, max: 0xffffffff }).map(v4);
// Mix uniform 128-bit values with ones full of zero groups, so `::` compression is exercised.
const arbGroup = fc.oneof(fc.constant(0), fc.constant(0), fc.integer({ min: 0, max: 0xffff }));
const arbV6 = fc.oneof(
  fc.bigInt({ min: 0n, max: MAX128 }).map(v6),
  fc
    .array(arbGroup, { minLength: 8, maxLength: 8 })
    .map((g) => v6(g.reduce((n, x) => (n << 16n) | BigInt(x), 0n))),
);
const arbIP: fc.Arbitrary<IPAddr> = fc.oneof(arbV4, arbV6);
/** A network (host bits cleared) of either family. */
const arbNet: fc.Arbitrary<IPNet> = arbIP.chain((ip) =>
  fc.integer({ min: 0, max: ip.family === 4 ? 32 : 128 }).map((len) => networkOf({ ip, len })),
);
/** An address inside `n`. */
const inside = (n: IPNet): fc.Arbitrary<IPAddr> =>
  fc.bigInt({ min: 0n, max: sizeOf(n) - 1n }).map((off) => addIP(n.ip, off));

const throwsInvalid = (fn: () => unknown, re?: RegExp) =>
  assert.throws(fn, (e: unknown) => {
    assert.ok(isWeftError(e, 'INVALID'), `expected INVALID, got ${String(e)}`);
    if (re) assert.match(e.message, re);
    return true;
  });

describe('ip: parse and format', () => {
  test('parseIP(formatIP(x)) == x for IPv4 and IPv6', () => {
    fc.assert(
      fc.property(arbIP, (ip) => {
        const back = parseIP(formatIP(ip));
        assert.equal(back.family, ip.family);
        assert.equal(back.value, ip.value);
      }),
    );
  });

  test('formatIP(parseIP(s)) is a fixed point for any textual IPv6 form', () => {
    fc.assert(
      fc.property(fc.ipV6(), (s) => {
        const ip = parseIP(s);
        const canon = formatIP(ip);
        assert.equal(formatIP(parseIP(canon)), canon);
        assert.ok(ipEqual(parseIP(canon), ip));
      }),
    );
  });

  test('canonical IPv6 text follows RFC 5952 (lowercase, no leading zeros, longest zero run)', () => {
    fc.assert(
      fc.property(arbV6, (ip) => {
        const s = formatIP(ip);
        assert.equal(s, s.toLowerCase());
        assert.ok((s.match(/::/g) ?? []).length <= 1, s);
        for (const g of s.split(':')) if (g !== '') assert.match(g, /^(0|[1-9a-f][0-9a-f]{0,3})$/, s);
        // `::` never stands for a single group (RFC 5952 4.2.2).
        if (s.includes('::')) {
          const written = s.split('::').flatMap((h) => (h === '' ? [] : h.split(':'))).length;
          assert.ok(8 - written >= 2, s);
        }
      }),
    );
  });

  test('RFC 5952 vectors', () => {
    const vectors: [string, string][] = [
      ['2001:db8::1', '2001:db8::1'],
      ['::', '::'],
      ['::1', '::1'],
      ['1::', '1::'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['2001:DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
      ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'],
      ['fe80::0001', 'fe80::1'],
      ['0:0:0:0:0:0:0:0', '::'],
      ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ];
    for (const [input, want] of vectors) assert.equal(formatIP(parseIP(input)), want, input);
  });

  test('IPv4 vectors and the embedded IPv4 tail', () => {
    assert.deepEqual(parseIP('1.2.3.4'), v4(0x01020304));
    assert.deepEqual(parseIP('0.0.0.0'), v4(0));
    assert.deepEqual(parseIP('255.255.255.255'), v4(0xffffffff));
    assert.equal(formatIP(v4(0xc0000201)), '192.0.2.1');
    assert.deepEqual(parseIP('::ffff:1.2.3.4'), v6(0xffff01020304n));
    assert.deepEqual(parseIP('64:ff9b::192.0.2.33'), v6(0x0064ff9b0000000000000000c0000221n));
    assert.deepEqual(parseIPv4('10.0.0.1'), v4(0x0a000001));
    throwsInvalid(() => parseIPv4('::1'));
  });

  test('rejects malformed addresses with INVALID', () => {
    for (const bad of [
      '1.2.3',
      '01.2.3.4',
      '256.0.0.1',
      '1.2.3.4.5',
      '1.2.3.-4',
      ' 1.2.3.4',
      '1:2:3:4:5:6:7:8:9',
      ':::',
      '1::2::3',
      ':1:2:3:4:5:6:7',
      '1:2:3:4:5:6:7',
      '12345::',
      'g::1',
      'fe80::1%eth0',
      '::ffff:1.2.3',
      '::ffff:256.1.1.1',
      '1.2.3.4::',
      '',
      ':',
    ]) {
      throwsInvalid(() => parseIP(bad), /is not an IP address/);
      assert.equal(tryParseIP(bad), undefined, bad);
    }
  });

  test('random strings never crash the parser: an address or INVALID', () => {
    const chars = fc.constantFrom(...'0123456789abcdefABCDEF:.x/% '.split(''));
    fc.assert(
      fc.property(fc.string({ unit: chars, maxLength: 48 }), (s) => {
        const ip = tryParseIP(s);
        if (ip === undefined) throwsInvalid(() => parseIP(s));
        else assert.ok(ipEqual(parseIP(formatIP(ip)), ip));
      }),
    );
  });

  test('ipToBytes / ipFromBytes round trip, network order', () => {
    fc.assert(
      fc.property(arbIP, (ip) => {
        const b = ipToBytes(ip);
        assert.equal(b.length, ip.family === 4 ? 4 : 16);
        assert.ok(ipEqual(ipFromBytes(b), ip));
        // From a view into a bigger buffer too (decoded attributes are subarrays).
        const big = new Uint8Array(b.length + 7);
        big.set(b, 3);
        assert.ok(ipEqual(ipFromBytes(big.subarray(3, 3 + b.length)), ip));
      }),
    );
    assert.deepEqual([...ipToBytes(parseIP('192.0.2.1'))], [192, 0, 2, 1]);
    assert.deepEqual([...ipToBytes(parseIP('2001:db8::1'))].slice(0, 4), [0x20, 0x01, 0x0d, 0xb8]);
    throwsInvalid(() => ipFromBytes(new Uint8Array(5)));
  });

  test('compareIP orders like the integer values, families apart', () => {
    fc.assert(
      fc.property(arbIP, arbIP, (a, b) => {
        const c = compareIP(a, b);
        const r = compareIP(b, a);
        assert.ok((c < 0 && r > 0) || (c > 0 && r < 0) || (c === 0 && r === 0), `${c} vs ${r}`);
        if (a.family === b.family) assert.equal(c === 0, a.value === b.value);
        else assert.notEqual(c, 0);
      }),
    );
  });
});

describe('ip: prefixes', () => {
  test('parseIPNet keeps host bits; bare addresses are host prefixes', () => {
    assert.equal(formatIPNet(parseIPNet('10.1.2.3/24')), '10.1.2.3/24');
    assert.equal(formatIPNet(parseIPNet('10.1.2.3')), '10.1.2.3/32');
    assert.equal(formatIPNet(parseIPNet('2001:db8::1')), '2001:db8::1/128');
    for (const bad of ['10.0.0.0/33', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/1.5', '::/129', '::/a']) {
      throwsInvalid(() => parseIPNet(bad), /prefix length/);
    }
  });

  test('parseCidr rejects host bits, suggesting the network', () => {
    throwsInvalid(() => parseCidr('10.1.2.3/16'), /did you mean 10\.1\.0\.0\/16\?/);
    throwsInvalid(() => parseCidr('2001:db8::1/64'), /did you mean 2001:db8::\/64\?/);
    throwsInvalid(() => parseCidr('10.0.0.0'), /not a CIDR/);
    fc.assert(
      fc.property(arbNet, (n) => {
        const back = parseCidr(formatIPNet(n));
        assert.equal(back.len, n.len);
        assert.ok(ipEqual(back.ip, n.ip));
      }),
    );
    fc.assert(
      fc.property(arbIP, fc.nat(128), (ip, l) => {
        const len = l % (ip.family === 4 ? 33 : 129);
        const text = formatIPNet({ ip, len });
        if (ipEqual(maskIP(ip, len), ip)) {
          parseCidr(text);
        } else {
          throwsInvalid(
            () => parseCidr(text),
            new RegExp(`did you mean ${formatIPNet(networkOf({ ip, len }))}`),
          );
        }
      }),
    );
  });

  test('maskIP clears exactly the host bits and is idempotent', () => {
    fc.assert(
      fc.property(arbIP, fc.nat(128), (ip, l) => {
        const bits = ip.family === 4 ? 32 : 128;
        const len = l % (bits + 1);
        const m = maskIP(ip, len);
        assert.ok(ipEqual(maskIP(m, len), m));
        const host = BigInt(ip.value) - BigInt(m.value);
        assert.ok(host >= 0n && host < 1n << BigInt(bits - len));
        assert.ok(ipEqual(maskIP(ip, bits), ip));
        assert.equal(BigInt(maskIP(ip, 0).value), 0n);
      }),
    );
  });

  test('a prefix contains its first, last and any inner address, not the next one', () => {
    fc.assert(
      fc.property(
        arbNet.chain((n) => fc.tuple(fc.constant(n), inside(n))),
        ([n, x]) => {
          assert.ok(containsIP(n, n.ip));
          assert.ok(containsIP(n, lastIP(n)));
          assert.ok(containsIP(n, x));
          assert.equal(BigInt(lastIP(n).value) - BigInt(n.ip.value), sizeOf(n) - 1n);
          if (n.len > 0) assert.ok(!containsIP(n, addIP(lastIP(n), 1)));
        },
      ),
    );
    assert.equal(formatIP(lastIP(parseCidr('10.0.0.0/8'))), '10.255.255.255');
    assert.equal(formatIP(lastIP(parseCidr('0.0.0.0/0'))), '255.255.255.255');
    assert.equal(formatIP(lastIP(parseCidr('2001:db8::/64'))), '2001:db8::ffff:ffff:ffff:ffff');
    assert.ok(!containsIP(parseCidr('0.0.0.0/0'), parseIP('::1')), 'families never contain each other');
  });

  test('the next prefix follows without overlap', () => {
    fc.assert(
      fc.property(arbNet, (n) => {
        fc.pre(n.len > 0);
        const next = nextNet(n);
        assert.equal(next.len, n.len);
        assert.ok(ipEqual(maskIP(next.ip, next.len), next.ip), 'next is a network');
        assert.ok(!overlaps(n, next));
        assert.ok(!overlaps(next, n));
        // Adjacent, unless the address space wrapped around.
        const wrapped = ipEqual(lastIP(n), n.ip.family === 4 ? v4(0xffffffff) : v6(MAX128));
        if (!wrapped) assert.ok(ipEqual(addIP(lastIP(n), 1), next.ip));
      }),
    );
    assert.equal(formatIPNet(nextNet(parseCidr('10.244.0.0/24'))), '10.244.1.0/24');
    assert.equal(formatIPNet(nextNet(parseCidr('10.244.255.0/24'))), '10.245.0.0/24');
  });

  test('overlaps is symmetric; containsNet implies overlaps; families never overlap', () => {
    const pair = fc.oneof(
      fc.tuple(arbNet, arbNet),
      // Pairs sharing a base, so nesting and overlap actually happen.
      arbNet.chain((n) =>
        fc
          .tuple(inside(n), fc.nat(128))
          .map(([x, l]): [IPNet, IPNet] => [n, networkOf({ ip: x, len: l % (bitsLen(n) + 1) })]),
      ),
    );
    fc.assert(
      fc.property(pair, ([a, b]) => {
        assert.equal(overlaps(a, b), overlaps(b, a));
        if (containsNet(a, b)) {
          assert.ok(overlaps(a, b));
          assert.ok(containsIP(a, b.ip) && containsIP(a, lastIP(b)));
        }
        if (containsNet(a, b) && containsNet(b, a)) assert.ok(a.len === b.len && ipEqual(a.ip, b.ip));
        if (a.ip.family !== b.ip.family) assert.ok(!overlaps(a, b) && !containsNet(a, b));
        // Overlap means one contains the other (prefixes nest or are disjoint).
        assert.equal(overlaps(a, b), containsNet(a, b) || containsNet(b, a));
      }),
    );
  });

  test('sizeOf', () => {
    assert.equal(sizeOf(parseCidr('10.0.0.0/24')), 256n);
    assert.equal(sizeOf(parseCidr('0.0.0.0/0')), 1n << 32n);
    assert.equal(sizeOf(parseCidr('::/0')), 1n << 128n);
  });
});
