import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isWeftError } from '../lib/errors.js';
import { formatIP, parseIP } from '../lib/ip.js';
import {
  type Attr,
  type Attrs,
  a,
  align4,
  attrLength,
  attrsLength,
  decodeAttrs,
  encodeAttrs,
  encodeAttrsInto,
  formatMac,
  isMac,
  LITTLE_ENDIAN,
  NLA_F_NESTED,
  NLA_F_NET_BYTEORDER,
  parseMac,
} from './attr.js';

const throwsInvalid = (fn: () => unknown, re?: RegExp) =>
  assert.throws(fn, (e: unknown) => {
    assert.ok(isWeftError(e, 'INVALID'), `expected INVALID, got ${String(e)}`);
    if (re) assert.match(e.message, re);
    return true;
  });

// ---- arbitraries ----------------------------------------------------------------------------

const arbType = fc.integer({ min: 0, max: 0x3ffe });
const arbLeaf: fc.Arbitrary<Attr> = fc.record({
  type: arbType,
  value: fc.uint8Array({ minLength: 0, maxLength: 300 }),
  flags: fc.constantFrom(0, NLA_F_NET_BYTEORDER),
});

/** Trees of attributes nested up to `depth` levels below the top. */
function arbTree(depth: number): fc.Arbitrary<Attr> {
  if (depth === 0) return arbLeaf;
  const nested = fc.record({
    type: arbType,
    nested: fc.array(arbTree(depth - 1), { maxLength: 4 }),
    flags: fc.constantFrom(0, NLA_F_NESTED),
  });
  return fc.oneof({ weight: 2, arbitrary: arbLeaf }, { weight: 1, arbitrary: nested });
}
const arbList = fc.array(arbTree(3), { maxLength: 8 });

/** The payload of a leaf attribute. */
const bytesOf = (x: Attr): number[] => ('value' in x ? [...x.value] : assert.fail('a nested attribute'));

/** Assert that `got` decodes to `want`, descending into nested attributes. */
function assertDecoded(want: readonly Attr[], got: Attrs, path = 'top'): void {
  assert.equal(got.list.length, want.length, `${path}: attribute count`);
  want.forEach((w, i) => {
    const g = got.list[i]!;
    const where = `${path}[${i}]`;
    assert.equal(g.type, w.type, `${where}: type`);
    assert.equal(g.flags, w.flags ?? 0, `${where}: flags`);
    if ('value' in w) assert.deepEqual(g.value, w.value, `${where}: value`);
    else assertDecoded(w.nested, decodeAttrs(g.value), where);
  });
}

/** Every attribute start (at any depth) is 4-byte aligned in the encoded buffer. */
function assertAligned(buf: Uint8Array, list: readonly Attr[], got: Attrs): void {
  got.list.forEach((g, i) => {
    const start = g.value.byteOffset - buf.byteOffset - 4;
    assert.equal(start % 4, 0, `attribute at ${start} is not aligned`);
    const w = list[i]!;
    if ('nested' in w) assertAligned(buf, w.nested, decodeAttrs(g.value));
    else {
      // Padding after the payload is zeroed.
      const end = start + 4 + g.value.length;
      for (let p = end; p < align4(end); p++) assert.equal(buf[p], 0, `padding byte at ${p}`);
    }
  });
}

/** Start and unpadded end of every top-level attribute in an encoding. */
function spans(list: readonly Attr[]): { start: number; end: number }[] {
  let off = 0;
  return list.map((x) => {
    const s = { start: off, end: off + attrLength(x) };
    off += align4(attrLength(x));
    return s;
  });
}

// ---- tests ----------------------------------------------------------------------------------

