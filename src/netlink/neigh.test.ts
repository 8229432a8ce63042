import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { type IPAddr, parseIP, v4, v6 } from '../lib/ip.js';
import { a, encodeAttrs, formatMac } from './attr.js';
import { AF, NDA, NTF, NUD, RTM } from './consts.js';
import { decodeBody, encodeBody, encodeMessage, ndmsg, parseMessages } from './message.js';
import { blankNdMsg, decodeNeigh, encodeNeigh, type Neigh } from './neigh.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

const arbV4: fc.Arbitrary<IPAddr> = fc.integer({ min: 0, max: 0xffffffff }).map(v4);
const arbV6: fc.Arbitrary<IPAddr> = fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }).map(v6);
const arbMac = fc.uint8Array({ minLength: 6, maxLength: 6 }).map(formatMac);

const common = {
  ifindex: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  state: fc.integer({ min: 0, max: 0xffff }),
  flags: fc.integer({ min: 0, max: 0xff }),
  type: fc.integer({ min: 0, max: 0xff }),
  lladdr: arbMac,
  vlan: fc.integer({ min: 0, max: 0xffff }),
  port: fc.integer({ min: 0, max: 0xffff }),
  vni: fc.integer({ min: 0, max: 0xffffffff }),
  via: fc.integer({ min: 0, max: 0xffffffff }),
  master: fc.integer({ min: 0, max: 0xffffffff }),
};
const required = ['family', 'ifindex', 'state', 'flags', 'type'] as const;

/** Neighbour-table entries: NDA_DST is `ip`, of the entry's own family. */
const arbIpNeigh: fc.Arbitrary<Neigh> = fc.oneof(
  fc.record({ family: fc.constant(AF.INET), ip: arbV4, ...common }, { requiredKeys: [...required] }),
  fc.record({ family: fc.constant(AF.INET6), ip: arbV6, ...common }, { requiredKeys: [...required] }),
);
/** FDB entries: NDA_DST is `dst`, the remote VTEP, of either family. */
const arbFdb: fc.Arbitrary<Neigh> = fc.record(
  { family: fc.constant(AF.BRIDGE), dst: fc.oneof(arbV4, arbV6), ...common },
  { requiredKeys: [...required] },
);

function roundTrip(n: Neigh): Neigh {
  const bytes = encodeMessage({ type: RTM.NEWNEIGH, flags: 0, seq: 1, pid: 0 }, ndmsg, encodeNeigh(n));
  const [m] = parseMessages(bytes);
  assert.ok(m);
  const { header, attrs } = decodeBody(ndmsg, m.payload);
  return decodeNeigh(header, attrs);
}

describe('neigh codec', () => {
  test('decode(encode(x)) == x for neighbour entries and FDB entries', () => {
    fc.assert(
      fc.property(fc.oneof(arbIpNeigh, arbFdb), (n) => {
        assert.deepEqual(roundTrip(n), { ...n }); // spread: fast-check records have no prototype
      }),
      { numRuns: 500 },
    );
  });

  test('a permanent IPv4 neighbour encodes as `ip neigh add 10.0.0.5 lladdr … nud permanent` does', () => {
    const body = encodeNeigh({
      family: AF.INET,
      ifindex: 3,
      state: NUD.PERMANENT,
      flags: 0,
      type: 0,
      ip: parseIP('10.0.0.5'),
      lladdr: '02:00:00:00:00:09',
    });
    assert.equal(
      hex(encodeBody(ndmsg, body)),
      [
        '02000000', // ndm_family AF_INET, pad
        '03000000', // ndm_ifindex 3
        '8000', // ndm_state NUD_PERMANENT
        '00', // ndm_flags
        '00', // ndm_type
        '08000100', // NDA_DST, 8 bytes
        '0a000005',
        '0a000200', // NDA_LLADDR, 10 bytes, padded to 12
        '020000000009',
        '0000',
      ].join(''),
    );
  });

  test('a vxlan FDB entry: NDA_DST is the remote VTEP, NDA_PORT in network order, NDA_VNI in host order', () => {
    const n: Neigh = {
      family: AF.BRIDGE,
      ifindex: 7,
      state: NUD.PERMANENT,
      flags: NTF.SELF,
      type: 0,
      lladdr: '00:00:00:00:00:00',
      dst: parseIP('192.0.2.2'),
      port: 4790,
      vni: 9,
    };
    const body = encodeNeigh(n);
    const attrs = hex(encodeAttrs(body.attrs));
    assert.equal(NDA.PORT, 6);
    assert.ok(attrs.includes('06000600' + '12b6'), attrs); // NDA_PORT 4790, big-endian
    assert.equal(NDA.VNI, 7);
    assert.ok(attrs.includes('08000700' + '09000000'), attrs); // NDA_VNI 9, host order
    assert.ok(attrs.includes('08000100' + 'c0000202'), attrs); // NDA_DST 192.0.2.2
    const back = roundTrip(n);
    assert.deepEqual(back, n);
    assert.equal(back.ip, undefined);
  });

  test('decoding ignores attributes it does not model (cacheinfo, probes) and keeps what it knows', () => {
    const cacheinfo = new Uint8Array(16);
    const attrs = encodeAttrs([
      a.ip(NDA.DST, parseIP('fd00::2')),
      a.mac(NDA.LLADDR, '02:00:00:00:06:02'),
      a.bytes(NDA.CACHEINFO, cacheinfo),
      a.u32(NDA.PROBES, 3),
    ]);
    const payload = new Uint8Array(12 + attrs.length);
    ndmsg.encode(
      blankNdMsg({ family: AF.INET6, index: 4, state: NUD.REACHABLE, type: 1 }),
      new DataView(payload.buffer),
      0,
    );
    payload.set(attrs, 12);
    const { header, attrs: parsed } = decodeBody(ndmsg, payload);
    assert.deepEqual(decodeNeigh(header, parsed), {
      family: AF.INET6,
      ifindex: 4,
      state: NUD.REACHABLE,
      flags: 0,
      type: 1,
      ip: parseIP('fd00::2'),
      lladdr: '02:00:00:00:06:02',
    });
  });
});
