/**
 * The registry contract: one node:test suite that every Registry implementation passes
 * (embedded.test.ts, etcd.kernel.test.ts). It pins down what the lease manager relies on:
 * atomic create-if-absent (also between processes), compare-and-set by revision, sorted prefix
 * lists with their revision, TTL expiry seen by watchers as deletes, watches that replay history
 * then go live, in order, exactly once, and onCompacted when the history is gone.
 *
 * Every test works under its own random key prefix, so implementations may share one store
 * between tests (one etcd per file).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, type TestContext, test } from 'node:test';
import { isWeftError, type WeftError } from '../../lib/errors.js';
import type { Registry, Watch, WatchEvent } from './types.js';

export interface ContractHarness {
  readonly registry: Registry;
  /** Another registry object on the same store: a second daemon's view of it. */
  another(): Promise<Registry>;
  /** A `--store` string that a separate process opens the same store with. */
  readonly spec: string;
  /** Discard the store's watch history before `revision`. */
  compact(revision: number): Promise<void>;
  /** Close what the harness opened (registries from another() included). */
  cleanup(): Promise<void>;
}

const TTL = 2; // seconds: etcd's minimum lease TTL is ~1.5 × its election timeout
const STEP_MS = 10_000; // bound on any single wait

/** Poll `cond` until it holds, at most `ms`; fails the test with `what` otherwise. */
async function until(what: string, cond: () => boolean | Promise<boolean>, ms = STEP_MS): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Collector {
  readonly events: WatchEvent[];
  readonly errors: WeftError[];
  readonly at: number[];
  compacted: boolean;
  readonly watch: Watch;
}

function collect(reg: Registry, prefix: string, after: number): Collector {
  const c = { events: [] as WatchEvent[], errors: [] as WeftError[], at: [] as number[], compacted: false };
  const watch = reg.watch(prefix, after, {
    onEvents: (evs) => {
      for (const e of evs) {
        c.events.push(e);
        c.at.push(performance.now());
      }
    },
    onCompacted: () => {
      c.compacted = true;
    },
    onError: (e) => c.errors.push(e),
  });
  return Object.assign(c, { watch });
}

const brief = (evs: readonly WatchEvent[]) =>
  evs.map((e) => `${e.type} ${e.key}${e.type === 'put' ? `=${e.value}` : ''}`);

/** Run a small ES module in a separate node process (with tsx) and return its stdout. */
async function runChild(code: string, timeoutMs = 20_000): Promise<{ stdout: string; exitedAlone: boolean }> {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const code_ = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  clearTimeout(timer);
  if (!timedOut && code_ !== 0) assert.fail(`child process failed (exit ${code_}): ${stderr}`);
  return { stdout, exitedAlone: !timedOut };
}

const indexUrl = new URL('./index.js', import.meta.url).href.replace(/\.js$/, '.ts');
const childOpen = (spec: string) => `
  const { openRegistry, parseStoreSpec } = await import(${JSON.stringify(indexUrl)});
  const reg = await openRegistry(parseStoreSpec(${JSON.stringify(spec)}));`;

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

/**
 * Register the contract tests for one implementation. `makeRegistry` opens a fresh harness per
 * test; the harness is cleaned up after the test, whatever its outcome.
 */
