import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import {
  parseCniArgs,
  parseConfig,
  parseEnv,
  parsePortMappings,
  versionOf,
  wantedAddresses,
} from './config.js';
import { CniCode, CniError, cniCodeFor } from './errors.js';

const code = (c: number) => (e: unknown) => e instanceof CniError && e.code === c;
const conf = (o: Record<string, unknown>) =>
  JSON.stringify({ cniVersion: '1.0.0', name: 'net1', type: 'weft', ...o });
const ADD_ENV = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'abc123',
  CNI_NETNS: '/run/netns/c1',
  CNI_IFNAME: 'eth0',
  CNI_PATH: '/opt/cni/bin',
};

describe('CNI environment', () => {
  test('ADD needs container id, netns, ifname and path; DEL no netns; VERSION nothing', () => {
    assert.equal(parseEnv(ADD_ENV).containerId, 'abc123');
    assert.throws(
      () => parseEnv({ ...ADD_ENV, CNI_NETNS: undefined }),
      (e: unknown) => {
        return (
          e instanceof CniError && e.code === CniCode.InvalidEnvironment && e.message.includes('CNI_NETNS')
        );
      },
    );
    assert.equal(parseEnv({ ...ADD_ENV, CNI_COMMAND: 'DEL', CNI_NETNS: '' }).netns, '');
    assert.equal(parseEnv({ CNI_COMMAND: 'VERSION' }).command, 'VERSION');
    assert.equal(parseEnv({ CNI_COMMAND: 'GC' }).command, 'GC');
    assert.equal(parseEnv({ CNI_COMMAND: 'STATUS' }).command, 'STATUS');
  });

  test('a missing or unknown command, a bad container id or ifname are error 4', () => {
    for (const env of [
      {},
      { CNI_COMMAND: 'PING' },
      { ...ADD_ENV, CNI_CONTAINERID: '-bad' },
      { ...ADD_ENV, CNI_CONTAINERID: 'a b' },
      { ...ADD_ENV, CNI_CONTAINERID: 'x'.repeat(129) },
      { ...ADD_ENV, CNI_IFNAME: 'eth0:1' },
      { ...ADD_ENV, CNI_IFNAME: 'averyveryverylongname' },
      { ...ADD_ENV, CNI_PATH: '' },
    ]) {
      assert.throws(() => parseEnv(env), code(CniCode.InvalidEnvironment), JSON.stringify(env));
    }
  });
});

