import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseIPv4 } from '../../../lib/ip.js';
import { createShared, MAX_PEERS, maskOf, Router, readStats, STAT, statsRow, TableWriter } from './table.js';

const ip = (s: string): number => parseIPv4(s).value;
const entry = (net: string, len: number, peer: string) => ({ net: ip(net), len, peer: ip(peer) });

describe('udp peer table', () => {
  test('lookup: longest prefix wins; the own subnet and unknown destinations give -1', () => {
    const shared = createShared(1);
    const w = new TableWriter(shared);
    const r = new Router(shared.control);
    w.publish({ net: ip('10.244.1.0'), len: 24 }, [
      entry('10.244.2.0', 24, '192.168.100.11'),
      entry('10.244.0.0', 16, '192.168.100.99'),
      entry('10.244.3.128', 25, '192.168.100.13'),
      entry('10.244.3.0', 24, '192.168.100.12'),
    ]);
    r.refresh();
    assert.equal(r.lookup(ip('10.244.2.7')), ip('192.168.100.11'));
    assert.equal(r.lookup(ip('10.244.2.7')), ip('192.168.100.11'), 'cached');
    assert.equal(r.lookup(ip('10.244.3.200')), ip('192.168.100.13'));
    assert.equal(r.lookup(ip('10.244.3.5')), ip('192.168.100.12'));
    assert.equal(r.lookup(ip('10.244.77.1')), ip('192.168.100.99'), 'the /16 catches the rest');
    assert.equal(r.lookup(ip('10.244.1.9')), -1, 'never back out for our own subnet');
    assert.equal(r.lookup(ip('10.245.0.1')), -1);
    assert.equal(r.knownPeer(ip('192.168.100.12')), true);
    assert.equal(r.knownPeer(ip('192.168.100.12')), true, 'cached');
    assert.equal(r.knownPeer(ip('192.168.100.50')), false);
    assert.equal(r.isOwn(ip('10.244.1.255')), true);
    assert.equal(r.isOwn(ip('10.244.2.1')), false);
  });

  test('a new generation replaces the table, caches included; high addresses stay unsigned', () => {
    const shared = createShared(1);
    const w = new TableWriter(shared);
    const r = new Router(shared.control);
    r.refresh();
    assert.equal(r.isOwn(ip('10.0.0.1')), false, 'nothing is ours before start');
    w.publish({ net: ip('172.16.1.0'), len: 24 }, [entry('172.16.2.0', 24, '203.0.113.200')]);
    r.refresh();
    assert.equal(r.lookup(ip('172.16.2.1')), ip('203.0.113.200'));
    assert.equal(r.knownPeer(ip('203.0.113.200')), true);
    w.publish({ net: ip('172.16.1.0'), len: 24 }, []);
    assert.equal(r.lookup(ip('172.16.2.1')), ip('203.0.113.200'), 'old copy until refresh');
    r.refresh();
    assert.equal(r.lookup(ip('172.16.2.1')), -1);
    assert.equal(r.knownPeer(ip('203.0.113.200')), false);
    assert.equal(r.isOwn(ip('172.16.1.77')), true);
  });

  test('the stop flag, counters summed over workers, masks', () => {
    const shared = createShared(2);
    const w = new TableWriter(shared);
    const r = new Router(shared.control);
    assert.equal(r.stopped, false);
    w.stop();
    assert.equal(r.stopped, true);
    statsRow(shared, 0)[STAT.txPackets] = 3;
    statsRow(shared, 1)[STAT.txPackets] = 4;
    statsRow(shared, 1)[STAT.dropNoRoute] = 1;
    const s = readStats(shared);
    assert.equal(s.txPackets, 7);
    assert.equal(s.dropNoRoute, 1);
    assert.equal(s.rxPackets, 0);
    assert.equal(maskOf(0), 0);
    assert.equal(maskOf(24), 0xffffff00);
    assert.equal(maskOf(32), 0xffffffff);
    assert.ok(MAX_PEERS >= 1000);
  });
});
