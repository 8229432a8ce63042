/**
 * The Docker plugin end to end, driven by our own client over its socket exactly as dockerd
 * 20.10 drives it (the calls, their order and bodies were recorded from a real dockerd), against
 * a weft daemon in a test "host" namespace started with --docker-plugin. What dockerd does
 * between the calls (moving the interface into the container's namespace, naming it eth0,
 * addressing it, the default route) the test does with its own netlink handles. Asserted: the
 * kernel state, packets between two containers and to a published port from another namespace
 * under a FORWARD policy of DROP, bad input answered in Docker's error fields with nothing
 * half-made, and the state across a daemon restart.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Bed, type BedNs, needsRoot, RUN_ID } from '../../../test/bed.js';
import { startDaemon, type TestDaemon } from '../../../test/daemon.js';
import type { AttachView, NetworkView } from '../../control/service.js';
import { formatIPNet } from '../../lib/ip.js';
import type { IpamFile } from './ipam.js';
import { type PluginAnswer, pluginCall } from './testkit.js';

const HOST_IP = '198.51.100.2';
const OUTSIDE_IP = '198.51.100.1';
const NET = '5e1f0a0c3d2b4a69880716253443526170819aa0bbccddeeff00112233445566';
const EP1 = 'a1a1a1a1a1b2b2b2b2b2c3c3c3c3c3d4d4d4d4d4e5e5e5e5e5f6f6f6f6f6a7a7';
const EP2 = 'b2b2b2b2b2c3c3c3c3c3d4d4d4d4d4e5e5e5e5e5f6f6f6f6f6a7a7a7a7a7b8b8';
const EP3 = 'c3c3c3c3c3d4d4d4d4d4e5e5e5e5e5f6f6f6f6f6a7a7a7a7a7b8b8b8b8b8c9c9';
const GW_OPT = { RequestAddressType: 'com.docker.network.gateway' };
const portmap = (hostPort: number) => ({
  'com.docker.network.endpoint.exposedports': [{ Proto: 6, Port: 80 }],
  'com.docker.network.portmap': [
    { Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: hostPort, HostPortEnd: hostPort },
  ],
});

describe('docker plugin: the protocol over its socket, a real daemon', needsRoot, () => {
  const b = new Bed();
  let host: BedNs;
  let outside: BedNs;
  let c1: BedNs;
  let c2: BedNs;
  let d: TestDaemon;
  let sock: string;
  let www: string;
  let poolId: string;
  const weftNet = `d-${NET.slice(0, 12)}`;

  const call = async <T = Record<string, unknown>>(method: string, body?: unknown): Promise<T> => {
    const r = await pluginCall<T>(sock, method, body);
    assert.equal(r.status, 200, `${method}: ${r.text}`);
    assert.equal(r.contentType, 'application/vnd.docker.plugins.v1+json');
    return r.body;
  };
  const raw = (method: string, body?: unknown): Promise<PluginAnswer> => pluginCall(sock, method, body);
  const attachments = () => d.api.request<AttachView[]>('GET', '/v1/attachments?owner=docker');
  const curl = (from: BedNs, url: string) =>
    b.exec(from, 'curl', ['-s', '--max-time', '3', url]).then(
      (r) => r.stdout,
      () => '',
    );

  /** dockerd's container start: an address, CreateEndpoint, Join, then its own moves, Program, OperInfo. */
  async function startContainer(ep: string, c: BedNs, options: object): Promise<string> {
    const { Address } = await call<{ Address: string }>('IpamDriver.RequestAddress', {
      PoolID: poolId,
      Address: '',
      Options: null,
    });
    const iface = { Address, AddressIPv6: '', MacAddress: '' };
    const made = await call<{ Interface?: { MacAddress?: string } }>('NetworkDriver.CreateEndpoint', {
      NetworkID: NET,
      EndpointID: ep,
      Interface: iface,
      Options: options,
    });
    const join = await call<{ InterfaceName: { SrcName: string; DstPrefix: string }; Gateway: string }>(
      'NetworkDriver.Join',
      {
        NetworkID: NET,
        EndpointID: ep,
        SandboxKey: `/var/run/docker/netns/${ep.slice(0, 12)}`,
        Options: options,
      },
    );
    assert.equal(join.InterfaceName.DstPrefix, 'eth');
    // What dockerd does with the answer: move the interface in, name it, address it, route.
    const src = host.h.links.get(join.InterfaceName.SrcName);
    assert.equal(src.up, false);
    assert.equal(src.mac, made.Interface?.MacAddress);
    host.h.links.setNetns(join.InterfaceName.SrcName, c.ns, 'eth0');
    c.h.addrs.add('eth0', Address);
    c.h.links.setUp('eth0');
    c.h.routes.add({ dst: 'default', via: join.Gateway });
    await call('NetworkDriver.ProgramExternalConnectivity', {
      NetworkID: NET,
      EndpointID: ep,
      Options: options,
    });
    await call('NetworkDriver.EndpointOperInfo', { NetworkID: NET, EndpointID: ep });
    await call('NetworkDriver.EndpointOperInfo', { NetworkID: NET, EndpointID: ep });
    return Address;
  }

  before(async () => {
    host = b.ns('host');
    outside = b.ns('outside');
    c1 = b.ns('c1');
    c2 = b.ns('c2');
    b.uplink(host, outside, { hostIp: HOST_IP, outsideIp: OUTSIDE_IP });
    // dockerd sets the FORWARD policy to DROP: weft's traffic must pass regardless.
    for (const cmd of ['iptables', 'ip6tables']) await b.exec(host, cmd, ['-P', 'FORWARD', 'DROP']);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-dplug-`));
    b.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
    sock = path.join(dir, 'plugins', 'weft.sock');
    www = path.join(dir, 'www');
    fs.mkdirSync(www);
    fs.writeFileSync(path.join(www, 'index.html'), 'hello from a docker endpoint\n');
    d = await startDaemon(b, host, { args: ['--default-subnet', '10.88.0.0/24', '--docker-plugin', sock] });
    b.onCleanup(() => d.stop());
  });
  after(() => b.cleanup());

  test('handshake as dockerd makes it', async () => {
    assert.deepEqual(await call('Plugin.Activate'), { Implements: ['NetworkDriver', 'IpamDriver'] });
    assert.deepEqual(await call('NetworkDriver.GetCapabilities'), {
      Scope: 'local',
      ConnectivityScope: 'local',
    });
    assert.deepEqual(await call('IpamDriver.GetCapabilities'), {
      RequiresMACAddress: false,
      RequiresRequestReplay: false,
    });
    assert.deepEqual(await call('IpamDriver.GetDefaultAddressSpaces'), {
      LocalDefaultAddressSpace: 'weft-local',
      GlobalDefaultAddressSpace: 'weft-global',
    });
  });

  test('network create: a pool, its gateway, a weft bridge network with it', async () => {
    const pool = await call<{ PoolID: string; Pool: string }>('IpamDriver.RequestPool', {
      AddressSpace: 'weft-local',
      Pool: '10.77.0.0/24',
      SubPool: '',
      Options: {},
      V6: false,
    });
    poolId = pool.PoolID;
    const gw = await call<{ Address: string }>('IpamDriver.RequestAddress', {
      PoolID: poolId,
      Address: '',
      Options: GW_OPT,
    });
    assert.equal(gw.Address, '10.77.0.1/24');
    await call('NetworkDriver.CreateNetwork', {
      NetworkID: NET,
      Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': { mtu: '1400' } },
      IPv4Data: [{ AddressSpace: 'weft-local', Gateway: gw.Address, Pool: pool.Pool }],
      IPv6Data: [],
    });
    const n = await d.api.request<NetworkView>('GET', `/v1/networks/${weftNet}`);
    assert.deepEqual(
      n.subnets.map((s) => [s.subnet, s.gateway]),
      [['10.77.0.0/24', '10.77.0.1']],
    );
    assert.equal(n.mtu, 1400);
    const br = host.h.links.get(n.bridge);
    assert.equal(br.kind, 'bridge');
    assert.deepEqual(
      host.h.addrs.list({ dev: n.bridge, family: 4 }).map((a) => formatIPNet(a.ipnet)),
      ['10.77.0.1/24'],
    );
  });

  test('two containers: endpoints on the bridge, they ping each other; -p reaches one from outside', async () => {
    const a1 = await startContainer(EP1, c1, portmap(8080));
    const a2 = await startContainer(EP2, c2, {});
    assert.equal(a1, '10.77.0.2/24');
    assert.equal(a2, '10.77.0.3/24');
    const n = await d.api.request<NetworkView>('GET', `/v1/networks/${weftNet}`);
    const atts = await attachments();
    assert.equal(atts.length, 2);
    for (const a of atts) {
      const hostEnd = host.h.links.get(a.hostIfname!);
      assert.equal(hostEnd.kind, 'veth');
      assert.equal(hostEnd.masterIndex, host.h.links.get(n.bridge).index);
    }
    assert.deepEqual(atts.find((a) => a.containerId === EP1)?.ports, [
      { proto: 'tcp', hostPort: 8080, containerPort: 80 },
    ]);
    assert.equal(c1.h.links.get('eth0').mtu, 1400);
    assert.ok(await b.ping(c1, '10.77.0.3', { count: 2, deadlineS: 4 }), 'c1 → c2');
    assert.ok(await b.ping(c2, '10.77.0.2'), 'c2 → c1');
    assert.ok(await b.ping(c2, '10.77.0.1'), 'c2 → gateway');
    b.spawn(c1, 'busybox', ['httpd', '-f', '-p', '80', '-h', www]);
    let got = '';
    for (let i = 0; i < 30 && got === ''; i++) {
      got = await curl(outside, `http://${HOST_IP}:8080/`);
      if (got === '') await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(got, 'hello from a docker endpoint\n');
    // The policy really is DROP (the traffic passed through weft's own accept rules).
    const { stdout } = await b.exec(host, 'iptables', ['-S', 'FORWARD']);
    assert.match(stdout, /^-P FORWARD DROP$/m);
    // EndpointOperInfo shows the published port in Docker's shape.
    const info = await call<{ Value: Record<string, unknown> }>('NetworkDriver.EndpointOperInfo', {
      NetworkID: NET,
      EndpointID: EP1,
    });
    assert.deepEqual(info.Value['com.docker.network.portmap'], [
      { Proto: 6, IP: '10.77.0.2', Port: 80, HostIP: '', HostPort: 8080, HostPortEnd: 8080 },
    ]);
  });

  test('bad input: Docker’s error fields, nothing half-made', async () => {
    const linksBefore = host.h.links
      .list()
      .map((l) => l.name)
      .sort();
    const attsBefore = (await attachments()).length;

    const unknown = await raw('NetworkDriver.Frobnicate', {});
    assert.equal(unknown.status, 404);
    assert.equal(typeof unknown.body.Err, 'string');
    const ipamUnknown = await raw('IpamDriver.Frobnicate', {});
    assert.equal(ipamUnknown.status, 404);
    assert.equal(typeof ipamUnknown.body.Error, 'string');

    const bad = await raw('NetworkDriver.CreateEndpoint', '{"NetworkID": "x", ');
    assert.equal(bad.status, 400);
    assert.equal(bad.body.Err, 'the request body is not valid JSON');
    const badIpam = await raw('IpamDriver.RequestAddress', '{');
    assert.equal(badIpam.status, 400);
    assert.equal(badIpam.body.Error, 'the request body is not valid JSON');

    const noNet = await raw('NetworkDriver.CreateEndpoint', {
      NetworkID: 'f'.repeat(64),
      EndpointID: EP3,
      Interface: { Address: '10.77.0.9/24' },
    });
    assert.equal(noNet.status, 500, 'a 404 would be "not implemented" to dockerd');
    assert.match(String(noNet.body.Err), /not a weft network/);
    const noEp = await raw('NetworkDriver.Join', { NetworkID: NET, EndpointID: EP3, Options: {} });
    assert.equal(noEp.status, 500);
    assert.match(String(noEp.body.Err), /not known/);
    const noPool = await raw('IpamDriver.RequestAddress', { PoolID: 'weft-local/10.1.0.0/24', Address: '' });
    assert.equal(noPool.status, 500);
    assert.match(String(noPool.body.Error), /not known/);
    const overlap = await raw('IpamDriver.RequestPool', { AddressSpace: 'weft-local', Pool: '10.77.0.0/16' });
    assert.equal(overlap.status, 409);
    const outside = await raw('IpamDriver.RequestAddress', { PoolID: poolId, Address: '10.78.0.9' });
    assert.equal(outside.status, 400);
    assert.match(String(outside.body.Error), /not in subnet/);
    const taken = await raw('IpamDriver.RequestAddress', { PoolID: poolId, Address: '10.77.0.2' });
    assert.equal(taken.status, 409);

    // A host port that is taken: the endpoint is refused before anything is made.
    const { Address } = await call<{ Address: string }>('IpamDriver.RequestAddress', {
      PoolID: poolId,
      Address: '',
    });
    const portTaken = await raw('NetworkDriver.CreateEndpoint', {
      NetworkID: NET,
      EndpointID: EP3,
      Interface: { Address, AddressIPv6: '', MacAddress: '' },
      Options: portmap(8080),
    });
    assert.equal(portTaken.status, 409);
    assert.match(String(portTaken.body.Err), /8080/);
    await call('IpamDriver.ReleaseAddress', { PoolID: poolId, Address: Address.split('/')[0] });

    assert.equal((await attachments()).length, attsBefore);
    assert.deepEqual(
      host.h.links
        .list()
        .map((l) => l.name)
        .sort(),
      linksBefore,
    );
  });

  test('the weft daemon restarts: endpoints, ports and the IPAM reservations are kept', async () => {
    await d.stop();
    d = await d.restart();
    assert.deepEqual(await call('Plugin.Activate'), { Implements: ['NetworkDriver', 'IpamDriver'] });
    assert.ok(await b.ping(c1, '10.77.0.3'), 'c1 → c2 after the restart');
    assert.equal(await curl(outside, `http://${HOST_IP}:8080/`), 'hello from a docker endpoint\n');
    const next = await call<{ Address: string }>('IpamDriver.RequestAddress', {
      PoolID: poolId,
      Address: '',
    });
    assert.ok(!['10.77.0.1/24', '10.77.0.2/24', '10.77.0.3/24'].includes(next.Address), next.Address);
    await call('IpamDriver.ReleaseAddress', { PoolID: poolId, Address: next.Address.split('/')[0] });
    const join = await call<{ InterfaceName: { SrcName: string } }>('NetworkDriver.Join', {
      NetworkID: NET,
      EndpointID: EP1,
      Options: {},
    });
    assert.equal(join.InterfaceName.SrcName, `wd${EP1.slice(0, 10)}`);
  });

  test('teardown as dockerd makes it removes everything', async () => {
    const n = await d.api.request<NetworkView>('GET', `/v1/networks/${weftNet}`);
    // c1 stops the Docker way: revoke, leave, the interface back in the host under its name, delete.
    await call('NetworkDriver.RevokeExternalConnectivity', { NetworkID: NET, EndpointID: EP1 });
    assert.equal(await curl(outside, `http://${HOST_IP}:8080/`), '');
    await call('NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP1 });
    c1.h.links.setDown('eth0');
    c1.h.links.rename('eth0', `wd${EP1.slice(0, 10)}`);
    c1.h.links.setNetns(`wd${EP1.slice(0, 10)}`, host.ns);
    await call('NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: EP1 });
    // c2's interface is still inside its namespace: the endpoint goes all the same.
    await call('NetworkDriver.RevokeExternalConnectivity', { NetworkID: NET, EndpointID: EP2 });
    await call('NetworkDriver.Leave', { NetworkID: NET, EndpointID: EP2 });
    await call('NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: EP2 });
    await call('NetworkDriver.DeleteEndpoint', { NetworkID: NET, EndpointID: EP2 }); // again: fine
    for (const a of ['10.77.0.2', '10.77.0.3'])
      await call('IpamDriver.ReleaseAddress', { PoolID: poolId, Address: a });
    assert.deepEqual(await attachments(), []);
    assert.equal(c2.h.links.find('eth0'), undefined, 'the veth went with its host end');
    assert.ok(!host.h.links.list().some((l) => l.kind === 'veth' && l.name !== 'eth0'));

    await call('IpamDriver.ReleaseAddress', { PoolID: poolId, Address: '10.77.0.1' });
    await call('IpamDriver.ReleasePool', { PoolID: poolId });
    await call('NetworkDriver.DeleteNetwork', { NetworkID: NET });
    assert.equal(host.h.links.find(n.bridge), undefined);
    const nets = await d.api.request<NetworkView[]>('GET', '/v1/networks');
    assert.ok(!nets.some((x) => x.name === weftNet));
    const state = JSON.parse(
      fs.readFileSync(path.join(d.dir, 'state', 'docker-ipam.json'), 'utf8'),
    ) as IpamFile;
    assert.deepEqual(state.pools, []);
  });
});
