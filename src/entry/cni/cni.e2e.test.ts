/**
 * The CNI plugin end to end, driven as runtimes drive it: the bundled executable (built into a
 * temp folder first) is spawned inside a test "host" namespace with the CNI_* environment and the
 * network configuration on stdin, against a weft daemon running in that namespace; the reference
 * plugins of Debian's containernetworking-plugins are chained after it. Assertions read the
 * kernel (addresses, routes, links, qdiscs) and send real packets.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildCniPlugin } from '../../../scripts/build-cni.js';
import { Bed, type BedNs, needsRoot, RUN_ID } from '../../../test/bed.js';
import { startDaemon, type TestDaemon } from '../../../test/daemon.js';
import type { AttachView } from '../../control/service.js';
import { SUPPORTED_VERSIONS } from './result.js';
import { type PluginRun, runCniPlugin } from './testkit.js';

const REF = '/usr/lib/cni';
const HOST_IP = '198.51.100.2';
const OUTSIDE_IP = '198.51.100.1';
const SUBNET = '10.61.0';
const haveRef = fs.existsSync(path.join(REF, 'portmap')) && fs.existsSync(path.join(REF, 'bandwidth'));

describe('CNI plugin through its executable', needsRoot, () => {
  const b = new Bed();
  let host: BedNs;
  let outside: BedNs;
  let d: TestDaemon;
  let tmp: string;
  let plugin: string;
  let n = 0;

  /** Run a CNI plugin inside the host namespace, as a runtime does. */
  const run = (file: string, env: Record<string, string>, stdin: unknown): Promise<PluginRun> =>
    runCniPlugin(
      host.ns,
      file,
      {
        CNI_PATH: REF,
        ...(process.env.WEFT_TEST_RUN !== undefined && { WEFT_TEST_RUN: process.env.WEFT_TEST_RUN }),
        ...env,
      },
      stdin,
    );

  const weft = (env: Record<string, string>, conf: unknown) => run(plugin, env, conf);
  const conf = (v: string, extra: Record<string, unknown> = {}) => ({
    cniVersion: v,
    name: 'cninet',
    type: 'weft',
    network: 'cninet',
    socket: d.socket,
    dataDir: path.join(tmp, 'data'),
    ...extra,
  });
  /** A fresh container namespace and the env of a call for it. */
  const container = (label = 'c') => {
    const c = b.ns(label);
    const id = `wt${RUN_ID}c${n++}`;
    const env = (cmd: string, more: Record<string, string> = {}) => ({
      CNI_COMMAND: cmd,
      CNI_CONTAINERID: id,
      CNI_NETNS: c.ns.path,
      CNI_IFNAME: 'eth0',
      ...more,
    });
    return { c, id, env };
  };
  const attachments = () => d.api.request<AttachView[]>('GET', '/v1/attachments?owner=cni');
  const hostLinks = async () =>
    (await b.ipJson<{ ifname: string }[]>(host, 'link', 'show')).map((l) => l.ifname).sort();
  const addrsOf = async (c: BedNs, dev = 'eth0') =>
    (
      await b.ipJson<{ addr_info: { local: string; prefixlen: number; family: string }[] }[]>(
        c,
        'addr',
        'show',
        dev,
      )
    )[0]?.addr_info
      .filter((a) => a.family === 'inet')
      .map((a) => `${a.local}/${a.prefixlen}`) ?? [];

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-cni-`));
    b.onCleanup(() => fs.rmSync(tmp, { recursive: true, force: true }));
    plugin = path.join(tmp, 'bin', 'weft');
    await buildCniPlugin(plugin);
    host = b.ns('host');
    outside = b.ns('outside');
    b.uplink(host, outside, { hostIp: HOST_IP, outsideIp: OUTSIDE_IP });
    d = await startDaemon(b, host, { args: ['--upstream', OUTSIDE_IP, '--default-subnet', '10.60.0.0/24'] });
    b.onCleanup(() => d.stop());
    await d.api.request('POST', '/v1/networks', {
      name: 'cninet',
      driver: 'bridge',
      subnets: [{ subnet: `${SUBNET}.0/24` }],
    });
  });
  after(() => b.cleanup());

  test('VERSION lists every supported version, answered in the version asked', async () => {
    for (const v of SUPPORTED_VERSIONS) {
      const r = await weft({ CNI_COMMAND: 'VERSION' }, { cniVersion: v });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.json, {
        cniVersion: v,
        supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'],
      });
    }
  });

  for (const v of SUPPORTED_VERSIONS) {
    test(`ADD, CHECK, STATUS, GC, DEL in ${v}: the kernel has what the result says`, async () => {
      const { c, env } = container();
      const add = await weft(env('ADD'), conf(v));
      assert.equal(add.code, 0, add.stdout + add.stderr);
      const res = add.json as {
        cniVersion: string;
        interfaces: { name: string; mac?: string; sandbox?: string; mtu?: number }[];
        ips: { version?: string; address: string; gateway: string; interface: number }[];
        routes: { dst: string; gw: string }[];
        dns: { nameservers?: string[] };
      };
      assert.equal(res.cniVersion, v);
      const [hostIf, contIf] = res.interfaces;
      assert.equal(contIf?.name, 'eth0');
      assert.equal(contIf?.sandbox, c.ns.path);
      assert.equal(hostIf?.sandbox, undefined);
      assert.equal('mtu' in contIf!, v === '1.1.0');
      assert.equal(res.ips.length, 1);
      const ip = res.ips[0]!;
      assert.equal(ip.interface, 1);
      assert.equal(ip.gateway, `${SUBNET}.1`);
      assert.equal('version' in ip, v < '1.0.0');
      assert.match(ip.address, new RegExp(`^${SUBNET.replaceAll('.', '\\.')}\\.\\d+/24$`));
      assert.deepEqual(res.routes, [{ dst: '0.0.0.0/0', gw: `${SUBNET}.1` }]);
      // The kernel: the address and MAC on eth0 in the container, its default route, the host
      // end of the veth on the network's bridge.
      assert.deepEqual(await addrsOf(c), [ip.address]);
      const link = (await b.ipJson<{ address: string }[]>(c, 'link', 'show', 'eth0'))[0];
      assert.equal(link?.address, contIf?.mac);
      const routes = await b.ipJson<{ dst: string; gateway?: string }[]>(c, 'route', 'show');
      assert.ok(routes.some((r) => r.dst === 'default' && r.gateway === `${SUBNET}.1`));
      const hl = (
        await b.ipJson<{ master?: string; address: string }[]>(host, 'link', 'show', hostIf!.name)
      )[0];
      assert.equal(hl?.address, hostIf?.mac);
      assert.ok(hl?.master, 'the host end is on a bridge');
      assert.ok(await b.ping(c, `${SUBNET}.1`), 'the container reaches its gateway');
      // The plugin's record, and the daemon's.
      assert.ok(fs.existsSync(path.join(tmp, 'data', 'cninet', `${env('ADD').CNI_CONTAINERID}:eth0.json`)));
      assert.ok((await attachments()).some((a) => a.containerId === env('ADD').CNI_CONTAINERID));

      if (v >= '0.4.0') {
        const check = await weft(env('CHECK'), conf(v, { prevResult: res }));
        assert.equal(check.code, 0, check.stdout);
        assert.equal(check.stdout, '');
      } else {
        const check = await weft(env('CHECK'), conf(v, { prevResult: res }));
        assert.equal(check.json?.code, 1, 'CHECK needs 0.4.0');
      }
      const status = await weft({ CNI_COMMAND: 'STATUS' }, conf(v));
      assert.equal(status.code === 0, v === '1.1.0', status.stdout);
      if (v !== '1.1.0') assert.equal(status.json?.code, 1);
      // GC (1.1.0 only) with this container listed as valid keeps it.
      const gc = await weft(
        { CNI_COMMAND: 'GC' },
        conf(v, {
          'cni.dev/valid-attachments': [{ containerID: env('ADD').CNI_CONTAINERID, ifname: 'eth0' }],
        }),
      );
      assert.equal(gc.code === 0, v === '1.1.0', gc.stdout);
      if (v !== '1.1.0') assert.equal(gc.json?.code, 1);
      assert.ok((await attachments()).some((a) => a.containerId === env('ADD').CNI_CONTAINERID));

      const del = await weft(env('DEL'), conf(v, { prevResult: res }));
      assert.equal(del.code, 0, del.stdout);
      assert.equal(del.stdout, '');
      assert.deepEqual(await b.ipJson(c, 'link', 'show', 'type', 'veth'), [], 'eth0 is gone');
      assert.ok(!(await hostLinks()).includes(hostIf!.name), 'the host end is gone');
      assert.ok(!fs.existsSync(path.join(tmp, 'data', 'cninet', `${env('ADD').CNI_CONTAINERID}:eth0.json`)));
    });
  }

  test('chained with portmap, tuning, firewall and bandwidth: a published port answers from another namespace', {
    skip: !haveRef && 'no reference plugins',
  }, async () => {
    const { c, env } = container('web');
    const www = path.join(tmp, 'www');
    fs.mkdirSync(www, { recursive: true });
    fs.writeFileSync(path.join(www, 'index.html'), 'hello through portmap\n');
    const v = '1.0.0'; // Debian's reference plugins speak up to 1.0.0
    const chain: Record<string, unknown>[] = [
      { type: 'weft', network: 'cninet', socket: d.socket, dataDir: path.join(tmp, 'data') },
      {
        type: 'portmap',
        capabilities: { portMappings: true },
        snat: true,
        runtimeConfig: { portMappings: [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }] },
      },
      { type: 'tuning', sysctl: { 'net.core.somaxconn': '321' } },
      { type: 'firewall', backend: 'iptables' },
      {
        type: 'bandwidth',
        ingressRate: 80_000_000,
        ingressBurst: 1_000_000,
        egressRate: 80_000_000,
        egressBurst: 1_000_000,
      },
    ];
    const pluginConf = (i: number, prev?: unknown) => ({
      cniVersion: v,
      name: 'cninet',
      ...chain[i],
      ...(prev !== undefined && { prevResult: prev }),
    });
    const file = (i: number) => (i === 0 ? plugin : path.join(REF, String(chain[i]!.type)));
    let prev: unknown;
    for (let i = 0; i < chain.length; i++) {
      const r = await run(file(i), env('ADD'), pluginConf(i, prev));
      assert.equal(r.code, 0, `${file(i)}: ${r.stdout} ${r.stderr}`);
      prev = r.json;
    }
    const result = prev as { interfaces: { name: string; sandbox?: string }[]; ips: { address: string }[] };
    const hostIf = result.interfaces.find((i) => !i.sandbox)!.name;
    const ip = result.ips[0]!.address.split('/')[0]!;
    // Each reference plugin found what it needed in weft's result: bandwidth the host end of the
    // veth (a token bucket on it), tuning the container's namespace, firewall the address.
    assert.match((await b.exec(host, 'tc', ['qdisc', 'show', 'dev', hostIf])).stdout, /qdisc tbf/);
    assert.equal((await b.exec(c, 'cat', ['/proc/sys/net/core/somaxconn'])).stdout.trim(), '321');
    assert.match(
      (await b.exec(host, 'iptables', ['-S', 'CNI-FORWARD'])).stdout,
      new RegExp(ip.replaceAll('.', '\\.')),
    );
    b.spawn(c, 'busybox', ['httpd', '-f', '-p', '80', '-h', www]);
    assert.equal(await fetchFrom(b, outside, `http://${HOST_IP}:18080/`), 'hello through portmap\n');
    // CHECK through the chain (not portmap: Debian's 1.1.1 looks for IPv6 rules it never made on
    // an IPv4-only result, containernetworking/plugins#819), then DEL in reverse order.
    for (let i = 0; i < chain.length; i++) {
      if (chain[i]!.type === 'portmap') continue;
      const r = await run(file(i), env('CHECK'), pluginConf(i, prev));
      assert.equal(r.code, 0, `${file(i)} CHECK: ${r.stdout} ${r.stderr}`);
    }
    for (let i = chain.length - 1; i >= 0; i--) {
      const r = await run(file(i), env('DEL'), pluginConf(i, prev));
      assert.equal(r.code, 0, `${file(i)} DEL: ${r.stdout} ${r.stderr}`);
    }
    assert.doesNotMatch(
      (await b.exec(host, 'iptables', ['-t', 'nat', '-S'])).stdout,
      /18080/,
      'portmap removed its rule',
    );
    assert.doesNotMatch(
      (await b.exec(host, 'iptables', ['-S'])).stdout,
      new RegExp(ip.replaceAll('.', '\\.')),
    );
    assert.ok(!(await hostLinks()).includes(hostIf));
    assert.deepEqual(
      (await attachments()).filter((a) => a.containerId === env('ADD').CNI_CONTAINERID),
      [],
    );
  });

  test("weft's own port publishing (portMappings capability), and CNI_ARGS IP and MAC", async () => {
    const { c, env } = container('pub');
    const www = path.join(tmp, 'www2');
    fs.mkdirSync(www, { recursive: true });
    fs.writeFileSync(path.join(www, 'index.html'), 'hello through weft\n');
    const cfg = conf('1.1.0', {
      capabilities: { portMappings: true },
      runtimeConfig: { portMappings: [{ hostPort: 18081, containerPort: 80, protocol: 'tcp' }] },
    });
    const add = await weft(
      env('ADD', { CNI_ARGS: `IgnoreUnknown=1;IP=${SUBNET}.77;MAC=02:00:0a:3d:00:4d` }),
      cfg,
    );
    assert.equal(add.code, 0, add.stdout);
    assert.deepEqual(await addrsOf(c), [`${SUBNET}.77/24`]);
    const link = (await b.ipJson<{ address: string }[]>(c, 'link', 'show', 'eth0'))[0];
    assert.equal(link?.address, '02:00:0a:3d:00:4d');
    b.spawn(c, 'busybox', ['httpd', '-f', '-p', '80', '-h', www]);
    assert.equal(await fetchFrom(b, outside, `http://${HOST_IP}:18081/`), 'hello through weft\n');
    const view = (await attachments()).find((a) => a.containerId === env('ADD').CNI_CONTAINERID);
    assert.deepEqual(
      view?.ports.map((p) => p.hostPort),
      [18081],
    );
    assert.equal((await weft(env('DEL'), cfg)).code, 0);
  });

  test('without CNI_COMMAND: the supported versions on stderr, exit 0', async () => {
    const r = await weft({ CNI_CONTAINERID: 'x' }, conf('1.0.0'));
    assert.equal(r.code, 0, r.stdout);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /CNI protocol versions supported: 0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0, 1\.1\.0/);
  });

  test('DEL after an ADD refused for its config (sctp port mapping) succeeds', async () => {
    const { env } = container('sctp');
    const cfg = conf('1.0.0', {
      capabilities: { portMappings: true },
      runtimeConfig: { portMappings: [{ hostPort: 18091, containerPort: 80, protocol: 'sctp' }] },
    });
    const add = await weft(env('ADD'), cfg);
    assert.equal(add.json?.code, 7, add.stdout);
    const del = await weft(env('DEL'), cfg);
    assert.equal(del.code, 0, del.stdout);
    assert.equal(del.stdout, '');
  });

  test('DEL is idempotent: twice, and after the namespace is gone', async () => {
    const { c, env } = container('gone');
    const add = await weft(env('ADD'), conf('1.0.0'));
    assert.equal(add.code, 0, add.stdout);
    const hostIf = (add.json as { interfaces: { name: string }[] }).interfaces[0]!.name;
    const before = (await attachments()).length;
    c.ns.delete();
    const del1 = await weft(env('DEL'), conf('1.0.0', { prevResult: add.json }));
    assert.equal(del1.code, 0, del1.stdout);
    const del2 = await weft(env('DEL'), conf('1.0.0'));
    assert.equal(del2.code, 0, del2.stdout);
    const del3 = await weft(env('DEL', { CNI_NETNS: '' }), conf('1.0.0'));
    assert.equal(del3.code, 0, del3.stdout);
    assert.equal((await attachments()).length, before - 1);
    assert.ok(!(await hostLinks()).includes(hostIf));
  });

  test('CHECK sees a deleted route; the state survives a daemon restart', async () => {
    const { c, env } = container('chk');
    const add = await weft(env('ADD'), conf('1.0.0'));
    assert.equal(add.code, 0, add.stdout);
    const prev = add.json;
    assert.equal((await weft(env('CHECK'), conf('1.0.0', { prevResult: prev }))).code, 0);
    await d.stop();
    const down = await weft(env('ADD'), conf('1.0.0'));
    assert.equal(down.json?.code, 11, 'daemon down: try again later');
    const st = await weft({ CNI_COMMAND: 'STATUS' }, conf('1.1.0'));
    assert.equal(st.json?.code, 50, 'STATUS: the plugin is not available');
    d = await d.restart();
    assert.equal(
      (await weft(env('CHECK'), conf('1.0.0', { prevResult: prev }))).code,
      0,
      'after the restart',
    );
    await b.exec(c, 'ip', ['route', 'del', 'default']);
    const drift = await weft(env('CHECK'), conf('1.0.0', { prevResult: prev }));
    assert.equal(drift.code, 1);
    assert.equal(drift.json?.code, 100);
    assert.match(`${drift.json?.msg} ${drift.json?.details}`, /route/);
    assert.equal((await weft(env('DEL'), conf('1.0.0', { prevResult: prev }))).code, 0);
  });

  test('GC removes the attachments the runtime no longer lists, and only those', async () => {
    const made = [container('g1'), container('g2'), container('g3')];
    for (const m of made) assert.equal((await weft(m.env('ADD'), conf('1.1.0'))).code, 0);
    const keep = made[0]!;
    const gc = await weft(
      { CNI_COMMAND: 'GC' },
      conf('1.1.0', { 'cni.dev/valid-attachments': [{ containerID: keep.id, ifname: 'eth0' }] }),
    );
    assert.equal(gc.code, 0, gc.stdout);
    const left = (await attachments()).map((a) => a.containerId);
    assert.ok(left.includes(keep.id));
    assert.ok(!left.includes(made[1]!.id) && !left.includes(made[2]!.id));
    assert.deepEqual(await b.ipJson(made[1]!.c, 'link', 'show', 'type', 'veth'), []);
    assert.ok(await b.ping(keep.c, `${SUBNET}.1`), 'the valid one still works');
    assert.equal((await weft(keep.env('DEL'), conf('1.1.0'))).code, 0);
  });

  test('bad input: the right code, a message, no trace, nothing half-made', async (t) => {
    const { c, env } = container('bad');
    const taken = container('taker');
    const pm = (port: number) => ({
      capabilities: { portMappings: true },
      runtimeConfig: { portMappings: [{ hostPort: port, containerPort: 80 }] },
    });
    assert.equal((await weft(taken.env('ADD'), conf('1.0.0', pm(18090)))).code, 0);
    const beforeLinks = await hostLinks();
    const beforeAtt = (await attachments()).length;
    const cases: [string, Record<string, string>, unknown, number][] = [
      ['malformed JSON', env('ADD'), '{"cniVersion": "1.0.0", ', 6],
      ['missing CNI_NETNS', { ...env('ADD'), CNI_NETNS: '' }, conf('1.0.0'), 4],
      ['unknown network', env('ADD'), conf('1.0.0', { network: 'nosuchnet' }), 7],
      ['unsupported version', env('ADD'), conf('0.2.0'), 1],
      [
        'netns that does not exist',
        env('ADD', { CNI_NETNS: `/run/netns/wt-${RUN_ID}-nope` }),
        conf('1.0.0'),
        3,
      ],
      ['port already published', env('ADD'), conf('1.0.0', pm(18090)), 7],
      ['IP outside the range', env('ADD', { CNI_ARGS: 'IP=192.168.200.9' }), conf('1.0.0'), 7],
      ['IP already taken', env('ADD', { CNI_ARGS: `IP=${SUBNET}.1` }), conf('1.0.0'), 7],
      ['unknown CNI_ARGS key', env('ADD', { CNI_ARGS: 'FOO=bar' }), conf('1.0.0'), 6],
      ['ipam section', env('ADD'), conf('1.0.0', { ipam: { type: 'host-local' } }), 2],
    ];
    for (const [what, e, cfg, code] of cases) {
      const r = await weft(e, cfg);
      assert.equal(r.code, 1, `${what}: exit status`);
      assert.equal(r.json?.code, code, `${what}: ${r.stdout}`);
      assert.equal(typeof r.json?.msg, 'string', what);
      assert.ok(typeof r.json?.cniVersion === 'string', what);
      assert.doesNotMatch(r.stdout, /\n\s+at |Error:/, `${what}: no stack trace`);
      t.diagnostic(`${what}: ${r.stdout.trim()}`);
    }
    assert.deepEqual(await hostLinks(), beforeLinks, 'no link left in the host namespace');
    assert.equal((await attachments()).length, beforeAtt, 'no attachment recorded');
    assert.deepEqual(await b.ipJson(c, 'link', 'show', 'type', 'veth'), [], 'nothing in the container');
    assert.equal((await weft(taken.env('DEL'), conf('1.0.0'))).code, 0);
  });
});

/** GET a URL from a namespace with curl (bounded); resolves to the body. */
async function fetchFrom(b: Bed, from: BedNs, url: string): Promise<string> {
  let last = '';
  for (let i = 0; i < 20; i++) {
    try {
      return (await b.exec(from, 'curl', ['-s', '--max-time', '3', url])).stdout;
    } catch (e) {
      last = String(e);
      await new Promise((r) => setTimeout(r, 150));
    }
  }
  throw new Error(`no answer from ${url}: ${last}`);
}
