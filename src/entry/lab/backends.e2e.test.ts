/**
 * The lab with the two other backends (host-gw, udp) on the embedded store: up, the backend's own
 * kernel state seen with iproute2, the check, down leaving nothing. (vxlan: lab.e2e.test.ts.)
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { isRoot, testLabName } from '../../../test/bed.js';
import { check } from './check.js';
import * as lab from './lab.js';
import { assertGone, ipRoutes } from './testkit.test.js';
import { nsName } from './topology.js';

const execFileP = promisify(execFile);
const labName = testLabName;

/** `weft lab check` passes all of its checks on a 3-host lab with one container each. */
async function checkPasses(name: string): Promise<void> {
  const r = await check(name);
  assert.equal(r.ok, true, JSON.stringify(r.results.filter((x) => !x.ok)));
  assert.equal(r.passed, 3 * 2 + 3 + 1);
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
      await checkPasses(name);
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
      await checkPasses(name);
    } finally {
      await lab.down(name);
    }
    assertGone(name);
  });
});
