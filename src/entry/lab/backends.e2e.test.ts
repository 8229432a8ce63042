/**
 * The lab with the two other backends (host-gw, udp) on the embedded store: up, the backend's own
 * kernel state seen with iproute2, the check, down leaving nothing. (vxlan: lab.e2e.test.ts.)
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { isRoot, testLabName } from '../../../test/bed.js';
import { check } from './check.js';
import * as lab from './lab.js';
import { DEFAULT_PATHS, labDirs, nsName, roleOf } from './topology.js';

const execFileP = promisify(execFile);
const labName = testLabName;

/** Nothing of lab `name` is left: namespace, mount, process, state or run dir. */
function assertGone(name: string): void {
  const nss = fs.readdirSync(DEFAULT_PATHS.netnsDir).filter((n) => roleOf(name, n));
  assert.deepEqual(nss, [], 'namespaces left');
  const d = labDirs(DEFAULT_PATHS, name);
  const mounts = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(`/weft-${name}-`) || l.includes(`${d.run}/`) || l.includes(`${d.state}/`));
  assert.deepEqual(mounts, [], 'mounts left');
  const procs: string[] = [];
  for (const p of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const env = fs.readFileSync(`/proc/${p}/environ`, 'utf8').split('\0');
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (env.includes(`WEFT_LAB=${name}`) || cmd.includes(`/lab/${name}/`)) procs.push(`${p} ${cmd}`);
    } catch {
      // gone
    }
  }
  assert.deepEqual(procs, [], 'processes left');
  assert.equal(fs.existsSync(d.state), false, 'state dir left');
  assert.equal(fs.existsSync(d.run), false, 'run dir left');
}

async function ipRoutes(
  name: string,
  host: string,
): Promise<{ dst: string; gateway?: string; dev: string }[]> {
  const { stdout } = await execFileP(
    'ip',
    ['-n', nsName(name, host as `host${number}`), '-j', 'route', 'show'],
    {
      timeout: 10_000,
    },
  );
  return JSON.parse(stdout || '[]') as { dst: string; gateway?: string; dev: string }[];
}

describe('weft lab with the host-gw and udp backends', { skip: !isRoot() && 'needs root' }, () => {
  test('host-gw: each peer subnet is routed via the peer public IP; check passes; down leaves nothing', async () => {
    const name = labName('g');
    try {
      const up = await lab.up({ name, backend: 'host-gw', hosts: 3, containers: 1 });
      const [h1, ...peers] = up.status.hosts;
      const routes = await ipRoutes(name, h1!.name);
      for (const p of peers) {
        assert.ok(
          routes.some((r) => r.dst === p.subnet && r.gateway === p.publicIp && r.dev === 'eth0'),
          `${p.subnet} via ${p.publicIp}: ${JSON.stringify(routes)}`,
        );
      }
      const r = await check(name);
      assert.equal(r.ok, true, JSON.stringify(r.results.filter((x) => !x.ok)));
      assert.equal(r.passed, 3 * 2 + 3 + 1);
    } finally {
      await lab.down(name);
    }
    assertGone(name);
  });

  test('udp: the cluster network goes into the TUN; check passes; down leaves nothing', async () => {
    const name = labName('u');
    try {
      const up = await lab.up({ name, backend: 'udp', hosts: 3, containers: 1 });
      const routes = await ipRoutes(name, 'host2');
      const tun = routes.find((r) => r.dst === up.status.network);
      assert.ok(tun, `a route for ${up.status.network}: ${JSON.stringify(routes)}`);
      const { stdout } = await execFileP('ip', [
        '-n',
        nsName(name, 'host2'),
        '-j',
        '-d',
        'link',
        'show',
        tun.dev,
      ]);
      const link = (JSON.parse(stdout) as { linkinfo?: { info_kind?: string } }[])[0];
      assert.equal(link?.linkinfo?.info_kind, 'tun');
      const r = await check(name);
      assert.equal(r.ok, true, JSON.stringify(r.results.filter((x) => !x.ok)));
      assert.equal(r.passed, 3 * 2 + 3 + 1);
    } finally {
      await lab.down(name);
    }
    assertGone(name);
  });
});
