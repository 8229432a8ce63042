import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isWeftError } from '../lib/errors.js';
import { type IPAddr, type IPNet, parseIP, parseIPNet, v4, v6 } from '../lib/ip.js';
import {
  type Addr,
  addrDumpRequest,
  afOf,
  decodeAddr,
  encodeNewAddr,
  familyOfAf,
  LIFETIME_FOREVER,
  type NewAddr,
} from './addr.js';
import { a } from './attr.js';
import { AF, IFA, IFA_F, RT_SCOPE, RTM } from './consts.js';
import { type Body, decodeBody, encodeMessage, type IfAddrMsg, ifaddrmsg, parseMessages } from './message.js';

function wire(body: Body<IfAddrMsg>) {
  const bytes = encodeMessage({ type: RTM.NEWADDR, flags: 1, seq: 3, pid: 0 }, ifaddrmsg, body);
  const [m] = parseMessages(bytes);
  assert.ok(m);
  return decodeBody(ifaddrmsg, m.payload);
}
const roundTrip = (spec: NewAddr): Addr => {
  const { header, attrs } = wire(encodeNewAddr(spec));
  return decodeAddr(header, attrs);
};

function expected(s: NewAddr): Addr {
  const anyLft = s.preferredLft !== undefined || s.validLft !== undefined;
  const valid = s.validLft ?? LIFETIME_FOREVER;
  return {
    index: s.index,
    family: s.ipnet.ip.family,
    ipnet: s.ipnet,
    scope: s.scope ?? RT_SCOPE.UNIVERSE,
    flags: s.flags ?? 0,
    label: s.label,
    broadcast: s.broadcast,
    local: s.ipnet.ip,
    peer: s.peer !== undefined && s.peer.value !== s.ipnet.ip.value ? s.peer : undefined,
    preferredLft: anyLft ? (s.preferredLft ?? valid) : undefined,
    validLft: anyLft ? valid : undefined,
  };
}

const arbV4: fc.Arbitrary<IPAddr> = fc.integer({ min: 0, max: 0xffffffff }).map((n) => v4(n));
const arbV6: fc.Arbitrary<IPAddr> = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }).map((n) => v6(n));
const arbIP = (f: 4 | 6) => (f === 4 ? arbV4 : arbV6);
/** An interface address: host bits allowed. */
const arbIPNet = (f: 4 | 6): fc.Arbitrary<IPNet> =>
  fc.tuple(arbIP(f), fc.integer({ min: 0, max: f === 4 ? 32 : 128 })).map(([ip, len]) => ({ ip, len }));
const arbLabel = fc.stringMatching(/^[a-z][a-z0-9.:_-]{0,14}$/);

const arbAddr = (f: 4 | 6): fc.Arbitrary<NewAddr> =>
  fc.record(
    {
      index: fc.integer({ min: 1, max: 0xffffffff }),
      ipnet: arbIPNet(f),
      peer: arbIP(f),
      broadcast: arbIP(f),
      label: arbLabel,
      scope: fc.integer({ min: 0, max: 255 }),
      flags: fc.integer({ min: 0, max: 0xffffffff }),
      preferredLft: fc.integer({ min: 0, max: 0xffffffff }),
      validLft: fc.integer({ min: 0, max: 0xffffffff }),
    },
    { requiredKeys: ['index', 'ipnet'] },
  );

