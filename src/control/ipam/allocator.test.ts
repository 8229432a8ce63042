import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isWeftError, type WeftError } from '../../lib/errors.js';
import { addIP, containsIP, formatIP, type IPAddr, ipEqual, parseIP } from '../../lib/ip.js';
import { addressOf, allocate, type Pool, release } from './allocator.js';
import { MemoryIpamStore } from './store.js';
import { canonicalSubnet, isReserved, rangeContains, type SubnetConfig } from './subnet.js';

const pool = (config: SubnetConfig, id = 'p'): Pool => ({ id, ...canonicalSubnet(config) });
const ip = parseIP;

function throwsCode(fn: () => unknown, code: WeftError['code'], ...words: string[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isWeftError(e, code), `expected ${code}, got ${String(e)}`);
    for (const w of words) assert.ok(e.message.includes(w), `"${e.message}" should mention ${w}`);
    return true;
  });
}

/** Allocate for owners a0, a1, … and return the addresses as strings. */
function fill(p: Pool, store: MemoryIpamStore, n: number, prefix = 'a'): string[] {
  return Array.from({ length: n }, (_, i) => formatIP(allocate(p, store, { owner: `${prefix}${i}` })));
}

describe('allocate', () => {
  test('hands out addresses in order, skipping the gateway', () => {
    const p = pool({ subnet: '10.0.0.0/24' });
    const s = new MemoryIpamStore();
    assert.deepEqual(fill(p, s, 3), ['10.0.0.2', '10.0.0.3', '10.0.0.4']);
    assert.equal(s.ownerOf('p', ip('10.0.0.3')), 'a1');
    assert.equal(formatIP(s.lastAllocated('p')!), '10.0.0.4');
  });

  test('a gateway in the middle of the range is skipped', () => {
    const p = pool({ subnet: '10.0.0.0/29', gateway: '10.0.0.3' });
    const s = new MemoryIpamStore();
    assert.deepEqual(fill(p, s, 5), ['10.0.0.1', '10.0.0.2', '10.0.0.4', '10.0.0.5', '10.0.0.6']);
  });

  test('exhausting a /30: one address besides the gateway, then BUSY', () => {
    const p = pool({ subnet: '10.9.0.0/30' });
    const s = new MemoryIpamStore();
    assert.deepEqual(fill(p, s, 1), ['10.9.0.2']);
    throwsCode(() => allocate(p, s, { owner: 'x' }), 'BUSY', 'subnet 10.9.0.0/30 has no free address');
  });

  test('exhausting a /29 ip-range inside a larger subnet', () => {
    const p = pool({ subnet: '10.0.0.0/24', ipRange: '10.0.0.8/29' });
    const s = new MemoryIpamStore();
    const got = fill(p, s, 8);
    assert.deepEqual(
      got,
      Array.from({ length: 8 }, (_, i) => `10.0.0.${8 + i}`),
    );
    throwsCode(() => allocate(p, s, { owner: 'x' }), 'BUSY', '10.0.0.0/24', '10.0.0.8/29');
    // Static addresses outside the ip-range still work (Docker's behaviour).
    assert.equal(formatIP(allocate(p, s, { owner: 'x', request: ip('10.0.0.100') })), '10.0.0.100');
  });

  test('exhausting a /29 subnet: never network, broadcast nor gateway', () => {
    const p = pool({ subnet: '192.168.7.0/29' });
    const s = new MemoryIpamStore();
    assert.deepEqual(fill(p, s, 5), [
      '192.168.7.2',
      '192.168.7.3',
      '192.168.7.4',
      '192.168.7.5',
      '192.168.7.6',
    ]);
    throwsCode(() => allocate(p, s, { owner: 'x' }), 'BUSY');
  });

  test('round-robin: a released address is not reused at once; the cursor wraps', () => {
    const p = pool({ subnet: '10.0.0.0/29' }); // usable .2-.6 (gateway .1)
    const s = new MemoryIpamStore();
    fill(p, s, 2); // .2 .3
    assert.deepEqual(release(p, s, { owner: 'a0' }).map(formatIP), ['10.0.0.2']);
    assert.equal(formatIP(allocate(p, s, { owner: 'b' })), '10.0.0.4');
    assert.equal(formatIP(allocate(p, s, { owner: 'c' })), '10.0.0.5');
    assert.equal(formatIP(allocate(p, s, { owner: 'd' })), '10.0.0.6');
    // At the end of the range: wrap, skip the gateway (.1), find the released .2.
    assert.equal(formatIP(allocate(p, s, { owner: 'e' })), '10.0.0.2');
    throwsCode(() => allocate(p, s, { owner: 'f' }), 'BUSY');
    release(p, s, { ip: ip('10.0.0.4') });
    assert.equal(formatIP(allocate(p, s, { owner: 'f' })), '10.0.0.4');
  });

  test('round-robin: the address just released is not handed out next', () => {
    const p = pool({ subnet: '10.0.0.0/24' });
    const s = new MemoryIpamStore();
    fill(p, s, 2); // .2 .3
    release(p, s, { ip: ip('10.0.0.3') });
    assert.equal(formatIP(allocate(p, s, { owner: 'b' })), '10.0.0.4');
  });

  test('a cursor outside the range (the range changed) restarts at the range start', () => {
    const p = pool({ subnet: '10.0.0.0/24', ipRange: '10.0.0.64/26' });
    const s = new MemoryIpamStore();
    s.setLastAllocated('p', ip('10.0.0.200'));
    assert.equal(formatIP(allocate(p, s, { owner: 'a' })), '10.0.0.64');
    s.setLastAllocated('p', ip('fd00::1'));
    assert.equal(formatIP(allocate(p, s, { owner: 'b' })), '10.0.0.65');
  });

  test('requested addresses', () => {
    const p = pool({ subnet: '10.0.0.0/24', ipRange: '10.0.0.128/25' });
    const s = new MemoryIpamStore();
    assert.equal(formatIP(allocate(p, s, { owner: 'web', request: ip('10.0.0.130') })), '10.0.0.130');
    assert.equal(formatIP(allocate(p, s, { owner: 'db', request: ip('10.0.0.5') })), '10.0.0.5');
    // A request does not move the round-robin cursor, and dynamic allocation skips it.
    assert.equal(s.lastAllocated('p'), undefined);
    assert.deepEqual(fill(p, s, 3), ['10.0.0.128', '10.0.0.129', '10.0.0.131']);

    throwsCode(
      () => allocate(p, s, { owner: 'x', request: ip('10.0.0.130') }),
      'CONFLICT',
      '10.0.0.130',
      'web',
    );
    throwsCode(() => allocate(p, s, { owner: 'x', request: ip('10.0.0.1') }), 'CONFLICT', 'gateway');
    throwsCode(() => allocate(p, s, { owner: 'x', request: ip('10.0.0.255') }), 'INVALID', 'broadcast');
    throwsCode(() => allocate(p, s, { owner: 'x', request: ip('10.0.0.0') }), 'INVALID', 'network address');
    throwsCode(
      () => allocate(p, s, { owner: 'x', request: ip('10.0.1.1') }),
      'INVALID',
      '10.0.1.1',
      '10.0.0.0/24',
    );
    throwsCode(() => allocate(p, s, { owner: 'x', request: ip('fd00::1') }), 'INVALID', 'fd00::1');
    assert.equal(s.count('p'), 5, 'failed requests change nothing');
  });

  test('IPv6: the subnet-router anycast address is reserved, the last address is not', () => {
    const p = pool({ subnet: 'fd00::/64' });
    const s = new MemoryIpamStore();
    throwsCode(() => allocate(p, s, { owner: 'x', request: ip('fd00::') }), 'INVALID', 'anycast');
    const last = ip('fd00::ffff:ffff:ffff:ffff');
    assert.ok(ipEqual(allocate(p, s, { owner: 'x', request: last }), last));
    assert.equal(formatIP(allocate(p, s, { owner: 'y' })), 'fd00::2');
  });

  test('IPv6: wraps at the end of a /64 without walking it', () => {
    const p = pool({ subnet: 'fd00:5::/64' });
    const s = new MemoryIpamStore();
    s.setLastAllocated('p', ip('fd00:5::ffff:ffff:ffff:fffe'));
    assert.equal(formatIP(allocate(p, s, { owner: 'a' })), 'fd00:5::ffff:ffff:ffff:ffff');
    assert.equal(formatIP(allocate(p, s, { owner: 'b' })), 'fd00:5::2');
  });

  test('IPv6 /64: 1000 allocations stay fast', (t) => {
    const p = pool({ subnet: 'fd00:abcd::/64' });
    const s = new MemoryIpamStore();
    const t0 = performance.now();
    const got = new Set(fill(p, s, 1000));
    const ms = performance.now() - t0;
    assert.equal(got.size, 1000);
    assert.ok(got.has('fd00:abcd::2') && got.has('fd00:abcd::3e9'));
    assert.ok(ms < 500, `1000 allocations took ${ms.toFixed(0)} ms`);
    t.diagnostic(`1000 IPv6 allocations: ${ms.toFixed(1)} ms`);
  });

  test('IPv6: a long run of taken addresses after the cursor is skipped in one walk', () => {
    const p = pool({ subnet: 'fd00::/64' });
    const s = new MemoryIpamStore();
    for (let i = 0; i < 5000; i++) s.add('p', { ip: addIP(ip('fd00::100'), i), owner: `pre${i}` });
    s.setLastAllocated('p', ip('fd00::ff'));
    assert.equal(formatIP(allocate(p, s, { owner: 'a' })), formatIP(addIP(ip('fd00::100'), 5000)));
  });

  test('one address per owner: allocating again returns it', () => {
    const p = pool({ subnet: '10.0.0.0/24' });
    const s = new MemoryIpamStore();
    const a = allocate(p, s, { owner: 'ep1' });
    assert.ok(ipEqual(allocate(p, s, { owner: 'ep1' }), a));
    assert.ok(ipEqual(allocate(p, s, { owner: 'ep1', request: a }), a));
    throwsCode(
      () => allocate(p, s, { owner: 'ep1', request: ip('10.0.0.50') }),
      'CONFLICT',
      'ep1',
      '10.0.0.2',
    );
    assert.equal(s.count('p'), 1);
    assert.ok(ipEqual(addressOf(p, s, 'ep1')!, a));
    assert.equal(addressOf(p, s, 'nobody'), undefined);
  });

  test('an empty owner is INVALID', () => {
    throwsCode(
      () => allocate(pool({ subnet: '10.0.0.0/24' }), new MemoryIpamStore(), { owner: '' }),
      'INVALID',
    );
  });

  test('pools are kept apart by id', () => {
    const s = new MemoryIpamStore();
    const a = pool({ subnet: '10.0.0.0/24' }, 'a');
    const b = pool({ subnet: '10.0.0.0/24' }, 'b');
    assert.equal(formatIP(allocate(a, s, { owner: 'x' })), '10.0.0.2');
    assert.equal(formatIP(allocate(b, s, { owner: 'y' })), '10.0.0.2');
  });
});

