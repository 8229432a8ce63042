import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Netns } from '../../kernel/netns.js';
import { type DockerPlugin, startDockerPlugin } from './plugin.js';
import { FakeBackend, pluginCall } from './testkit.js';

const NET = '1453205f3a8b37aac1538876ddcd61376b4a656dbcb9bf3af91fa59c953c36d2';

describe('docker plugin server (unix socket, fake service)', () => {
  let dir: string;
  let plugin: DockerPlugin;
  let backend: FakeBackend;
  const call = (method: string, body?: unknown, o?: { httpMethod?: string }) =>
    pluginCall(plugin.socketPath, method, body, o);

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wt-dplug-'));
    backend = new FakeBackend();
    plugin = await startDockerPlugin({
      socketPath: path.join(dir, 'plugins', 'weft.sock'),
      service: backend,
      stateDir: path.join(dir, 'state'),
      ns: Netns.self(),
    });
  });
  after(async () => {
    await plugin.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('Activate: both interfaces, Docker’s content type, bodyless call', async () => {
    const r = await call('Plugin.Activate');
    assert.equal(r.status, 200);
    assert.equal(r.contentType, 'application/vnd.docker.plugins.v1+json');
    assert.deepEqual(r.body, { Implements: ['NetworkDriver', 'IpamDriver'] });
    assert.deepEqual((await call('NetworkDriver.GetCapabilities', 'null')).body, {
      Scope: 'local',
      ConnectivityScope: 'local',
    });
    assert.deepEqual((await call('IpamDriver.GetCapabilities')).body, {
      RequiresMACAddress: false,
      RequiresRequestReplay: false,
    });
    assert.deepEqual(
      (await call('NetworkDriver.DiscoverNew', { DiscoveryType: 1, DiscoveryData: {} })).body,
      {},
    );
  });

  test('unknown methods are 404 with the error field of their interface', async () => {
    const n = await call('NetworkDriver.AllocateNetwork', {});
    assert.equal(n.status, 404);
    assert.match(String(n.body.Err), /not a method/);
    const i = await call('IpamDriver.GetPoolInfo', {});
    assert.equal(i.status, 404);
    assert.match(String(i.body.Error), /not a method/);
    assert.equal((await call('Nothing')).status, 404);
  });

  test('malformed JSON and wrong shapes are 400, nothing made', async () => {
    const n = await call('NetworkDriver.CreateNetwork', '{"NetworkID": ');
    assert.equal(n.status, 400);
    assert.equal(n.body.Err, 'the request body is not valid JSON');
    const i = await call('IpamDriver.RequestPool', '[1,');
    assert.equal(i.status, 400);
    assert.equal(i.body.Error, 'the request body is not valid JSON');
    assert.equal((await call('IpamDriver.RequestPool', [1])).status, 400);
    assert.equal((await call('NetworkDriver.CreateNetwork', { IPv4Data: [] })).status, 400);
    assert.equal((await call('Plugin.Activate', undefined, { httpMethod: 'GET' })).status, 400);
    assert.deepEqual(backend.calls, []);
    assert.deepEqual(plugin.ipam.pools(), []);
  });

  test('errors keep weft’s codes as statuses (overlap 409), but not found in a known method is 500, never 404', async () => {
    const p = await call('IpamDriver.RequestPool', { AddressSpace: 'weft-local', Pool: '10.99.0.0/24' });
    assert.equal(p.status, 200);
    const o = await call('IpamDriver.RequestPool', { AddressSpace: 'weft-local', Pool: '10.99.0.0/23' });
    assert.equal(o.status, 409);
    assert.match(String(o.body.Error), /overlaps/);
    const u = await call('IpamDriver.RequestAddress', { PoolID: 'weft-local/10.1.0.0/24' });
    // dockerd reads a 404 as "method not implemented" and goes on as if it had worked.
    assert.equal(u.status, 500);
    assert.match(String(u.body.Error), /not known/);
    const e = await call('NetworkDriver.Join', { NetworkID: NET, EndpointID: NET });
    assert.equal(e.status, 500);
    assert.deepEqual(Object.keys(e.body), ['Err']);
    assert.deepEqual((await call('IpamDriver.ReleasePool', { PoolID: p.body.PoolID })).body, {});
  });
});
