import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isWeftError } from '../lib/errors.js';
import { type Family, type IPAddr, parseIP, v4, v6 } from '../lib/ip.js';
import {
  CT_MSG,
  CTA,
  type CtEntry,
  type CtTuple,
  ctDumpRequest,
  ctStatsRequest,
  decodeCtEntry,
  decodeCtStats,
  encodeCtDelete,
  encodeCtEntry,
  IPPROTO,
  type NfGenMsg,
  nfgenmsg,
} from './conntrack.js';
import { AF, NLM_F } from './consts.js';
import { type Body, decodeBody, encodeBody, encodeMessage, parseMessages } from './message.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const unhex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

/** Through the wire: one message encoded, split and decoded again. */
function wire(type: number, body: Body<NfGenMsg>) {
  const msgs = parseMessages(encodeMessage({ type, flags: NLM_F.REQUEST, seq: 9, pid: 0 }, nfgenmsg, body));
  assert.equal(msgs.length, 1);
  assert.equal(msgs[0]!.type, type);
  return decodeBody(nfgenmsg, msgs[0]!.payload);
}
const roundTrip = (e: CtEntry): CtEntry => {
  const { header, attrs } = wire(CT_MSG.NEW, encodeCtEntry(e));
  return decodeCtEntry(header, attrs);
};

const arbIP = (f: Family): fc.Arbitrary<IPAddr> =>
  f === 4
    ? fc.integer({ min: 0, max: 0xffffffff }).map(v4)
    : fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }).map(v6);
const port = fc.integer({ min: 0, max: 0xffff });
const u8 = fc.integer({ min: 0, max: 0xff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });

const arbTuple = (f: Family): fc.Arbitrary<CtTuple> =>
  fc.record(
    { src: arbIP(f), dst: arbIP(f), sport: port, dport: port, icmpId: port, icmpType: u8, icmpCode: u8 },
    { requiredKeys: ['src', 'dst'] },
  );
const arbEntry: fc.Arbitrary<CtEntry> = fc.constantFrom<Family>(4, 6).chain((family) =>
  fc.record(
    {
      family: fc.constant(family),
      proto: u8,
      orig: arbTuple(family),
      reply: arbTuple(family),
      zone: port,
      mark: u32,
      id: u32,
      status: u32,
      timeout: u32,
    },
    { requiredKeys: ['family', 'proto', 'orig', 'reply'] },
  ),
);

/** fast-check records have no prototype: spread them (and their tuples) for deepEqual. */
const plain = (e: CtEntry): CtEntry => ({ ...e, orig: { ...e.orig }, reply: { ...e.reply } });

