import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isWeftError } from '../lib/errors.js';
import { type Attr, type Attrs, a, align4, decodeAttrs, encodeAttrs, LITTLE_ENDIAN } from './attr.js';
import { NLM_F, NLMSG, NLMSGERR_ATTR, RTM } from './consts.js';
import {
  decodeBody,
  encodeBody,
  encodeMessage,
  encodeRaw,
  type FixedCodec,
  ifaddrmsg,
  ifinfomsg,
  NLMSG_HDRLEN,
  type NlHeader,
  ndmsg,
  parseDone,
  parseError,
  parseMessages,
  rtmsg,
} from './message.js';

const throwsInvalid = (fn: () => unknown, re?: RegExp) =>
  assert.throws(fn, (e: unknown) => {
    assert.ok(isWeftError(e, 'INVALID'), `expected INVALID, got ${String(e)}`);
    if (re) assert.match(e.message, re);
    return true;
  });

// ---- arbitraries ----------------------------------------------------------------------------

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const s32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });

const arbHeader: fc.Arbitrary<NlHeader> = fc.record({ type: u16, flags: u16, seq: u32, pid: u32 });
const arbAttrs: fc.Arbitrary<Attr[]> = fc.array(
  fc.oneof(
    fc.record({ type: fc.integer({ min: 1, max: 0x3ffe }), value: fc.uint8Array({ maxLength: 40 }) }),
    fc.record({
      type: fc.integer({ min: 1, max: 0x3ffe }),
      nested: fc.array(fc.record({ type: u8, value: fc.uint8Array({ maxLength: 9 }) }), { maxLength: 3 }),
    }),
  ),
  { maxLength: 6 },
);

interface Family<H> {
  readonly name: string;
  readonly codec: FixedCodec<H>;
  readonly header: fc.Arbitrary<H>;
}
const family = <H>(name: string, codec: FixedCodec<H>, header: fc.Arbitrary<H>): Family<H> => ({
  name,
  codec,
  header,
});
const families = [
  family('ifinfomsg', ifinfomsg, fc.record({ family: u8, type: u16, index: s32, flags: u32, change: u32 })),
  family('ifaddrmsg', ifaddrmsg, fc.record({ family: u8, prefixlen: u8, flags: u8, scope: u8, index: u32 })),
  family(
    'rtmsg',
    rtmsg,
    fc.record({
      family: u8,
      dstLen: u8,
      srcLen: u8,
      tos: u8,
      table: u8,
      protocol: u8,
      scope: u8,
      type: u8,
      flags: u32,
    }),
  ),
  family('ndmsg', ndmsg, fc.record({ family: u8, index: s32, state: u16, flags: u8, type: u8 })),
] as const;

/** One encoded message of any family, with what it should decode to. */
interface Sample {
  readonly fam: Family<unknown>;
  readonly h: NlHeader;
  readonly header: unknown;
  readonly attrs: Attr[];
}
const arbSample: fc.Arbitrary<Sample> = fc
  .constantFrom(...(families as readonly Family<unknown>[]))
  .chain((fam) => fc.record({ fam: fc.constant(fam), h: arbHeader, header: fam.header, attrs: arbAttrs }));
const encodeSample = (s: Sample): Uint8Array =>
  encodeMessage(s.h, s.fam.codec, { header: s.header, attrs: s.attrs });

function assertAttrs(want: readonly Attr[], got: Attrs): void {
  assert.equal(got.list.length, want.length);
  want.forEach((w, i) => {
    const g = got.list[i]!;
    assert.equal(g.type, w.type);
    if ('value' in w) assert.deepEqual(g.value, w.value);
    else assertAttrs(w.nested, decodeAttrs(g.value));
  });
}

function assertSample(s: Sample, m: ReturnType<typeof parseMessages>[number]): void {
  assert.deepEqual({ type: m.type, flags: m.flags, seq: m.seq, pid: m.pid }, { ...s.h });
  const body = decodeBody(s.fam.codec, m.payload);
  assert.deepEqual(body.header, { ...(s.header as object) }, s.fam.name);
  assertAttrs(s.attrs, body.attrs);
}

