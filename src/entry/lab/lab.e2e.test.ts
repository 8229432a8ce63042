/**
 * The lab end to end, through its library: one lab (vxlan, embedded store, 3 hosts, 2 containers
 * each) shared by the tests that read it, then the ones that change it (add-host, rm-host), then
 * a kill of every daemon and `down`, which must leave nothing. Lab names carry the test run id,
 * so the runner's leftover check sees anything that survives (pins and sandbox mounts carry it,
 * and the lab's processes carry WEFT_TEST_RUN in their environment).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { isRoot, RUN_ID, testLabName } from '../../../test/bed.js';
import { check } from './check.js';
import * as lab from './lab.js';
import { assertGone, code, ipRoutes } from './testkit.test.js';
import { roleOf } from './topology.js';

const execFileP = promisify(execFile);
const labName = testLabName;

/** Poll `cond` every 50 ms for at most `ms`; true once it held. */
async function eventually(cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A PATH with the tools a lab needs, and a fake etcd (or none). */
function toolPath(etcd: 'none' | 'broken' | 'hanging'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-path-`));
  for (const t of ['busybox', 'curl', 'nsenter', 'unshare', 'ip', 'nft', 'iptables', 'sh', 'socat']) {
    for (const d of ['/usr/bin', '/bin', '/usr/sbin', '/sbin']) {
      if (fs.existsSync(path.join(d, t))) {
        fs.symlinkSync(path.join(d, t), path.join(dir, t));
        break;
      }
    }
  }
  if (etcd === 'broken') {
    fs.writeFileSync(
      path.join(dir, 'etcd'),
      '#!/bin/sh\necho "etcd: this one is broken on purpose" >&2\nexit 1\n',
      {
        mode: 0o755,
      },
    );
  }
  if (etcd === 'hanging') {
    fs.writeFileSync(path.join(dir, 'etcd'), '#!/bin/sh\necho "etcd: hanging on purpose"\nexec sleep 600\n', {
      mode: 0o755,
    });
  }
  return dir;
}

describe('weft lab: a 3-host vxlan lab on the embedded store', { skip: !isRoot() && 'needs root' }, () => {
  const name = labName('v');
  let up: lab.UpResult;

  before(async () => {
    up = await lab.up({ name, hosts: 3, containers: 2, backend: 'vxlan' });
  });
  after(async () => {
    await lab.down(name);
    assertGone(name);
  });

  test('up: namespaces on the switch, one daemon and one distinct subnet per host, containers', async () => {
    const st = up.status;
    assert.equal(st.hosts.length, 3);
    assert.deepEqual(
      st.hosts.map((h) => [h.name, h.publicIp, h.daemon]),
      [
        ['host1', '192.168.100.11', 'running'],
        ['host2', '192.168.100.12', 'running'],
        ['host3', '192.168.100.13', 'running'],
      ],
    );
    const subnets = st.hosts.map((h) => h.subnet);
    assert.equal(new Set(subnets).size, 3, `distinct subnets: ${subnets}`);
    for (const s of subnets) assert.match(s ?? '', /^10\.244\.\d+\.0\/24$/);
    const pinned = fs.readdirSync('/run/netns').filter((n) => roleOf(name, n));
    assert.deepEqual(
      pinned.sort(),
      ['host1', 'host2', 'host3', 'inet', 'router', 'sw'].map((r) => `weft-${name}-${r}`).sort(),
    );
    // Containers carry addresses of their host's subnet.
    for (const h of st.hosts) {
      assert.deepEqual(
        h.containers.map((c) => c.name),
        [`h${h.index}c1`, `h${h.index}c2`],
      );
      for (const c of h.containers)
        assert.ok(c.ip?.startsWith(h.subnet!.replace(/0\/24$/, '')), `${c.name} ${c.ip}`);
    }
    // Each host's vxlan routes point at the two others' subnets (iproute2's view).
    const r1 = await ipRoutes(name, 'host1');
    for (const h of st.hosts.slice(1)) {
      assert.ok(
        r1.some((r) => r.dst === h.subnet && r.dev === 'weft.1'),
        `host1 has a route to ${h.subnet}: ${JSON.stringify(r1)}`,
      );
    }
    for (const k of ['namespaces', 'daemons', 'leases', 'containers', 'total'] as const) {
      assert.ok(up.timings[k] >= 0, k);
    }
  });

  test('status: the JSON shape scripts use', async () => {
    const st = JSON.parse(JSON.stringify(await lab.status(name))) as {
      hosts: { name: string; publicIp: string; subnet: string; containers: { name: string; ip: string }[] }[];
    };
    assert.equal(st.hosts.length, 3);
    for (const h of st.hosts) {
      assert.equal(typeof h.name, 'string');
      assert.equal(typeof h.publicIp, 'string');
      assert.equal(typeof h.subnet, 'string');
      assert.equal(h.containers.length, 2);
      for (const c of h.containers) assert.match(c.ip, /^10\.244\./);
    }
    assert.deepEqual(
      lab.listLabs().find((l) => l.name === name),
      { name, hosts: 3, backend: 'vxlan', store: 'embedded', state: 'up' },
    );
  });

  test('check: every container reaches every other, the internet (masqueraded), the published port', async () => {
    const r = await check(name);
    assert.equal(r.ok, true, JSON.stringify(r.results.filter((x) => !x.ok)));
    assert.equal(r.results.filter((x) => x.kind === 'ip').length, 6 * 5);
    assert.equal(r.results.filter((x) => x.kind === 'internet').length, 6);
    assert.equal(r.results.filter((x) => x.kind === 'published').length, 1);
    for (const x of r.results.filter((y) => y.kind === 'internet')) {
      const host = up.status.hosts.find((h) => h.containers.some((c) => c.name === x.from))!;
      assert.equal(x.seenAs, host.publicIp, `${x.from} seen as its host's public IP`);
    }
    for (const x of r.results.filter((y) => y.kind === 'ip')) {
      const src = r.containers.find((c) => c.name === x.from)!;
      assert.equal(x.seenAs, src.ip, 'no NAT between containers');
    }
    assert.ok(r.notes.some((n) => /names: not checked/.test(n)));
  });

  test('exec: in a host a plain `weft` talks to its daemon; in a container; in the internet', async () => {
    const ps = await lab.exec(name, 'host2', undefined, ['weft', 'ps', '--json'], {
      capture: true,
      timeoutMs: 30_000,
    });
    assert.equal(ps.code, 0, ps.stderr);
    assert.deepEqual((JSON.parse(ps.stdout) as { name: string }[]).map((c) => c.name).sort(), [
      'h2c1',
      'h2c2',
    ]);
    const host = await lab.exec(name, 'host3', undefined, ['ip', '-4', '-o', 'addr', 'show', 'eth0'], {
      capture: true,
    });
    assert.match(host.stdout, /192\.168\.100\.13\/24/);
    const h2c1 = up.status.hosts[1]!.containers[0]!;
    const inC = await lab.exec(name, 'host1', 'h1c1', ['curl', '-s', '-m', '2', `http://${h2c1.ip}/`], {
      capture: true,
    });
    assert.equal(inC.code, 0, inC.stderr);
    assert.match(inC.stdout, /^hello from h2c1 on host2; you are 10\.244\./);
    const name1 = await lab.exec(name, 'host1', 'h1c1', ['hostname'], { capture: true });
    assert.equal(name1.stdout.trim(), 'h1c1');
    const pub = await lab.exec(
      name,
      'internet',
      undefined,
      ['curl', '-s', '-m', '2', 'http://192.168.100.11:8080/'],
      {
        capture: true,
      },
    );
    assert.match(pub.stdout, /^hello from h1c1 on host1; you are 203\.0\.113\.10$/m);
    const exit = await lab.exec(name, 'router', undefined, ['sh', '-c', 'exit 7'], { capture: true });
    assert.equal(exit.code, 7);
  });

  test('the CLI: exec with and without a container after --, status --json, check, errors', async () => {
    const cli = new URL('../cli.ts', import.meta.url).pathname;
    const weft = async (sub: string, ...args: string[]) => {
      try {
        const r = await execFileP(
          process.execPath,
          ['--import', 'tsx', cli, 'lab', sub, '--name', name, ...args],
          {
            timeout: 30_000,
          },
        );
        return { code: 0, stdout: r.stdout, stderr: r.stderr };
      } catch (e) {
        const x = e as { code?: number; stdout?: string; stderr?: string };
        return { code: x.code ?? 1, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
      }
    };
    const [inC, inH, st, chk, bad] = await Promise.all([
      weft('exec', 'host2', 'h2c2', '--', 'sh', '-c', 'hostname; exit 3'),
      weft('exec', 'host2', '--', 'sh', '-c', 'echo $WEFT_HOST_NAME $WEFT_SOCKET'),
      weft('status', '--json'),
      weft('check'),
      weft('exec', 'host9', '--', 'true'),
    ]);
    assert.equal(inC.code, 3);
    assert.equal(inC.stdout.trim(), 'h2c2');
    assert.equal(inH.stdout.trim(), `host2 /run/weft/lab/${name}/host2/weft.sock`);
    assert.equal((JSON.parse(st.stdout) as { hosts: unknown[] }).hosts.length, 3);
    assert.equal(chk.code, 0, chk.stdout);
    assert.match(chk.stdout, /all 37 checks passed/);
    assert.match(chk.stdout, /^h1c1 10\.244\.\S+ +· +✓/m);
    assert.equal(bad.code, 3, 'NOT_FOUND exits 3');
    assert.match(bad.stderr, /^weft: lab "[^"]+" has no host "host9"/);
  });

  test('logs: the daemon log of a host', () => {
    const text = lab.logs(name, 'host1');
    assert.match(text, /weft lab: starting the daemon of host1/);
    assert.match(text, /"host":"host1"/);
    assert.equal(lab.logs(name, 'host1', { tail: 1 }).trim().split('\n').length, 1);
  });

  test('bad input: clear errors, the lab untouched and nothing new left', async () => {
    await assert.rejects(
      lab.up({ name }),
      code(
        'EXISTS',
        new RegExp(`see \`weft lab status --name ${name}\`, remove it with \`weft lab down --name ${name}\``),
      ),
    );
    await assert.rejects(
      lab.exec(name, 'host9', undefined, ['true']),
      code('NOT_FOUND', /has no host "host9" \(hosts: host1, host2, host3\)/),
    );
    await assert.rejects(lab.exec(name, 'host1', 'nope', ['true']), code('NOT_FOUND'));
    await assert.rejects(lab.exec(name, 'host1', undefined, []), code('INVALID'));
    await assert.rejects(
      lab.exec(labName('zz'), 'host1', undefined, ['true']),
      code('NOT_FOUND', /there is no lab/),
    );
    assert.throws(() => lab.logs(name, 'host7'), code('NOT_FOUND'));
    const other = labName('b');
    await assert.rejects(lab.up({ name: other, hosts: 300 }), code('INVALID'));
    await assert.rejects(
      lab.up({ name: other, hosts: 5, underlay: '10.9.0.0/28' }),
      code('INVALID', /do not fit/),
    );
    await assert.rejects(lab.up({ name: other, backend: 'gre' }), code('INVALID', /unknown backend/));
    await assert.rejects(lab.up({ name: other, store: 'zookeeper' }), code('INVALID', /unknown store/));
    await assert.rejects(lab.rmHost(name, 'host8'), code('NOT_FOUND'));
    assertGone(other);
    const st = await lab.status(name);
    assert.deepEqual(
      st.hosts.map((h) => h.daemon),
      ['running', 'running', 'running'],
    );
  });

  test('etcd missing, or failing: a clear error, and a failed up removes what it built', async () => {
    const other = labName('c');
    const noEtcd = toolPath('none');
    const broken = toolPath('broken');
    try {
      await assert.rejects(
        lab.up(
          { name: other, store: 'etcd', hosts: 1, containers: 0 },
          { env: { ...process.env, PATH: noEtcd } },
        ),
        code('NOT_FOUND', /apt-get install etcd-server/),
      );
      assertGone(other);
      const lines: string[] = [];
      await assert.rejects(
        lab.up(
          { name: other, store: 'etcd', hosts: 1, containers: 0 },
          { env: { ...process.env, PATH: broken }, progress: (l) => lines.push(l) },
        ),
        code('UNAVAILABLE', /etcd member etcd1 exited:[\s\S]*broken on purpose/),
      );
      assert.ok(
        lines.some((l) => /^failed: .*removing what was built/.test(l)),
        lines.join('\n'),
      );
      assertGone(other);
    } finally {
      fs.rmSync(noEtcd, { recursive: true, force: true });
      fs.rmSync(broken, { recursive: true, force: true });
    }
  });

  test('add-host: the next index joins; every peer gets a route to its subnet; check passes', async () => {
    const h4 = await lab.addHost(name);
    assert.equal(h4.name, 'host4');
    assert.equal(h4.publicIp, '192.168.100.14');
    assert.equal(h4.daemon, 'running');
    assert.deepEqual(
      h4.containers.map((c) => c.name),
      ['h4c1', 'h4c2'],
    );
    for (const peer of ['host1', 'host2', 'host3']) {
      assert.ok(
        await eventually(async () => (await ipRoutes(name, peer)).some((r) => r.dst === h4.subnet), 5000),
        `${peer} has a route to host4's ${h4.subnet}`,
      );
    }
    const r = await check(name);
    assert.equal(r.ok, true, JSON.stringify(r.results.filter((x) => !x.ok)));
    assert.equal(r.results.filter((x) => x.kind === 'ip').length, 8 * 7);
  });

  test('rm-host: it leaves; peers drop its routes; its namespace goes; check passes', async () => {
    const before2 = (await lab.status(name)).hosts.find((h) => h.name === 'host2')!;
    const r = await lab.rmHost(name, 'host2');
    assert.equal(r.left, true);
    assert.equal(fs.existsSync(`/run/netns/weft-${name}-host2`), false);
    for (const peer of ['host1', 'host3', 'host4']) {
      assert.ok(
        await eventually(
          async () => !(await ipRoutes(name, peer)).some((x) => x.dst === before2.subnet),
          5000,
        ),
        `${peer} dropped its route to host2's ${before2.subnet}`,
      );
    }
    const st = await lab.status(name);
    assert.deepEqual(
      st.hosts.map((h) => h.name),
      ['host1', 'host3', 'host4'],
    );
    assert.ok(st.hosts.every((h) => !h.peers?.some((p) => p.subnet === before2.subnet)));
    const c = await check(name);
    assert.equal(c.ok, true, JSON.stringify(c.results.filter((x) => !x.ok)));
    assert.equal(c.results.filter((x) => x.kind === 'ip').length, 6 * 5);
  });

  test('check against the record: a container removed by hand is a failure, listed; the CLI exits 1', async () => {
    const rm = await lab.exec(name, 'host1', undefined, ['weft', 'rm', '-f', 'h1c2'], {
      capture: true,
      timeoutMs: 30_000,
    });
    assert.equal(rm.code, 0, rm.stderr);
    const r = await check(name);
    assert.equal(r.ok, false);
    assert.deepEqual(
      r.results.filter((x) => !x.ok).map((x) => [x.kind, x.from, x.to]),
      [['lab', 'host1', 'h1c2']],
    );
    const cli = new URL('../cli.ts', import.meta.url).pathname;
    const run = await execFileP(process.execPath, ['--import', 'tsx', cli, 'lab', 'check', '--name', name], {
      timeout: 30_000,
    }).then(
      () => ({ code: 0, stdout: '' }),
      (e: { code?: number; stdout?: string }) => ({ code: e.code ?? 0, stdout: e.stdout ?? '' }),
    );
    assert.equal(run.code, 1);
    assert.match(run.stdout, /^failures:\n {2}✗ h1c2 on host1 is missing: /m);
  });

  test('down after daemons were SIGKILLed and a host namespace deleted by hand leaves nothing; a second down is a no-op', async () => {
    const rec = lab.loadLab(name);
    const [kept, ...killed] = [...rec.hosts].reverse();
    for (const h of killed) process.kill(h.daemon!.pid, 'SIGKILL');
    // Its daemon keeps running in a namespace no pin names any more.
    await execFileP('ip', ['netns', 'delete', `weft-${name}-${kept!.name}`]);
    assert.ok(
      await eventually(
        async () =>
          (await lab.status(name)).hosts.filter((h) => h.daemon === 'dead').length === killed.length,
        5000,
      ),
      'daemons dead',
    );
    const c = await check(name);
    assert.equal(c.ok, false, 'check fails with dead daemons');
    assert.deepEqual(
      c.results.filter((x) => x.kind === 'lab').map((x) => [x.from, x.to]),
      killed.map((h) => [h.name, 'daemon']).reverse(),
      'each dead daemon is a failure',
    );
    const d = await lab.down(name);
    assert.equal(d.existed, true);
    assert.ok(d.processes >= 6, `containers and the internet server were stopped (${d.processes})`);
    assert.ok(d.ms < 3000, `down took ${d.ms} ms`);
    assertGone(name);
    const again = await lab.down(name);
    assert.equal(again.existed, false);
  });
});