describe('conntrack codec', () => {
  test('message types: subsystem CTNETLINK (1) in the high byte', () => {
    assert.deepEqual(CT_MSG, { NEW: 0x100, GET: 0x101, DELETE: 0x102, GET_STATS: 0x105 });
  });

  test('nfgenmsg: family, version, res_id in network byte order', () => {
    const body = { header: { family: AF.INET6, version: 0, resId: 0x1234 }, attrs: [] };
    assert.equal(hex(encodeBody(nfgenmsg, body)), '0a001234');
    assert.deepEqual(decodeBody(nfgenmsg, unhex('0a001234')).header, body.header);
  });

  test('dump request: a bare nfgenmsg of the family asked for, AF_UNSPEC for both', () => {
    const bytes = encodeMessage(
      { type: CT_MSG.GET, flags: NLM_F.REQUEST | NLM_F.DUMP, seq: 1, pid: 0 },
      nfgenmsg,
      ctDumpRequest(),
    );
    // nlmsghdr: len 20, type 0x0101, flags REQUEST|DUMP, seq 1, pid 0; nfgenmsg all zero.
    assert.equal(hex(bytes), ['14000000', '0101', '0103', '01000000', '00000000', '00000000'].join(''));
    assert.equal(ctDumpRequest(4).header.family, AF.INET);
    assert.equal(ctDumpRequest(6).header.family, AF.INET6);
  });

  test('delete request: the original tuple, nested, with big-endian ports', () => {
    const body = encodeCtDelete({
      family: 4,
      proto: IPPROTO.TCP,
      orig: { src: parseIP('198.51.100.2'), dst: parseIP('198.51.100.1'), sport: 40000, dport: 8080 },
    });
    assert.equal(
      hex(encodeBody(nfgenmsg, body)),
      [
        '02000000', // nfgenmsg: AF_INET, version 0, res_id 0
        '34000180', // CTA_TUPLE_ORIG | NLA_F_NESTED, 52 bytes
        '14000180', //   CTA_TUPLE_IP | NLA_F_NESTED, 20 bytes
        '08000100c6336402', //   CTA_IP_V4_SRC 198.51.100.2
        '08000200c6336401', //   CTA_IP_V4_DST 198.51.100.1
        '1c000280', //   CTA_TUPLE_PROTO | NLA_F_NESTED, 28 bytes
        '0500010006000000', //     CTA_PROTO_NUM 6 (tcp), padded
        '060002009c400000', //     CTA_PROTO_SRC_PORT 40000 (be16), padded
        '060003001f900000', //     CTA_PROTO_DST_PORT 8080 (be16), padded
      ].join(''),
    );
  });

  test('delete request: a zone other than the default is named (CTA_ZONE, be16); IPv6 addresses', () => {
    const body = encodeCtDelete({
      family: 6,
      proto: IPPROTO.UDP,
      orig: { src: parseIP('fd00::2'), dst: parseIP('fd00::1'), sport: 41000, dport: 53 },
      zone: 7,
    });
    const { header, attrs } = wire(CT_MSG.DELETE, body);
    assert.equal(header.family, AF.INET6);
    assert.deepEqual(
      attrs.list.map((x) => x.type),
      [1, 18],
    );
    assert.equal(hex(attrs.get(18)!), '0007');
    const ip = attrs.nested(1)!.nested(1)!;
    assert.deepEqual(
      ip.list.map((x) => x.type),
      [3, 4],
    ); // CTA_IP_V6_SRC, CTA_IP_V6_DST
    assert.equal(hex(ip.get(3)!), 'fd000000000000000000000000000002');
  });

  test('decode(encode(x)) == x for IPv4 and IPv6 entries', () => {
    fc.assert(
      fc.property(arbEntry, (e) => {
        assert.deepEqual(roundTrip(e), plain(e));
      }),
      { numRuns: 500 },
    );
  });

  test('ICMPv6 fields travel in the ICMPV6 attributes, ICMP ones in the ICMP attributes', () => {
    const tuple = (f: Family): CtTuple => ({
      src: parseIP(f === 4 ? '192.0.2.1' : 'fd00::1'),
      dst: parseIP(f === 4 ? '192.0.2.9' : 'fd00::9'),
      icmpId: 77,
      icmpType: 8,
      icmpCode: 0,
    });
    for (const [f, proto, types] of [
      [4, IPPROTO.ICMP, [1, 4, 5, 6]],
      [6, IPPROTO.ICMPV6, [1, 7, 8, 9]],
    ] as const) {
      const body = encodeCtDelete({ family: f, proto, orig: tuple(f) });
      const { attrs } = wire(CT_MSG.DELETE, body);
      const l4 = attrs.nested(1)!.nested(2)!;
      assert.deepEqual(
        l4.list.map((x) => x.type),
        types,
      );
    }
  });

  test('bad values are INVALID before anything is encoded', () => {
    const ok = {
      family: 4 as const,
      proto: IPPROTO.TCP,
      orig: { src: parseIP('10.0.0.1'), dst: parseIP('10.0.0.2') },
    };
    const bad = [
      { ...ok, orig: { ...ok.orig, dst: parseIP('fd00::1') } }, // address of the other family
      { ...ok, orig: { ...ok.orig, dport: 65536 } },
      { ...ok, orig: { ...ok.orig, sport: -1 } },
      { ...ok, proto: 256 },
      { ...ok, zone: 70000 },
    ];
    for (const k of bad)
      assert.throws(
        () => encodeCtDelete(k),
        (e) => isWeftError(e, 'INVALID'),
      );
  });

  test('entries of other families or without both tuples are INVALID', () => {
    const full = encodeCtEntry({
      family: 4,
      proto: IPPROTO.UDP,
      orig: { src: parseIP('10.0.0.1'), dst: parseIP('10.0.0.2'), sport: 1, dport: 2 },
      reply: { src: parseIP('10.0.0.2'), dst: parseIP('10.0.0.1'), sport: 2, dport: 1 },
    });
    const { header, attrs } = wire(CT_MSG.NEW, full);
    assert.throws(
      () => decodeCtEntry({ ...header, family: AF.BRIDGE }, attrs),
      (e) => isWeftError(e, 'INVALID'),
    );
    const origOnly = wire(CT_MSG.NEW, { header, attrs: full.attrs.slice(0, 1) });
    assert.throws(
      () => decodeCtEntry(origOnly.header, origOnly.attrs),
      (e) => isWeftError(e, 'INVALID') && /reply tuple/.test(e.message),
    );
  });
});

/**
 * Dump entries as kernel 6.18 sent them (payloads after the nlmsghdr), for entries made with
 * `conntrack -I`, next to what `conntrack -L` printed for them. They carry attributes the codec
 * does not read (CTA_PROTOINFO, CTA_USE, CTA_SECCTX…), which must be skipped.
 */
