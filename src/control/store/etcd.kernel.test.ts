import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Bed, isRoot } from '../../../test/bed.js';
import { etcdInstalled, startEtcd, type TestEtcd } from '../../../test/etcd.js';
import { isWeftError } from '../../lib/errors.js';
import { registryContract } from './contract.js';
import { EtcdRegistry } from './etcd.js';
import { parseStoreSpec } from './index.js';
import type { Registry, WatchEvent } from './types.js';

const skip = !isRoot()
  ? 'needs root (namespaces)'
  : !etcdInstalled()
    ? 'etcd-server is not installed'
    : false;

// One etcd for the whole file (starting one takes about a second); every test works under its
// own key prefix, and opens and closes its own clients.
const shared = new Bed();
let etcd: TestEtcd;
if (!skip) {
  before(async () => {
    etcd = await startEtcd(shared, shared.ns('etcd'));
  });
  after(() => shared.cleanup());
}

const open = (callTimeoutMs = 5000): EtcdRegistry => {
  const spec = parseStoreSpec(etcd.endpoint);
  assert.equal(spec.kind, 'etcd');
  return EtcdRegistry.open({ endpoints: spec.kind === 'etcd' ? spec.endpoints : [], callTimeoutMs });
};

registryContract(
  'etcd',
  async () => {
    const registry = open();
    const others: Registry[] = [];
    return {
      registry,
      spec: etcd.endpoint,
      async another() {
        const r = open();
        others.push(r);
        return r;
      },
      compact: (rev) => registry.compact(rev),
      async cleanup() {
        for (const r of [registry, ...others]) await r.close();
      },
    };
  },
  { skip },
);

describe('etcd registry: outages', { skip, timeout: 60_000 }, () => {
  test('a watch resumes after etcd restarts, from the last delivered revision', async () => {
    const r = open(2000);
    const events: WatchEvent[] = [];
    const errors: string[] = [];
    try {
      const p = `/outage/${Date.now()}/`;
      const { revision } = await r.list(p);
      const w = r.watch(p, revision, {
        onEvents: (evs) => events.push(...evs),
        onCompacted: () => assert.fail('not compacted'),
        onError: (e) => errors.push(e.code),
      });
      await r.put(`${p}a`, '1');
      const until = async (n: number) => {
        const deadline = Date.now() + 15_000;
        while (events.length < n && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
        assert.equal(events.length, n);
      };
      await until(1);
      await etcd.restart();
      // Writes right after the restart, possibly before the watch is back: none may be lost.
      await r.put(`${p}b`, '2');
      await r.delete(`${p}a`);
      await until(3);
      assert.deepEqual(
        events.map((e) => `${e.type} ${e.key}`),
        [`put ${p}a`, `put ${p}b`, `delete ${p}a`],
      );
      assert.ok(errors.every((c) => c === 'UNAVAILABLE') && errors.length > 0, `errors: ${errors}`);
      w.close();
    } finally {
      await r.close();
    }
  });

  test('an unreachable store fails UNAVAILABLE within the call deadline', async () => {
    const r = EtcdRegistry.open({ endpoints: ['unix:///nonexistent/weft-etcd.sock'], callTimeoutMs: 1500 });
    const t0 = Date.now();
    try {
      await assert.rejects(r.get('/k'), (e) => isWeftError(e, 'UNAVAILABLE') && e.cause !== undefined);
      assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
    } finally {
      await r.close();
    }
  });
});
