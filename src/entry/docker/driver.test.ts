import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { AttachRequest } from '../../control/service.js';
import { isWeftError } from '../../lib/errors.js';
import { DockerNetworkDriver } from './driver.js';
import { FakeBackend } from './testkit.js';

const NET = '1453205f3a8b37aac1538876ddcd61376b4a656dbcb9bf3af91fa59c953c36d2';
const EP = 'b7db4ea76dfb30b03f33676ac982923c84e67b61499a17fcbac7f3a37ddf584b';
const EP2 = 'c8ec5fb87e0c41c14f44787bd093034d95f78c72500a28adcbd8f4b48eef695c';
const portmap = (...b: object[]) => ({ 'com.docker.network.portmap': b });
const code = (c: string) => (e: unknown) => isWeftError(e) && e.code === c;

async function withNetwork(opts: Record<string, unknown> = {}) {
  const b = new FakeBackend();
  const d = new DockerNetworkDriver(b);
  await d.createNetwork({
    NetworkID: NET,
    Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': {}, ...opts },
    IPv4Data: [{ AddressSpace: 'weft-local', Gateway: '10.99.0.1/24', Pool: '10.99.0.0/24' }],
    IPv6Data: [],
  });
  return { b, d };
}

const endpoint = (id: string, address: string, options: object = {}) => ({
  NetworkID: NET,
  EndpointID: id,
  Interface: { Address: address, AddressIPv6: '', MacAddress: '' },
  Options: options,
});

