/**
 * The rendered text against a real kernel, in throwaway namespaces only: nft accepts it (check
 * mode), applies it, lists it back exactly as rendered, replaces and removes it; the iptables
 * piece applies, re-applies and removes exactly; and the rules carry real packets (published
 * ports from outside, the host and by hairpin, masquerade, isolation, icc=false, internal,
 * under an iptables FORWARD policy of DROP).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { type Bed, type BedNs, bed, needsRoot, RUN_ID } from '../../../test/bed.js';
import { formatIP, parseIP, parseIPNet } from '../../lib/ip.js';
import { chainRules, ep, net, port } from './fixtures.test.js';
import { type IptablesSaved, renderIptables, renderIptablesRemoval } from './iptables.js';
import {
  renderInsert,
  renderRemoval,
  renderRuleUpdate,
  renderTable,
  renderTables,
  requiredSysctls,
} from './render.js';
import type { FirewallState } from './types.js';

let fileCounter = 0;

/** Writes `text` to a temp file removed at cleanup; returns its path. */
function tempFile(b: Bed, text: string, ext: string): string {
  const p = path.join(os.tmpdir(), `weft-fw-${RUN_ID}-${process.pid}-${fileCounter++}.${ext}`);
  fs.writeFileSync(p, text);
  b.onCleanup(() => fs.rmSync(p, { force: true }));
  return p;
}

/** Runs a command in a namespace; its stdout. */
async function run(b: Bed, ns: BedNs, cmd: string, args: string[]): Promise<string> {
  return String((await b.exec(ns, cmd, args)).stdout);
}

async function nft(b: Bed, ns: BedNs, text: string, check = false): Promise<void> {
  const file = tempFile(b, text, 'nft');
  await b.exec(ns, 'nft', check ? ['-c', '-f', file] : ['-f', file]);
}

async function listTables(b: Bed, ns: BedNs): Promise<string> {
  return run(b, ns, 'nft', ['list', 'tables']);
}

async function saved(b: Bed, ns: BedNs): Promise<IptablesSaved> {
  const [ipv4, ipv6] = await Promise.all(
    ['iptables-save', 'ip6tables-save'].map((cmd) => run(b, ns, cmd, ['-t', 'filter'])),
  );
  return { ipv4, ipv6 };
}

async function restore(b: Bed, ns: BedNs, batches: ReturnType<typeof renderIptables>): Promise<void> {
  for (const x of batches) await b.exec(ns, x.command, [...x.args, tempFile(b, x.text, 'rules')]);
}

const rich: FirewallState = {
  networks: [
    net('n1', 'br0', ['10.88.1.1/24', 'fd00:88:1::1/64'], {
      icc: false,
      endpoints: [
        ep(
          'e1',
          ['10.88.1.2', 'fd00:88:1::2'],
          [
            port('tcp', 8080, 80),
            port('udp', [8000, 8010], [8000, 8010]),
            port('tcp', [9000, 9049], [7000, 7049]),
            port('tcp', 9090, 80, '127.0.0.1'),
            port('tcp', 9091, 80, '2001:db8::1'),
          ],
        ),
      ],
    }),
    net('n2', 'br1', ['10.88.2.0/24'], {
      internal: true,
      endpoints: [ep('e2', ['10.88.2.2'], [port('udp', 53, 53)])],
    }),
    net('n3', 'br2', ['10.88.3.0/24'], { masquerade: false }),
    net('n4', 'br3', ['fd00:88:4::/64'], { hostIps: [] }),
  ],
};

interface NftJson {
  nftables: {
    chain?: { name: string; hook?: string; type?: string; prio?: number; policy?: string };
    rule?: { chain: string; comment?: string };
  }[];
}