export function registryContract(
  name: string,
  makeRegistry: (t: TestContext) => Promise<ContractHarness>,
  opts: { skip?: string | false } = {},
): void {
  describe(`registry contract: ${name}`, { skip: opts.skip ?? false, timeout: 120_000 }, () => {
    const it = (title: string, fn: (h: ContractHarness, p: string, t: TestContext) => Promise<void>) =>
      test(title, { timeout: 60_000 }, async (t) => {
        const h = await makeRegistry(t);
        try {
          await fn(h, `/contract/${randomBytes(4).toString('hex')}/`, t);
        } finally {
          await h.cleanup();
        }
      });

    it('create is create-if-absent', async ({ registry: r }, p) => {
      const a = await r.create(`${p}k`, 'one');
      assert.ok(a);
      assert.equal(a.value, 'one');
      assert.ok(a.modRevision > 0);
      assert.equal(a.expiresAt, undefined);
      assert.equal(await r.create(`${p}k`, 'two'), undefined);
      assert.deepEqual(await r.get(`${p}k`), a);
      assert.equal(await r.get(`${p}missing`), undefined);
    });

    it('concurrent creates of one key from two registries: exactly one wins', async (h, p) => {
      const other = await h.another();
      for (let i = 0; i < 20; i++) {
        const key = `${p}race-${i}`;
        const [a, b] = await Promise.all([h.registry.create(key, 'a'), other.create(key, 'b')]);
        assert.ok((a === undefined) !== (b === undefined), `key ${key}: exactly one create must win`);
        assert.equal((await other.get(key))?.value, a ? 'a' : 'b');
      }
    });

    it('update succeeds only at the expected revision', async ({ registry: r }, p) => {
      const a = (await r.create(`${p}k`, 'v1'))!;
      const b = await r.update(`${p}k`, 'v2', { ifRevision: a.modRevision });
      assert.ok(b);
      assert.equal(b.value, 'v2');
      assert.ok(b.modRevision > a.modRevision);
      assert.equal(await r.update(`${p}k`, 'v3', { ifRevision: a.modRevision }), undefined, 'stale revision');
      assert.equal((await r.get(`${p}k`))?.value, 'v2');
      assert.equal(await r.update(`${p}absent`, 'x', { ifRevision: b.modRevision }), undefined);
      assert.equal(await r.update(`${p}absent`, 'x', { ifRevision: 0 }), undefined);
      assert.equal(await r.get(`${p}absent`), undefined);
      const c = await r.put(`${p}k`, 'v4');
      assert.ok(c.modRevision > b.modRevision);
      assert.equal((await r.get(`${p}k`))?.value, 'v4');
    });

    it('delete, also only at the expected revision', async ({ registry: r }, p) => {
      const a = (await r.create(`${p}k`, 'v'))!;
      const b = (await r.put(`${p}k`, 'w'))!;
      assert.equal(await r.delete(`${p}k`, { ifRevision: a.modRevision }), false, 'stale revision');
      assert.ok(await r.get(`${p}k`));
      assert.equal(await r.delete(`${p}k`, { ifRevision: b.modRevision }), true);
      assert.equal(await r.get(`${p}k`), undefined);
      assert.equal(await r.delete(`${p}k`), false, 'already gone');
      await r.create(`${p}k`, 'again');
      assert.equal(await r.delete(`${p}k`), true);
    });

    it('list returns the prefix, sorted by key, with the store revision', async ({ registry: r }, p) => {
      for (const k of ['b', 'a/2', 'c', 'a/1', 'a']) await r.put(`${p}x/${k}`, k);
      await r.put(`${p}xy`, 'sibling, not under x/');
      const last = await r.put(`${p}other`, 'o');
      const { entries, revision } = await r.list(`${p}x/`);
      assert.deepEqual(
        entries.map((e) => e.key),
        ['a', 'a/1', 'a/2', 'b', 'c'].map((k) => `${p}x/${k}`),
      );
      assert.deepEqual(
        entries.map((e) => e.value),
        ['a', 'a/1', 'a/2', 'b', 'c'],
      );
      assert.ok(revision >= last.modRevision, `list revision ${revision} >= last write ${last.modRevision}`);
      assert.deepEqual((await r.list(`${p}none/`)).entries, []);
    });

    it('bad input is INVALID and changes nothing', async ({ registry: r }, p) => {
      const rejects = (pr: Promise<unknown>) => assert.rejects(pr, (e) => isWeftError(e, 'INVALID'));
      await rejects(r.create('', 'v'));
      await rejects(r.create(`${p}k`, 'v', { ttlSeconds: 0 }));
      await rejects(r.create(`${p}k`, 'v', { ttlSeconds: 1.5 }));
      await rejects(r.put(`${p}k`, 'v', { ttlSeconds: -1 }));
      await rejects(r.update(`${p}k`, 'v', { ifRevision: -1 }));
      assert.throws(
        () => r.watch(p, -1, { onEvents() {}, onCompacted() {} }),
        (e) => isWeftError(e, 'INVALID'),
      );
      assert.equal(await r.get(`${p}k`), undefined);
    });

    it('a key with a TTL expires: reads stop returning it and watchers see a delete', async ({
      registry: r,
    }, p) => {
      const start = Date.now();
      const e = (await r.create(`${p}ttl`, 'v', { ttlSeconds: TTL }))!;
      assert.ok(e.expiresAt !== undefined, 'expiresAt set');
      assert.ok(
        Math.abs(e.expiresAt - (start + TTL * 1000)) < 1500,
        `expiresAt ${e.expiresAt - start} ms ahead`,
      );
      const got = await r.get(`${p}ttl`);
      assert.ok(got?.expiresAt !== undefined && Math.abs(got.expiresAt - e.expiresAt) <= 1500);
      const c = collect(r, p, e.modRevision);
      try {
        await until('the expiry delete event', () => c.events.length > 0, TTL * 1000 + 8000);
        assert.deepEqual(brief(c.events), [`delete ${p}ttl`]);
        assert.ok(c.events[0]!.revision > e.modRevision);
        assert.ok(Date.now() - start >= TTL * 1000 - 600, 'not before its TTL');
        assert.equal(await r.get(`${p}ttl`), undefined);
        assert.deepEqual((await r.list(p)).entries, []);
      } finally {
        c.watch.close();
      }
    });

    it('update restarts the TTL; update without a TTL makes the key permanent', async ({
      registry: r,
    }, p) => {
      const a = (await r.create(`${p}k`, 'v1', { ttlSeconds: TTL }))!;
      const b = (await r.create(`${p}perm`, 'v1', { ttlSeconds: TTL }))!;
      await new Promise((res) => setTimeout(res, 1200));
      const a2 = (await r.update(`${p}k`, 'v2', { ttlSeconds: TTL, ifRevision: a.modRevision }))!;
      assert.ok(a2.expiresAt! > a.expiresAt!, 'a later expiry');
      const b2 = (await r.update(`${p}perm`, 'v2', { ifRevision: b.modRevision }))!;
      assert.equal(b2.expiresAt, undefined);
      // Past the first TTL (plus etcd's ~0.5 s expiry granularity), before the second one.
      await until('the first TTL to pass', () => Date.now() > a.expiresAt! + 600);
      assert.equal((await r.get(`${p}k`))?.value, 'v2', 'still there: the update restarted its TTL');
      await until(
        'the renewed key to expire',
        async () => (await r.get(`${p}k`)) === undefined,
        TTL * 1000 + 8000,
      );
      assert.equal((await r.get(`${p}perm`))?.value, 'v2', 'no TTL after update without one');
    });

    it('watch replays history after the revision, then live events, in order, once', async ({
      registry: r,
    }, p) => {
      const before = (await r.put(`/contract-elsewhere/${p}`, 'x')).modRevision;
      await r.put(`${p}a`, '1');
      await r.put(`${p}b`, '2');
      await r.put(`/contract-elsewhere/${p}`, 'y'); // not under the prefix
      const c = collect(r, p, before);
      try {
        await until('history', () => c.events.length >= 2);
        await r.put(`${p}c`, '3');
        await r.delete(`${p}a`);
        await r.put(`${p}b`, '4', { ttlSeconds: 60 });
        await until('live events', () => c.events.length >= 5);
        await new Promise((res) => setTimeout(res, 300)); // anything duplicated would show up now
        assert.deepEqual(brief(c.events), [
          `put ${p}a=1`,
          `put ${p}b=2`,
          `put ${p}c=3`,
          `delete ${p}a`,
          `put ${p}b=4`,
        ]);
        const revs = c.events.map((e) => e.revision);
        assert.deepEqual(
          revs,
          [...revs].sort((x, y) => x - y),
        );
        assert.equal(new Set(revs).size, revs.length, 'each revision once');
        const last = c.events.at(-1)!;
        assert.ok(last.type === 'put' && last.expiresAt !== undefined, 'put events carry expiresAt');
        assert.deepEqual(c.errors, []);
      } finally {
        c.watch.close();
      }
      // From the middle of the history: only what came after.
      const from = collect(r, p, c.events[2]!.revision);
      try {
        await until('the tail of the history', () => from.events.length >= 2);
        await new Promise((res) => setTimeout(res, 300));
        assert.deepEqual(brief(from.events), [`delete ${p}a`, `put ${p}b=4`]);
      } finally {
        from.watch.close();
      }
    });

    it('two registries on one store see each other’s writes, watches included', async (h, p) => {
      const b = await h.another();
      const { revision } = await b.list(p);
      const c = collect(b, p, revision);
      try {
        const e = await h.registry.put(`${p}k`, 'from a');
        assert.deepEqual(await b.get(`${p}k`), e);
        await until('b to see a’s write', () => c.events.length === 1);
        assert.deepEqual(brief(c.events), [`put ${p}k=from a`]);
        const e2 = (await b.update(`${p}k`, 'from b', { ifRevision: e.modRevision }))!;
        assert.equal((await h.registry.get(`${p}k`))?.modRevision, e2.modRevision);
      } finally {
        c.watch.close();
      }
    });

    it('a write from another OS process is seen and watched', async (h, p) => {
      const { revision } = await h.registry.list(p);
      const c = collect(h.registry, p, revision);
      try {
        const { stdout } = await runChild(`${childOpen(h.spec)}
          const e = await reg.create(${JSON.stringify(`${p}child`)}, 'hello', { ttlSeconds: 60 });
          const lost = await reg.create(${JSON.stringify(`${p}child`)}, 'again');
          console.log(JSON.stringify({ e, lost: lost === undefined }));
          await reg.close();`);
        const out = JSON.parse(stdout) as { e: { modRevision: number }; lost: boolean };
        assert.equal(out.lost, true);
        assert.equal((await h.registry.get(`${p}child`))?.value, 'hello');
        await until('the child’s write in the watch', () => c.events.length === 1);
        assert.equal(c.events[0]!.revision, out.e.modRevision);
        assert.equal(await h.registry.create(`${p}child`, 'mine'), undefined, 'the child’s key exists');
      } finally {
        c.watch.close();
      }
    });

    it('three OS processes racing for the same keys: each key is won exactly once', async (h, p, t) => {
      const keys = Array.from({ length: 40 }, (_, i) => `${p}race-${i}`);
      // All start at one wall-clock moment, past the children's start-up (tsx, the etcd client
      // and its first connection: ~1 s) and a warm-up read.
      const startAt = Date.now() + 3000;
      // Each process walks the keys from its own starting point: a process that got ahead on
      // one key does not simply stay ahead on all of them, and they meet on the same keys.
      const racer = (who: string, from: number) =>
        runChild(`${childOpen(h.spec)}
          await reg.get(${JSON.stringify(`${p}warm-up`)});
          await new Promise((r) => setTimeout(r, Math.max(0, ${startAt} - Date.now())));
          const won = [];
          for (const k of ${JSON.stringify([...keys.slice(from), ...keys.slice(0, from)])}) if (await reg.create(k, ${JSON.stringify(who)}, { ttlSeconds: 60 })) won.push(k);
          console.log(JSON.stringify(won));
          await reg.close();`);
      const results = await Promise.all(
        ['a', 'b', 'c'].map(async (who, i) => ({ who, out: await racer(who, i * 13) })),
      );
      const winners = new Map<string, string>();
      for (const { who, out } of results) {
        for (const k of JSON.parse(out.stdout) as string[]) {
          assert.equal(winners.get(k), undefined, `${k} won by ${winners.get(k)} and ${who}`);
          winners.set(k, who);
        }
      }
      assert.equal(winners.size, keys.length, 'every key won by someone');
      const wins = results.map(
        ({ who }) => `${who} ${[...winners.values()].filter((w) => w === who).length}`,
      );
      t.diagnostic(`${name}: keys won per process: ${wins.join(', ')}`);
      for (const k of keys) assert.equal((await h.registry.get(k))?.value, winners.get(k));
    });

    it('a watch from a compacted revision reports onCompacted', async (h, p) => {
      const r = h.registry;
      const a = await r.put(`${p}a`, '1');
      await r.put(`${p}b`, '2');
      const c3 = await r.put(`${p}c`, '3');
      await h.compact(c3.modRevision);
      const gone = collect(r, p, a.modRevision);
      const kept = collect(r, p, c3.modRevision - 1);
      try {
        await until('onCompacted', () => gone.compacted);
        await until('the kept revision', () => kept.events.length === 1);
        assert.deepEqual(gone.events, []);
        assert.deepEqual(brief(kept.events), [`put ${p}c=3`]);
        assert.equal(kept.compacted, false);
        // The recovery the lease manager does: re-list, watch from the list's revision.
        const { entries, revision } = await r.list(p);
        assert.equal(entries.length, 3);
        const again = collect(r, p, revision);
        await r.put(`${p}d`, '4');
        await until('events after re-listing', () => again.events.length === 1);
        again.watch.close();
      } finally {
        gone.watch.close();
        kept.watch.close();
      }
    });

    it('close() leaves no timer or connection: a process exits by itself', async (h, p) => {
      const { exitedAlone } = await runChild(
        `${childOpen(h.spec)}
        const w = reg.watch(${JSON.stringify(p)}, 0, { onEvents() {}, onCompacted() {} });
        const e = await reg.create(${JSON.stringify(`${p}k`)}, 'v', { ttlSeconds: 60 });
        await reg.update(${JSON.stringify(`${p}k`)}, 'w', { ttlSeconds: 60, ifRevision: e.modRevision });
        await new Promise((r) => setTimeout(r, 300));
        w.close();
        await reg.close();`,
        10_000,
      );
      assert.ok(exitedAlone, 'the process did not exit within 10 s after close()');
    });

    it('latency (reported, loosely bounded)', async (h, p, t) => {
      const r = h.registry;
      const b = await h.another();
      const { revision } = await b.list(p);
      const c = collect(b, p, revision);
      try {
        const create: number[] = [];
        const update: number[] = [];
        const sent: number[] = [];
        for (let i = 0; i < 30; i++) {
          let t0 = performance.now();
          const e = (await r.create(`${p}k${i}`, 'v', { ttlSeconds: 60 }))!;
          create.push(performance.now() - t0);
          t0 = performance.now();
          await r.update(`${p}k${i}`, 'w', { ttlSeconds: 60, ifRevision: e.modRevision });
          update.push(performance.now() - t0);
          sent.push(performance.now());
          await r.put(`${p}w${i}`, 'x');
          await until('delivery', () => c.events.length === 3 * (i + 1));
        }
        const delivery = sent.map((s, i) => c.at[3 * i + 2]! - s);
        const fmt = (xs: number[]) =>
          `p50 ${percentile(xs, 50).toFixed(1)} ms, p95 ${percentile(xs, 95).toFixed(1)} ms`;
        t.diagnostic(
          `${name}: create ${fmt(create)}; update ${fmt(update)}; watch delivery to a second registry ${fmt(delivery)}`,
        );
        assert.ok(percentile(delivery, 50) < 1000, 'watch delivery well under a second');
      } finally {
        c.watch.close();
      }
    });
  });
}
