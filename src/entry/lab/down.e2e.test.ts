/**
 * `weft lab down` without help: a lab whose record is gone and whose processes were never
 * stopped (a crashed `up`), found by its namespaces' names and its sandbox pins, removed
 * completely; and the idempotent and bad-input cases.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { isRoot, testLabName } from '../../../test/bed.js';
import { Netns } from '../../kernel/netns.js';
import * as lab from './lab.js';
import { spawnDetached } from './procs.js';
import { assertGone, code } from './testkit.test.js';
import { DEFAULT_PATHS, hostDirs } from './topology.js';
import { createNs } from './underlay.js';

const labName = testLabName;

describe('weft lab down', { skip: !isRoot() && 'needs root' }, () => {
  test('a half-made lab with no record: processes in its namespaces and sandboxes stopped, all removed', async () => {
    const name = labName('d');
    const env = { ...process.env, WEFT_LAB: name } as Record<string, string>;
    try {
      const sw = createNs(DEFAULT_PATHS, name, 'sw');
      const host = createNs(DEFAULT_PATHS, name, 'host1');
      const dirs = hostDirs(DEFAULT_PATHS, name, 'host1');
      fs.mkdirSync(dirs.runDir, { recursive: true });
      fs.mkdirSync(dirs.stateDir, { recursive: true });
      // A "sandbox" pinned where the daemon pins them, with a process inside that ignores SIGTERM.
      const sandbox = Netns.create(path.join(dirs.runDir, 'netns', 'abc123'));
      const log = path.join(dirs.runDir, 'test.log');
      await spawnDetached(sandbox, 'sh', ['-c', 'trap "" TERM; sleep 600 & wait'], { env, log });
      await spawnDetached(host.ns, 'sleep', ['600'], { env, log });
      await spawnDetached(sw.ns, 'sleep', ['600'], { env, log });
      sandbox.close();
      host.ns.close();
      sw.ns.close();
      assert.deepEqual(
        lab.listLabs().find((l) => l.name === name),
        { name, hosts: 0, state: 'partial' },
      );
      await assert.rejects(lab.status(name), code('NOT_FOUND'));
      const d = await lab.down(name);
      assert.equal(d.existed, true);
      assert.equal(d.namespaces, 2);
      assert.ok(d.processes >= 3, `processes stopped: ${d.processes}`);
      assert.equal(d.mounts, 1);
      assertGone(name);
    } finally {
      await lab.down(name).catch(() => {});
    }
  });

  test('a lab that does not exist: nothing to do; a bad name: INVALID', async () => {
    const d = await lab.down(labName('n'));
    assert.equal(d.existed, false);
    await assert.rejects(lab.down('Bad_Name'), code('INVALID'));
  });
});
