import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isWeftError } from '../lib/errors.js';
import { type IPAddr, type IPNet, maskIP, parseIP, parseIPNet, v4, v6 } from '../lib/ip.js';
import { LITTLE_ENDIAN } from './attr.js';
import { AF, RT_SCOPE, RT_TABLE, RTA, RTM, RTM_F, RTNH_F, RTPROT } from './consts.js';
import { type Body, decodeBody, encodeMessage, parseMessages, type RtMsg, rtmsg } from './message.js';
import {
  decodeRoute,
  decodeRouteQuery,
  encodeRoute,
  encodeRouteLookup,
  type NewRoute,
  type Route,
  type RouteQuery,
  routeDumpRequest,
  routeTypes,
  scopeName,
  scopeNumber,
} from './route.js';

/** Through the wire: a full message encoded, split and decoded again. */
function wire(type: number, body: Body<RtMsg>) {
  const bytes = encodeMessage({ type, flags: 1, seq: 7, pid: 0 }, rtmsg, body);
  const msgs = parseMessages(bytes);
  assert.equal(msgs.length, 1);
  assert.equal(msgs[0]!.type, type);
  return decodeBody(rtmsg, msgs[0]!.payload);
}
const roundTrip = (r: NewRoute): Route => {
  const { header, attrs } = wire(RTM.NEWROUTE, encodeRoute(r));
  return decodeRoute(header, attrs);
};

// ---- arbitraries ------------------------------------------------------------------------------

const arbV4: fc.Arbitrary<IPAddr> = fc.integer({ min: 0, max: 0xffffffff }).map((n) => v4(n));
const arbV6: fc.Arbitrary<IPAddr> = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }).map((n) => v6(n));
const arbIP = (f: 4 | 6) => (f === 4 ? arbV4 : arbV6);
/** A canonical prefix of length 1..bits (length 0 is a default route: tested on its own). */
const arbPrefix = (f: 4 | 6): fc.Arbitrary<IPNet> =>
  fc
    .tuple(arbIP(f), fc.integer({ min: 1, max: f === 4 ? 32 : 128 }))
    .map(([ip, len]) => ({ ip: maskIP(ip, len), len }));
const u8 = fc.integer({ min: 0, max: 255 });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const arbTable = fc.oneof(fc.integer({ min: 1, max: 255 }), fc.integer({ min: 256, max: 0xffffffff }));

const arbRoute = (f: 4 | 6): fc.Arbitrary<NewRoute> =>
  fc
    .record(
      {
        dst: arbPrefix(f),
        src: arbPrefix(f),
        gateway: arbIP(f),
        oif: fc.integer({ min: 1, max: 0x7fffffff }),
        iif: fc.integer({ min: 1, max: 0x7fffffff }),
        prefsrc: arbIP(f),
        table: arbTable,
        protocol: u8,
        scope: u8,
        type: fc.constantFrom(...routeTypes),
        tos: u8,
        priority: u32,
        onlink: fc.boolean(),
        mtu: u32,
        nexthops: fc.array(
          fc.record(
            {
              gateway: arbIP(f),
              oif: fc.integer({ min: 1, max: 0x7fffffff }),
              weight: fc.integer({ min: 1, max: 256 }),
              onlink: fc.boolean(),
            },
            { requiredKeys: ['weight'] },
          ),
          { minLength: 1, maxLength: 4 },
        ),
      },
      { requiredKeys: [] },
    )
    .map((r) => ({ ...r, family: f }));

/** What decoding an encoded NewRoute must give back: the request with the codec's defaults. */
function expected(r: NewRoute): Route {
  return {
    family: r.family,
    dst: r.dst,
    src: r.src,
    gateway: r.gateway,
    oif: r.oif,
    iif: r.iif,
    prefsrc: r.prefsrc,
    table: r.table ?? RT_TABLE.MAIN,
    protocol: r.protocol ?? RTPROT.UNSPEC,
    scope: r.scope ?? RT_SCOPE.UNIVERSE,
    type: r.type ?? 'unicast',
    tos: r.tos ?? 0,
    priority: r.priority ?? 0,
    onlink: r.onlink ?? false,
    flags: r.onlink ? RTNH_F.ONLINK : 0,
    mtu: r.mtu,
    nexthops: r.nexthops?.map((h) => ({
      gateway: h.gateway,
      oif: h.oif,
      weight: h.weight ?? 1,
      onlink: h.onlink ?? false,
      flags: h.onlink ? RTNH_F.ONLINK : 0,
    })),
  };
}