describe('release', () => {
  test('by owner or by address, idempotent', () => {
    const p = pool({ subnet: '10.0.0.0/24' });
    const s = new MemoryIpamStore();
    fill(p, s, 3);
    assert.deepEqual(release(p, s, { owner: 'a1' }).map(formatIP), ['10.0.0.3']);
    assert.deepEqual(release(p, s, { owner: 'a1' }), []);
    assert.deepEqual(release(p, s, { ip: ip('10.0.0.4') }).map(formatIP), ['10.0.0.4']);
    assert.deepEqual(release(p, s, { ip: ip('10.0.0.4') }), []);
    assert.deepEqual(release(p, s, { ip: ip('fd00::4') }), []);
    assert.deepEqual(release(pool({ subnet: '10.0.0.0/24' }, 'other'), s, { owner: 'a0' }), []);
    assert.equal(s.count('p'), 1);
    assert.equal(formatIP(s.lastAllocated('p')!), '10.0.0.4', 'the cursor stays');
  });
});

describe('property: random interleavings of allocate and release', () => {
  type Op =
    | { kind: 'alloc' }
    | { kind: 'request'; offset: number }
    | { kind: 'releaseOwner'; pick: number }
    | { kind: 'releaseIP'; offset: number };
  const arbOp: fc.Arbitrary<Op> = fc.oneof(
    { weight: 5, arbitrary: fc.constant({ kind: 'alloc' as const }) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: -2, max: 20 }).map((offset) => ({ kind: 'request' as const, offset })),
    },
    { weight: 2, arbitrary: fc.nat(40).map((pick) => ({ kind: 'releaseOwner' as const, pick })) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: -2, max: 20 }).map((offset) => ({ kind: 'releaseIP' as const, offset })),
    },
  );
  const configs: SubnetConfig[] = [
    { subnet: '10.0.0.0/28' },
    { subnet: '10.0.0.0/28', gateway: '10.0.0.7' },
    { subnet: '10.0.0.0/27', ipRange: '10.0.0.8/29' },
    { subnet: '10.0.0.0/30' },
    { subnet: '10.0.0.0/31' },
    { subnet: 'fd00::/124' },
    { subnet: 'fd00::/64', ipRange: 'fd00::/125', gateway: 'fd00::3' },
  ];

  test('never the same address twice, never reserved or the gateway, BUSY only when full', () => {
    fc.assert(
      fc.property(fc.constantFrom(...configs), fc.array(arbOp, { maxLength: 80 }), (config, ops) => {
        const p = pool(config);
        const s = new MemoryIpamStore();
        const model = new Map<string, IPAddr>(); // owner -> address
        const rangeSize = Number(BigInt(p.range.end.value) - BigInt(p.range.start.value) + 1n);
        const gwInRange = rangeContains(p.range, p.gateway) ? 1 : 0;
        const liveInRange = () => [...model.values()].filter((a) => rangeContains(p.range, a)).length;
        let next = 0;
        for (const op of ops) {
          if (op.kind === 'alloc') {
            const owner = `o${next++}`;
            const full = liveInRange() + gwInRange >= rangeSize;
            let got: IPAddr;
            try {
              got = allocate(p, s, { owner });
            } catch (e) {
              assert.ok(isWeftError(e, 'BUSY') && full, `unexpected ${String(e)}`);
              continue;
            }
            assert.ok(!full, 'allocated from a full range');
            assert.ok(rangeContains(p.range, got), `${formatIP(got)} outside the range`);
            assert.ok(!ipEqual(got, p.gateway), 'handed out the gateway');
            assert.ok(!isReserved(p.subnet, got), `handed out reserved ${formatIP(got)}`);
            for (const a of model.values()) assert.ok(!ipEqual(a, got), `${formatIP(got)} handed out twice`);
            model.set(owner, got);
          } else if (op.kind === 'request') {
            const owner = `o${next++}`;
            const want = addIP(p.subnet.ip, op.offset);
            const holder = [...model.entries()].find(([, a]) => ipEqual(a, want));
            try {
              assert.ok(ipEqual(allocate(p, s, { owner, request: want }), want));
              assert.ok(holder === undefined && !ipEqual(want, p.gateway) && !isReserved(p.subnet, want));
              model.set(owner, want);
            } catch (e) {
              if (e instanceof assert.AssertionError) throw e;
              assert.ok(isWeftError(e));
              if (holder !== undefined) assert.ok(e.code === 'CONFLICT' && e.message.includes(holder[0]));
              else {
                const bad =
                  !containsIP(p.subnet, want) || isReserved(p.subnet, want) || ipEqual(want, p.gateway);
                assert.ok(bad, `refused a free address ${formatIP(want)}: ${e.message}`);
              }
            }
          } else if (op.kind === 'releaseOwner') {
            const owners = [...model.keys()];
            const owner = owners.length > 0 ? owners[op.pick % owners.length]! : 'nobody';
            const gone = release(p, s, { owner });
            assert.equal(gone.length, model.has(owner) ? 1 : 0);
            model.delete(owner);
          } else {
            const target = addIP(p.subnet.ip, op.offset);
            const holder = [...model.entries()].find(([, a]) => ipEqual(a, target));
            assert.equal(release(p, s, { ip: target }).length, holder ? 1 : 0);
            if (holder) model.delete(holder[0]);
          }
          // The store agrees with the model.
          assert.equal(s.count('p'), model.size);
          for (const [owner, a] of model) assert.equal(s.ownerOf('p', a), owner);
        }
      }),
      { numRuns: 300 },
    );
  });
});
