/** The lab's etcd member without a namespace: its environment, and a wait that stops when told. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WeftError } from '../../lib/errors.js';
import { etcdEnv, waitHealthy } from './etcd.js';
import { untilAborted } from './procs.js';
import type { LabNs } from './underlay.js';

const isInterrupted = (e: unknown) =>
  e instanceof WeftError && e.message === 'interrupted' && e.details.interrupted === true;

describe('the lab etcd', () => {
  test('ETCD_* variables of the caller never reach the member (etcd takes them as flags)', () => {
    assert.deepEqual(etcdEnv({ PATH: '/usr/bin', ETCD_NAME: 'x', ETCD_DATA_DIR: '/d', XETCD_Y: '1' }), {
      PATH: '/usr/bin',
      XETCD_Y: '1',
    });
  });

  test('waitHealthy stops at once when the signal fired, before asking anything', async () => {
    const ns = {} as LabNs; // never used: it must not get that far
    const me = { name: 'etcd1', ip: '192.0.2.2', dataDir: '/nonexistent', log: '/nonexistent' };
    await assert.rejects(waitHealthy(ns, me, { signal: AbortSignal.abort() }), isInterrupted);
  });

  test('untilAborted: the promise, or interrupted as soon as the signal fires', async () => {
    assert.equal(await untilAborted(Promise.resolve(7), undefined), 7);
    assert.equal(await untilAborted(Promise.resolve(7), new AbortController().signal), 7);
    const ac = new AbortController();
    const never = new Promise<number>(() => {});
    const t0 = Date.now();
    setTimeout(() => ac.abort(), 20);
    await assert.rejects(untilAborted(never, ac.signal), isInterrupted);
    assert.ok(Date.now() - t0 < 1000);
    await assert.rejects(untilAborted(Promise.reject(new Error('boom')), ac.signal), isInterrupted);
    await assert.rejects(untilAborted(Promise.reject(new Error('boom')), undefined), /boom/);
  });
});