// ---- tests ------------------------------------------------------------------------------------

describe('route codec', () => {
  test('a typed IPv4 route decodes back field for field', () => {
    const r: NewRoute = {
      family: 4,
      dst: parseIPNet('10.244.3.0/24'),
      gateway: parseIP('192.168.1.2'),
      oif: 3,
      prefsrc: parseIP('192.168.1.1'),
      table: 100,
      protocol: RTPROT.STATIC,
      scope: RT_SCOPE.UNIVERSE,
      type: 'unicast',
      priority: 20,
      onlink: true,
      mtu: 1450,
    };
    assert.deepEqual(roundTrip(r), expected(r));
  });

  test('default route: no RTA_DST, dst_len 0, dst undefined', () => {
    const body = encodeRoute({ family: 6, gateway: parseIP('fe80::1'), oif: 2 });
    assert.equal(body.header.dstLen, 0);
    assert.equal(body.header.family, AF.INET6);
    assert.ok(!body.attrs.some((x) => x.type === RTA.DST));
    const back = roundTrip({ family: 6, dst: { ip: parseIP('::'), len: 0 }, gateway: parseIP('fe80::1') });
    assert.equal(back.dst, undefined);
  });

  test('table: rtm_table up to 255, RTA_TABLE with rtm_table UNSPEC above', () => {
    const low = encodeRoute({ family: 4, dst: parseIPNet('10.0.0.0/8'), table: 100 });
    assert.equal(low.header.table, 100);
    assert.ok(!low.attrs.some((x) => x.type === RTA.TABLE));
    const high = encodeRoute({ family: 4, dst: parseIPNet('10.0.0.0/8'), table: 1000 });
    assert.equal(high.header.table, RT_TABLE.UNSPEC);
    const t = high.attrs.find((x) => x.type === RTA.TABLE);
    assert.ok(t && 'value' in t);
    assert.equal(new DataView(t.value.buffer).getUint32(0, LITTLE_ENDIAN), 1000);
    assert.equal(roundTrip({ family: 4, table: 1000 }).table, 1000);
    // The kernel answers RT_TABLE_COMPAT (252) in rtm_table with the real table in RTA_TABLE.
    const { header, attrs } = wire(RTM.NEWROUTE, {
      header: { ...high.header, table: 252 },
      attrs: high.attrs,
    });
    assert.equal(decodeRoute(header, attrs).table, 1000);
  });

  test('exact bytes of a small request (rtmsg layout, attribute order and padding)', () => {
    const body = encodeRoute({
      family: 4,
      dst: parseIPNet('10.1.0.0/16'),
      gateway: parseIP('10.0.0.1'),
      table: 254,
      protocol: RTPROT.BOOT,
      type: 'unicast',
    });
    const bytes = encodeMessage({ type: RTM.NEWROUTE, flags: 0x605, seq: 1, pid: 0 }, rtmsg, body);
    // biome-ignore format: one line per struct
    const want = Uint8Array.from([
      44, 0, 0, 0, 24, 0, 5, 6, 1, 0, 0, 0, 0, 0, 0, 0,          // nlmsghdr
      2, 16, 0, 0, 254, 3, 0, 1, 0, 0, 0, 0,                     // rtmsg
      8, 0, 1, 0, 10, 1, 0, 0,                                   // RTA_DST
      8, 0, 5, 0, 10, 0, 0, 1,                                   // RTA_GATEWAY
    ]);
    assert.deepEqual(bytes, want);
  });

  test('a gateway of the other family travels in RTA_VIA and decodes back', () => {
    const r: NewRoute = { family: 4, dst: parseIPNet('10.9.0.0/16'), gateway: parseIP('fe80::1'), oif: 4 };
    const body = encodeRoute(r);
    assert.ok(body.attrs.some((x) => x.type === RTA.VIA));
    assert.ok(!body.attrs.some((x) => x.type === RTA.GATEWAY));
    assert.deepEqual(roundTrip(r).gateway, parseIP('fe80::1'));
  });

  test('bad input is INVALID: prefix of the other family, length out of range, weight', () => {
    const bad = (r: NewRoute) =>
      assert.throws(
        () => encodeRoute(r),
        (e) => isWeftError(e, 'INVALID'),
      );
    bad({ family: 4, dst: parseIPNet('2001:db8::/32') });
    bad({ family: 4, dst: { ip: parseIP('10.0.0.0'), len: 33 } });
    bad({ family: 6, src: { ip: parseIP('2001:db8::'), len: -1 } });
    bad({ family: 4, prefsrc: parseIP('::1') });
    bad({ family: 4, nexthops: [{ weight: 0 }] });
    bad({ family: 4, table: 2 ** 32 });
  });

  test('scope names and numbers', () => {
    assert.equal(scopeNumber('link'), 253);
    assert.equal(scopeNumber('host'), 254);
    assert.equal(scopeNumber(200), 200);
    assert.equal(scopeName(0), 'universe');
    assert.equal(scopeName(42), 42);
    assert.throws(
      () => scopeNumber('galaxy' as never),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => scopeNumber(256),
      (e) => isWeftError(e, 'INVALID'),
    );
  });

  test('dump request asks for one family or all', () => {
    assert.equal(routeDumpRequest(4).header.family, AF.INET);
    assert.equal(routeDumpRequest(6).header.family, AF.INET6);
    assert.equal(routeDumpRequest().header.family, AF.UNSPEC);
  });

  for (const f of [4, 6] as const) {
    test(`property: IPv${f} routes round-trip (prefixes, gateways, metrics, tables, next hops)`, () => {
      fc.assert(
        fc.property(arbRoute(f), (r) => {
          assert.deepEqual(roundTrip(r), expected(r));
        }),
        { numRuns: 300 },
      );
    });
  }
});

