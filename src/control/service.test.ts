/**
 * HostService's ordering of the firewall around a detach, with fake drivers and a recording
 * firewall (no kernel): the rules go while the removal runs, the connections' conntrack entries
 * only once it succeeded, and a failed removal gets its rules back.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { Netns } from '../kernel/netns.js';
import type { NetworkDriver } from '../net/driver.js';
import type { FirewallState } from '../net/firewall/types.js';
import { type FirewallPort, HostService, type ProcessPort } from './service.js';
import { HostState } from './state.js';

/** A driver that does nothing but can be told to fail `leave`. */
function fakeDriver(name: string, fail: { leave: boolean }): NetworkDriver {
  const ok = async () => {};
  return {
    name,
    createNetwork: ok,
    deleteNetwork: ok,
    createEndpoint: ok,
    deleteEndpoint: ok,
    join: ok,
    leave: async () => {
      if (fail.leave) throw new Error('leave failed (test)');
    },
  };
}

/** What the firewall was asked, in order: each apply's endpoints (id:ports) and its options. */
class RecordingFirewall implements FirewallPort {
  readonly calls: string[] = [];
  async apply(state: FirewallState, opts: { repair?: boolean; forget?: boolean } = {}): Promise<void> {
    const eps = state.networks.flatMap((n) => n.endpoints.map((e) => `${e.ports.length}`));
    this.calls.push(`apply [${eps.join(',')}]${opts.forget === false ? ' forget:false' : ''}`);
  }
  async forgetRemoved(): Promise<void> {
    this.calls.push('forgetRemoved');
  }
  async remove(): Promise<void> {
    this.calls.push('remove');
  }
}

const noProcesses: ProcessPort = {
  begin: () => {
    throw new Error('no processes in this test');
  },
  alive: () => false,
  stop: async () => {},
  renderFiles: () => ({ hosts: '', resolvConf: '', hostname: '' }),
};

function service(t: { after(fn: () => void): void }, fail: { leave: boolean }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-service-'));
  const state = HostState.open(path.join(dir, 'state'));
  t.after(() => {
    state.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const firewall = new RecordingFirewall();
  const svc = new HostService({
    host: {
      name: 'h',
      ns: Netns.self(),
      stateDir: path.join(dir, 'state'),
      runDir: path.join(dir, 'run'),
      socketPath: path.join(dir, 'weft.sock'),
    },
    state,
    drivers: {
      bridge: fakeDriver('bridge', fail),
      host: fakeDriver('host', fail),
      none: fakeDriver('none', fail),
    },
    firewall,
    dns: { update: async () => {}, hostResolv: () => ({ nameservers: [], search: [], options: [] }) },
    processes: noProcesses,
    defaultNetwork: { name: 'bridge', bridge: 'wtest0', subnet: '10.77.0.0/24' },
  });
  return { svc, firewall };
}

test('detach: rules go while the removal runs, conntrack entries once it succeeded', async (t) => {
  const { svc, firewall } = service(t, { leave: false });
  await svc.start();
  await svc.attach({ owner: 'cni', containerId: 'c1', ifname: 'eth0', ports: ['8080:80'] });
  firewall.calls.length = 0;
  assert.deepEqual(await svc.detach({ owner: 'cni', containerId: 'c1' }), { removed: 1 });
  assert.deepEqual(firewall.calls, ['apply [] forget:false', 'forgetRemoved']);
  assert.equal(svc.attachments().length, 0);
});

test('a detach whose removal fails: the rules come back, the connections were never forgotten', async (t) => {
  const fail = { leave: false };
  const { svc, firewall } = service(t, fail);
  await svc.start();
  await svc.attach({ owner: 'cni', containerId: 'c1', ifname: 'eth0', ports: ['8080:80'] });
  firewall.calls.length = 0;
  fail.leave = true;
  await assert.rejects(svc.detach({ owner: 'cni', containerId: 'c1' }), /leave failed/);
  assert.deepEqual(firewall.calls, ['apply [] forget:false', 'apply [1]']);
  assert.equal(svc.attachments().length, 1, 'still recorded');
});
