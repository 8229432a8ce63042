/**
 * The plugin's result cache on disk: one file per attachment whose name cannot collide, and the
 * records of the previous version (`<containerId>-<ifname>.json`) still found.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CacheEntry, ResultCache } from './cache.js';

const entry = (containerId: string, ifname: string, o: Partial<CacheEntry> = {}): CacheEntry => ({
  kind: 'weft-cni-result',
  name: 'net1',
  network: 'bridge',
  containerId,
  ifname,
  netns: '/run/netns/c1',
  cniVersion: '1.1.0',
  result: {},
  created: '2024-01-01T00:00:00.000Z',
  ...o,
});

describe('CNI result cache', () => {
  let tmp: string;
  let n = 0;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wt-cni-cache-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const fresh = () => new ResultCache(path.join(tmp, `d${n++}`));

  test('container ids and interface names that share a "-" do not collide', () => {
    const c = fresh();
    c.write(entry('abc-x', 'eth0', { netns: '/run/netns/a' }));
    c.write(entry('abc', 'x-eth0', { netns: '/run/netns/b' }));
    assert.equal(c.read('net1', 'abc-x', 'eth0')?.netns, '/run/netns/a');
    assert.equal(c.read('net1', 'abc', 'x-eth0')?.netns, '/run/netns/b');
    assert.equal(c.list('net1').length, 2);
    c.remove('net1', 'abc', 'x-eth0');
    assert.equal(c.read('net1', 'abc-x', 'eth0')?.netns, '/run/netns/a');
    assert.deepEqual(c.owners('abc-x', 'eth0'), ['net1']);
    assert.deepEqual(c.owners('abc', 'x-eth0'), []);
  });

  test("the previous version's records are read, owned, listed and removed, by their content", () => {
    const c = fresh();
    const dir = path.join(c.dir, 'net1');
    fs.mkdirSync(dir, { recursive: true });
    const legacy = path.join(dir, 'abc-x-eth0.json');
    fs.writeFileSync(legacy, `${JSON.stringify(entry('abc-x', 'eth0'))}\n`);
    assert.equal(c.read('net1', 'abc-x', 'eth0')?.containerId, 'abc-x');
    assert.deepEqual(c.owners('abc-x', 'eth0'), ['net1']);
    assert.deepEqual(
      c.list('net1').map((e) => e.containerId),
      ['abc-x'],
    );
    // The same old file name, but the record is another attachment's.
    assert.equal(c.read('net1', 'abc', 'x-eth0'), undefined);
    assert.deepEqual(c.owners('abc', 'x-eth0'), []);
    c.remove('net1', 'abc', 'x-eth0');
    assert.ok(fs.existsSync(legacy));
    c.remove('net1', 'abc-x', 'eth0');
    assert.ok(!fs.existsSync(legacy));
  });

  test('a new record replaces the old-named one', () => {
    const c = fresh();
    const dir = path.join(c.dir, 'net1');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'abc-eth0.json'), `${JSON.stringify(entry('abc', 'eth0'))}\n`);
    c.write(entry('abc', 'eth0', { netns: '/run/netns/new' }));
    assert.deepEqual(
      c.list('net1').map((e) => e.netns),
      ['/run/netns/new'],
    );
    assert.deepEqual(fs.readdirSync(dir), [path.basename(c.file('net1', 'abc', 'eth0'))]);
  });
});