describe('route lookup request', () => {
  const arbQuery = (f: 4 | 6): fc.Arbitrary<RouteQuery> =>
    fc
      .record(
        {
          dst: arbIP(f),
          src: arbIP(f),
          iif: fc.integer({ min: 1, max: 0xffffffff }),
          oif: fc.integer({ min: 1, max: 0xffffffff }),
          mark: fc.integer({ min: 1, max: 0xffffffff }),
          uid: u32,
          ipProto: fc.constantFrom(6, 17, f === 4 ? 1 : 58),
          sport: fc.integer({ min: 0, max: 65535 }),
          dport: fc.integer({ min: 0, max: 65535 }),
          tos: fc.integer({ min: 1, max: 255 }),
          fibMatch: fc.constant(true),
        },
        { requiredKeys: ['dst'] },
      )
      .map((q): RouteQuery => ({ ...q }));

  test('what `ip route get 10.1.2.3 from 10.1.1.2 iif veth0 mark 7 ipproto udp dport 53` sends', () => {
    const q: RouteQuery = {
      dst: parseIP('10.1.2.3'),
      src: parseIP('10.1.1.2'),
      iif: 5,
      mark: 7,
      ipProto: 17,
      dport: 53,
    };
    const body = encodeRouteLookup(q);
    assert.equal(body.header.family, AF.INET);
    assert.equal(body.header.dstLen, 32);
    assert.equal(body.header.srcLen, 32);
    assert.equal(body.header.flags & RTM_F.LOOKUP_TABLE, RTM_F.LOOKUP_TABLE);
    assert.equal(body.header.flags & RTM_F.FIB_MATCH, 0);
    const dport = body.attrs.find((x) => x.type === RTA.DPORT);
    assert.ok(dport && 'value' in dport);
    assert.deepEqual([...dport.value], [0, 53], 'ports are big-endian');
    const { header, attrs } = wire(RTM.GETROUTE, body);
    assert.deepEqual(decodeRouteQuery(header, attrs), q);
  });

  test('source of the other family is INVALID', () => {
    assert.throws(
      () => encodeRouteLookup({ dst: parseIP('10.0.0.1'), src: parseIP('::1') }),
      (e) => isWeftError(e, 'INVALID'),
    );
  });

  for (const f of [4, 6] as const) {
    test(`property: IPv${f} lookups round-trip`, () => {
      fc.assert(
        fc.property(arbQuery(f), (q) => {
          const body = encodeRouteLookup(q);
          assert.equal(body.header.dstLen, f === 4 ? 32 : 128);
          const { header, attrs } = wire(RTM.GETROUTE, body);
          assert.deepEqual(decodeRouteQuery(header, attrs), q);
          // The same bytes read as a route: destination, source and devices agree.
          const r = decodeRoute(header, attrs);
          assert.deepEqual(r.dst, { ip: q.dst, len: f === 4 ? 32 : 128 });
          assert.equal(r.iif, q.iif);
          assert.equal(r.oif, q.oif);
        }),
        { numRuns: 300 },
      );
    });
  }
});