describe('CNI network configuration', () => {
  test('a full config', () => {
    const c = parseConfig(
      conf({
        network: 'web',
        ipMasq: true,
        mtu: 1400,
        socket: '/tmp/w.sock',
        dataDir: '/tmp/data',
        capabilities: { portMappings: true },
        runtimeConfig: {
          portMappings: [
            { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
            { hostPort: 53, containerPort: 53, protocol: 'UDP', hostIP: '127.0.0.1' },
            { hostPort: 9000, containerPort: 9000, hostIP: '::1' },
          ],
          ips: ['10.1.0.9/24'],
          mac: '02:00:00:00:00:09',
          aliases: ['db', 'bad_name'],
          dns: { servers: ['1.1.1.1'], searches: ['example.org'] },
        },
      }),
      'ADD',
    );
    assert.equal(c.network, 'web');
    assert.equal(c.ipMasq, true);
    assert.equal(c.mtu, 1400);
    assert.deepEqual(c.runtime.ports, ['8080:80/tcp', '127.0.0.1:53:53/udp', '[::1]:9000:9000/tcp']);
    assert.deepEqual(c.runtime.ips, ['10.1.0.9/24']);
    assert.equal(c.runtime.mac, '02:00:00:00:00:09');
    // Names that are not DNS names (podman's container names with "_") are left out.
    assert.deepEqual(c.runtime.aliases, ['db']);
    assert.deepEqual(c.runtime.dns, { servers: ['1.1.1.1'], searches: ['example.org'] });
  });

  test("podman's aliases: an object keyed by network name", () => {
    const c = parseConfig(conf({ runtimeConfig: { aliases: { net1: ['web', 'w1'], other: ['x'] } } }), 'ADD');
    assert.deepEqual(c.runtime.aliases, ['web', 'w1']);
  });

  test('not JSON, or not an object: 6', () => {
    for (const s of ['', '{', 'null', '[1]', '"x"']) assert.throws(() => parseConfig(s, 'ADD'), code(6), s);
  });

  test('a version weft does not speak: 1; no version counts as 0.1.0', () => {
    for (const v of ['0.2.0', '2.0.0', 'x', 1]) {
      assert.throws(() => parseConfig(conf({ cniVersion: v }), 'ADD'), code(1), String(v));
    }
    assert.throws(() => parseConfig(JSON.stringify({ name: 'n', type: 'weft' }), 'ADD'), code(1));
    for (const v of ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'])
      assert.equal(parseConfig(conf({ cniVersion: v }), 'ADD').cniVersion, v);
  });

  test('bad fields: 7; ipam: 2 naming the field', () => {
    for (const o of [
      { name: '' },
      { name: 'bad name' },
      { network: 3 },
      { ipMasq: 'yes' },
      { mtu: 100 },
      { mtu: 1500.5 },
      { socket: 'relative.sock' },
      { runtimeConfig: [] },
      { runtimeConfig: { portMappings: [{ hostPort: 0, containerPort: 80 }] } },
      { runtimeConfig: { portMappings: [{ hostPort: 80, containerPort: 80, protocol: 'sctp' }] } },
      { runtimeConfig: { portMappings: {} } },
      { runtimeConfig: { ips: '10.0.0.1' } },
      { runtimeConfig: { aliases: 'x' } },
      { 'cni.dev/valid-attachments': [{ containerID: 1 }] },
    ]) {
      const cmd = 'cni.dev/valid-attachments' in o ? 'GC' : 'ADD';
      assert.throws(() => parseConfig(conf(o), cmd), code(7), JSON.stringify(o));
    }
    assert.throws(
      () => parseConfig(conf({ ipam: { type: 'host-local' } }), 'ADD'),
      (e: unknown) =>
        e instanceof CniError &&
        e.code === 2 &&
        e.message.includes('ipam') &&
        e.message.includes('host-local'),
    );
  });

  test('prevResult is read in the config version; a malformed one is 6', () => {
    const c = parseConfig(
      conf({
        cniVersion: '0.3.1',
        prevResult: {
          cniVersion: '0.3.1',
          interfaces: [{ name: 'eth0', sandbox: '/run/netns/c1' }],
          ips: [{ version: '4', address: '10.0.0.2/24', interface: 0 }],
        },
      }),
      'DEL',
    );
    assert.deepEqual(c.prevResult?.ips, [{ address: '10.0.0.2/24', interface: 0 }]);
    assert.throws(() => parseConfig(conf({ prevResult: { ips: [{ address: 'x' }] } }), 'CHECK'), code(6));
  });

  test('DEL reads only cniVersion, name, socket and dataDir; a bad prevResult counts as absent', () => {
    const c = parseConfig(
      conf({
        socket: '/tmp/w.sock',
        dataDir: '/tmp/data',
        network: 3,
        ipMasq: 'yes',
        mtu: 1,
        ipam: { type: 'host-local' },
        args: { cni: { ips: 5 } },
        runtimeConfig: { portMappings: [{ hostPort: 0, containerPort: 80, protocol: 'sctp' }] },
        prevResult: { ips: [{ address: 'x' }] },
      }),
      'DEL',
    );
    assert.equal(c.name, 'net1');
    assert.equal(c.socket, '/tmp/w.sock');
    assert.equal(c.dataDir, '/tmp/data');
    assert.equal(c.prevResult, undefined);
    assert.deepEqual(c.runtime, { ports: [], ips: [], aliases: [] });
    for (const [s, c] of [
      ['{', 6],
      ['[]', 6],
      [JSON.stringify({ name: 'net1' }), 1],
      [conf({ cniVersion: '0.2.0' }), 1],
      [conf({ name: undefined }), 7],
      [conf({ name: 'bad name' }), 7],
      [conf({ socket: 'rel.sock' }), 7],
      [conf({ dataDir: '' }), 7],
    ] as const) {
      assert.throws(() => parseConfig(s, 'DEL'), code(c), s);
    }
  });

  test('GC reads cni.dev/valid-attachments (and the older cni.dev/attachments)', () => {
    const list = [{ containerID: 'a', ifname: 'eth0' }];
    assert.deepEqual(
      parseConfig(conf({ cniVersion: '1.1.0', 'cni.dev/valid-attachments': list }), 'GC').validAttachments,
      list,
    );
    assert.deepEqual(
      parseConfig(conf({ cniVersion: '1.1.0', 'cni.dev/attachments': list }), 'GC').validAttachments,
      list,
    );
    assert.deepEqual(parseConfig(conf({ cniVersion: '1.1.0' }), 'GC').validAttachments, []);
  });

  test('versionOf reads leniently', () => {
    assert.equal(versionOf('{"cniVersion":"0.4.0"}'), '0.4.0');
    assert.equal(versionOf('nope'), '1.1.0');
    assert.equal(versionOf('{}'), '1.1.0');
  });

  test('port mappings are rendered in the syntax the daemon parses', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 65535 }),
        fc.integer({ min: 1, max: 65535 }),
        fc.constantFrom('tcp', 'udp', 'TCP', undefined),
        (h, c, p) => {
          const [s] = parsePortMappings([{ hostPort: h, containerPort: c, ...(p && { protocol: p }) }]);
          assert.equal(s, `${h}:${c}/${(p ?? 'tcp').toLowerCase()}`);
        },
      ),
    );
  });
});

