/**
 * `weft lab check` against the lab's record: a dead daemon and containers removed by hand are
 * failures (listed, and the report not ok), not fewer checks. Pure: a record and a status made up.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { type CheckReport, missingParts, renderCheck } from './check.js';
import type { HostStatus, LabStatus } from './lab.js';
import type { HostRecord, LabRecord } from './record.js';

const hostRec = (i: number, containers: string[]): HostRecord => ({
  name: `host${i}`,
  index: i,
  ip: `192.168.100.${10 + i}`,
  stateDir: `/var/lib/weft/lab/x/host${i}`,
  runDir: `/run/weft/lab/x/host${i}`,
  socket: `/run/weft/lab/x/host${i}/weft.sock`,
  log: `/run/weft/lab/x/host${i}.log`,
  daemon: { pid: 100 + i, startTime: '1' },
  containers,
});

const hostSt = (h: HostRecord, containers: string[] | 'dead'): HostStatus => ({
  name: h.name,
  index: h.index,
  publicIp: h.ip,
  subnet: `10.244.${h.index}.0/24`,
  daemon: containers === 'dead' ? 'dead' : 'running',
  socket: h.socket,
  log: h.log,
  containers:
    containers === 'dead'
      ? []
      : containers.map((name) => ({ name, ip: '10.244.0.2', status: 'running', ports: [] })),
  ...(containers === 'dead' && { error: `the daemon (pid ${h.daemon?.pid}) is not running; see ${h.log}` }),
});

function lab(hosts: HostRecord[], st: HostStatus[]): { rec: LabRecord; st: LabStatus } {
  const rec = { name: 'x', hosts, etcd: [] } as unknown as LabRecord;
  const status = { name: 'x', hosts: st } as unknown as LabStatus;
  return { rec, st: status };
}

describe('lab check against the record', () => {
  test('everything the record names is there: no failure', () => {
    const h1 = hostRec(1, ['h1c1', 'h1c2']);
    const h2 = hostRec(2, ['h2c1']);
    const { rec, st } = lab([h1, h2], [hostSt(h1, ['h1c1', 'h1c2']), hostSt(h2, ['h2c1', 'extra'])]);
    assert.deepEqual(missingParts(rec, st), []);
  });

  test('containers removed by hand are failures, each named with its host', () => {
    const h1 = hostRec(1, ['h1c1', 'h1c2']);
    const h2 = hostRec(2, ['h2c1', 'h2c2']);
    const { rec, st } = lab([h1, h2], [hostSt(h1, ['h1c1']), hostSt(h2, [])]);
    const r = missingParts(rec, st);
    assert.deepEqual(
      r.map((x) => [x.kind, x.from, x.to, x.ok]),
      [
        ['lab', 'host1', 'h1c2', false],
        ['lab', 'host2', 'h2c1', false],
        ['lab', 'host2', 'h2c2', false],
      ],
    );
    assert.match(r[0]!.error!, /^h1c2 on host1 is missing: the lab started it/);
  });

  test('a dead daemon is a failure saying what it means; its containers are not also listed', () => {
    const h1 = hostRec(1, ['h1c1']);
    const h2 = hostRec(2, ['h2c1', 'h2c2']);
    const { rec, st } = lab([h1, h2], [hostSt(h1, ['h1c1']), hostSt(h2, 'dead')]);
    const r = missingParts(rec, st);
    assert.equal(r.length, 1);
    assert.deepEqual([r[0]!.kind, r[0]!.from, r[0]!.to, r[0]!.ok], ['lab', 'host2', 'daemon', false]);
    assert.match(
      r[0]!.error!,
      /^the daemon of host2 is dead: its containers \(h2c1, h2c2\) are not checked; .*renews its lease.*\(the daemon \(pid 102\) is not running; see /,
    );
  });

  test('the report lists them under failures and counts them', () => {
    const h1 = hostRec(1, ['h1c1', 'h1c2']);
    const h2 = hostRec(2, ['h2c1']);
    const { rec, st } = lab([h1, h2], [hostSt(h1, ['h1c1']), hostSt(h2, 'dead')]);
    const results = missingParts(rec, st);
    const report: CheckReport = {
      lab: 'x',
      backend: 'vxlan',
      store: 'embedded',
      ok: false,
      passed: 0,
      failed: results.length,
      containers: [{ name: 'h1c1', host: 'host1', ip: '10.244.1.2' }],
      results,
      notes: [],
      ms: 10,
    };
    const text = renderCheck(report);
    const failures = text.slice(text.indexOf('\nfailures:\n'));
    assert.match(failures, /^ {2}✗ the daemon of host2 is dead: /m);
    assert.match(failures, /^ {2}✗ h1c2 on host1 is missing: /m);
    assert.match(text, /2 of 2 checks FAILED/);
  });
});
