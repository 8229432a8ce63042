/**
 * The firewall against an attacker, with real packets through HostFirewall: 127.0.0.0/8 only
 * from the host itself (route_localnet is on for localhost-published ports), an internal network
 * reaches no published port through its gateway whatever the networks' order, and a Docker
 * bridge next to weft keeps Docker's isolation (FORWARD policy DROP, Docker's own chains).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { type BedNs, bed, needsRoot, RUN_ID } from '../../../test/bed.js';
import { HostFirewall } from './apply.js';
import { ep, net, port } from './fixtures.test.js';
import type { FirewallState } from './types.js';

/** TCP servers on the given ports answering "<peer address> <local port>"; BIND: the address. */
const SERVER = `
const net = require('node:net');
let pending = process.argv.length - 1;
for (const p of process.argv.slice(1)) {
  net.createServer((s) => s.end(s.remoteAddress.replace(/^::ffff:/, '') + ' ' + s.localPort))
    .listen({ port: Number(p), host: process.env.BIND || '0.0.0.0' }, () => { if (--pending === 0) console.log('ready'); });
}`;
const CLIENT = `
const s = require('node:net').connect({ host: process.argv[1], port: Number(process.argv[2]) });
let out = '';
const done = (x) => { console.log(x); process.exit(0); };
s.setTimeout(1500, () => done('TIMEOUT'));
s.on('data', (d) => (out += d));
s.on('end', () => done(out.trim()));
s.on('error', (e) => done('ERR ' + e.code));`;

/** What Docker (before 28) leaves in the filter table: FORWARD DROP, its chains for docker0. */
const DOCKER_RULES = `*filter
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-USER -j RETURN
COMMIT
`;

