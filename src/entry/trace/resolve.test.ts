/** `weft trace`'s SRC/DST syntax (pure). */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { labOnlyName, parseTarget } from './resolve.js';

describe('parseTarget', () => {
  test('names, ports and protocols', () => {
    assert.deepEqual(parseTarget('h1c1', 'SRC'), { name: 'h1c1' });
    assert.deepEqual(parseTarget('host2/h2c1:8080', 'DST'), { name: 'host2/h2c1', port: 8080, proto: 'tcp' });
    assert.deepEqual(parseTarget('10.244.1.2:53/udp', 'DST'), { name: '10.244.1.2', port: 53, proto: 'udp' });
    assert.deepEqual(parseTarget('internet:80/TCP', 'DST'), { name: 'internet', port: 80, proto: 'tcp' });
    assert.deepEqual(parseTarget('[fd00::2]:80', 'DST'), { name: 'fd00::2', port: 80, proto: 'tcp' });
    assert.deepEqual(parseTarget('fd00::2', 'DST'), { name: 'fd00::2' });
  });
  test('bad input is INVALID before anything is read', () => {
    for (const [s, re] of [
      ['', /empty/],
      ['h1c1:0', /1-65535/],
      ['h1c1:70000', /1-65535/],
      ['h1c1:http', /1-65535/],
      ['h1c1/udp', /needs a port/],
      [':80', /names nothing/],
    ] as const) {
      assert.throws(
        () => parseTarget(s, 'DST'),
        (e: Error & { code?: string }) => e.code === 'INVALID' && re.test(e.message),
        s,
      );
    }
    assert.throws(() => parseTarget('h1c1:80', 'SRC'), /takes no port/);
  });
  test('names only a lab has', () => {
    for (const n of ['host2/h2c1', 'host1', 'internet', 'router']) assert.equal(labOnlyName(n), true, n);
    for (const n of ['h1c1', '10.0.0.1', 'host', 'web']) assert.equal(labOnlyName(n), false, n);
  });
});
