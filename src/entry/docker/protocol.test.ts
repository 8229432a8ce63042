import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isWeftError } from '../../lib/errors.js';
import {
  endpointIfname,
  networkName,
  parseCreateEndpoint,
  parseCreateNetwork,
  parseRequestPool,
  portSatisfies,
  toPortBindings,
  wantedPorts,
  weftNetworkRequest,
} from './protocol.js';

const ID = '1453205f3a8b37aac1538876ddcd61376b4a656dbcb9bf3af91fa59c953c36d2';
const invalid = (e: unknown) => isWeftError(e, 'INVALID');

describe('docker protocol: names', () => {
  test('a Docker network is the weft network d-<12 of its id>', () => {
    assert.equal(networkName(ID), 'd-1453205f3a8b');
  });

  test('the temporary interface is wd + 10 hex of the endpoint id (hashed when not hex), ≤ 15 bytes', () => {
    assert.equal(endpointIfname(ID), 'wd1453205f3a');
    const other = endpointIfname('Not-Hex_endpoint');
    assert.match(other, /^wd[0-9a-f]{10}$/);
    assert.notEqual(other, endpointIfname('Not-Hex_endpoint2'));
  });
});

describe('docker protocol: request bodies', () => {
  test('CreateNetwork as dockerd 20.10 sends it', () => {
    const r = parseCreateNetwork({
      NetworkID: ID,
      Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': {} },
      IPv4Data: [{ AddressSpace: 'weft-local', Gateway: '10.99.0.1/24', Pool: '10.99.0.0/24' }],
      IPv6Data: [],
    });
    assert.deepEqual(weftNetworkRequest(r), {
      name: 'd-1453205f3a8b',
      driver: 'bridge',
      subnets: [{ subnet: '10.99.0.0/24', gateway: '10.99.0.1' }],
      ipv6: false,
      internal: false,
      options: {},
    });
  });

  test('driver options map by weft’s and Docker’s bridge names; internal and IPv6 follow', () => {
    const r = parseCreateNetwork({
      NetworkID: ID,
      Options: {
        'com.docker.network.internal': true,
        'com.docker.network.generic': {
          'com.docker.network.driver.mtu': '1400',
          'com.docker.network.bridge.enable_icc': 'false',
          masquerade: 'false',
        },
      },
      IPv4Data: [{ Pool: '10.99.0.0/24', Gateway: '10.99.0.254/24' }],
      IPv6Data: [{ Pool: 'fd00:99::/64', Gateway: 'fd00:99::1/64' }],
    });
    const w = weftNetworkRequest(r);
    assert.deepEqual(w.options, { mtu: '1400', icc: 'false', masquerade: 'false' });
    assert.equal(w.internal, true);
    assert.equal(w.ipv6, true);
    assert.deepEqual(w.subnets, [
      { subnet: '10.99.0.0/24', gateway: '10.99.0.254' },
      { subnet: 'fd00:99::/64', gateway: 'fd00:99::1' },
    ]);
  });

  test('an unknown driver option, a bad gateway, a missing id or pool are INVALID', () => {
    const base = { NetworkID: ID, IPv4Data: [{ Pool: '10.99.0.0/24' }] };
    assert.throws(
      () =>
        weftNetworkRequest(
          parseCreateNetwork({ ...base, Options: { 'com.docker.network.generic': { vlan: '3' } } }),
        ),
      (e) => invalid(e) && /vlan/.test((e as Error).message),
    );
    assert.throws(
      () =>
        weftNetworkRequest(
          parseCreateNetwork({ ...base, IPv4Data: [{ Pool: '10.99.0.0/24', Gateway: 'x/24' }] }),
        ),
      invalid,
    );
    assert.throws(
      () => parseCreateNetwork({ IPv4Data: [] }),
      (e) => invalid(e) && /NetworkID/.test((e as Error).message),
    );
    assert.throws(() => parseCreateNetwork({ NetworkID: 'a/b' }), invalid);
    assert.throws(() => parseCreateNetwork({ NetworkID: ID, IPv4Data: [{ Gateway: '1.2.3.4' }] }), invalid);
    assert.throws(() => parseCreateNetwork([1, 2]), invalid);
  });

  test('CreateEndpoint: interface fields and options', () => {
    const r = parseCreateEndpoint({
      NetworkID: ID,
      EndpointID: ID,
      Interface: { Address: '10.99.0.10/24', AddressIPv6: '', MacAddress: '' },
    });
    assert.equal(r.Interface.Address, '10.99.0.10/24');
    assert.deepEqual(r.Options, {});
    assert.throws(
      () => parseCreateEndpoint({ NetworkID: ID }),
      (e) => invalid(e) && /EndpointID/.test(String(e)),
    );
    assert.throws(() => parseCreateEndpoint({ NetworkID: ID, EndpointID: ID, Interface: 'x' }), invalid);
  });

  test('RequestPool: V6 must be a boolean, Options strings', () => {
    assert.equal(parseRequestPool({ AddressSpace: 'weft-local', Pool: '', V6: true }).V6, true);
    assert.throws(() => parseRequestPool({ V6: 'yes' }), invalid);
    assert.throws(() => parseRequestPool({ Options: { a: 1 } }), invalid);
  });
});

