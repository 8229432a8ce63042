import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { isWeftError } from '../lib/errors.js';
import { sysctlPath } from './sysctl.js';

describe('sysctlPath', () => {
  test('dotted keys and slash keys name files under /proc/sys', () => {
    assert.equal(sysctlPath('net.ipv4.ip_forward'), '/proc/sys/net/ipv4/ip_forward');
    assert.equal(sysctlPath('net/ipv4/ip_forward'), '/proc/sys/net/ipv4/ip_forward');
    assert.equal(
      sysctlPath('net.ipv4.conf.eth0.route_localnet'),
      '/proc/sys/net/ipv4/conf/eth0/route_localnet',
    );
    // With slashes a dot is part of the name (a device such as weft.1), as in sysctl(8).
    assert.equal(sysctlPath('net/ipv4/conf/weft.1/forwarding'), '/proc/sys/net/ipv4/conf/weft.1/forwarding');
    assert.equal(
      sysctlPath('net/ipv6/conf/br-4f2a@x/disable_ipv6'),
      '/proc/sys/net/ipv6/conf/br-4f2a@x/disable_ipv6',
    );
  });

  test('malformed keys are INVALID: no way out of /proc/sys', () => {
    for (const key of [
      '',
      '.',
      'net..ipv4',
      '.net.ipv4',
      'net.ipv4.',
      '/net/ipv4/ip_forward',
      'net/ipv4/',
      'net/../kernel/hostname',
      'net/./ipv4/ip_forward',
      'net/ipv4/conf/../../../etc',
      'net.ipv4.ip forward',
      'net.ipv4.ip_forward\n',
      'net/ipv4/conf/a\0b/x',
      'x'.repeat(600),
    ]) {
      assert.throws(
        () => sysctlPath(key),
        (e) => isWeftError(e, 'INVALID'),
        JSON.stringify(key),
      );
    }
  });
});
