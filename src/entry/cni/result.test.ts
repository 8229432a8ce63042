import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { formatIP, formatIPNet, v4, v6 } from '../../lib/ip.js';
import { CniCode, CniError } from './errors.js';
import {
  type CniResult,
  type CniVersion,
  compareVersions,
  decodeResult,
  encodeResult,
  restrictTo,
  SUPPORTED_VERSIONS,
} from './result.js';

const arbAddr = fc.oneof(
  fc.integer({ min: 0, max: 0xffffffff }).map((n) => formatIP(v4(n))),
  fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }).map((n) => formatIP(v6(n))),
);
const arbCidr = fc.oneof(
  fc
    .tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 32 }))
    .map(([n, len]) => formatIPNet({ ip: v4(n), len })),
  fc
    .tuple(fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }), fc.integer({ min: 0, max: 128 }))
    .map(([n, len]) => formatIPNet({ ip: v6(n), len })),
);
const arbName = fc.stringMatching(/^[a-z][a-z0-9]{0,14}$/);
const arbMac = fc
  .array(fc.integer({ min: 0, max: 255 }), { minLength: 6, maxLength: 6 })
  .map((b) => b.map((x) => x.toString(16).padStart(2, '0')).join(':'));
const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });

const arbInterface = fc
  .record({
    name: arbName,
    mac: opt(arbMac),
    mtu: opt(fc.integer({ min: 576, max: 9000 })),
    sandbox: opt(fc.constantFrom('/run/netns/a', '/proc/1/ns/net')),
    socketPath: opt(fc.constant('/run/vhost.sock')),
    pciID: opt(fc.constant('0000:00:1f.6')),
  })
  .map(dropUndefined);

const arbResult: fc.Arbitrary<CniResult> = fc
  .array(arbInterface, { minLength: 0, maxLength: 3 })
  .chain((interfaces) =>
    fc.record({
      interfaces: fc.constant(interfaces),
      ips: fc.array(
        fc
          .record({
            address: arbCidr,
            gateway: opt(arbAddr),
            interface:
              interfaces.length > 0
                ? opt(fc.integer({ min: 0, max: interfaces.length - 1 }))
                : fc.constant(undefined),
          })
          .map(dropUndefined),
        { maxLength: 3 },
      ),
      routes: fc.array(
        fc
          .record({
            dst: arbCidr,
            gw: opt(arbAddr),
            mtu: opt(fc.integer({ min: 576, max: 9000 })),
            advmss: opt(fc.integer({ min: 0, max: 9000 })),
            priority: opt(fc.integer({ min: 0, max: 1000 })),
            table: opt(fc.integer({ min: 0, max: 255 })),
            scope: opt(fc.integer({ min: 0, max: 255 })),
          })
          .map(dropUndefined),
        { maxLength: 3 },
      ),
      dns: fc
        .record({
          nameservers: opt(fc.array(arbAddr, { minLength: 1, maxLength: 2 })),
          domain: opt(fc.constant('example.org')),
          search: opt(fc.array(fc.constant('svc.local'), { minLength: 1, maxLength: 2 })),
          options: opt(fc.array(fc.constant('ndots:5'), { minLength: 1, maxLength: 1 })),
        })
        .map(dropUndefined),
    }),
  )
  .map((r) => ({ ...r }) as CniResult);

function dropUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}
const arbVersion = fc.constantFrom(...SUPPORTED_VERSIONS);
const wire = (r: CniResult, v: CniVersion) => JSON.parse(JSON.stringify(encodeResult(r, v))) as unknown;