describe('docker protocol: port bindings', () => {
  const opts = (portmap: unknown) => ({ 'com.docker.network.portmap': portmap });

  test('bindings as dockerd sends them (-p 8080:80 -p 53/udp)', () => {
    const w = wantedPorts(
      opts([
        { Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: 8080, HostPortEnd: 8080 },
        { Proto: 17, IP: '', Port: 53, HostIP: '', HostPort: 0, HostPortEnd: 0 },
      ]),
    );
    assert.deepEqual(w, [
      { proto: 'tcp', containerPort: 80, hostPort: 8080, hostPortEnd: 8080 },
      { proto: 'udp', containerPort: 53, hostPort: 0, hostPortEnd: 0 },
    ]);
    assert.deepEqual(wantedPorts({}), []);
  });

  test('host addresses: 0.0.0.0 is every address, :: next to it is the same publication', () => {
    const w = wantedPorts(
      opts([
        { Proto: 6, Port: 80, HostIP: '0.0.0.0', HostPort: 8080 },
        { Proto: 6, Port: 80, HostIP: '::', HostPort: 8080 },
        { Proto: 6, Port: 81, HostIP: '127.0.0.1', HostPort: 8081, HostPortEnd: 8090 },
      ]),
    );
    assert.deepEqual(w, [
      { proto: 'tcp', containerPort: 80, hostPort: 8080, hostPortEnd: 8080 },
      { proto: 'tcp', hostIp: '127.0.0.1', containerPort: 81, hostPort: 8081, hostPortEnd: 8090 },
    ]);
  });

  test('malformed bindings are INVALID', () => {
    for (const b of [
      { Proto: 1, Port: 80 },
      { Proto: 6, Port: 0 },
      { Proto: 6, Port: 80, HostPort: 70000 },
      { Proto: 6, Port: 80, HostPort: 9000, HostPortEnd: 8000 },
      { Proto: 6, Port: 80, HostIP: 'nope', HostPort: 1 },
    ]) {
      assert.throws(() => wantedPorts(opts([b])), invalid, JSON.stringify(b));
    }
    assert.throws(() => wantedPorts(opts('80:80')), invalid);
  });

  test('a published port satisfies a binding when it lies in the binding’s range', () => {
    const w = { proto: 'tcp' as const, containerPort: 80, hostPort: 8000, hostPortEnd: 8010 };
    assert.ok(portSatisfies({ proto: 'tcp', hostPort: 8005, containerPort: 80 }, w));
    assert.ok(!portSatisfies({ proto: 'tcp', hostPort: 8011, containerPort: 80 }, w));
    assert.ok(!portSatisfies({ proto: 'udp', hostPort: 8005, containerPort: 80 }, w));
    assert.ok(
      portSatisfies(
        { proto: 'udp', hostPort: 49200, containerPort: 53 },
        { ...w, proto: 'udp', containerPort: 53, hostPort: 0, hostPortEnd: 0 },
      ),
    );
  });

  test('published ports back in Docker’s shape, ranges one per port', () => {
    assert.deepEqual(
      toPortBindings(
        [
          { proto: 'tcp', hostPort: 8080, containerPort: 80 },
          {
            proto: 'udp',
            hostIp: '127.0.0.1',
            hostPort: 5000,
            hostPortEnd: 5001,
            containerPort: 6000,
            containerPortEnd: 6001,
          },
        ],
        '10.0.0.2',
      ),
      [
        { Proto: 6, IP: '10.0.0.2', Port: 80, HostIP: '', HostPort: 8080, HostPortEnd: 8080 },
        { Proto: 17, IP: '10.0.0.2', Port: 6000, HostIP: '127.0.0.1', HostPort: 5000, HostPortEnd: 5000 },
        { Proto: 17, IP: '10.0.0.2', Port: 6001, HostIP: '127.0.0.1', HostPort: 5001, HostPortEnd: 5001 },
      ],
    );
  });
});