describe('CNI_ARGS', () => {
  test('IP, MAC and IgnoreUnknown as podman sends them', () => {
    assert.deepEqual(parseCniArgs('IgnoreUnknown=1;IP=10.88.0.9;MAC=02:00:00:00:00:01;K8S_POD_NAME=x'), {
      ips: ['10.88.0.9'],
      mac: '02:00:00:00:00:01',
    });
    assert.deepEqual(parseCniArgs('IP=10.0.0.2,fd00::2'), { ips: ['10.0.0.2', 'fd00::2'] });
    assert.deepEqual(parseCniArgs(''), { ips: [] });
  });

  test('an unknown key without IgnoreUnknown, a pair without "=", a bad IP: 6', () => {
    for (const s of ['FOO=1', 'IP', 'IP=10.0.0.300', '=x', 'IgnoreUnknown=0;X=1']) {
      assert.throws(() => parseCniArgs(s), code(6), s);
    }
  });

  test('wanted addresses: runtimeConfig first, one per family', () => {
    const c = parseConfig(conf({ runtimeConfig: { ips: ['10.0.0.5/24', 'fd00::5/64'] } }), 'ADD');
    assert.deepEqual(wantedAddresses(c, { ips: ['10.0.0.9'] }), { ip: '10.0.0.5', ip6: 'fd00::5' });
    const plain = parseConfig(conf({}), 'ADD');
    assert.deepEqual(wantedAddresses(plain, { ips: ['10.0.0.9'] }), { ip: '10.0.0.9' });
    assert.throws(() => wantedAddresses(plain, { ips: ['10.0.0.9', '10.0.0.10'] }), code(7));
    const bad = parseConfig(conf({ runtimeConfig: { ips: ['nope'] } }), 'ADD');
    assert.throws(() => wantedAddresses(bad, { ips: [] }), code(7));
  });
});

describe('error codes', () => {
  test('weft codes map to CNI codes by command', () => {
    assert.equal(cniCodeFor('UNAVAILABLE', 'ADD'), 11);
    assert.equal(cniCodeFor('TIMEOUT', 'DEL'), 11);
    assert.equal(cniCodeFor('INVALID', 'ADD'), 7);
    assert.equal(cniCodeFor('CONFLICT', 'ADD'), 7);
    assert.equal(cniCodeFor('NOT_FOUND', 'ADD'), 7);
    assert.equal(cniCodeFor('NOT_FOUND', 'CHECK'), 3);
    assert.equal(cniCodeFor('CONFLICT', 'CHECK'), 100);
    assert.equal(cniCodeFor('NOT_FOUND', 'STATUS'), 50);
    assert.equal(cniCodeFor('UNAVAILABLE', 'STATUS'), 50);
    assert.equal(cniCodeFor('TIMEOUT', 'STATUS'), 50);
    assert.equal(cniCodeFor('UNAVAILABLE', 'CHECK'), 11);
    assert.equal(cniCodeFor('INTERNAL', 'ADD'), 999);
    assert.deepEqual(new CniError(7, 'm').toJSON('1.0.0'), { cniVersion: '1.0.0', code: 7, msg: 'm' });
    assert.deepEqual(new CniError(7, 'm', 'd').toJSON('0.4.0'), {
      cniVersion: '0.4.0',
      code: 7,
      msg: 'm',
      details: 'd',
    });
  });
});