/** An NLMSG_ERROR as the kernel builds it (netlink_ack in net/netlink/af_netlink.c). */
function errorMessage(o: {
  errno: number;
  req: NlHeader;
  reqPayload: Uint8Array;
  capped: boolean;
  tlvs?: Attr[];
}): Uint8Array {
  const reqLen = NLMSG_HDRLEN + o.reqPayload.length;
  const echoed = o.capped ? NLMSG_HDRLEN : align4(reqLen);
  const tlvs = o.tlvs ? encodeAttrs(o.tlvs) : new Uint8Array(0);
  const payload = new Uint8Array(4 + echoed + tlvs.length);
  const dv = new DataView(payload.buffer);
  dv.setInt32(0, -o.errno, LITTLE_ENDIAN);
  dv.setUint32(4, reqLen, LITTLE_ENDIAN);
  dv.setUint16(8, o.req.type, LITTLE_ENDIAN);
  dv.setUint16(10, o.req.flags, LITTLE_ENDIAN);
  dv.setUint32(12, o.req.seq, LITTLE_ENDIAN);
  dv.setUint32(16, o.req.pid, LITTLE_ENDIAN);
  if (!o.capped) payload.set(o.reqPayload, 4 + NLMSG_HDRLEN);
  payload.set(tlvs, 4 + echoed);
  const flags = (o.capped ? NLM_F.CAPPED : 0) | (o.tlvs ? NLM_F.ACK_TLVS : 0);
  return encodeRaw({ type: NLMSG.ERROR, flags, seq: o.req.seq, pid: 0 }, payload);
}

// ---- tests ----------------------------------------------------------------------------------

