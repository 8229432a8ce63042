/**
 * The overlay end to end, daemon by daemon (a suite, run by overlay-<backend>.e2e.test.ts):
 * two hosts (a third joins later) on an underlay switch, each with its own weft daemon joined
 * to one embedded store, an "outside" server on the underlay. Leases, subnet.env, the default
 * network on the leased subnet, traffic across hosts with the source kept, masquerade towards
 * the outside, join, drift repair, a dead host's lease removed, SIGKILL and restart under a
 * TCP stream, leave. (The lab's tests cover etcd.)
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { Bed, type BedNs, needsRoot, RUN_ID } from '../../test/bed.js';
import { removeAllContainers, startDaemon, type TestDaemon } from '../../test/daemon.js';
import type { ClusterView } from '../control/cluster.js';
import type { ContainerView } from '../control/service.js';
import { EmbeddedRegistry } from '../control/store/embedded.js';

const execFileP = promisify(execFile);
const CLI = new URL('./cli.ts', import.meta.url).pathname;
const OUTSIDE = '192.168.50.100';
/**
 * An HTTP answer with the client's address, as a script for socat's SYSTEM (socat's address
 * syntax mangles inline shell). The request is read to its blank line first: a socket closed
 * with unread data sends RST, and curl may then lose the answer.
 */
const ANSWER = `while read -r l && [ "$(printf %s "$l" | tr -d '\\r')" ]; do :; done
printf 'HTTP/1.0 200 OK\\r\\n\\r\\npeer=%s\\n' "$SOCAT_PEERADDR"
`;
let answerFile = '';
const server = () => ['socat', '-T5', 'TCP-LISTEN:80,fork,reuseaddr', `SYSTEM:sh ${answerFile}`];

