/**
 * The lab on etcd (Debian's etcd-server, started by the lab inside its own namespaces): one
 * member, and three members surviving the loss of one. The leases are read back from etcd
 * through `weft cluster leases` run inside a lab host (etcd listens on lab addresses only).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, test } from 'node:test';
import { isRoot, testLabName } from '../../../test/bed.js';
import { check } from './check.js';
import * as lab from './lab.js';
import { assertGone } from './testkit.test.js';

const labName = testLabName;

const hasEtcd = fs.existsSync('/usr/bin/etcd');

describe('weft lab on etcd', {
  skip: (!isRoot() && 'needs root') || (!hasEtcd && 'etcd-server is not installed'),
}, () => {
  test('one member: leases in etcd, check passes, down leaves nothing', async () => {
    const name = labName('e');
    try {
      // ETCD_* in the caller's environment would be flags to etcd (ETCD_NAME: it refuses to start).
      const env = { ...process.env, ETCD_NAME: 'elsewhere', ETCD_DATA_DIR: '/nonexistent' };
      const up = await lab.up({ name, store: 'etcd', hosts: 2, containers: 1 }, { env });
      assert.equal(up.status.storeSpec, 'etcd://192.168.100.2:2379');
      assert.deepEqual(up.status.etcd, [{ name: 'etcd1', ip: '192.168.100.2', alive: true }]);
      assert.ok(up.timings.store > 0);
      const leases = await lab.exec(
        name,
        'host1',
        undefined,
        ['weft', 'cluster', 'leases', '--store', up.status.storeSpec, '--json'],
        { capture: true, timeoutMs: 30_000 },
      );
      assert.equal(leases.code, 0, leases.stderr);
      const text = leases.stdout;
      for (const h of up.status.hosts) {
        assert.ok(text.includes(h.subnet!), `lease ${h.subnet} in ${text}`);
        assert.ok(text.includes(h.publicIp), `public IP ${h.publicIp} in ${text}`);
      }
      const r = await check(name);
      assert.equal(r.ok, true, JSON.stringify(r.results.filter((x) => !x.ok)));

      // etcd restarted under running daemons: no lease lost, and the watches resumed (a host
      // added afterwards is programmed on the others).
      const before = (await lab.status(name)).hosts.map((h) => `${h.name} ${h.subnet}`);
      const rs = await lab.restartStore(name);
      assert.deepEqual(rs.members, ['etcd1']);
      const after = (await lab.status(name)).hosts.map((h) => `${h.name} ${h.subnet}`);
      assert.deepEqual(after, before, 'every host keeps its subnet');
      const again = await lab.exec(
        name,
        'host1',
        undefined,
        ['weft', 'cluster', 'leases', '--store', up.status.storeSpec, '--json'],
        {
          capture: true,
          timeoutMs: 30_000,
        },
      );
      const leased = (JSON.parse(again.stdout) as { subnet: string }[]).map((l) => l.subnet).sort();
      assert.deepEqual(
        leased,
        up.status.hosts.map((h) => h.subnet!).sort(),
        'the leases are all still in etcd',
      );
      const h3 = await lab.addHost(name);
      const r2 = await check(name);
      assert.equal(r2.ok, true, JSON.stringify(r2.results.filter((x) => !x.ok)));
      assert.ok(
        r2.results.some(
          (x) => x.kind === 'ip' && JSON.stringify(x).includes(h3.subnet!.replace(/0\/24$/, '')),
        ),
      );
    } finally {
      await lab.down(name);
    }
    assertGone(name);
  });

  test('three members: a member killed, the cluster still takes a new host; down leaves nothing', async () => {
    const name = labName('t');
    try {
      const up = await lab.up({ name, store: 'etcd', etcdMembers: 3, hosts: 2, containers: 1 });
      assert.equal(up.status.etcd.length, 3);
      assert.ok(up.status.etcd.every((m) => m.alive));
      const rec = lab.loadLab(name);
      process.kill(rec.etcd[2]!.proc!.pid, 'SIGKILL');
      const h3 = await lab.addHost(name);
      assert.equal(h3.daemon, 'running');
      assert.match(h3.subnet ?? '', /^10\.244\./);
      const st = await lab.status(name);
      assert.deepEqual(
        st.etcd.map((m) => m.alive),
        [true, true, false],
      );
      const r = await check(name);
      assert.equal(r.ok, true, JSON.stringify(r.results.filter((x) => !x.ok)));
      assert.equal(r.results.filter((x) => x.kind === 'ip').length, 3 * 2);
    } finally {
      const d = await lab.down(name);
      assert.ok(d.ms < 3000, `down took ${d.ms} ms`);
    }
    assertGone(name);
  });
});
