import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { type BedNs, bed, needsRoot } from '../../test/bed.js';
import { isWeftError } from '../lib/errors.js';

const execFileP = promisify(execFile);

/** The root namespace's value, read by this (unswitched) process: it must never change. */
const rootValue = (path: string): string => fs.readFileSync(path, 'utf8').trim();

/** `sysctl -n KEY` run by iproute2's `ip netns exec`: an independent reader. */
async function ipNetnsSysctl(n: BedNs, key: string): Promise<string> {
  const { stdout } = await execFileP('ip', ['netns', 'exec', n.name, 'sysctl', '-n', key], {
    timeout: 10_000,
  });
  return stdout.trim();
}
/** The same through nsenter, which joins only the network namespace. */
async function nsenterCat(n: BedNs, path: string): Promise<string> {
  const { stdout } = await execFileP('nsenter', [`--net=${n.ns.path}`, 'cat', path], { timeout: 10_000 });
  return stdout.trim();
}

describe('sysctl', needsRoot, () => {
  test('ip_forward is per namespace: set in one, not in another, never in the root namespace', async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    const other = b.ns('other');
    const rootBefore = rootValue('/proc/sys/net/ipv4/ip_forward');
    assert.equal(a.h.sysctl.get('net.ipv4.ip_forward'), '0');
    a.h.sysctl.set('net.ipv4.ip_forward', 1);
    assert.equal(a.h.sysctl.get('net.ipv4.ip_forward'), '1');
    assert.equal(a.h.sysctl.get('net/ipv4/ip_forward'), '1', 'slash form names the same key');
    assert.equal(other.h.sysctl.get('net.ipv4.ip_forward'), '0');
    assert.equal(await ipNetnsSysctl(a, 'net.ipv4.ip_forward'), '1');
    assert.equal(await ipNetnsSysctl(other, 'net.ipv4.ip_forward'), '0');
    assert.equal(await nsenterCat(a, '/proc/sys/net/ipv4/ip_forward'), '1');
    const { stdout } = await b.exec(a, 'sysctl', ['-n', 'net.ipv4.ip_forward']);
    assert.equal(String(stdout).trim(), '1');
    assert.equal(rootValue('/proc/sys/net/ipv4/ip_forward'), rootBefore, 'root namespace untouched');

    // ensure: changes once, then reports nothing to do
    assert.equal(other.h.sysctl.ensure('net.ipv4.ip_forward', '1'), true);
    assert.equal(other.h.sysctl.ensure('net.ipv4.ip_forward', 1), false);
    assert.equal(await ipNetnsSysctl(other, 'net.ipv4.ip_forward'), '1');
    // multi-value keys compare as sysctl prints them (the kernel separates with a tab)
    assert.equal(a.h.sysctl.ensure('net.ipv4.ip_local_port_range', '20000 30000'), true);
    assert.equal(a.h.sysctl.get('net.ipv4.ip_local_port_range').split(/\s+/).join(' '), '20000 30000');
    assert.equal(a.h.sysctl.ensure('net.ipv4.ip_local_port_range', '20000   30000'), false);
    assert.equal(rootValue('/proc/sys/net/ipv4/ip_forward'), rootBefore);
  });

  test('disable_ipv6 for the namespace and for one device', async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    const other = b.ns('other');
    const rootBefore = rootValue('/proc/sys/net/ipv6/conf/all/disable_ipv6');
    a.h.links.add({ kind: 'veth', name: 'v0', up: true, peer: { name: 'v1' } });
    a.h.links.setUp('v1');
    a.h.sysctl.set('net/ipv6/conf/v0/disable_ipv6', 1);
    assert.equal(a.h.sysctl.get('net.ipv6.conf.v0.disable_ipv6'), '1');
    assert.equal(a.h.sysctl.get('net.ipv6.conf.v1.disable_ipv6'), '0');
    assert.equal(await ipNetnsSysctl(a, 'net.ipv6.conf.v0.disable_ipv6'), '1');

    const v6addrs = async (n: BedNs, dev: string) =>
      (await b.ipJson<{ addr_info: unknown[] }[]>(n, '-6', 'addr', 'show', 'dev', dev)).flatMap(
        (l) => l.addr_info,
      );
    assert.ok((await v6addrs(a, 'lo')).length > 0, '::1 on lo before');
    a.h.sysctl.set('net.ipv6.conf.all.disable_ipv6', '1');
    assert.equal(a.h.sysctl.get('net.ipv6.conf.all.disable_ipv6'), '1');
    assert.deepEqual(await v6addrs(a, 'lo'), [], 'IPv6 gone from lo');
    assert.equal(other.h.sysctl.get('net.ipv6.conf.all.disable_ipv6'), '0');
    assert.ok((await v6addrs(other, 'lo')).length > 0, 'the other namespace keeps ::1');
    assert.equal(
      rootValue('/proc/sys/net/ipv6/conf/all/disable_ipv6'),
      rootBefore,
      'root namespace untouched',
    );
  });

  test('route_localnet for a device, also one whose name holds a dot', async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    a.h.links.add({ kind: 'bridge', name: 'br0' });
    a.h.links.add({ kind: 'bridge', name: 'weft.1' });
    assert.equal(a.h.sysctl.ensure('net.ipv4.conf.br0.route_localnet', 1), true);
    assert.equal(a.h.sysctl.ensure('net/ipv4/conf/weft.1/route_localnet', 1), true);
    assert.equal(a.h.sysctl.get('net/ipv4/conf/weft.1/route_localnet'), '1');
    assert.equal(await ipNetnsSysctl(a, 'net.ipv4.conf.br0.route_localnet'), '1');
    assert.equal(await ipNetnsSysctl(a, 'net/ipv4/conf/weft.1/route_localnet'), '1');
    assert.equal(await nsenterCat(a, '/proc/sys/net/ipv4/conf/lo/route_localnet'), '0');
    assert.equal(await nsenterCat(a, '/proc/sys/net/ipv4/conf/all/route_localnet'), '0');
    // The device's keys go with it.
    a.h.links.delete('weft.1');
    assert.throws(
      () => a.h.sysctl.get('net/ipv4/conf/weft.1/route_localnet'),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
  });

  test('bad keys and values: typed errors and nothing changed', async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    const S = a.h.sysctl;
    const bad: [() => unknown, string][] = [
      [() => S.get('net.ipv4..ip_forward'), 'INVALID'],
      [() => S.get('net/ipv4/../../kernel/hostname'), 'INVALID'],
      [() => S.get('../etc/passwd'), 'INVALID'],
      [() => S.get(''), 'INVALID'],
      [() => S.get('net.ipv4.ip forward'), 'INVALID'],
      [() => S.set('kernel.hostname', 'x'), 'INVALID'],
      [() => S.set('kernel/hostname', 'x'), 'INVALID'],
      [() => S.set('net.ipv4.ip_forward', '1\nnet.ipv4.x=1'), 'INVALID'],
      [() => S.set('net.ipv4.ip_forward', 1.5), 'INVALID'],
      [() => S.set('net.ipv4.ip_forward', 'abc'), 'INVALID'],
      [() => S.ensure('net.ipv4.ip_forward', 'abc'), 'INVALID'],
      [() => S.get('net.ipv4.no_such_key'), 'NOT_FOUND'],
      [() => S.set('net.ipv4.no_such_key', 1), 'NOT_FOUND'],
      [() => S.get('net.ipv4.conf.missing0.forwarding'), 'NOT_FOUND'],
    ];
    for (const [fn, code] of bad) assert.throws(fn, (e) => isWeftError(e, code as 'INVALID'));
    assert.equal(S.get('net.ipv4.ip_forward'), '0', 'refused values changed nothing');
    assert.equal(await ipNetnsSysctl(a, 'net.ipv4.ip_forward'), '0');
    // Reads of keys outside net.* are allowed (they are the machine's, the same everywhere).
    assert.equal(S.get('kernel.ostype'), 'Linux');
  });
});
