/**
 * `weft lab down` without help: a lab whose record is gone and whose processes were never
 * stopped (a crashed `up`), found by its namespaces' names and its sandbox pins, removed
 * completely; processes whose namespace pins were deleted by hand, found through the record;
 * and the idempotent and bad-input cases.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { isRoot, testLabName } from '../../../test/bed.js';
import { Netns } from '../../kernel/netns.js';
import { readStat } from '../../net/process.js';
import * as lab from './lab.js';
import { alive, spawnDetached } from './procs.js';
import { type LabRecord, writeRecord } from './record.js';
import { assertGone, code } from './testkit.test.js';
import { DEFAULT_PATHS, hostDirs, labDirs, nsName } from './topology.js';
import { createNs } from './underlay.js';

const labName = testLabName;
const execFileP = promisify(execFile);

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

  test('namespaces deleted by hand: the processes of the record stopped by pid (with what shares their namespace); a reused pid spared', async () => {
    const name = labName('r');
    const env = { ...process.env, WEFT_LAB: name } as Record<string, string>;
    // Recorded as the internet server with another start time: a pid reused by a stranger.
    const stranger = spawn('sleep', ['600'], { stdio: 'ignore', env: { PATH: process.env.PATH ?? '' } });
    try {
      const host = createNs(DEFAULT_PATHS, name, 'host1');
      const etcd = createNs(DEFAULT_PATHS, name, 'etcd1');
      const dirs = labDirs(DEFAULT_PATHS, name);
      fs.mkdirSync(dirs.run, { recursive: true });
      fs.mkdirSync(dirs.state, { recursive: true });
      const log = path.join(dirs.run, 'test.log');
      const daemon = await spawnDetached(host.ns, 'sleep', ['600'], { env, log });
      const shell = await spawnDetached(host.ns, 'sleep', ['601'], { env, log }); // a `lab exec` shell
      const member = await spawnDetached(etcd.ns, 'sleep', ['602'], { env, log });
      host.ns.close();
      etcd.ns.close();
      const rec = {
        version: 1,
        name,
        internet: { proc: { pid: stranger.pid!, startTime: '1' }, log },
        etcd: [{ name: 'etcd1', proc: member }],
        hosts: [{ name: 'host1', index: 1, daemon, containers: [] }],
      } as unknown as LabRecord;
      writeRecord(dirs.record, rec);
      for (const role of ['host1', 'etcd1'] as const) {
        await execFileP('ip', ['netns', 'delete', nsName(name, role)]);
      }
      assert.ok(alive(daemon) && alive(shell) && alive(member), 'they outlive their pins');
      const d = await lab.down(name);
      assert.equal(d.existed, true);
      assert.equal(d.processes, 3);
      for (const p of [daemon, shell, member]) assert.equal(alive(p), false, `pid ${p.pid} stopped`);
      assert.ok(
        stranger.exitCode === null && readStat(stranger.pid!) !== undefined,
        'a reused pid is spared',
      );
      assertGone(name);
    } finally {
      stranger.kill('SIGKILL');
      await lab.down(name).catch(() => {});
    }
  });

  test('a lab that does not exist: nothing to do; a bad name: INVALID', async () => {
    const d = await lab.down(labName('n'));
    assert.equal(d.existed, false);
    await assert.rejects(lab.down('Bad_Name'), code('INVALID'));
  });
});