describe('CNI result versions', () => {
  test('a result survives a round trip through every version, minus what the version lacks', () => {
    fc.assert(
      fc.property(arbResult, arbVersion, (r, v) => {
        const back = decodeResult(wire(r, v), v);
        assert.deepEqual(back, restrictTo(r, v));
        // Encoding what came back gives the same bytes again.
        assert.deepEqual(encodeResult(back, v), encodeResult(r, v));
      }),
      { numRuns: 300 },
    );
  });

  test('1.1.0 keeps everything', () => {
    fc.assert(
      fc.property(arbResult, (r) => {
        assert.deepEqual(decodeResult(wire(r, '1.1.0'), '1.1.0'), r);
      }),
    );
  });

  test('before 1.0.0 every IP says its family; from 1.0.0 none does', () => {
    fc.assert(
      fc.property(arbResult, arbVersion, (r, v) => {
        const out = encodeResult(r, v) as { cniVersion: string; ips: Record<string, unknown>[] };
        assert.equal(out.cniVersion, v);
        out.ips.forEach((ip, i) => {
          if (compareVersions(v, '1.0.0') < 0) {
            assert.equal(ip.version, r.ips[i]!.address.includes(':') ? '6' : '4');
          } else assert.equal('version' in ip, false);
        });
      }),
    );
  });

  test('1.1-only fields appear only in 1.1.0', () => {
    fc.assert(
      fc.property(arbResult, arbVersion, (r, v) => {
        const out = encodeResult(r, v) as {
          interfaces: Record<string, unknown>[];
          routes: Record<string, unknown>[];
        };
        const v11 = v === '1.1.0';
        out.interfaces.forEach((i, k) => {
          assert.equal('mtu' in i, v11 && r.interfaces[k]!.mtu !== undefined);
          assert.equal('pciID' in i, v11 && r.interfaces[k]!.pciID !== undefined);
        });
        out.routes.forEach((rt, k) => {
          assert.equal('table' in rt, v11 && r.routes[k]!.table !== undefined);
        });
      }),
    );
  });

  test('converting between versions goes through the common shape', () => {
    fc.assert(
      fc.property(arbResult, arbVersion, arbVersion, (r, a, b) => {
        const viaA = decodeResult(wire(r, a), a);
        const direct = restrictTo(r, b);
        // a → b equals going to b directly when a carries at least what b does.
        if (compareVersions(a, b) >= 0 || (a !== '1.1.0' && b !== '1.1.0'))
          assert.deepEqual(restrictTo(viaA, b), direct);
      }),
    );
  });

  test('a known 0.4.0 result reads as expected', () => {
    const r = decodeResult(
      {
        cniVersion: '0.4.0',
        interfaces: [
          { name: 'veth1', mac: 'aa:bb:cc:dd:ee:ff' },
          { name: 'eth0', sandbox: '/run/netns/c' },
        ],
        ips: [{ version: '4', interface: 1, address: '10.88.0.5/24', gateway: '10.88.0.1' }],
        routes: [{ dst: '0.0.0.0/0', gw: '10.88.0.1' }],
        dns: { nameservers: ['10.88.0.1'] },
      },
      '0.4.0',
    );
    assert.deepEqual(r, {
      interfaces: [
        { name: 'veth1', mac: 'aa:bb:cc:dd:ee:ff' },
        { name: 'eth0', sandbox: '/run/netns/c' },
      ],
      ips: [{ address: '10.88.0.5/24', gateway: '10.88.0.1', interface: 1 }],
      routes: [{ dst: '0.0.0.0/0', gw: '10.88.0.1' }],
      dns: { nameservers: ['10.88.0.1'] },
    });
  });

  test('a malformed prevResult is a decoding failure (6)', () => {
    const bad: unknown[] = [
      'x',
      [],
      { ips: [{ address: '10.0.0.1' }] }, // no prefix length
      { ips: [{ address: '10.0.0.1/24', gateway: 'nope' }] },
      { ips: [{ address: '10.0.0.1/24', interface: 0 }] }, // no interface 0
      { interfaces: [{ mac: 'aa' }] }, // no name
      { routes: [{ gw: '10.0.0.1' }] },
      { dns: { nameservers: 'x' } },
      { interfaces: 'eth0' },
    ];
    for (const b of bad) {
      assert.throws(
        () => decodeResult(b, '1.0.0'),
        (e: unknown) => e instanceof CniError && e.code === CniCode.DecodingFailure,
        JSON.stringify(b),
      );
    }
  });

  test('versions compare numerically', () => {
    assert.equal(compareVersions('0.3.1', '0.4.0'), -1);
    assert.equal(compareVersions('1.0.0', '0.10.0'), 1);
    assert.equal(compareVersions('1.1', '1.1.0'), 0);
    assert.throws(() => compareVersions('one', '1.0.0'), CniError);
    fc.assert(
      fc.property(arbVersion, arbVersion, (a, b) => {
        assert.equal(compareVersions(a, b) + compareVersions(b, a), 0);
        assert.equal(compareVersions(a, b) === 0, a === b);
      }),
    );
  });
});
