import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { bed, needsRoot } from '../../test/bed.js';
import { isWeftError, type WeftError } from '../lib/errors.js';
import { Nft } from './nft.js';

const execFileP = promisify(execFile);

/** Tables of the root namespace, read (never changed) by this unswitched process. */
async function rootTables(): Promise<string> {
  const { stdout } = await execFileP('nft', ['-j', 'list', 'tables'], { timeout: 10_000 });
  return stdout;
}

const WEFT_TABLE = `table inet weft {
  set published {
    type inet_service
    elements = { 8080, 8443 }
  }
  chain input {
    type filter hook input priority filter; policy accept;
    ct state established,related accept
    tcp dport @published counter accept
    iifname "lo" accept
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    ip saddr 10.1.0.0/24 counter accept comment "weft-net"
  }
}
`;

describe('nft', needsRoot, () => {
  test('apply a table with chains, a set and rules; read it back; other namespaces do not see it', async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    const other = b.ns('other');
    const rootBefore = await rootTables();
    const nft = new Nft(a.ns);
    await nft.apply(WEFT_TABLE);

    const tables = await nft.listTables();
    assert.deepEqual(
      tables.map((x) => [x.family, x.name]),
      [['inet', 'weft']],
    );
    assert.ok(Number.isInteger(tables[0]?.handle));
    const table = await nft.list('table inet weft');
    const chains = table.nftables.flatMap((o) => (o.chain ? [o.chain] : []));
    assert.deepEqual(chains.map((c) => [c.name, c.hook, c.type, c.policy]).sort(), [
      ['forward', 'forward', 'filter', 'accept'],
      ['input', 'input', 'filter', 'accept'],
    ]);
    const rules = table.nftables.flatMap((o) => (o.rule ? [o.rule] : []));
    assert.equal(rules.filter((r) => r.chain === 'input').length, 3);
    assert.equal(rules.find((r) => r.chain === 'forward')?.comment, 'weft-net');
    const set = table.nftables.find((o) => o.set)?.set;
    assert.deepEqual(set?.elem, [8080, 8443]);
    const whole = await nft.list();
    assert.ok(whole.nftables.some((o) => o.table?.name === 'weft'));
    assert.ok(
      whole.nftables.some((o) => o.metainfo),
      'the ruleset as nft -j prints it',
    );
    // Cross-check with nft's own text output, run in the namespace.
    const { stdout } = await b.exec(a, 'nft', ['list', 'chain', 'inet', 'weft', 'forward']);
    assert.match(
      String(stdout),
      /ip saddr 10\.1\.0\.0\/24 counter packets \d+ bytes \d+ accept comment "weft-net"/,
    );

    // Re-applying the same declaration is idempotent for the table, and appends the rules again:
    // callers flush what they own first, in the same batch.
    await nft.apply(
      `${WEFT_TABLE}flush chain inet weft forward\nadd rule inet weft forward ip daddr 10.9.0.0/16 drop\n`,
    );
    const after = await nft.list('chain inet weft forward');
    assert.equal(after.nftables.filter((o) => o.rule).length, 1);

    assert.deepEqual(await new Nft(other.ns).listTables(), [], 'another namespace has its own nf_tables');
    assert.equal(await rootTables(), rootBefore, 'the root namespace is untouched');

    await nft.deleteTable('inet', 'weft');
    assert.deepEqual(await nft.listTables(), []);
    await nft.deleteTable('inet', 'weft'); // idempotent
    assert.deepEqual(await nft.listTables(), []);
  });

  test('a failing batch changes nothing and says why: syntax (line, column), kernel refusal, missing objects', async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    const nft = new Nft(a.ns);
    await nft.apply(WEFT_TABLE);
    const before = await nft.list();

    // A syntax error on line 4, after a table that would otherwise be added.
    const syntax =
      'table ip keep {\n  chain c { type filter hook input priority 0; }\n}\nadd rule inet weft input tcp dport 22 acept\n';
    const e1 = await nft.apply(syntax).then(
      () => assert.fail('applied a script with a syntax error'),
      (e: unknown) => e as WeftError,
    );
    assert.ok(isWeftError(e1, 'INVALID'), String(e1));
    assert.equal(e1.details.line, 4);
    assert.equal(typeof e1.details.column, 'number');
    assert.match(String(e1.details.nftMessage), /syntax error/);
    assert.match(e1.message, /line 4/);

    // The kernel refuses the last object (nat chains cannot hook forward): the whole batch fails.
    const refused =
      'table ip keep {\n}\nflush table inet weft\ntable ip nat2 {\n  chain c { type nat hook forward priority 0; }\n}\n';
    await assert.rejects(nft.apply(refused), (e) => isWeftError(e, 'UNSUPPORTED') && e.details.line === 5);

    // Missing objects: NOT_FOUND
    await assert.rejects(nft.apply('delete table inet nope\n'), (e) => isWeftError(e, 'NOT_FOUND'));
    await assert.rejects(nft.list('table inet nope'), (e) => isWeftError(e, 'NOT_FOUND'));

    assert.deepEqual(await nft.list(), before, 'nothing of the failed batches was applied');
    const { stdout } = await b.exec(a, 'nft', ['list', 'tables']);
    assert.equal(String(stdout).trim(), 'table inet weft');

    // Bad input to the runner itself
    await assert.rejects(nft.list('ruleset; rm -rf /'), (e) => isWeftError(e, 'INVALID'));
    await assert.rejects(nft.deleteTable('inet', 'a b'), (e) => isWeftError(e, 'INVALID'));
    await assert.rejects(nft.deleteTable('bogus' as 'inet', 'weft'), (e) => isWeftError(e, 'INVALID'));
    assert.throws(
      () => new Nft(a.ns, { timeoutMs: 0 }),
      (e) => isWeftError(e, 'INVALID'),
    );
  });

  test('in-process: one libnftables context is kept between scripts, freed by close() or when idle', async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    const nft = new Nft(a.ns, { idleCloseMs: 300 });
    b.onCleanup(() => nft.close());
    // User NETLINK_NETFILTER (12) sockets of the namespace (port id ≠ 0: not the kernel's own).
    const sockets = () =>
      a.ns
        .run(() => fs.readFileSync('/proc/thread-self/net/netlink', 'utf8'))
        .split('\n')
        .slice(1)
        .map((l) => l.trim().split(/\s+/))
        .filter((f) => f[1] === '12' && f[2] !== '0').length;
    assert.equal(sockets(), 0);
    await nft.apply('table inet t {\n chain c {\n }\n}\n');
    assert.equal(sockets(), 1, 'the context is open after a script');
    // Adding and deleting through the same context, several times: one socket throughout.
    for (let i = 0; i < 3; i++) {
      await nft.apply(`add rule inet t c tcp dport ${1000 + i} accept\n`);
      await nft.apply('flush chain inet t c\n');
    }
    assert.equal(sockets(), 1);
    assert.deepEqual(
      (await nft.list('chain inet t c')).nftables.filter((o) => o.rule),
      [],
      'the flushes took effect',
    );
    nft.close();
    assert.equal(sockets(), 0, 'close() frees it');
    nft.close(); // idempotent
    await nft.apply('add rule inet t c udp dport 53 accept\n');
    assert.equal(sockets(), 1, 'a later call opens a new one');
    await sleep(600);
    assert.equal(sockets(), 0, 'freed after idleCloseMs without a call');
    assert.equal((await nft.list('chain inet t c')).nftables.filter((o) => o.rule).length, 1);
  });

  test('in-process: the kept context is renewed every few scripts, not while a deletion is recent', async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    const nft = new Nft(a.ns, { idleCloseMs: 60_000 });
    b.onCleanup(() => nft.close());
    // The inode of the context's NETLINK_NETFILTER socket: a new context, a new socket.
    const inode = () =>
      a.ns
        .run(() => fs.readFileSync('/proc/thread-self/net/netlink', 'utf8'))
        .split('\n')
        .slice(1)
        .map((l) => l.trim().split(/\s+/))
        .find((f) => f[1] === '12' && f[2] !== '0')?.[9];
    await nft.apply('table inet t {\n chain c {\n }\n}\n');
    const seen = new Set<string | undefined>();
    for (let i = 0; i < 20; i++) {
      await nft.apply(`add rule inet t c tcp dport ${2000 + i} accept\n`);
      seen.add(inode());
    }
    seen.delete(undefined);
    assert.ok(seen.size >= 2, `renewed while only adding (sockets seen: ${seen.size})`);
    // Deleting every time: no renewal while the last deletion is recent (freeing would wait
    // for the kernel's clean-up), until the hard bound of four times as many scripts.
    await nft.apply('flush chain inet t c\n');
    const first = inode();
    for (let i = 0; i < 5; i++) await nft.apply('flush chain inet t c\n');
    assert.equal(inode(), first, 'kept while deletions are recent');
    assert.equal((await nft.list('chain inet t c')).nftables.filter((o) => o.rule).length, 0);
  });

  test('every run has a timeout (the process is killed); a missing nft is UNSUPPORTED', async (t) => {
    const b = bed(t);
    const a = b.ns('a');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-nft-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const hang = path.join(dir, 'nft');
    fs.writeFileSync(hang, '#!/bin/sh\nexec sleep 30\n', { mode: 0o755 });
    const started = Date.now();
    await assert.rejects(new Nft(a.ns, { bin: hang, timeoutMs: 300 }).apply('table inet x {\n}\n'), (e) =>
      isWeftError(e, 'TIMEOUT'),
    );
    assert.ok(Date.now() - started < 5000, 'gave up on time');
    await assert.rejects(new Nft(a.ns, { bin: path.join(dir, 'missing') }).listTables(), (e) =>
      isWeftError(e, 'UNSUPPORTED'),
    );
  });

  test('masquerade: traffic through a router namespace leaves with the router’s address', async (t) => {
    const b = bed(t);
    const client = b.ns('client');
    const router = b.ns('router');
    const server = b.ns('server');
    router.h.links.add({ kind: 'veth', name: 'r-c', up: true, peer: { name: 'eth0', netns: client.ns } });
    router.h.links.add({ kind: 'veth', name: 'r-s', up: true, peer: { name: 'eth0', netns: server.ns } });
    client.h.links.setUp('eth0');
    server.h.links.setUp('eth0');
    await b.exec(client, 'ip', ['addr', 'add', '10.1.0.2/24', 'dev', 'eth0']);
    await b.exec(client, 'ip', ['route', 'add', 'default', 'via', '10.1.0.1']);
    await b.exec(router, 'ip', ['addr', 'add', '10.1.0.1/24', 'dev', 'r-c']);
    await b.exec(router, 'ip', ['addr', 'add', '10.2.0.1/24', 'dev', 'r-s']);
    // The server knows no way back to 10.1.0.0/24: only masquerading makes the replies find home.
    await b.exec(server, 'ip', ['addr', 'add', '10.2.0.2/24', 'dev', 'eth0']);
    router.h.sysctl.set('net.ipv4.ip_forward', 1);
    assert.equal(await b.ping(client, '10.2.0.2', { deadlineS: 1 }), false, 'no masquerade: no way back');

    const nft = new Nft(router.ns);
    await nft.apply(`table ip weft {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr 10.1.0.0/24 oifname "r-s" masquerade
  }
}
`);
    const rule = (await nft.list('chain ip weft postrouting')).nftables.find((o) => o.rule)?.rule;
    assert.ok(JSON.stringify(rule?.expr).includes('masquerade'));
    assert.ok(await b.ping(client, '10.2.0.2', { count: 1, deadlineS: 3 }), 'ping through the router');

    // A TCP server that answers with the peer address it sees.
    b.spawn(server, 'socat', ['-T', '5', 'TCP-LISTEN:7000,reuseaddr', 'SYSTEM:echo $SOCAT_PEERADDR']);
    let seen = '';
    for (let i = 0; i < 40 && seen === ''; i++) {
      try {
        const { stdout } = await b.exec(
          client,
          'socat',
          ['-T', '3', '-', 'TCP:10.2.0.2:7000,connect-timeout=2'],
          {
            timeoutMs: 5000,
          },
        );
        seen = String(stdout).trim();
      } catch {
        await sleep(50); // not listening yet
      }
    }
    assert.equal(seen, '10.2.0.1', 'the server sees the router, not the client');
    const { stdout: ct } = await b.exec(router, 'conntrack', ['-L', '-p', 'tcp', '--dport', '7000']);
    assert.match(String(ct), /src=10\.1\.0\.2 dst=10\.2\.0\.2 .*src=10\.2\.0\.2 dst=10\.2\.0\.1/);
  });
});
