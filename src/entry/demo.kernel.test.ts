import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { test } from 'node:test';
import { needsRoot } from '../../test/bed.js';

const cli = new URL('./cli.ts', import.meta.url).pathname;
const demoNamespaces = () => {
  try {
    return readdirSync('/run/netns').filter((n) => n.startsWith('weft-demo-'));
  } catch {
    return [];
  }
};

test(
  'weft demo builds two containers on a bridge, every ping answers, and it removes everything',
  needsRoot,
  () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', cli, 'demo'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal((r.stdout.match(/✓/g) ?? []).length, 3, r.stdout);
    assert.doesNotMatch(r.stdout, /✗/);
    assert.match(r.stdout, /route lookup in c1 for 10\.88\.0\.11: dev eth0/);
    assert.deepEqual(demoNamespaces(), []);
  },
);