describe('netlink messages', () => {
  for (const fam of families as readonly Family<unknown>[]) {
    test(`${fam.name}: encodeMessage then parseMessages + decodeBody round trip`, () => {
      fc.assert(
        fc.property(arbHeader, fam.header, arbAttrs, (h, header, attrs) => {
          const s: Sample = { fam, h, header, attrs };
          const buf = encodeSample(s);
          assert.equal(buf.length % 4, 0);
          assert.equal(new DataView(buf.buffer).getUint32(0, LITTLE_ENDIAN), buf.length);
          const msgs = parseMessages(buf);
          assert.equal(msgs.length, 1);
          assertSample(s, msgs[0]!);
          // The body alone (a nested struct such as a veth peer) round trips too.
          const body = decodeBody(fam.codec, encodeBody(fam.codec, { header, attrs }));
          assert.deepEqual(body.header, { ...(header as object) });
          assertAttrs(attrs, body.attrs);
        }),
      );
    });
  }

  test('family header sizes and field offsets match the kernel structs', () => {
    assert.deepEqual(
      families.map((f) => f.codec.size),
      [16, 8, 12, 12],
    );
    const m = encodeMessage({ type: RTM.NEWLINK, flags: 0x405, seq: 7, pid: 0 }, ifinfomsg, {
      header: { family: 7, type: 1, index: 3, flags: 1, change: 0xffffffff },
      attrs: [a.u32(4, 1500)],
    });
    assert.deepEqual(
      [...m],
      [
        ...[40, 0, 0, 0, 16, 0, 0x05, 0x04, 7, 0, 0, 0, 0, 0, 0, 0],
        ...[7, 0, 1, 0, 3, 0, 0, 0, 1, 0, 0, 0, 255, 255, 255, 255],
        ...[8, 0, 4, 0, 0xdc, 0x05, 0, 0],
      ],
    );
    const nd = encodeBody(ndmsg, {
      header: { family: 7, index: -2, state: 0x80, flags: 2, type: 1 },
      attrs: [],
    });
    assert.deepEqual([...nd], [7, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0x80, 0, 2, 1]);
  });

  test('several messages in one buffer split correctly', () => {
    fc.assert(
      fc.property(fc.array(arbSample, { minLength: 1, maxLength: 6 }), (samples) => {
        const parts = samples.map(encodeSample);
        const buf = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let off = 0;
        for (const p of parts) {
          buf.set(p, off);
          off += p.length;
        }
        const msgs = parseMessages(buf);
        assert.equal(msgs.length, samples.length);
        for (const [i, s] of samples.entries()) assertSample(s, msgs[i]!);
      }),
    );
  });

  test('a message with an unaligned length (encodeRaw) is followed at the aligned offset', () => {
    const first = encodeRaw({ type: 100, flags: 0, seq: 1, pid: 0 }, Uint8Array.of(1, 2, 3, 4, 5));
    assert.equal(first.length, 24);
    assert.equal(new DataView(first.buffer).getUint32(0, LITTLE_ENDIAN), 21);
    const second = encodeRaw({ type: 101, flags: 0, seq: 2, pid: 0 }, Uint8Array.of(9));
    const buf = new Uint8Array(first.length + second.length);
    buf.set(first);
    buf.set(second, first.length);
    const msgs = parseMessages(buf);
    assert.deepEqual(
      msgs.map((m) => [m.type, [...m.payload]]),
      [
        [100, [1, 2, 3, 4, 5]],
        [101, [9]],
      ],
    );
    // The last message of a datagram may omit its padding.
    assert.deepEqual([...parseMessages(buf.subarray(0, first.length + 17))[1]!.payload], [9]);
  });

  test('truncated buffers are INVALID unless cut between messages', () => {
    fc.assert(
      fc.property(
        fc.array(arbSample, { minLength: 1, maxLength: 4 }).chain((samples) => {
          const parts = samples.map(encodeSample);
          const total = parts.reduce((n, p) => n + p.length, 0);
          return fc.tuple(fc.constant(parts), fc.integer({ min: 1, max: total - 1 }));
        }),
        ([parts, k]) => {
          const buf = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
          const starts: number[] = [];
          let off = 0;
          for (const p of parts) {
            starts.push(off);
            buf.set(p, off);
            off += p.length;
          }
          const cut = buf.slice(0, k);
          const at = starts.indexOf(k);
          if (at >= 0) assert.equal(parseMessages(cut).length, at);
          else throwsInvalid(() => parseMessages(cut), /malformed|truncated/);
        },
      ),
    );
  });

  test('a length below the header size is INVALID; an empty buffer is no messages', () => {
    assert.deepEqual(parseMessages(new Uint8Array(0)), []);
    for (const len of [0, 1, 15]) {
      const buf = new Uint8Array(16);
      new DataView(buf.buffer).setUint32(0, len, LITTLE_ENDIAN);
      throwsInvalid(() => parseMessages(buf), /malformed netlink message at offset 0/);
    }
    throwsInvalid(() => decodeBody(rtmsg, new Uint8Array(11)), /shorter than its header \(12\)/);
  });

  test('random bytes parse or fail with INVALID, never anything else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 120 }), (b) => {
        try {
          for (const m of parseMessages(b)) {
            if (m.type === NLMSG.ERROR && m.payload.length >= 4) parseError(m);
            else if (m.type === NLMSG.DONE) parseDone(m);
            else decodeBody(ifinfomsg, m.payload);
          }
        } catch (e) {
          assert.ok(isWeftError(e, 'INVALID'), String(e));
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('NLMSG_ERROR and NLMSG_DONE', () => {
  const req: NlHeader = { type: RTM.NEWLINK, flags: 0x605, seq: 1234, pid: 0 };
  const reqPayload = encodeBody(ifinfomsg, {
    header: { family: 0, type: 0, index: 0, flags: 0, change: 0 },
    attrs: [a.str(3, 'br0')],
  });

  test('capped, with extended ACK TLVs: errno, request header, text, offset', () => {
    const buf = errorMessage({
      errno: 17,
      req,
      reqPayload,
      capped: true,
      tlvs: [a.str(NLMSGERR_ATTR.MSG, 'Link already exists'), a.u32(NLMSGERR_ATTR.OFFS, 32)],
    });
    const [m] = parseMessages(buf);
    assert.equal(m!.type, NLMSG.ERROR);
    assert.deepEqual(parseError(m!), { errno: 17, request: req, message: 'Link already exists', offset: 32 });
  });

  test('uncapped (the request echoed in full), with TLVs', () => {
    for (const extra of [0, 1, 2, 3]) {
      const payload = new Uint8Array(reqPayload.length + extra);
      payload.set(reqPayload);
      const [m] = parseMessages(
        errorMessage({
          errno: 22,
          req,
          reqPayload: payload,
          capped: false,
          tlvs: [a.str(NLMSGERR_ATTR.MSG, 'Unknown device type')],
        }),
      );
      assert.deepEqual(parseError(m!), {
        errno: 22,
        request: req,
        message: 'Unknown device type',
        offset: undefined,
      });
    }
  });

  test('without TLVs: no text, in both shapes; an ACK is errno 0', () => {
    for (const capped of [true, false]) {
      const [m] = parseMessages(errorMessage({ errno: 95, req, reqPayload, capped }));
      assert.deepEqual(parseError(m!), { errno: 95, request: req, message: undefined, offset: undefined });
    }
    const [ack] = parseMessages(errorMessage({ errno: 0, req, reqPayload, capped: true }));
    assert.equal(parseError(ack!).errno, 0);
  });

  test('random errors round trip', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 4095 }),
        arbHeader,
        fc.uint8Array({ maxLength: 64 }),
        fc.boolean(),
        fc.option(fc.string({ unit: 'grapheme', maxLength: 80 }).filter((s) => !s.includes('\0'))),
        fc.option(u32),
        (errno, h, reqP, capped, text, offs) => {
          const tlvs: Attr[] = [];
          if (text !== null) tlvs.push(a.str(NLMSGERR_ATTR.MSG, text));
          if (offs !== null) tlvs.push(a.u32(NLMSGERR_ATTR.OFFS, offs));
          const buf = errorMessage({
            errno,
            req: h,
            reqPayload: reqP,
            capped,
            ...(tlvs.length > 0 && { tlvs }),
          });
          const err = parseError(parseMessages(buf)[0]!);
          assert.equal(err.errno, errno);
          assert.deepEqual(err.request, { ...h });
          assert.equal(err.message, text ?? undefined);
          assert.equal(err.offset, offs ?? undefined);
        },
      ),
    );
  });

  test('short or foreign messages', () => {
    const short = {
      type: NLMSG.ERROR,
      flags: 0,
      seq: 0,
      pid: 0,
      payload: Uint8Array.of(0xef, 0xff, 0xff, 0xff),
    };
    assert.deepEqual(parseError(short), {
      errno: 17,
      request: undefined,
      message: undefined,
      offset: undefined,
    });
    throwsInvalid(() => parseError({ ...short, payload: new Uint8Array(3) }), /not an NLMSG_ERROR/);
    throwsInvalid(() => parseError({ ...short, type: NLMSG.DONE }), /not an NLMSG_ERROR/);
  });

  test('parseDone: 0, a negated errno, or a missing payload', () => {
    const done = (payload: Uint8Array) =>
      parseMessages(encodeRaw({ type: NLMSG.DONE, flags: NLM_F.MULTI, seq: 1, pid: 0 }, payload))[0]!;
    assert.equal(parseDone(done(new Uint8Array(4))), 0);
    const intr = new Uint8Array(4);
    new DataView(intr.buffer).setInt32(0, -4, LITTLE_ENDIAN);
    assert.equal(parseDone(done(intr)), 4);
    assert.equal(parseDone(done(new Uint8Array(0))), 0);
  });
});
