import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isWeftError } from '../lib/errors.js';
import { parseIP } from '../lib/ip.js';
import { type CtEntry, IPPROTO } from '../netlink/conntrack.js';
import { type CtFilter, compileFilter, matches } from './conntrack.js';

/** A DNATed entry: client → host:hostPort, answered by target:targetPort. */
function entry(
  proto: number,
  hostPort: number,
  targetPort: number,
  over: { host?: string; target?: string; client?: string } = {},
): CtEntry {
  const host = parseIP(over.host ?? '198.51.100.1');
  const target = parseIP(over.target ?? '10.77.0.2');
  const client = parseIP(over.client ?? '198.51.100.2');
  return {
    family: host.family,
    proto,
    orig: { src: client, dst: host, sport: 40000, dport: hostPort },
    reply: { src: target, dst: client, sport: targetPort, dport: 40000 },
  };
}

const sel = (f: CtFilter, e: CtEntry): boolean => matches(compileFilter(f), e);

describe('conntrack filters (pure)', () => {
  test('protocol and original destination port, single or a range', () => {
    const e = entry(IPPROTO.TCP, 8080, 80);
    assert.equal(sel({ proto: 'tcp', dport: 8080 }, e), true);
    assert.equal(sel({ proto: 'udp', dport: 8080 }, e), false);
    assert.equal(sel({ proto: 'tcp', dport: 8081 }, e), false);
    assert.equal(sel({ proto: 'tcp', dport: [8000, 8080] }, e), true);
    assert.equal(sel({ proto: 'tcp', dport: [8081, 8090] }, e), false);
    const icmp: CtEntry = { ...e, proto: IPPROTO.ICMP, orig: { src: e.orig.src, dst: e.orig.dst } };
    assert.equal(sel({ proto: 'tcp', dport: [1, 65535] }, icmp), false, 'no port: never selected');
  });

  test('reply source address and port: a range maps one to one', () => {
    const e = entry(IPPROTO.UDP, 5305, 6305);
    const f = { proto: 'udp', dport: [5300, 5319], replySrc: '10.77.0.2' } as const;
    assert.equal(sel({ ...f, replySport: 6300 }, e), true);
    assert.equal(sel({ ...f, replySport: 6301 }, e), false);
    assert.equal(sel({ ...f, replySrc: '10.77.0.3', replySport: 6300 }, e), false);
  });

  test('original destination address and family', () => {
    const e = entry(IPPROTO.TCP, 8080, 80);
    assert.equal(sel({ proto: 'tcp', dport: 8080, origDst: '198.51.100.1' }, e), true);
    assert.equal(sel({ proto: 'tcp', dport: 8080, origDst: '127.0.0.1' }, e), false);
    assert.equal(sel({ proto: 'tcp', dport: 8080, family: 6 }, e), false);
    const e6 = entry(IPPROTO.TCP, 8080, 80, { host: 'fd00::1', target: 'fd77::2', client: 'fd00::2' });
    assert.equal(sel({ proto: 'tcp', dport: 8080, family: 6, replySrc: 'fd77::2' }, e6), true);
    assert.equal(sel({ proto: 'tcp', dport: 8080, replySrc: '10.77.0.2' }, e6), false);
  });

  test('the family of a filter comes from its addresses', () => {
    assert.equal(compileFilter({ proto: 'tcp', dport: 1, replySrc: 'fd00::1' }).family, 6);
    assert.equal(compileFilter({ proto: 'tcp', dport: 1 }).family, undefined);
  });

  test('bad filters are INVALID, with the reason', () => {
    const bad: [unknown, RegExp][] = [
      [{ proto: 'icmp', dport: 1 }, /tcp or udp/],
      [{ proto: 'tcp', dport: 0 }, /not a port/],
      [{ proto: 'tcp', dport: 65536 }, /not a port/],
      [{ proto: 'tcp', dport: 1.5 }, /not a port/],
      [{ proto: 'tcp' }, /not a port/],
      [{ proto: 'tcp', dport: [10, 5] }, /reversed/],
      [{ proto: 'tcp', dport: [1, 2, 3] }, /\[first, last\]/],
      [{ proto: 'tcp', dport: [65530, 65535], replySport: 65534 }, /last reply source port/],
      [{ proto: 'tcp', dport: 1, origDst: 'nope' }, /not an IP address/],
      [{ proto: 'tcp', dport: 1, family: 5 }, /4 or 6/],
      [{ proto: 'tcp', dport: 1, family: 4, replySrc: 'fd00::1' }, /different IP versions/],
      [{ proto: 'tcp', dport: 1, origDst: '10.0.0.1', replySrc: 'fd00::1' }, /different IP versions/],
      [null, /object/],
    ];
    for (const [f, re] of bad) {
      assert.throws(
        () => compileFilter(f as CtFilter),
        (e) => isWeftError(e, 'INVALID') && re.test(e.message),
        JSON.stringify(f),
      );
    }
  });
});