describe('firewall isolation against attackers', needsRoot, () => {
  test('127.0.0.0/8 only from the host; an internal network reaches no published port; Docker keeps its isolation', async (t) => {
    const b = bed(t);
    const host = b.ns('host');
    const out = b.ns('out');
    const ip = (ns: BedNs, ...args: string[]) => b.exec(ns, 'ip', args);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-iso-`));
    b.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));

    // The LAN: the host 192.0.2.1, an outside machine 192.0.2.2.
    host.h.links.add({ kind: 'veth', name: 'up0', up: true, peer: { name: 'eth0', netns: out.ns } });
    out.h.links.setUp('eth0');
    await ip(host, 'addr', 'add', '192.0.2.1/24', 'dev', 'up0');
    await ip(out, 'addr', 'add', '192.0.2.2/24', 'dev', 'eth0');
    // Bridges with one container each (the internal network listed last: its drops used to come
    // after the web network's accepts).
    const bridges: [string, string, string, string][] = [
      ['br0', '10.88.1.1/24', 'c1', '10.88.1.2'],
      ['br0', '10.88.1.1/24', 'c2', '10.88.1.3'],
      ['br2', '10.88.3.1/24', 'c5', '10.88.3.2'],
      ['docker0', '172.17.0.1/16', 'd1', '172.17.0.2'],
    ];
    const ns: Record<string, BedNs> = {};
    for (const [br, gw, id, addr] of bridges) {
      if (!host.h.links.find(br)) {
        host.h.links.add({ kind: 'bridge', name: br, up: true });
        await ip(host, 'addr', 'add', gw, 'dev', br);
      }
      const c = b.ns(id);
      ns[id] = c;
      host.h.links.add({
        kind: 'veth',
        name: `vh-${id}`,
        master: br,
        up: true,
        peer: { name: 'eth0', netns: c.ns },
      });
      c.h.links.setUp('eth0');
      await ip(c, 'addr', 'add', `${addr}${gw.slice(gw.indexOf('/'))}`, 'dev', 'eth0');
      // The internal network's container has no default route, as weft sets it up.
      if (id !== 'c5') await ip(c, 'route', 'add', 'default', 'via', gw.slice(0, gw.indexOf('/')));
    }
    const rules = path.join(dir, 'docker.rules');
    fs.writeFileSync(rules, DOCKER_RULES);
    await b.exec(host, 'iptables-restore', [rules]);

    const serve = async (where: BedNs, ports: number[], bind?: string) => {
      const child = b.spawn(where, process.execPath, ['-e', SERVER, ...ports.map(String)], {
        stdio: ['ignore', 'pipe', 'inherit'],
        env: { ...process.env, ...(bind !== undefined && { BIND: bind }) },
      });
      await new Promise<void>((resolve, reject) => {
        child.stdout!.once('data', () => resolve());
        child.once('exit', (code) => reject(new Error(`server exited ${code}`)));
      });
    };
    await Promise.all([
      serve(ns.c1!, [80]),
      serve(ns.c5!, [80]),
      serve(ns.d1!, [22]),
      serve(out, [80]),
      serve(host, [5555], '127.0.0.1'),
    ]);

    const state: FirewallState = {
      networks: [
        net('web', 'br0', ['10.88.1.0/24'], {
          endpoints: [
            ep('c1', ['10.88.1.2'], [port('tcp', 8080, 80), port('tcp', 9090, 80, '127.0.0.1')]),
            ep('c2', ['10.88.1.3']),
          ],
        }),
        net('closed', 'br2', ['10.88.3.0/24'], { internal: true, endpoints: [ep('c5', ['10.88.3.2'])] }),
      ],
    };
    const fw = new HostFirewall({ host: host.h });
    b.onCleanup(() => fw.close());
    await fw.apply(state);

    // Attackers route 127.0.0.0/8 to the host: the LAN machine, and a container (root in its
    // namespace can). Their own local routes for it go first.
    for (const [who, gw] of [
      [out, '192.0.2.1'],
      [ns.c2!, '10.88.1.1'],
    ] as const) {
      await ip(who, 'route', 'del', 'local', '127.0.0.0/8', 'dev', 'lo', 'table', 'local');
      await ip(who, 'route', 'del', 'local', '127.0.0.1', 'dev', 'lo', 'table', 'local');
      await ip(who, 'route', 'add', '127.0.0.0/8', 'via', gw);
      for (const dev of ['all', 'eth0', 'lo']) {
        await b.exec(who, 'sysctl', ['-qw', `net/ipv4/conf/${dev}/route_localnet=1`]);
      }
    }

    const probe = async (from: BedNs, addr: string, p: number) =>
      String((await b.exec(from, process.execPath, ['-e', CLIENT, addr, String(p)])).stdout).trim();
    const cases: [BedNs, string, number, RegExp, string][] = [
      [host, '127.0.0.1', 9090, /^10\.88\.1\.1 80$/, 'the host itself through localhost'],
      [out, '192.0.2.1', 8080, /^192\.0\.2\.2 80$/, 'the LAN through the host address'],
      [ns.c1!, '192.0.2.2', 80, /^192\.0\.2\.1 80$/, 'out of a weft network, under FORWARD DROP'],
      [out, '127.0.0.1', 9090, /^TIMEOUT$/, 'the LAN to a port published on 127.0.0.1'],
      [out, '127.0.0.1', 5555, /^TIMEOUT$/, "the LAN to the host's loopback service"],
      [ns.c2!, '127.0.0.1', 5555, /^TIMEOUT$/, "a container to the host's loopback service"],
      [ns.c2!, '127.0.0.1', 9090, /^TIMEOUT$/, 'a container to a port published on 127.0.0.1'],
      [ns.c5!, '10.88.3.1', 8080, /^TIMEOUT$/, "internal, through its gateway, to another network's port"],
      [ns.c1!, '172.17.0.2', 22, /^TIMEOUT$/, "a weft container to a Docker container's unpublished port"],
    ];
    const got = await Promise.all(cases.map(([from, addr, p]) => probe(from, addr, p)));
    const wrong = cases.flatMap(([, addr, p, want, what], i) =>
      want.test(got[i]!) ? [] : [`${what} (${addr}:${p}): got "${got[i]}"`],
    );
    // A TCP client may time out either way (the answer from 127.0.0.1 may not make it back); the
    // host's connection tracking says whether such a packet was taken in at all.
    for (const src of ['192.0.2.2', '10.88.1.3']) {
      const ct = await b
        .exec(host, 'conntrack', ['-L', '-s', src, '-d', '127.0.0.1'])
        .catch((e: unknown) => e);
      const listed = String((ct as { stdout?: unknown }).stdout ?? '').trim();
      if (listed !== '') wrong.push(`${src} -> 127.0.0.1 was taken in: ${listed}`);
    }
    assert.deepEqual(wrong, []);
  });
});
