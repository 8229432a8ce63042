import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { bed, needsRoot, RUN_ID } from '../../test/bed.js';
import { isWeftError } from '../lib/errors.js';
import { openHandle } from './handle.js';
import { Netns } from './netns.js';

const inodeOf = (p: string) => fs.statSync(p).ino;

describe('network namespace handles', needsRoot, () => {
  test('create pinned at a path of our choosing, open by path and by pid, delete', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-pins-`));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const pin = path.join(dir, 'sub', 'host1');
    const ns = Netns.create(pin);
    t.after(() => Netns.remove(pin));
    assert.ok(fs.existsSync(pin));
    assert.notEqual(ns.inode, Netns.self().inode, 'a new namespace, not ours');
    const again = Netns.open(pin);
    assert.ok(again.sameAs(ns));
    again.close();
    // A process started inside it: opening /proc/PID/ns/net gives the same namespace.
    const child = ns.spawn('sleep', ['5'], { stdio: 'ignore' });
    t.after(() => child.kill('SIGKILL'));
    const byPid = Netns.openPid(child.pid!);
    assert.ok(byPid.sameAs(ns));
    byPid.close();
    child.kill('SIGKILL');
    // Links made through it live there and only there.
    openHandle(ns).links.add({ kind: 'bridge', name: 'pinned0' });
    assert.equal(openHandle(Netns.self()).links.find('pinned0'), undefined);
    assert.throws(
      () => Netns.create(pin),
      (e) => isWeftError(e, 'EXISTS'),
    );
    ns.delete();
    assert.equal(fs.existsSync(pin), false, 'pin removed');
    assert.ok(!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(pin), 'no mount left');
    Netns.remove(pin); // idempotent
  });

  test('bad input: unknown namespaces, relative pins, files that are not namespaces', () => {
    assert.throws(
      () => Netns.open(`/run/netns/wt-${RUN_ID}-does-not-exist`),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
    assert.throws(
      () => Netns.openPid(-1),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => Netns.openPid(2 ** 30),
      (e) => isWeftError(e, 'NOT_FOUND'),
    );
    assert.throws(
      () => Netns.create('relative/pin'),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => Netns.open('/proc/self/ns/uts'),
      (e) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => Netns.open('/etc/hostname'),
      (e) => isWeftError(e, 'INVALID'),
    );
  });

  test('sections nest, refuse async bodies, and always return the thread home', async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    const c = b.ns('c');
    const home = inodeOf('/proc/thread-self/ns/net');
    const seen = a.ns.run(() => {
      const inA = inodeOf('/proc/thread-self/ns/net');
      const inC = c.ns.run(() => inodeOf('/proc/thread-self/ns/net'));
      const backInA = inodeOf('/proc/thread-self/ns/net');
      return { inA, inC, backInA };
    });
    assert.equal(seen.inA, a.ns.inode);
    assert.equal(seen.inC, c.ns.inode);
    assert.equal(seen.backInA, a.ns.inode, 'leaving the inner section returns to the outer one');
    assert.equal(inodeOf('/proc/thread-self/ns/net'), home);
    assert.throws(
      () => a.ns.run(() => Promise.resolve(1)),
      (e) => isWeftError(e, 'INTERNAL'),
    );
    assert.throws(() =>
      a.ns.run(() => {
        throw new Error('boom');
      }),
    );
    assert.equal(inodeOf('/proc/thread-self/ns/net'), home, 'home again after a throwing section');
  });

  test("libuv's threads and later async work stay in the home namespace", async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    const home = Netns.self().inode;
    for (let i = 0; i < 20; i++) a.ns.run(() => fs.statSync('/'));
    // Async fs work runs on the threadpool: it must still see the home namespace.
    const viaPool = await fs.promises.readlink('/proc/thread-self/ns/net');
    assert.equal(viaPool, `net:[${home}]`);
    for (const tid of fs.readdirSync('/proc/self/task')) {
      assert.equal(inodeOf(`/proc/self/task/${tid}/ns/net`), home, `thread ${tid} is in the home namespace`);
    }
  });

  test('a child spawned from a section runs inside the namespace', async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    a.h.links.add({ kind: 'bridge', name: 'onlyhere0' });
    const child = a.ns.run(() => spawn('ip', ['-br', 'link', 'show', 'onlyhere0']));
    const out: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    const code = await new Promise((r) => child.on('close', r)); // close: after stdout is drained
    assert.equal(code, 0);
    assert.match(Buffer.concat(out).toString(), /^onlyhere0/);
  });

  test('the root namespace is just another handle', () => {
    const self = Netns.self();
    const h = openHandle(self);
    const lo = h.links.get('lo');
    assert.equal(lo.kind, 'device');
    assert.equal(lo.index, 1);
    self.close();
  });
});
