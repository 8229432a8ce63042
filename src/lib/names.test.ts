import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { isWeftError } from './errors.js';
import { checkIfName, checkObjectName, IFNAME_MAX } from './names.js';

const throwsInvalid = (fn: () => unknown, re?: RegExp) =>
  assert.throws(fn, (e: unknown) => {
    assert.ok(isWeftError(e, 'INVALID'), `expected INVALID, got ${String(e)}`);
    if (re) assert.match(e.message, re);
    return true;
  });

describe('names', () => {
  test('checkIfName accepts what the kernel accepts', () => {
    for (const ok of ['eth0', 'veth-1.a', 'a', 'x'.repeat(15), 'br_0', 'vx@42', 'é'.repeat(7), 'lo']) {
      assert.equal(checkIfName(ok), ok);
    }
  });

  test('checkIfName: at most 15 bytes (not characters)', () => {
    assert.equal(IFNAME_MAX, 15);
    throwsInvalid(() => checkIfName('x'.repeat(16)), /too long \(16 bytes, at most 15\)/);
    throwsInvalid(() => checkIfName('é'.repeat(8)), /too long \(16 bytes/);
    throwsInvalid(() => checkIfName(''), /must not be empty/);
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 20 }), (s) => {
        const bad =
          s.length === 0 || Buffer.byteLength(s) > 15 || s === '.' || s === '..' || /[/:%\s\0]/.test(s);
        if (bad) throwsInvalid(() => checkIfName(s));
        else assert.equal(checkIfName(s), s);
      }),
    );
  });

  test("checkIfName refuses '/', ':', '%', whitespace, NUL, '.' and '..'", () => {
    for (const bad of ['a/b', 'eth0:1', 'br%d', 'a b', 'a\tb', 'a\nb', 'a\0b', '.', '..']) {
      throwsInvalid(() => checkIfName(bad), /character the kernel refuses/);
    }
    assert.equal(checkIfName('...'), '...');
    assert.equal(checkIfName('.a'), '.a');
    throwsInvalid(() => checkIfName('a b', 'veth peer name'), /^veth peer name "a b"/);
  });

  test('checkObjectName: 1-63 of [a-zA-Z0-9_.-], starting with a letter or digit', () => {
    for (const ok of ['a', 'net1', 'my_net.v2-x', '0', 'A'.repeat(63)]) assert.equal(checkObjectName(ok), ok);
    for (const bad of ['', '-a', '_a', '.a', 'a b', 'a/b', 'a:b', 'A'.repeat(64), 'né']) {
      throwsInvalid(() => checkObjectName(bad, 'network name'), /^network name ".*" is invalid/);
    }
    const alnum = fc.constantFrom(...'abcXYZ019'.split(''));
    const rest = fc.constantFrom(...'abcXYZ019_.-'.split(''));
    fc.assert(
      fc.property(alnum, fc.string({ unit: rest, maxLength: 62 }), (h, t) => {
        assert.equal(checkObjectName(h + t), h + t);
      }),
    );
  });
});