describe('firewall rendering against the kernel', needsRoot, () => {
  test('an overlay host’s default network: nft applies it and lists it back as rendered', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const overlay: FirewallState = {
      networks: [
        net('n5', 'weft0', ['10.244.3.0/24'], {
          cluster: [parseIPNet('10.244.0.0/16')],
          clusterSource: parseIP('10.244.3.1'),
        }),
      ],
    };
    await nft(b, host, renderTables(overlay));
    assert.equal(await run(b, host, 'nft', ['list', 'table', 'inet', 'weft']), renderTable(overlay));
    // The rules-only update (no base chain declared again) gives exactly the full table's result.
    await nft(b, host, renderRuleUpdate(rich));
    assert.equal(await run(b, host, 'nft', ['list', 'table', 'inet', 'weft']), renderTable(rich));
    await nft(b, host, renderRuleUpdate(overlay));
    assert.equal(await run(b, host, 'nft', ['list', 'table', 'inet', 'weft']), renderTable(overlay));
    // Insertions only (ports joining before, between and after others): the same result as the
    // table, the published chain's rules (appended: their order does not matter) as a set.
    const publishedSorted = (text: string): string => {
      const lines = text.split('\n');
      const start = lines.indexOf('\tchain published {');
      const end = lines.indexOf('\t}', start);
      return [...lines.slice(0, start + 1), ...lines.slice(start + 1, end).sort(), ...lines.slice(end)].join(
        '\n',
      );
    };
    const withPorts = (ports: number[]): FirewallState => ({
      networks: [
        net('n5', 'weft0', ['10.244.3.0/24'], {
          endpoints: ports.map((p) => ep(`e${p}`, [`10.244.3.${p - 9000}`], [port('tcp', p, 80)])),
        }),
      ],
    });
    await nft(b, host, renderTables(withPorts([9020])));
    for (const [from, to] of [
      [[9020], [9010, 9020]],
      [
        [9010, 9020],
        [9010, 9015, 9020, 9030],
      ],
      [
        [9010, 9015, 9020, 9030],
        [9005, 9010, 9015, 9020, 9025, 9030],
      ],
    ] as const) {
      const batch = renderInsert(withPorts([...from]), withPorts([...to]));
      assert.ok(batch && !batch.includes('flush') && !batch.includes('delete'), String(batch));
      await nft(b, host, batch);
      assert.equal(
        publishedSorted(await run(b, host, 'nft', ['list', 'table', 'inet', 'weft'])),
        publishedSorted(renderTable(withPorts([...to]))),
      );
    }
  });

  test('nft accepts, applies, lists back exactly as rendered, replaces and removes the table', async (t) => {
    const b = bed(t);
    const host = b.ns('fw');
    await nft(b, host, renderTables(rich), true);
    assert.equal(await listTables(b, host), '', 'check mode changed nothing');

    await nft(b, host, renderTables(rich));
    await nft(b, host, renderTables(rich)); // idempotent: replaces itself
    const listed = await run(b, host, 'nft', ['list', 'table', 'inet', 'weft']);
    assert.equal(listed, renderTable(rich), 'nft prints back exactly what was rendered');

    const json = JSON.parse(await run(b, host, 'nft', ['-j', 'list', 'table', 'inet', 'weft'])) as NftJson;
    const chains = json.nftables.flatMap((o) => (o.chain ? [o.chain] : []));
    assert.deepEqual(
      chains.map((c) => [c.name, c.type, c.hook, c.prio, c.policy]),
      [
        ['loopback', 'filter', 'prerouting', -300, 'accept'],
        ['prerouting', 'nat', 'prerouting', -100, 'accept'],
        ['output', 'nat', 'output', -100, 'accept'],
        ['published', undefined, undefined, undefined, undefined],
        ['postrouting', 'nat', 'postrouting', 100, 'accept'],
        ['forward', 'filter', 'forward', 0, 'accept'],
      ],
    );
    const rules = json.nftables.flatMap((o) => (o.rule ? [o.rule] : []));
    const text = renderTable(rich);
    for (const c of chains) {
      assert.equal(rules.filter((r) => r.chain === c.name).length, chainRules(text, c.name).length, c.name);
    }
    assert.ok(
      rules.every((r) => typeof r.comment === 'string' && r.comment.length > 0),
      'every rule has a comment',
    );
    assert.ok(rules.some((r) => r.comment === 'net n1 ep e1: tcp 9000-9049 -> 7000-7049'));

    // A smaller state replaces the table in one batch.
    const small: FirewallState = { networks: [net('n3', 'br2', ['10.88.3.0/24'])] };
    await nft(b, host, renderTables(small));
    assert.equal(await run(b, host, 'nft', ['list', 'table', 'inet', 'weft']), renderTable(small));

    // Removal is exact and valid twice; the empty state renders the removal.
    await b.exec(host, 'nft', ['add', 'table', 'inet', 'other']);
    await nft(b, host, renderRemoval());
    await nft(b, host, renderRemoval());
    await nft(b, host, renderTables({ networks: [] }));
    assert.equal(await listTables(b, host), 'table inet other\n', 'only weft’s table went');
  });

  test('the iptables piece applies, re-applies without duplicates and is removed exactly', async (t) => {
    const b = bed(t);
    const host = b.ns('ipt');
    for (const cmd of ['iptables', 'ip6tables']) {
      await b.exec(host, cmd, ['-P', 'FORWARD', 'DROP']);
      await b.exec(host, cmd, ['-A', 'FORWARD', '-i', 'foreign0', '-j', 'ACCEPT']);
    }
    const forward = async () => {
      const s = await saved(b, host);
      return [s.ipv4!, s.ipv6!].map((x) =>
        x.split('\n').filter((l) => /^(-A (FORWARD|WEFT-FORWARD)|:)/.test(l)),
      );
    };
    await restore(b, host, renderIptables(rich, await saved(b, host)));
    for (const lines of await forward()) {
      assert.deepEqual(lines, [
        ':INPUT ACCEPT [0:0]',
        lines.find((l) => l.startsWith(':FORWARD DROP')),
        ':OUTPUT ACCEPT [0:0]',
        ':WEFT-FORWARD - [0:0]',
        '-A FORWARD -j WEFT-FORWARD',
        '-A FORWARD -i foreign0 -j ACCEPT',
        ...['-o', 'returns', '-i'].flatMap((d) =>
          d === 'returns'
            ? ['docker0', 'br-+', 'virbr+'].map(
                (o) =>
                  `-A WEFT-FORWARD -o ${o} -m comment --comment "not a weft bridge: its own rules decide" -j RETURN`,
              )
            : ['n1 br0', 'n2 br1', 'n3 br2', 'n4 br3'].map((x) => {
                const [id, br] = x.split(' ');
                return `-A WEFT-FORWARD ${d} ${br} -m comment --comment "weft net ${id}" -j ACCEPT`;
              }),
        ),
      ]);
    }
    // Re-apply twice (re-reading each time): still one jump, first; the chain refilled, not doubled.
    const before = await forward();
    await restore(b, host, renderIptables(rich, await saved(b, host)));
    await restore(b, host, renderIptables(rich, await saved(b, host)));
    assert.deepEqual(await forward(), before);
    // A foreign rule inserted above ours: ours moves back to position 1.
    await b.exec(host, 'iptables', ['-I', 'FORWARD', '1', '-i', 'foreign1', '-j', 'ACCEPT']);
    await restore(b, host, renderIptables(rich, await saved(b, host)));
    const [v4] = await forward();
    assert.deepEqual(
      v4!.filter((l) => l.startsWith('-A FORWARD')),
      ['-A FORWARD -j WEFT-FORWARD', '-A FORWARD -i foreign1 -j ACCEPT', '-A FORWARD -i foreign0 -j ACCEPT'],
    );
    // Removal: only ours goes; a second removal has nothing to do.
    await restore(b, host, renderIptablesRemoval(await saved(b, host)));
    const [a4, a6] = await forward();
    assert.ok(!a4!.concat(a6!).some((l) => l.includes('WEFT')));
    assert.ok(
      a4!.includes('-A FORWARD -i foreign0 -j ACCEPT') && a6!.includes('-A FORWARD -i foreign0 -j ACCEPT'),
    );
    assert.ok(
      a4!.some((l) => l.startsWith(':FORWARD DROP')),
      'the foreign policy is untouched',
    );
    assert.deepEqual(renderIptablesRemoval(await saved(b, host)), []);
  });

  test('rendered rules carry real packets, also under an iptables FORWARD policy of DROP', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const out = b.ns('out');
    const sh = (ns: BedNs, ...args: string[]) => b.exec(ns, 'ip', args);

    // Uplink: the host is 192.0.2.1 / 2001:db8::1, "outside" (client and internet server) .2.
    host.h.links.add({ kind: 'veth', name: 'up0', up: true, peer: { name: 'eth0', netns: out.ns } });
    out.h.links.setUp('eth0');
    await sh(host, 'addr', 'add', '192.0.2.1/24', 'dev', 'up0');
    await sh(host, 'addr', 'add', '2001:db8::1/64', 'dev', 'up0', 'nodad');
    await sh(out, 'addr', 'add', '192.0.2.2/24', 'dev', 'eth0');
    await sh(out, 'addr', 'add', '2001:db8::2/64', 'dev', 'eth0', 'nodad');
    // Outside routes the container subnets to the host: direct access is tried, and must fail.
    await sh(out, 'route', 'add', '10.88.0.0/16', 'via', '192.0.2.1');
    await sh(out, '-6', 'route', 'add', 'fd00:88::/32', 'via', '2001:db8::1');

    const state: FirewallState = {
      networks: [
        net('web', 'br0', ['10.88.1.0/24', 'fd00:88:1::/64'], {
          endpoints: [
            ep(
              'c1',
              ['10.88.1.2', 'fd00:88:1::2'],
              [
                port('tcp', 8080, 80),
                port('tcp', 9090, 80, '127.0.0.1'),
                port('tcp', [9000, 9001], [7000, 7001]),
              ],
            ),
            ep('c2', ['10.88.1.3', 'fd00:88:1::3']),
          ],
        }),
        net('quiet', 'br1', ['10.88.2.0/24'], {
          icc: false,
          endpoints: [ep('c3', ['10.88.2.2'], [port('tcp', 8082, 80)]), ep('c4', ['10.88.2.3'])],
        }),
        net('closed', 'br2', ['10.88.3.0/24'], { internal: true, endpoints: [ep('c5', ['10.88.3.2'])] }),
      ],
    };
    // Bridges with their gateway addresses; each endpoint a namespace on a veth, default routes
    // via the gateway of its family.
    const gateways: Record<string, string[]> = {
      br0: ['10.88.1.1/24', 'fd00:88:1::1/64'],
      br1: ['10.88.2.1/24'],
      br2: ['10.88.3.1/24'],
    };
    const ns: Record<string, BedNs> = { out };
    for (const n of state.networks) {
      host.h.links.add({ kind: 'bridge', name: n.bridge, up: true });
      const gws = gateways[n.bridge]!;
      for (const gw of gws) await sh(host, 'addr', 'add', gw, 'dev', n.bridge, 'nodad');
      for (const e of n.endpoints) {
        const c = b.ns(e.id);
        ns[e.id] = c;
        host.h.links.add({
          kind: 'veth',
          name: `vh-${e.id}`,
          master: n.bridge,
          up: true,
          peer: { name: 'eth0', netns: c.ns },
        });
        c.h.links.setUp('eth0');
        for (const ip of e.ips) {
          const gw = gws.find((g) => g.includes(':') === (ip.family === 6))!;
          await sh(c, 'addr', 'add', `${formatIP(ip)}${gw.slice(gw.indexOf('/'))}`, 'dev', 'eth0', 'nodad');
          await sh(
            c,
            ip.family === 6 ? '-6' : '-4',
            'route',
            'add',
            'default',
            'via',
            gw.slice(0, gw.indexOf('/')),
          );
        }
      }
    }
    // With br_netfilter active a container reaching its own published port is bridged back out
    // of its own port: that needs hairpin mode (the bridge driver's duty, see render.ts).
    host.h.links.setBridgePort('vh-c1', { hairpin: true });

    // Servers answer "<peer address> <local port>".
    const serve = async (where: BedNs, ports: number[]) => {
      const child = b.spawn(where, process.execPath, ['-e', SERVER, ...ports.map(String)], {
        stdio: ['ignore', 'pipe', 'inherit'],
      });
      await new Promise<void>((resolve, reject) => {
        child.stdout!.once('data', () => resolve());
        child.once('exit', (code) => reject(new Error(`server exited ${code}`)));
      });
    };
    await Promise.all([
      serve(ns.c1!, [80, 7001]),
      serve(ns.c2!, [80]),
      serve(ns.c3!, [80]),
      serve(ns.c4!, [80]),
      serve(ns.c5!, [80]),
      serve(out, [80]),
    ]);

    // The state's rules and sysctls, and a foreign FORWARD policy of DROP (as Docker sets it).
    for (const s of requiredSysctls(state)) await b.exec(host, 'sysctl', ['-qw', `${s.path}=${s.value}`]);
    await nft(b, host, renderTables(state));
    for (const cmd of ['iptables', 'ip6tables']) await b.exec(host, cmd, ['-P', 'FORWARD', 'DROP']);

    const probe = async (from: BedNs, addr: string, p: number): Promise<string> =>
      (await run(b, from, process.execPath, ['-e', CLIENT, addr, String(p)])).trim();

    assert.equal(await probe(out, '192.0.2.1', 8080), 'TIMEOUT', 'a foreign FORWARD DROP drops weft traffic');
    await restore(b, host, renderIptables(state, await saved(b, host)));

    const cases: [string, string, number, string | RegExp][] = [
      // published ports: from outside (client address kept), v6, shifted range, host, localhost
      ['out', '192.0.2.1', 8080, '192.0.2.2 80'],
      ['out', '2001:db8::1', 8080, '2001:db8::2 80'],
      ['out', '192.0.2.1', 9001, '192.0.2.2 7001'],
      ['out', '192.0.2.1', 9090, /^ERR/], // bound to 127.0.0.1 only
      ['host', '192.0.2.1', 8080, '192.0.2.1 80'],
      ['host', '127.0.0.1', 9090, '10.88.1.1 80'],
      ['host', '::1', 8080, /^ERR/], // refused at once, not a timeout
      // hairpin: a neighbour, the container itself, v6, another network
      ['c2', '192.0.2.1', 8080, '10.88.1.1 80'],
      ['c1', '192.0.2.1', 8080, '10.88.1.1 80'],
      ['c2', '2001:db8::1', 8080, 'fd00:88:1::1 80'],
      ['c3', '192.0.2.1', 8080, '10.88.1.1 80'],
      // outbound NAT, v4 and v6
      ['c1', '192.0.2.2', 80, '192.0.2.1 80'],
      ['c2', '2001:db8::2', 80, '2001:db8::1 80'],
      // within a network; isolation between networks
      ['c1', '10.88.1.3', 80, '10.88.1.2 80'],
      ['c3', '10.88.1.2', 80, 'TIMEOUT'],
      ['c1', '10.88.2.2', 80, 'TIMEOUT'],
      ['out', '10.88.1.2', 80, 'TIMEOUT'], // routed, but no direct access from outside
      // icc=false: no direct traffic, published ports still reachable, outbound still works
      ['c4', '10.88.2.2', 80, 'TIMEOUT'],
      ['c4', '192.0.2.1', 8082, '10.88.2.1 80'],
      ['c4', '192.0.2.2', 80, '192.0.2.1 80'],
      // internal: nothing leaves, nothing crosses
      ['c5', '192.0.2.2', 80, 'TIMEOUT'],
      ['c5', '10.88.1.2', 80, 'TIMEOUT'],
      ['c1', '10.88.3.2', 80, 'TIMEOUT'],
      ['out', 'fd00:88:1::2', 80, 'TIMEOUT'],
    ];
    const where = (name: string) => (name === 'host' ? host : ns[name]!);
    const results = await Promise.all(cases.map(([from, addr, p]) => probe(where(from), addr, p)));
    const failures = cases.flatMap(([from, addr, p, want], i) => {
      const got = results[i]!;
      const ok = typeof want === 'string' ? got === want : want.test(got);
      return ok ? [] : [`${from} -> ${addr}:${p}: got "${got}", want ${String(want)}`];
    });
    assert.deepEqual(failures, []);
  });
});

const SERVER = `
const net = require('node:net');
let pending = process.argv.length - 1;
for (const p of process.argv.slice(1)) {
  net.createServer((s) => s.end(s.remoteAddress.replace(/^::ffff:/, '') + ' ' + s.localPort))
    .listen({ port: Number(p), host: '::', ipv6Only: false }, () => { if (--pending === 0) console.log('ready'); });
}`;

const CLIENT = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
let out = '';
const done = (s) => { console.log(s); process.exit(0); };
const s = net.connect({ host, port: Number(port) });
s.setTimeout(1500, () => done('TIMEOUT'));
s.on('data', (d) => (out += d));
s.on('end', () => done(out.trim()));
s.on('error', (e) => done('ERR ' + e.code));`;