describe('address codec', () => {
  test('an IPv4 address with broadcast and label decodes back', () => {
    const s: NewAddr = {
      index: 4,
      ipnet: parseIPNet('10.88.0.1/24'),
      broadcast: parseIP('10.88.0.255'),
      label: 'weft0:gw',
    };
    const back = roundTrip(s);
    assert.deepEqual(back, expected(s));
    assert.equal(back.peer, undefined, 'IFA_ADDRESS equal to IFA_LOCAL is no peer');
  });

  test('IPv6 with nodad and noprefixroute: the high flag needs IFA_FLAGS, the header keeps the low byte', () => {
    const flags = IFA_F.NODAD | IFA_F.NOPREFIXROUTE;
    const body = encodeNewAddr({ index: 2, ipnet: parseIPNet('2001:db8::5/64'), flags });
    assert.equal(body.header.family, AF.INET6);
    assert.equal(body.header.flags, IFA_F.NODAD);
    assert.ok(body.attrs.some((x) => x.type === IFA.FLAGS));
    const back = decodeAddr(wire(body).header, wire(body).attrs);
    assert.equal(back.flags, flags);
    assert.equal(back.family, 6);
    assert.deepEqual(back.ipnet, parseIPNet('2001:db8::5/64'));
  });

  test('a kernel IPv6 dump entry (IFA_ADDRESS only, cacheinfo) decodes', () => {
    const ci = new Uint8Array(16);
    const dv = new DataView(ci.buffer);
    dv.setUint32(0, 1800, true);
    dv.setUint32(4, 3600, true);
    const { header, attrs } = wire({
      header: { family: AF.INET6, prefixlen: 64, flags: IFA_F.PERMANENT, scope: RT_SCOPE.LINK, index: 3 },
      attrs: [a.ip(IFA.ADDRESS, parseIP('fe80::1')), a.bytes(IFA.CACHEINFO, ci)],
    });
    const x = decodeAddr(header, attrs);
    assert.deepEqual(x.ipnet, parseIPNet('fe80::1/64'));
    assert.equal(x.local, undefined);
    assert.equal(x.peer, undefined);
    assert.equal(x.flags, IFA_F.PERMANENT);
    assert.equal(x.scope, RT_SCOPE.LINK);
    assert.equal(x.preferredLft, 1800);
    assert.equal(x.validLft, 3600);
  });

  test('a point-to-point address: own address from IFA_LOCAL, the peer from IFA_ADDRESS', () => {
    const s: NewAddr = { index: 9, ipnet: parseIPNet('10.0.0.1/32'), peer: parseIP('10.0.0.2') };
    const back = roundTrip(s);
    assert.deepEqual(back.ipnet, parseIPNet('10.0.0.1/32'));
    assert.deepEqual(back.peer, parseIP('10.0.0.2'));
  });

  test('bad input is INVALID', () => {
    const bad = (fn: () => unknown) => assert.throws(fn, (e) => isWeftError(e, 'INVALID'));
    bad(() => encodeNewAddr({ index: 1, ipnet: { ip: parseIP('10.0.0.1'), len: 33 } }));
    bad(() => encodeNewAddr({ index: 1, ipnet: parseIPNet('10.0.0.1/8'), broadcast: parseIP('::1') }));
    bad(() => encodeNewAddr({ index: 1, ipnet: parseIPNet('::1/128'), peer: parseIP('10.0.0.1') }));
    const { header, attrs } = wire({
      header: { family: AF.BRIDGE, prefixlen: 0, flags: 0, scope: 0, index: 1 },
      attrs: [],
    });
    bad(() => decodeAddr(header, attrs));
    bad(() => decodeAddr({ ...header, family: AF.INET }, attrs));
  });

  test('families and the dump request', () => {
    assert.equal(afOf(4), AF.INET);
    assert.equal(afOf(6), AF.INET6);
    assert.equal(familyOfAf(AF.INET6), 6);
    assert.equal(familyOfAf(AF.BRIDGE), undefined);
    assert.equal(addrDumpRequest().header.family, AF.UNSPEC);
    assert.equal(addrDumpRequest(6).header.family, AF.INET6);
  });

  for (const f of [4, 6] as const) {
    test(`property: IPv${f} addresses round-trip (prefixes, peers, flags, lifetimes)`, () => {
      fc.assert(
        fc.property(arbAddr(f), (s) => {
          assert.deepEqual(roundTrip(s), expected(s));
        }),
        { numRuns: 300 },
      );
    });
  }
});
