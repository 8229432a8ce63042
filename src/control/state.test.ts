import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { type EndpointRecord, HostState, type SandboxRecord } from './state.js';

const sandbox = (id: string, name: string): SandboxRecord => ({
  id,
  name,
  hostname: name,
  cmd: ['sleep', '1'],
  env: {},
  dns: [],
  addHosts: [],
  ports: [],
  netnsMode: 'own',
  status: 'created',
  created: '2026-11-28T00:00:00.000Z',
});

const endpoint = (id: string, sandboxId: string, networkId: string): EndpointRecord => ({
  id,
  sandboxId,
  networkId,
  ifname: 'eth0',
  addresses: ['10.0.0.2/24'],
  aliases: [],
});

function tmpState(t: { after: (fn: () => void) => void }): { dir: string; st: HostState } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wt-state-'));
  const st = HostState.open(dir);
  t.after(() => {
    st.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { dir, st };
}

test('lists are read again after every write, a rolled-back transaction and another connection', (t) => {
  const { dir, st } = tmpState(t);
  assert.deepEqual(st.sandboxes(), []);
  st.putSandbox(sandbox('a1', 'a'));
  const first = st.sandboxes();
  assert.deepEqual(
    first.map((s) => s.name),
    ['a'],
  );
  assert.equal(st.sandboxes(), first, 'unchanged: the same list, not read again');
  assert.ok(Object.isFrozen(first), 'shared lists cannot be changed by a caller');

  st.putEndpoint(endpoint('e1', 'a1', 'n1'));
  assert.deepEqual(
    st.endpoints({ networkId: 'n1' }).map((e) => e.id),
    ['e1'],
  );
  assert.deepEqual(st.endpoints({ networkId: 'n2' }), []);
  st.deleteEndpoint('e1');
  assert.deepEqual(st.endpoints({ networkId: 'n1' }), []);

  // A transaction that throws: what it wrote (and read) is gone from the lists too.
  assert.throws(() =>
    st.tx(() => {
      st.putSandbox(sandbox('b1', 'b'));
      assert.equal(st.sandboxes().length, 2, 'seen inside the transaction');
      throw new Error('undo');
    }),
  );
  assert.deepEqual(
    st.sandboxes().map((s) => s.name),
    ['a'],
  );

  // Another connection's commit is seen (SQLite's data_version).
  const other = HostState.open(dir);
  try {
    other.putSandbox(sandbox('c1', 'c'));
  } finally {
    other.close();
  }
  assert.deepEqual(
    st.sandboxes().map((s) => s.name),
    ['a', 'c'],
  );
  st.deleteSandbox('a1');
  assert.deepEqual(
    st.sandboxes().map((s) => s.name),
    ['c'],
  );
});

test('a write refused by a constraint still leaves the lists right', (t) => {
  const { st } = tmpState(t);
  st.putSandbox(sandbox('a1', 'a'));
  const before = st.sandboxes();
  assert.throws(() => st.putSandbox(sandbox('a2', 'a')), /already exists/);
  assert.deepEqual(st.sandboxes(), before);
});

test("findSandbox: a name, an id, or a unique start of an id (Docker's lookup)", (t) => {
  const { st } = tmpState(t);
  st.tx(() => {
    st.putSandbox(sandbox('abc123456789', 'web'));
    st.putSandbox(sandbox('abd123456789', 'db'));
  });
  assert.equal(st.findSandbox('web')?.id, 'abc123456789');
  assert.equal(st.findSandbox('abd123456789')?.name, 'db');
  assert.equal(st.findSandbox('abc')?.name, 'web');
  assert.throws(
    () => st.findSandbox('ab'),
    (e: Error & { code?: string }) => e.code === 'CONFLICT',
  );
  assert.equal(st.findSandbox('abe'), undefined);
  assert.equal(st.findSandbox('we'), undefined, 'names are whole');
  assert.equal(st.sandbox('abc'), undefined, 'sandbox() is exact');
});