async function weft(...args: string[]): Promise<string> {
  const { stdout } = await execFileP(process.execPath, ['--import', 'tsx', CLI, ...args], {
    timeout: 30_000,
  });
  return stdout;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The whole suite for one backend (one test file per backend, so they run in parallel). */
export function overlaySuite(backend: 'vxlan' | 'host-gw' | 'udp'): void {
  describe(`overlay with the ${backend} backend: two daemons, one embedded store`, needsRoot, () => {
    const b = new Bed();
    const hosts: { ns: BedNs; d: TestDaemon; ip: string }[] = [];
    let dir: string;
    let store: string;
    let addHost: (i: number) => Promise<void>;
    const view = (i: number) => hosts[i]!.d.api.request<ClusterView>('GET', '/v1/cluster');
    /** Whether host i has kernel state for `subnet` (vxlan/host-gw routes, neigh; udp: its table). */
    const knows = async (i: number, subnet: string): Promise<boolean> => {
      if (backend === 'udp') return (await view(i)).peers.some((p) => p.subnet === subnet);
      const routes = await b.ipJson<{ dst: string }[]>(hosts[i]!.ns, '-4', 'route');
      return routes.some((r) => r.dst === subnet);
    };
    const daemonArgs = (i: number) => [
      '--store',
      store,
      '--iface',
      'eth0',
      '--ip-masq',
      '--name',
      `host${i + 1}`,
      '--lease-ttl',
      '60',
      '--resync-period',
      '2',
    ];
    const run = (h: number, name: string) =>
      hosts[h]!.d.api.request<ContainerView>('POST', '/v1/containers', { name, cmd: server() });
    const fetch = (h: number, name: string, url: string) =>
      hosts[h]!.d.cli(['exec', name, '--', 'curl', '-sS', '--max-time', '3', url], {
        timeoutMs: 20_000,
      });
    /** A server just started may not listen yet: wait (bounded) until it answers. */
    const serving = (h: number, c: ContainerView) =>
      until(`${c.name} listens`, async () => {
        const r = await b
          .exec(hosts[h]!.ns, 'curl', ['-s', '--max-time', '1', `http://${ipOf(c)}/`])
          .catch(() => ({ stdout: '' }));
        return r.stdout.startsWith('peer=');
      });
    const ipOf = (c: ContainerView) => c.networks[0]!.addresses[0]!.split('/')[0]!;

    before(async () => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-overlay-`));
      b.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
      store = `embedded:${dir}/store.db`;
      answerFile = path.join(dir, 'answer.sh');
      fs.writeFileSync(answerFile, ANSWER);
      const sw = b.ns('sw');
      sw.h.links.add({ kind: 'bridge', name: 'br0', up: true, stp: false });
      const outside = b.ns('outside');
      sw.h.links.add({
        kind: 'veth',
        name: 'po',
        master: 'br0',
        up: true,
        peer: { name: 'eth0', netns: outside.ns },
      });
      outside.h.links.setUp('eth0');
      outside.h.addrs.add('eth0', `${OUTSIDE}/24`);
      b.spawn(outside, 'socat', ['-T5', 'TCP-LISTEN:8000,fork,reuseaddr', `SYSTEM:sh ${answerFile}`]);
      await weft('cluster', 'init', '--store', store, '--network', '10.244.0.0/16', '--backend', backend);
      addHost = async (i: number) => {
        const ns = b.ns(`h${i + 1}`);
        const ip = `192.168.50.${11 + i}`;
        sw.h.links.add({
          kind: 'veth',
          name: `p${i}`,
          master: 'br0',
          up: true,
          peer: { name: 'eth0', netns: ns.ns },
        });
        ns.h.links.setUp('eth0');
        ns.h.addrs.add('eth0', `${ip}/24`);
        ns.h.routes.add({ dst: 'default', via: OUTSIDE });
        const d = await startDaemon(b, ns, { args: daemonArgs(i) });
        hosts[i] = { ns, d, ip };
        b.onCleanup(() => hosts[i]!.d.stop());
        b.onCleanup(() => removeAllContainers(hosts[i]!.d).catch(() => undefined));
      };
      await Promise.all([0, 1].map((i) => addHost(i)));
    });
    after(() => b.cleanup());

    test('each host holds a lease, writes subnet.env, and its default network uses the subnet', async () => {
      const views = await Promise.all(hosts.map((h) => h.d.api.request<ClusterView>('GET', '/v1/cluster')));
      const subnets = views.map((v) => v.lease!.subnet);
      assert.notEqual(subnets[0], subnets[1]);
      for (const [i, v] of views.entries()) {
        assert.equal(v.network, '10.244.0.0/16');
        assert.equal(v.backend.type, backend);
        assert.equal(v.publicIp, hosts[i]!.ip);
        assert.deepEqual(
          v.peers.map((p) => p.subnet),
          [subnets[1 - i]],
        );
        const mtu = backend === 'vxlan' ? 1450 : backend === 'udp' ? 1472 : 1500;
        assert.equal(v.mtu, mtu);
        const env = fs.readFileSync(path.join(hosts[i]!.d.runDir, 'subnet.env'), 'utf8');
        assert.equal(
          env,
          `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=${subnets[i]!.replace(/0\/24$/, '1/24')}\nFLANNEL_MTU=${mtu}\nFLANNEL_IPMASQ=true\n`,
        );
        const br = hosts[i]!.ns.h.links.get('weft0');
        assert.equal(br.mtu, mtu);
        const addrs = await b.ipJson<{ addr_info: { local: string; prefixlen: number }[] }[]>(
          hosts[i]!.ns,
          '-4',
          'addr',
          'show',
          'weft0',
        );
        assert.deepEqual(
          addrs[0]?.addr_info.map((a) => `${a.local}/${a.prefixlen}`),
          [subnets[i]!.replace(/0\/24$/, '1/24')],
        );
      }
      const leases = JSON.parse(await weft('cluster', 'leases', '--store', store, '--json')) as {
        subnet: string;
        publicIp: string;
        backendType: string;
      }[];
      assert.deepEqual(
        leases.map((l) => [l.subnet, l.publicIp, l.backendType]).sort(),
        subnets.map((s, i) => [s, hosts[i]!.ip, backend]).sort(),
      );
    });

    test('containers reach each other across hosts with their own address; the outside sees the host', async () => {
      const c1 = await run(0, 'c1');
      const c2 = await run(1, 'c2');
      await serving(0, c1);
      await serving(1, c2);
      const fromC1 = await fetch(0, 'c1', `http://${ipOf(c2)}/`);
      if (fromC1.stdout.trim() !== `peer=${ipOf(c1)}`) {
        const diag = await Promise.all(
          hosts.map(async (h) => {
            const routes = await b.exec(h.ns, 'ip', ['route']);
            const nft = await b.exec(h.ns, 'nft', ['list', 'ruleset']);
            return `${h.ip}:\n${routes.stdout}\n${nft.stdout}`;
          }),
        );
        const again = await fetch(0, 'c1', `http://${ipOf(c2)}/`);
        assert.fail(
          `c1 → c2: ${fromC1.stdout} ${fromC1.stderr} (again: ${again.stdout})\n${diag.join('\n')}`,
        );
      }
      const fromC2 = await fetch(1, 'c2', `http://${ipOf(c1)}/`);
      assert.equal(fromC2.stdout.trim(), `peer=${ipOf(c2)}`);
      const out = await fetch(0, 'c1', `http://${OUTSIDE}:8000/`);
      assert.equal(out.stdout.trim(), `peer=${hosts[0]!.ip}`, 'masqueraded to the host address');
      // The host itself reaches a remote container too.
      assert.ok(await b.ping(hosts[0]!.ns, ipOf(c2)));
    });

    test('a restarted daemon keeps its lease and traffic still flows', async () => {
      const before = (await hosts[0]!.d.api.request<ClusterView>('GET', '/v1/cluster')).lease!.subnet;
      await hosts[0]!.d.stop();
      hosts[0]!.d = await hosts[0]!.d.restart();
      const after = (await hosts[0]!.d.api.request<ClusterView>('GET', '/v1/cluster')).lease!.subnet;
      assert.equal(after, before);
      const c2 = await hosts[1]!.d.api.request<ContainerView>('GET', '/v1/containers/c2');
      const r = await fetch(0, 'c1', `http://${ipOf(c2)}/`);
      assert.match(
        r.stdout,
        /^peer=10\.244\./,
        `after the restart: ${r.stderr}\n${fs.readFileSync(path.join(hosts[0]!.d.dir, 'daemon.log'), 'utf8').slice(-2000)}`,
      );
    });

    test('a host that joins is programmed on the others within one second', async () => {
      const joining = addHost(2);
      // The lease exists from the moment the third daemon's API answers /v1/cluster.
      let leased: { at: number; subnet: string } | undefined;
      while (!leased) {
        await new Promise((r) => setTimeout(r, 20));
        if (!hosts[2]) continue;
        const v = await view(2).catch(() => undefined);
        if (v?.lease) leased = { at: Date.now(), subnet: v.lease.subnet };
      }
      await joining;
      await until(
        'host1 and host2 know host3',
        async () => (await knows(0, leased.subnet)) && (await knows(1, leased.subnet)),
        5000,
      );
      const took = Date.now() - leased.at;
      assert.ok(took < 1000, `peers programmed ${took} ms after the lease was seen`);
      const c3 = await run(2, 'c3');
      await serving(2, c3);
      const r = await fetch(0, 'c1', `http://${ipOf(c3)}/`);
      assert.match(r.stdout, /^peer=10\.244\./, r.stderr);
    });

    if (backend !== 'udp') {
      test('a route deleted by hand comes back within one resync period', async () => {
        const subnet = (await view(2)).lease!.subnet;
        await b.exec(hosts[0]!.ns, 'ip', ['route', 'del', subnet]);
        assert.equal(await knows(0, subnet), false);
        const t0 = Date.now();
        await until('the route is back', () => knows(0, subnet), 5000);
        assert.ok(Date.now() - t0 <= 2500, 'within the 2 s resync period (plus a little)');
      });
    }

    test('a dead host whose lease is deleted disappears from the others’ tables', async () => {
      const subnet = (await view(2)).lease!.subnet;
      await removeAllContainers(hosts[2]!.d);
      hosts[2]!.d.child.kill('SIGKILL');
      await new Promise((r) => hosts[2]!.d.child.once('exit', r));
      const reg = EmbeddedRegistry.open(`${dir}/store.db`);
      try {
        assert.equal(await reg.delete(`/weft/network/subnets/${subnet.replace('/', '-')}`), true);
      } finally {
        await reg.close();
      }
      await until(
        'host1 and host2 forget host3',
        async () => !(await knows(0, subnet)) && !(await knows(1, subnet)),
      );
      if (backend === 'vxlan') {
        const neigh = await b.ipJson<{ dst: string }[]>(hosts[0]!.ns, 'neigh', 'show', 'dev', 'weft.1');
        assert.ok(!neigh.some((n) => n.dst === subnet.replace('/24', '')), 'no neighbour entry left');
        const entries = (await b.exec(hosts[0]!.ns, 'bridge', ['fdb', 'show', 'dev', 'weft.1'])).stdout;
        assert.ok(!entries.includes(hosts[2]!.ip), `no FDB entry towards ${hosts[2]!.ip}: ${entries}`);
      }
    });

    test('SIGKILL and restart of a daemon keeps a long TCP stream alive', async () => {
      const sinkFile = path.join(dir, `stream-${backend}.txt`);
      const sink = await hosts[1]!.d.api.request<ContainerView>('POST', '/v1/containers', {
        name: 'sink',
        cmd: ['socat', '-u', 'TCP-LISTEN:81,reuseaddr', `CREATE:${sinkFile}`],
      });
      assert.equal(sink.status, 'running');
      await until('the sink listens', async () => {
        const ss = await b.exec(hosts[1]!.ns, 'nsenter', [
          `--net=${sink.netnsPath}`,
          'ss',
          '-Hltn',
          'sport = :81',
        ]);
        return ss.stdout.includes(':81');
      });
      // 60 lines, one every 100 ms: about 6 s of one TCP connection from host1 to host2.
      await hosts[0]!.d.api.request<ContainerView>('POST', '/v1/containers', {
        name: 'source',
        cmd: [
          'sh',
          '-c',
          `i=0; while [ $i -lt 60 ]; do echo line$i; i=$((i+1)); sleep 0.1; done | socat -u - TCP:${ipOf(sink)}:81`,
        ],
      });
      await new Promise((r) => setTimeout(r, 1500));
      hosts[0]!.d.child.kill('SIGKILL');
      await new Promise((r) => hosts[0]!.d.child.once('exit', r));
      hosts[0]!.d = await hosts[0]!.d.restart();
      await until(
        'the stream completes',
        async () =>
          (await hosts[0]!.d.api.request<ContainerView>('GET', '/v1/containers/source')).status === 'exited',
        30_000,
      );
      await until(
        'the sink wrote everything',
        () => fs.existsSync(sinkFile) && fs.readFileSync(sinkFile, 'utf8').split('\n').length >= 61,
        10_000,
      );
      const lines = fs.readFileSync(sinkFile, 'utf8').trim().split('\n');
      assert.deepEqual(
        lines,
        Array.from({ length: 60 }, (_, i) => `line${i}`),
      );
    });

    test('a host that leaves disappears from its peer', async () => {
      const gone = (await hosts[1]!.d.api.request<ClusterView>('GET', '/v1/cluster')).lease!.subnet;
      await removeAllContainers(hosts[1]!.d);
      await hosts[1]!.d.cli(['cluster', 'leave']);
      await until('host1 forgets host2', async () => {
        const v = await hosts[0]!.d.api.request<ClusterView>('GET', '/v1/cluster');
        return v.peers.length === 0;
      });
      // No route for the gone subnet is left (the udp backend has one cluster-wide route only).
      const routes = async () => (await b.ipJson<{ dst: string }[]>(hosts[0]!.ns, 'route')).map((r) => r.dst);
      await until('the route to the gone subnet is removed', async () => !(await routes()).includes(gone));
      assert.equal(fs.existsSync(path.join(hosts[1]!.d.runDir, 'subnet.env')), false);
    });
  });
}