describe('docker network driver (against a fake service)', () => {
  test('capabilities: local scope', () => {
    assert.deepEqual(new DockerNetworkDriver(new FakeBackend()).capabilities(), {
      Scope: 'local',
      ConnectivityScope: 'local',
    });
  });

  test('CreateNetwork makes the weft bridge network once; a different repeat is EXISTS', async () => {
    const { b, d } = await withNetwork();
    assert.deepEqual(b.argsOf('createNetwork'), [
      {
        name: 'd-1453205f3a8b',
        driver: 'bridge',
        subnets: [{ subnet: '10.99.0.0/24', gateway: '10.99.0.1' }],
        ipv6: false,
        internal: false,
        options: {},
      },
    ]);
    await d.createNetwork({ NetworkID: NET, IPv4Data: [{ Pool: '10.99.0.0/24', Gateway: '10.99.0.1/24' }] });
    assert.equal(b.argsOf('createNetwork').length, 1);
    await assert.rejects(
      d.createNetwork({ NetworkID: NET, IPv4Data: [{ Pool: '10.98.0.0/24' }] }),
      code('EXISTS'),
    );
  });

  test('CreateEndpoint attaches a bare interface with Docker’s address and ports; Join names it', async () => {
    const { b, d } = await withNetwork();
    const res = await d.createEndpoint(
      endpoint(EP, '10.99.0.10/24', {
        ...portmap(
          { Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: 8080, HostPortEnd: 8080 },
          { Proto: 17, IP: '', Port: 53, HostIP: '', HostPort: 0, HostPortEnd: 0 },
        ),
        'com.docker.network.endpoint.exposedports': [{ Proto: 6, Port: 80 }],
      }),
    );
    const req = b.argsOf('attach')[0] as AttachRequest;
    assert.deepEqual(req, {
      owner: 'docker',
      containerId: EP,
      ifname: 'wdb7db4ea76d',
      network: 'd-1453205f3a8b',
      ip: '10.99.0.10',
      mac: '02:42:0a:63:00:0a',
      ports: ['8080:80/tcp', '49153:53/udp'],
    });
    assert.equal(req.netns, undefined);
    // Docker left the MAC empty: the driver chose it from the address, as Docker's bridge does,
    // and answers it (and nothing else Docker already had).
    assert.deepEqual(res, { Interface: { MacAddress: '02:42:0a:63:00:0a' } });

    const join = d.join({
      NetworkID: NET,
      EndpointID: EP,
      SandboxKey: '/var/run/docker/netns/x',
      Options: {},
    });
    assert.deepEqual(join, {
      InterfaceName: { SrcName: 'wdb7db4ea76d', DstPrefix: 'eth' },
      Gateway: '10.99.0.1',
      StaticRoutes: [],
      DisableGatewayService: false,
    });
    const info = d.endpointOperInfo({ NetworkID: NET, EndpointID: EP });
    assert.deepEqual(info.Value['com.docker.network.portmap'], [
      { Proto: 6, IP: '10.99.0.10', Port: 80, HostIP: '', HostPort: 8080, HostPortEnd: 8080 },
      { Proto: 17, IP: '10.99.0.10', Port: 53, HostIP: '', HostPort: 49153, HostPortEnd: 49153 },
    ]);

    // ProgramExternalConnectivity with the same bindings changes nothing.
    await d.programExternalConnectivity({
      NetworkID: NET,
      EndpointID: EP,
      Options: portmap(
        { Proto: 6, Port: 80, HostPort: 8080, HostPortEnd: 8080 },
        { Proto: 17, Port: 53, HostPort: 0, HostPortEnd: 0 },
      ),
    });
    assert.equal(b.argsOf('setAttachmentPorts').length, 0);
    // Repeated CreateEndpoint: the same attachment, no new ports chosen.
    await d.createEndpoint(endpoint(EP, '10.99.0.10/24', portmap({ Proto: 6, Port: 80, HostPort: 0 })));
    assert.equal(b.atts.get(EP)?.ports.length, 2);
  });

  test('dynamic host ports skip those other containers hold; a range gives its first free port', async () => {
    const { b, d } = await withNetwork();
    b.otherPorts = [
      { proto: 'tcp', hostPort: 49153, containerPort: 1 },
      { proto: 'tcp', hostPort: 8000, containerPort: 1 },
    ];
    await d.createEndpoint(
      endpoint(
        EP,
        '10.99.0.10/24',
        portmap(
          { Proto: 6, Port: 80, HostPort: 0 },
          { Proto: 6, Port: 81, HostPort: 8000, HostPortEnd: 8002 },
        ),
      ),
    );
    assert.deepEqual((b.argsOf('attach')[0] as AttachRequest).ports, ['49154:80/tcp', '8001:81/tcp']);
    b.otherPorts = [{ proto: 'tcp', hostPort: 9000, containerPort: 1 }];
    await assert.rejects(
      d.createEndpoint(
        endpoint(EP2, '10.99.0.11/24', portmap({ Proto: 6, Port: 80, HostPort: 9000, HostPortEnd: 9000 })),
      ),
      code('CONFLICT'),
    );
  });

  test('ProgramExternalConnectivity publishes changed bindings; Revoke unpublishes', async () => {
    const { b, d } = await withNetwork();
    await d.createEndpoint(endpoint(EP, '10.99.0.10/24'));
    await d.programExternalConnectivity({
      NetworkID: NET,
      EndpointID: EP,
      Options: portmap({ Proto: 6, Port: 80, HostPort: 8080 }),
    });
    assert.deepEqual(b.argsOf('setAttachmentPorts'), [
      { owner: 'docker', containerId: EP, ports: ['8080:80/tcp'] },
    ]);
    await d.revokeExternalConnectivity({ NetworkID: NET, EndpointID: EP });
    assert.deepEqual(b.atts.get(EP)?.ports, []);
    // Revoke again, and for an unknown endpoint: nothing to do.
    await d.revokeExternalConnectivity({ NetworkID: NET, EndpointID: EP });
    await d.revokeExternalConnectivity({ NetworkID: NET, EndpointID: EP2 });
    assert.equal(b.argsOf('setAttachmentPorts').length, 2);
  });

  test('an internal network: Join gives no gateway', async () => {
    const { d } = await withNetwork({ 'com.docker.network.internal': true });
    await d.createEndpoint(endpoint(EP, '10.99.0.10/24'));
    const join = d.join({ NetworkID: NET, EndpointID: EP });
    assert.equal(join.Gateway, undefined);
  });

  test('teardown is idempotent; unknown endpoints and networks are NOT_FOUND where it matters', async () => {
    const { b, d } = await withNetwork();
    await d.createEndpoint(endpoint(EP, '10.99.0.10/24'));
    assert.throws(() => d.join({ NetworkID: NET, EndpointID: EP2 }), code('NOT_FOUND'));
    assert.throws(() => d.join({ NetworkID: 'f'.repeat(64), EndpointID: EP }), code('NOT_FOUND'));
    assert.throws(() => d.endpointOperInfo({ NetworkID: NET, EndpointID: EP2 }), code('NOT_FOUND'));
    await assert.rejects(
      d.programExternalConnectivity({ NetworkID: NET, EndpointID: EP2 }),
      code('NOT_FOUND'),
    );
    await assert.rejects(
      d.createEndpoint({ ...endpoint(EP2, ''), NetworkID: 'f'.repeat(64) }),
      code('NOT_FOUND'),
    );
    assert.deepEqual(d.leave({ NetworkID: NET, EndpointID: EP }), {});
    assert.deepEqual(await d.deleteEndpoint({ NetworkID: NET, EndpointID: EP }), {});
    assert.deepEqual(await d.deleteEndpoint({ NetworkID: NET, EndpointID: EP }), {});
    assert.deepEqual(await d.deleteNetwork({ NetworkID: NET }), {});
    assert.deepEqual(await d.deleteNetwork({ NetworkID: NET }), {});
    assert.deepEqual(b.argsOf('removeNetwork'), ['d-1453205f3a8b']);
    assert.throws(() => d.leave({ NetworkID: NET }), code('INVALID'));
    await assert.rejects(d.deleteNetwork({}), code('INVALID'));
  });

  test('an address weft chose is answered when Docker’s IPAM gave none', async () => {
    const { b, d } = await withNetwork();
    const res = await d.createEndpoint(endpoint(EP, ''));
    assert.equal(res.Interface?.Address, '10.99.0.2/24');
    assert.match(res.Interface?.MacAddress ?? '', /^02(:[0-9a-f]{2}){5}$/);
    // A MAC Docker was given (--mac-address) is used and not answered back.
    const given = await d.createEndpoint({
      ...endpoint(EP2, '10.99.0.11/24'),
      Interface: { Address: '10.99.0.11/24', MacAddress: '02:00:00:00:00:11' },
    });
    assert.deepEqual(given, {});
    assert.equal((b.argsOf('attach')[1] as AttachRequest).mac, '02:00:00:00:00:11');
    await assert.rejects(d.createEndpoint(endpoint('d'.repeat(64), 'bogus/24')), code('INVALID'));
  });

  test('dual stack: the IPv6 address is attached, Join gives both gateways', async () => {
    const b = new FakeBackend();
    const d = new DockerNetworkDriver(b);
    await d.createNetwork({
      NetworkID: NET,
      Options: { 'com.docker.network.enable_ipv6': true },
      IPv4Data: [{ Pool: '10.99.0.0/24', Gateway: '10.99.0.1/24' }],
      IPv6Data: [{ Pool: 'fd00:99::/64', Gateway: 'fd00:99::1/64' }],
    });
    assert.equal((b.argsOf('createNetwork')[0] as { ipv6: boolean }).ipv6, true);
    await d.createEndpoint({
      NetworkID: NET,
      EndpointID: EP,
      Interface: { Address: '10.99.0.10/24', AddressIPv6: 'fd00:99::10/64' },
    });
    assert.equal((b.argsOf('attach')[0] as AttachRequest).ip6, 'fd00:99::10');
    const join = d.join({ NetworkID: NET, EndpointID: EP });
    assert.equal(join.Gateway, '10.99.0.1');
    assert.equal(join.GatewayIPv6, 'fd00:99::1');
  });

  test('DeleteNetwork removes Docker endpoints left behind (their DeleteEndpoint never came)', async () => {
    const { b, d } = await withNetwork();
    await d.createEndpoint(endpoint(EP, '10.99.0.10/24'));
    await d.deleteNetwork({ NetworkID: NET });
    assert.deepEqual(b.argsOf('detach'), [{ owner: 'docker', containerId: EP }]);
    assert.deepEqual(b.argsOf('removeNetwork'), ['d-1453205f3a8b']);
  });

  test('concurrent endpoints never choose one dynamic host port twice', async () => {
    const { b, d } = await withNetwork();
    const eps = Array.from({ length: 5 }, (_, i) => `${i}`.repeat(64));
    await Promise.all(
      eps.map((ep, i) =>
        d.createEndpoint(endpoint(ep, `10.99.0.${20 + i}/24`, portmap({ Proto: 6, Port: 80, HostPort: 0 }))),
      ),
    );
    const ports = [...b.atts.values()].map((a) => a.ports[0]?.hostPort);
    assert.deepEqual(ports.sort(), [49153, 49154, 49155, 49156, 49157]);
  });
});
