import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { WeftError } from '../../lib/errors.js';
import {
  checkLabName,
  containerName,
  DEFAULT_PATHS,
  etcdIp,
  hostDirs,
  hostIndex,
  hostIp,
  labsOfNamespaces,
  nameFlag,
  nsName,
  planLab,
  planUnderlay,
  roleOf,
  storeSpec,
} from './topology.js';

const code = (c: string) => (e: unknown) => e instanceof WeftError && e.code === c;

describe('lab names and roles', () => {
  test('lab names: [a-z0-9-], at most 12, no leading or trailing dash', () => {
    for (const ok of ['weft', 'a', 'lab-1', 'abcdefghijkl', '0x']) assert.equal(checkLabName(ok), ok);
    for (const bad of ['', 'Weft', 'a_b', '-a', 'a-', 'abcdefghijklm', 'a b', 'a/b', 'ä']) {
      assert.throws(() => checkLabName(bad), code('INVALID'), bad);
    }
  });

  test('namespace names and roles, exactly: lab "a" never claims lab "a-host1"', () => {
    assert.equal(nsName('a', 'host1'), 'weft-a-host1');
    assert.equal(roleOf('a', 'weft-a-host1'), 'host1');
    assert.equal(roleOf('a', 'weft-a-etcd3'), 'etcd3');
    assert.equal(roleOf('a', 'weft-a-sw'), 'sw');
    assert.equal(roleOf('a', 'weft-a-host1-sw'), undefined);
    assert.equal(roleOf('a', 'weft-a-host0'), undefined);
    assert.equal(roleOf('a', 'weft-ab-sw'), undefined);
    assert.equal(roleOf('a-host1', 'weft-a-host1-sw'), 'sw');
    assert.deepEqual(
      labsOfNamespaces([
        'weft-a-sw',
        'weft-a-host1-sw',
        'weft-demo-c1',
        'wt-x-1',
        'weft-b-inet',
        'weft-b-host2',
      ]),
      ['a', 'a-host1', 'b'],
    );
  });

  test('hosts and containers', () => {
    assert.equal(hostIndex('host12'), 12);
    assert.equal(hostIndex('host0'), undefined);
    assert.equal(hostIndex('internet'), undefined);
    assert.equal(containerName(2, 1), 'h2c1');
    const d = hostDirs(DEFAULT_PATHS, 'x', 'host1');
    assert.equal(d.stateDir, '/var/lib/weft/lab/x/host1');
    assert.equal(d.socket, '/run/weft/lab/x/host1/weft.sock');
    assert.equal(d.log, '/run/weft/lab/x/host1/daemon.log');
  });
});

describe('underlay plan', () => {
  test('the default underlay: router .1, etcd .2-.4, hosts from .11', () => {
    const u = planUnderlay('192.168.100.0/24');
    assert.equal(u.gateway, '192.168.100.1');
    assert.equal(u.maxHosts, 244);
    assert.equal(hostIp(u, 1), '192.168.100.11');
    assert.equal(hostIp(u, 244), '192.168.100.254');
    assert.throws(() => hostIp(u, 245), code('INVALID'));
    assert.equal(etcdIp(u, 3), '192.168.100.4');
  });

  test('a /28 holds 4 hosts; smaller, IPv6, host bits or overlaps are refused', () => {
    assert.equal(planUnderlay('10.9.0.16/28').maxHosts, 4);
    assert.equal(hostIp(planUnderlay('10.9.0.16/28'), 4), '10.9.0.30');
    assert.throws(() => planUnderlay('10.9.0.0/29'), code('INVALID'));
    assert.throws(() => planUnderlay('fd00::/64'), code('INVALID'));
    assert.throws(() => planUnderlay('10.9.0.1/24'), code('INVALID'));
    assert.throws(() => planUnderlay('203.0.113.0/24'), code('INVALID'));
    assert.throws(() => planUnderlay('10.244.5.0/24', '10.244.0.0/16'), code('INVALID'));
  });
});

describe('planLab', () => {
  test('defaults: 3 hosts, vxlan, embedded, 2 containers, 10.244.0.0/16 in /24s', () => {
    const p = planLab({});
    assert.equal(p.name, 'weft');
    assert.equal(p.hosts, 3);
    assert.equal(p.backend, 'vxlan');
    assert.equal(p.store, 'embedded');
    assert.equal(p.etcdMembers, 0);
    assert.equal(p.containers, 2);
    assert.equal(p.network, '10.244.0.0/16');
    assert.equal(p.subnetLen, 24);
    assert.equal(storeSpec(DEFAULT_PATHS, p), 'embedded:/var/lib/weft/lab/weft/store.db');
  });

  test('etcd: the members on the underlay are the store spec', () => {
    const p = planLab({ name: 'e', store: 'etcd', etcdMembers: 3 });
    assert.equal(p.etcdMembers, 3);
    assert.equal(
      storeSpec(DEFAULT_PATHS, p),
      'etcd://192.168.100.2:2379,192.168.100.3:2379,192.168.100.4:2379',
    );
  });

  test('bad input is INVALID and says what is wrong', () => {
    const bad: [Parameters<typeof planLab>[0], RegExp][] = [
      [{ backend: 'gre' }, /unknown backend "gre": use one of vxlan, host-gw, udp/],
      [{ store: 'consul' }, /unknown store "consul": use one of embedded, etcd/],
      [{ hosts: 0 }, /hosts must be a whole number from 1/],
      [{ hosts: 2.5 }, /hosts must be a whole number/],
      [{ hosts: 5, underlay: '10.9.0.0/28' }, /5 hosts do not fit the underlay 10\.9\.0\.0\/28: it holds 4/],
      [
        { hosts: 4, network: '10.244.0.0/22', subnetLen: 24 },
        /4 hosts do not fit the cluster network .* 3 subnets/,
      ],
      [{ containers: 2, subnetLen: 30 }, /2 containers per host do not fit a \/30 subnet \(room for 1\)/],
      [{ store: 'etcd', etcdMembers: 2 }, /--etcd-members must be 1 or 3/],
      [{ containers: 21 }, /containers must be a whole number from 0 to 20/],
      [{ network: '10.244.0.0/16', subnetLen: 17 }, /SubnetLen \/17 leaves fewer than four subnets/],
      [{ network: '192.168.0.0/16' }, /overlaps the cluster network/],
      [{ network: '203.0.113.0/25' }, /overlaps the lab's internet/],
      [{ network: 'fd00::/48' }, /must be IPv4/],
      [{ name: 'No' }, /lab name "No" is invalid/],
    ];
    for (const [o, re] of bad) {
      assert.throws(
        () => planLab(o),
        (e: unknown) => e instanceof WeftError && e.code === 'INVALID' && re.test(e.message),
        JSON.stringify(o),
      );
    }
  });
});

describe('nameFlag', () => {
  test('hints name any lab but the default one', () => {
    assert.equal(nameFlag('weft'), '');
    assert.equal(nameFlag('revk'), ' --name revk');
  });
});