describe('netlink attributes', () => {
  test('decodeAttrs(encodeAttrs(tree)) == tree, every attribute 4-byte aligned', () => {
    fc.assert(
      fc.property(arbList, (list) => {
        const buf = encodeAttrs(list);
        assert.equal(buf.length, attrsLength(list));
        assert.equal(buf.length % 4, 0);
        const got = decodeAttrs(buf);
        assertDecoded(list, got);
        assertAligned(buf, list, got);
      }),
      { numRuns: 200 },
    );
  });

  test('encodeAttrsInto writes at an offset of a larger buffer and returns the aligned end', () => {
    fc.assert(
      fc.property(arbList, fc.nat(3), (list, pre) => {
        const at = pre * 4;
        const out = new Uint8Array(at + attrsLength(list) + 8).fill(0xee);
        const end = encodeAttrsInto(list, out, at);
        assert.equal(end, at + attrsLength(list));
        assert.ok(out.subarray(0, at).every((b) => b === 0xee));
        assert.ok(out.subarray(end).every((b) => b === 0xee));
        assertDecoded(list, decodeAttrs(out.subarray(at, end)));
      }),
    );
  });

  test('lengths: header, payload, nested sums of aligned children', () => {
    assert.equal(attrLength(a.flag(1)), 4);
    assert.equal(attrLength(a.u8(1, 7)), 5);
    assert.equal(attrsLength([a.u8(1, 7)]), 8);
    const n = a.nest(9, [a.u8(1, 1), a.u32(2, 2)]);
    assert.equal(attrLength(n), 4 + 8 + 8);
    const buf = encodeAttrs([n, a.u8(3, 3)]);
    assert.deepEqual(
      [...buf],
      [20, 0, 9, 0, 5, 0, 1, 0, 1, 0, 0, 0, 8, 0, 2, 0, 2, 0, 0, 0, 5, 0, 3, 0, 3, 0, 0, 0].map((x) => x),
    );
    assert.ok(LITTLE_ENDIAN, 'these byte vectors assume a little-endian host');
  });

  test('an attribute longer than 65535 bytes is refused when encoding', () => {
    throwsInvalid(() => encodeAttrs([a.bytes(1, new Uint8Array(65532))]), /too long/);
    encodeAttrs([a.bytes(1, new Uint8Array(65531))]);
    throwsInvalid(
      () => encodeAttrs([a.nest(2, [a.bytes(1, new Uint8Array(40000)), a.bytes(1, new Uint8Array(40000))])]),
      /too long/,
    );
  });

  test('builders are read back by the getters', () => {
    fc.assert(
      fc.property(
        fc.record({
          u8: fc.integer({ min: 0, max: 0xff }),
          u16: fc.integer({ min: 0, max: 0xffff }),
          be16: fc.integer({ min: 0, max: 0xffff }),
          u32: fc.integer({ min: 0, max: 0xffffffff }),
          s32: fc.integer({ min: -0x80000000, max: 0x7fffffff }),
          u64: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
          str: fc.string({ unit: 'grapheme', maxLength: 40 }).filter((s) => !s.includes('\0')),
          v4: fc.ipV4(),
          v6: fc.ipV6(),
          mac: fc.uint8Array({ minLength: 6, maxLength: 6 }).map(formatMac),
        }),
        (v) => {
          const got = decodeAttrs(
            encodeAttrs([
              a.u8(1, v.u8),
              a.u16(2, v.u16),
              a.be16(3, v.be16),
              a.u32(4, v.u32),
              a.s32(5, v.s32),
              a.u64(6, v.u64),
              a.str(7, v.str),
              a.ip(8, parseIP(v.v4)),
              a.ip(9, parseIP(v.v6)),
              a.mac(10, v.mac),
              a.flag(11),
              a.nest(12, [a.u32(1, v.u32)], NLA_F_NESTED),
            ]),
          );
          assert.equal(got.u8(1), v.u8);
          assert.equal(got.u16(2), v.u16);
          assert.equal(got.be16(3), v.be16);
          assert.equal(got.u32(4), v.u32);
          assert.equal(got.s32(5), v.s32);
          assert.equal(got.u64(6), v.u64);
          assert.equal(got.str(7), v.str);
          assert.equal(formatIP(got.ip(8)!), formatIP(parseIP(v.v4)));
          assert.equal(formatIP(got.ip(9)!), formatIP(parseIP(v.v6)));
          assert.equal(got.mac(10), v.mac);
          assert.ok(got.has(11));
          assert.equal(got.get(11)?.length, 0);
          assert.equal(got.nested(12)?.u32(1), v.u32);
          assert.equal(got.list.find((x) => x.type === 12)?.flags, NLA_F_NESTED);
          // Absent attributes read as undefined.
          assert.equal(got.u32(99), undefined);
          assert.equal(got.str(99), undefined);
          assert.equal(got.ip(99), undefined);
          assert.equal(got.nested(99), undefined);
          assert.ok(!got.has(99));
        },
      ),
    );
  });

  test('byte order: host order integers, network order be16, NUL-terminated strings', () => {
    assert.deepEqual(bytesOf(a.be16(1, 8472)), [0x21, 0x18]);
    assert.deepEqual(bytesOf(a.u16(1, 8472)), [0x18, 0x21]);
    assert.deepEqual(bytesOf(a.u32(1, 0x01020304)), [4, 3, 2, 1]);
    assert.deepEqual(bytesOf(a.s32(1, -1)), [255, 255, 255, 255]);
    assert.deepEqual(bytesOf(a.u8(1, 0x1ff)), [0xff]);
    assert.deepEqual(bytesOf(a.str(1, 'br0')), [0x62, 0x72, 0x30, 0]);
    // A string getter stops at the first NUL and accepts a missing terminator.
    const got = decodeAttrs(
      encodeAttrs([a.bytes(1, Uint8Array.of(0x61, 0, 0x62)), a.bytes(2, Uint8Array.of(0x61))]),
    );
    assert.equal(got.str(1), 'a');
    assert.equal(got.str(2), 'a');
  });

  test('get returns the first of repeated types; all returns every one in order', () => {
    const got = decodeAttrs(encodeAttrs([a.u32(5, 1), a.u8(6, 0), a.u32(5, 2), a.u32(5, 3)]));
    assert.equal(got.u32(5), 1);
    assert.deepEqual(
      got.all(5).map((v) => new DataView(v.buffer, v.byteOffset, 4).getUint32(0, LITTLE_ENDIAN)),
      [1, 2, 3],
    );
    assert.deepEqual(got.all(7), []);
  });

  test('getters refuse payloads shorter than their type with INVALID', () => {
    const got = decodeAttrs(encodeAttrs([a.bytes(1, new Uint8Array(0)), a.bytes(2, new Uint8Array(3))]));
    throwsInvalid(() => got.u8(1), /has 0 bytes, expected 1/);
    throwsInvalid(() => got.u16(1));
    throwsInvalid(() => got.be16(1));
    throwsInvalid(() => got.u32(2), /has 3 bytes, expected 4/);
    throwsInvalid(() => got.s32(2));
    throwsInvalid(() => got.u64(2));
    throwsInvalid(() => got.ip(2));
    assert.equal(got.u16(2), new DataView(new ArrayBuffer(2)).getUint16(0));
  });

  test('a length field below 4 is INVALID (no endless loop on len 0)', () => {
    for (let len = 0; len < 4; len++) {
      const buf = new Uint8Array(8);
      new DataView(buf.buffer).setUint16(0, len, LITTLE_ENDIAN);
      throwsInvalid(() => decodeAttrs(buf), /malformed netlink attribute at offset 0/);
    }
    // Also after a good attribute.
    const good = encodeAttrs([a.u32(1, 1)]);
    const buf = new Uint8Array(good.length + 4);
    buf.set(good);
    throwsInvalid(() => decodeAttrs(buf), /at offset 8/);
  });

  test('a length past the end of the buffer is INVALID', () => {
    const buf = encodeAttrs([a.u32(1, 1)]);
    new DataView(buf.buffer).setUint16(0, 9, LITTLE_ENDIAN);
    throwsInvalid(() => decodeAttrs(buf), /len 9, 8 left/);
  });

  test('truncation: INVALID unless cut between attributes (or in the last padding)', () => {
    fc.assert(
      fc.property(
        fc.array(arbTree(2), { minLength: 1, maxLength: 6 }).chain((list) => {
          const len = attrsLength(list);
          return fc.tuple(fc.constant(list), fc.integer({ min: 0, max: len - 1 }));
        }),
        ([list, k]) => {
          const buf = encodeAttrs(list);
          const cut = buf.slice(0, k);
          const whole = spans(list);
          const clean = whole.findIndex((s) => k >= s.end && k <= align4(s.end)) + 1;
          const atStart = whole.findIndex((s) => s.start === k);
          if (atStart >= 0) assertDecoded(list.slice(0, atStart), decodeAttrs(cut));
          else if (clean > 0) assertDecoded(list.slice(0, clean), decodeAttrs(cut));
          else throwsInvalid(() => decodeAttrs(cut));
        },
      ),
    );
  });

  test('random bytes decode or fail with INVALID, at any depth, never anything else', () => {
    const walk = (buf: Uint8Array, depth: number): void => {
      let got: Attrs;
      try {
        got = decodeAttrs(buf);
      } catch (e) {
        assert.ok(isWeftError(e, 'INVALID'), String(e));
        return;
      }
      for (const x of got.list) if (depth < 4) walk(x.value, depth + 1);
    };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => walk(b, 0)),
      { numRuns: 500 },
    );
  });
});

describe('MAC addresses', () => {
  test('parseMac / formatMac round trip', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 6, maxLength: 6 }), (b) => {
        const s = formatMac(b);
        assert.match(s, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
        assert.ok(isMac(s));
        assert.deepEqual(parseMac(s), b);
        assert.deepEqual(parseMac(s.toUpperCase()), b);
      }),
    );
    assert.equal(formatMac(parseMac('02:AB:cd:00:01:FF')), '02:ab:cd:00:01:ff');
  });

  test('malformed MACs are INVALID', () => {
    for (const bad of [
      '',
      'aa:bb:cc:dd:ee',
      'aa:bb:cc:dd:ee:ff:00',
      'aa-bb-cc-dd-ee-ff',
      'aabbccddeeff',
      'aa:bb:cc:dd:ee:fg',
      'a:bb:cc:dd:ee:ff',
    ]) {
      throwsInvalid(() => parseMac(bad), /is not a MAC address/);
      assert.ok(!isMac(bad));
    }
  });
});
