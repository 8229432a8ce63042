import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  asWeftError,
  codeForErrno,
  conflict,
  Errno,
  ErrorCodes,
  errnoName,
  invalid,
  isWeftError,
  KernelError,
  notFound,
  WeftError,
} from './errors.js';

describe('errors', () => {
  test('codeForErrno maps the errno table', () => {
    const want: Record<keyof typeof Errno, (typeof ErrorCodes)[number]> = {
      EPERM: 'PERMISSION',
      ENOENT: 'NOT_FOUND',
      ESRCH: 'NOT_FOUND',
      EINTR: 'INTERNAL',
      EIO: 'INTERNAL',
      ENXIO: 'NOT_FOUND',
      EBADF: 'INTERNAL',
      EAGAIN: 'TIMEOUT',
      ENOMEM: 'INTERNAL',
      EACCES: 'PERMISSION',
      EBUSY: 'BUSY',
      EEXIST: 'EXISTS',
      ENODEV: 'NOT_FOUND',
      ENOTDIR: 'INTERNAL',
      EINVAL: 'INVALID',
      ENOSPC: 'INTERNAL',
      ERANGE: 'INVALID',
      ENAMETOOLONG: 'INVALID',
      ENOSYS: 'UNSUPPORTED',
      ENOTEMPTY: 'EXISTS',
      ENODATA: 'INTERNAL',
      EPROTONOSUPPORT: 'UNSUPPORTED',
      EOPNOTSUPP: 'UNSUPPORTED',
      EAFNOSUPPORT: 'UNSUPPORTED',
      EADDRINUSE: 'EXISTS',
      EADDRNOTAVAIL: 'NOT_FOUND',
      ENETUNREACH: 'INVALID',
      ETIMEDOUT: 'TIMEOUT',
    };
    for (const [name, errno] of Object.entries(Errno)) {
      assert.equal(codeForErrno(errno), want[name as keyof typeof Errno], name);
      assert.equal(errnoName(errno), name);
    }
    // Anything else is a valid code, INTERNAL for the unknown.
    fc.assert(
      fc.property(fc.integer({ min: -1000, max: 5000 }), (n) => {
        assert.ok(ErrorCodes.includes(codeForErrno(n)));
        if (!Object.values(Errno).includes(n as never)) {
          assert.equal(codeForErrno(n), 'INTERNAL');
          assert.equal(errnoName(n), `errno ${n}`);
        }
      }),
    );
  });

  test('KernelError carries errno, op, code, message and details', () => {
    const e = new KernelError(Errno.EEXIST, 'RTM_NEWLINK br0');
    assert.ok(e instanceof WeftError && e instanceof Error);
    assert.equal(e.name, 'KernelError');
    assert.equal(e.code, 'EXISTS');
    assert.equal(e.errno, 17);
    assert.equal(e.op, 'RTM_NEWLINK br0');
    assert.equal(e.message, 'RTM_NEWLINK br0: EEXIST');
    assert.deepEqual(e.details, { errno: 17, op: 'RTM_NEWLINK br0' });
    assert.ok(isWeftError(e, 'EXISTS'));
    assert.ok(!isWeftError(e, 'NOT_FOUND'));

    const cause = new Error('inner');
    const f = new KernelError(Errno.ENETUNREACH, 'add route', {
      message: 'Nexthop has invalid gateway',
      cause,
      details: { dst: '10.0.0.0/8' },
    });
    assert.equal(f.code, 'INVALID');
    assert.equal(f.message, 'add route: Nexthop has invalid gateway');
    assert.equal(f.cause, cause);
    assert.deepEqual(f.details, { errno: 101, op: 'add route', dst: '10.0.0.0/8' });
    assert.equal(new KernelError(4242, 'x').message, 'x: errno 4242');
  });

  test('toJSON is code, message and details, without the cause', () => {
    const e = new WeftError('CONFLICT', 'subnet overlaps', { cause: new Error('x'), details: { a: 1 } });
    assert.deepEqual(e.toJSON(), { code: 'CONFLICT', message: 'subnet overlaps', details: { a: 1 } });
    assert.deepEqual(JSON.parse(JSON.stringify(e)), e.toJSON());
    const k = new KernelError(Errno.EPERM, 'setns');
    assert.deepEqual(k.toJSON(), {
      code: 'PERMISSION',
      message: 'setns: EPERM',
      details: { errno: 1, op: 'setns' },
    });
    assert.equal(new WeftError('INTERNAL', 'no cause').cause, undefined);
    assert.ok(!('cause' in new WeftError('INTERNAL', 'no cause')));
  });

  test('helpers and asWeftError', () => {
    assert.equal(notFound('gone', { n: 1 }).code, 'NOT_FOUND');
    assert.deepEqual(notFound('gone', { n: 1 }).details, { n: 1 });
    assert.deepEqual(invalid('bad').details, {});
    assert.equal(conflict('clash').code, 'CONFLICT');
    const w = invalid('bad');
    assert.equal(asWeftError(w), w);
    const plain = new TypeError('boom');
    const wrapped = asWeftError(plain);
    assert.equal(wrapped.code, 'INTERNAL');
    assert.equal(wrapped.message, 'boom');
    assert.equal(wrapped.cause, plain);
    assert.equal(asWeftError('text').message, 'text');
    assert.ok(!isWeftError(plain));
    assert.ok(!isWeftError(undefined));
  });
});
