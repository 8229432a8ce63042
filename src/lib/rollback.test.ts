import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { Rollback, transaction } from './rollback.js';

describe('rollback', () => {
  test('unwind runs the undos in reverse order, sync and async alike, once', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.boolean(), { maxLength: 20 }), async (asyncs) => {
        const rb = new Rollback();
        const ran: number[] = [];
        asyncs.forEach((isAsync, i) => {
          rb.push(`step ${i}`, isAsync ? async () => void ran.push(i) : () => void ran.push(i));
        });
        assert.equal(rb.size, asyncs.length);
        await rb.unwind();
        assert.deepEqual(ran, asyncs.map((_, i) => i).reverse());
        assert.equal(rb.size, 0);
        await rb.unwind();
        assert.equal(ran.length, asyncs.length, 'a second unwind runs nothing');
      }),
    );
  });

  test('undo errors are collected, not thrown, and the rest still runs', async () => {
    const rb = new Rollback();
    const ran: string[] = [];
    const boom = new Error('boom');
    rb.push('a', () => void ran.push('a'));
    rb.push('b', () => {
      throw boom;
    });
    rb.push('c', async () => {
      await Promise.resolve();
      throw new Error('async boom');
    });
    rb.push('d', () => void ran.push('d'));
    await rb.unwind();
    assert.deepEqual(ran, ['d', 'a']);
    assert.deepEqual(
      rb.undoErrors.map((e) => e.what),
      ['c', 'b'],
    );
    assert.equal(rb.undoErrors[1]?.error, boom);
  });

  test('release forgets the steps', async () => {
    const rb = new Rollback();
    let ran = false;
    rb.push('x', () => {
      ran = true;
    });
    rb.release();
    assert.equal(rb.size, 0);
    await rb.unwind();
    assert.equal(ran, false);
  });

  test('transaction: success releases, failure unwinds and rethrows the original error', async () => {
    const ran: string[] = [];
    const out = await transaction(async (rb) => {
      rb.push('a', () => void ran.push('a'));
      return 42;
    });
    assert.equal(out, 42);
    assert.equal(ran.length, 0, 'released: nothing undone');

    const original = new Error('step 3 failed');
    await assert.rejects(
      transaction(async (rb) => {
        rb.push('a', () => void ran.push('a'));
        rb.push('b', () => {
          throw new Error('undo b failed');
        });
        rb.push('c', () => void ran.push('c'));
        throw original;
      }),
      (e) => e === original,
    );
    assert.deepEqual(ran, ['c', 'a']);
  });
});
