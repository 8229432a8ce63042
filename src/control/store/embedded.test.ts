import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { isWeftError } from '../../lib/errors.js';
import { registryContract } from './contract.js';
import { EmbeddedRegistry } from './embedded.js';
import type { Registry } from './types.js';

function tempStore(): { file: string; remove: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-store-'));
  return { file: path.join(dir, 'store.db'), remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

registryContract('embedded', async () => {
  const { file, remove } = tempStore();
  const registry = EmbeddedRegistry.open(file);
  const others: Registry[] = [];
  return {
    registry,
    spec: `embedded:${file}`,
    async another() {
      const r = EmbeddedRegistry.open(file);
      others.push(r);
      return r;
    },
    compact: (rev) => registry.compact(rev),
    async cleanup() {
      for (const r of [registry, ...others]) await r.close();
      remove();
    },
  };
});

test('embedded: the history is trimmed to its limit as writes go', async () => {
  const { file, remove } = tempStore();
  const r = EmbeddedRegistry.open(file, { historyLimit: 16 });
  try {
    let first = 0;
    for (let i = 0; i < 40; i++) {
      const e = await r.put(`/k/${i % 3}`, String(i));
      if (i === 0) first = e.modRevision;
    }
    const { revision } = await r.list('/k/');
    let compacted = false;
    const w = r.watch('/k/', first, { onEvents() {}, onCompacted: () => (compacted = true) });
    const got: number[] = [];
    const w2 = r.watch('/k/', revision - 16, {
      onEvents: (evs) => got.push(...evs.map((e) => e.revision)),
      onCompacted() {},
    });
    const deadline = Date.now() + 5000;
    while ((!compacted || got.length < 16) && Date.now() < deadline)
      await new Promise((res) => setTimeout(res, 20));
    w.close();
    w2.close();
    assert.ok(compacted, 'an old revision is compacted');
    assert.equal(got.length, 16, 'the last historyLimit revisions are kept');
  } finally {
    await r.close();
    remove();
  }
});

test('embedded: bad paths and a closed registry are clear errors', async () => {
  assert.throws(
    () => EmbeddedRegistry.open('relative/store.db'),
    (e) => isWeftError(e, 'INVALID'),
  );
  assert.throws(
    () => EmbeddedRegistry.open('/dev/null/store.db'),
    (e) => isWeftError(e, 'UNAVAILABLE'),
  );
  const { file, remove } = tempStore();
  const r = EmbeddedRegistry.open(file);
  await r.close();
  await assert.rejects(r.get('/k'), (e) => isWeftError(e, 'UNAVAILABLE'));
  remove();
});