const KERNEL = [
  {
    listed:
      'tcp 6 99 ESTABLISHED src=198.51.100.2 dst=198.51.100.1 sport=40000 dport=8080 src=10.77.0.2 dst=198.51.100.2 sport=80 dport=40000 mark=0 use=1',
    payload: `02000000340001801400018008000100c633640208000200c63364011c0002800500010006000000060002009c40
      0000060003001f9000003400028014000180080001000a4d000208000200c63364021c0002800500010006000000
      0600020000500000060003009c400000080003000000000a080008000000000008000c00066d9fff08000b000000
      00010800070000000063300004802c00018005000100030000000500020000000000050003000000000006000400
      0a000000060005000a0000001c001880080001000000000008000200000000000800030000000000`,
    want: {
      family: 4,
      proto: IPPROTO.TCP,
      orig: { src: '198.51.100.2', dst: '198.51.100.1', sport: 40000, dport: 8080 },
      reply: { src: '10.77.0.2', dst: '198.51.100.2', sport: 80, dport: 40000 },
      mark: 0,
      timeout: 99,
      status: 0xa, // SEEN_REPLY | CONFIRMED
    },
  },
  {
    listed:
      'icmp 1 29 src=192.0.2.1 dst=192.0.2.9 type=8 code=0 id=77 [UNREPLIED] src=192.0.2.9 dst=192.0.2.1 type=0 code=0 id=77 mark=0 use=1',
    payload: `020000003c0001801400018008000100c000020108000200c000020924000280050001000100000006000400004d
      0000050005000800000005000600000000003c0002801400018008000100c000020908000200c000020124000280
      050001000100000006000400004d0000050005000000000005000600000000000800030000000008080008000000
      000008000c0026cb788008000b0000000001080007000000001d1c00188008000100000000000800020000000000
      0800030000000000`,
    want: {
      family: 4,
      proto: IPPROTO.ICMP,
      orig: { src: '192.0.2.1', dst: '192.0.2.9', icmpId: 77, icmpType: 8, icmpCode: 0 },
      reply: { src: '192.0.2.9', dst: '192.0.2.1', icmpId: 77, icmpType: 0, icmpCode: 0 },
      mark: 0,
      timeout: 29,
      status: 0x8,
    },
  },
  {
    listed:
      'udp 17 99 src=fd00::2 dst=fd00::1 sport=41000 dport=53 [UNREPLIED] src=fd00::1 dst=fd00::2 sport=53 dport=41000 mark=5 zone=7 use=1',
    payload: `0a0000004c0001802c00018014000300fd00000000000000000000000000000214000400fd000000000000000000
      0000000000011c000280050001001100000006000200a028000006000300003500004c0002802c00018014000300
      fd00000000000000000000000000000114000400fd0000000000000000000000000000021c000280050001001100
      0000060002000035000006000300a028000006001200000700000800030000000008080008000000000508000c00
      c53c314a08000b000000000108000700000000631c00188008000100000000000800020000000000080003000000
      0000`,
    want: {
      family: 6,
      proto: IPPROTO.UDP,
      orig: { src: 'fd00::2', dst: 'fd00::1', sport: 41000, dport: 53 },
      reply: { src: 'fd00::1', dst: 'fd00::2', sport: 53, dport: 41000 },
      zone: 7,
      mark: 5,
      timeout: 99,
      status: 0x8,
    },
  },
];

describe('conntrack codec against the kernel', () => {
  test('statistics: the entry count and the limit (an empty namespace, kernel 6.18)', () => {
    assert.equal(hex(encodeBody(nfgenmsg, ctStatsRequest())), '00000000');
    const { attrs } = decodeBody(nfgenmsg, unhex('0000000008000100000000000800020000040000'));
    assert.deepEqual(decodeCtStats(attrs), { entries: 0, maxEntries: 262144 });
    const partial = decodeBody(nfgenmsg, unhex('000000000800010000000031'));
    assert.deepEqual(decodeCtStats(partial.attrs), { entries: 49 });
    assert.throws(
      () => decodeCtStats(decodeBody(nfgenmsg, unhex('00000000')).attrs),
      (e) => isWeftError(e, 'INVALID'),
    );
  });

  for (const k of KERNEL) {
    test(k.listed.split(' src=')[0]!, () => {
      const { header, attrs } = decodeBody(nfgenmsg, unhex(k.payload));
      const e = decodeCtEntry(header, attrs);
      const ips = (t: Record<string, unknown>) => ({
        ...t,
        src: parseIP(t.src as string),
        dst: parseIP(t.dst as string),
      });
      const { id, ...rest } = e;
      assert.equal(typeof id, 'number');
      assert.deepEqual(rest, { ...k.want, orig: ips(k.want.orig), reply: ips(k.want.reply) });
      // Its deletion names it by the original tuple exactly as the kernel wrote it, and its zone.
      const del = wire(CT_MSG.DELETE, encodeCtDelete(e));
      assert.deepEqual(
        del.attrs.list.map((x) => x.type),
        e.zone === undefined ? [CTA.TUPLE_ORIG] : [CTA.TUPLE_ORIG, CTA.ZONE],
      );
      assert.equal(hex(del.attrs.get(CTA.TUPLE_ORIG)!), hex(attrs.get(CTA.TUPLE_ORIG)!));
      if (e.zone !== undefined) assert.equal(hex(del.attrs.get(CTA.ZONE)!), hex(attrs.get(CTA.ZONE)!));
    });
  }
});
