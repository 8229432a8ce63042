/**
 * The CNI commands against a fake daemon and an in-memory cache: codes, versions, idempotence,
 * GC's scope, CHECK's comparison, and that a failed ADD leaves nothing behind.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test } from 'node:test';
import type { AttachRequest, AttachView } from '../../control/service.js';
import { WeftError } from '../../lib/errors.js';
import type { Cache, CacheEntry } from './cache.js';
import type { Daemon } from './client.js';
import { CniCode, CniError } from './errors.js';
import { type PluginDeps, runCni } from './plugin.js';
import { decodeResult, SUPPORTED_VERSIONS } from './result.js';

class FakeDaemon implements Daemon {
  state: 'up' | 'down' | 'starting' = 'up';
  readonly views = new Map<string, AttachView>();
  readonly networks = new Map([
    ['bridge', { name: 'bridge', mtu: 1500, masquerade: true, subnet: '10.88.0' }],
    ['web', { name: 'web', mtu: 1400, masquerade: false, subnet: '10.77.0' }],
  ]);
  readonly calls: string[] = [];
  problems: string[] = [];
  next = 2;
  /** Runs between the daemon's attach and its answer (while the plugin waits). */
  afterAttach: (() => Promise<void>) | undefined;
  /** Attach, then answer with this error (a timeout after the daemon did the work). */
  failAfterAttach: WeftError | undefined;

  #up(): void {
    if (this.state === 'down')
      throw new WeftError('UNAVAILABLE', 'the weft daemon is not running', { details: { sent: false } });
    if (this.state === 'starting')
      throw new WeftError('UNAVAILABLE', 'the daemon is starting: restoring state');
  }
  async attach(req: AttachRequest): Promise<AttachView> {
    this.#up();
    this.calls.push(`attach ${req.containerId}`);
    const key = `${req.containerId}/${req.ifname}`;
    const found = this.views.get(key);
    if (found) return found;
    const n = this.networks.get(req.network ?? 'bridge');
    if (!n) throw new WeftError('NOT_FOUND', `no network "${req.network}"`);
    const ip = req.ip ?? `${n.subnet}.${this.next++}`;
    if (!ip.startsWith(`${n.subnet}.`)) throw new WeftError('INVALID', `${ip} is outside ${n.subnet}.0/24`);
    for (const v of this.views.values()) {
      if (v.addresses.includes(`${ip}/24`)) throw new WeftError('CONFLICT', `${ip} is taken`);
      for (const p of req.ports ?? [])
        if (v.ports.some((q) => p.startsWith(`${q.hostPort}:`)))
          throw new WeftError('CONFLICT', `port ${p} is taken`);
    }
    const v: AttachView = {
      owner: 'cni',
      containerId: req.containerId,
      ifname: req.ifname,
      container: `cni-${req.containerId.slice(0, 12)}`,
      netns: req.netns ?? null,
      network: n.name,
      networkId: `id-${n.name}`,
      bridge: 'weft0',
      hostIfname: `veth${this.next}`,
      hostMac: 'aa:aa:aa:aa:aa:aa',
      mac: req.mac ?? '02:42:0a:58:00:02',
      mtu: n.mtu,
      addresses: [`${ip}/24`],
      gateways: [`${n.subnet}.1`],
      routes: [{ dst: '0.0.0.0/0', gw: `${n.subnet}.1` }],
      dns: { nameservers: [`${n.subnet}.1`] },
      ports: (req.ports ?? []).map((p) => ({
        proto: 'tcp',
        hostPort: Number(p.split(':')[0]),
        containerPort: 80,
      })),
    };
    this.views.set(key, v);
    await this.afterAttach?.();
    if (this.failAfterAttach) throw this.failAfterAttach;
    return v;
  }
  async detach(_owner: string, containerId: string, ifname: string): Promise<{ removed: number }> {
    this.#up();
    this.calls.push(`detach ${containerId}`);
    return { removed: this.views.delete(`${containerId}/${ifname}`) ? 1 : 0 };
  }
  async check(_owner: string, containerId: string, ifname: string): Promise<AttachView> {
    this.#up();
    const v = this.views.get(`${containerId}/${ifname}`);
    if (!v) throw new WeftError('NOT_FOUND', `no attachment cni/${containerId}/${ifname}`);
    if (this.problems.length > 0)
      throw new WeftError('CONFLICT', this.problems.join('; '), { details: { problems: this.problems } });
    return v;
  }
  async attachments(): Promise<AttachView[]> {
    this.#up();
    return [...this.views.values()];
  }
  async ready(): Promise<void> {
    this.#up();
  }
  async network(name: string) {
    this.#up();
    const n = this.networks.get(name);
    if (!n) throw new WeftError('NOT_FOUND', `no network "${name}"`);
    return n;
  }
}

class MemCache implements Cache {
  readonly m = new Map<string, CacheEntry>();
  failWrites = false;
  /** Fail only the write that completes a record (after the daemon's attach). */
  failCompletion = false;
  write(e: CacheEntry): void {
    if (this.failWrites || (this.failCompletion && !e.pending))
      throw new CniError(CniCode.IOFailure, 'cannot write the result cache: disk full');
    this.m.set(`${e.name}/${e.containerId}/${e.ifname}`, e);
  }
  read(name: string, c: string, i: string) {
    return this.m.get(`${name}/${c}/${i}`);
  }
  remove(name: string, c: string, i: string): void {
    this.m.delete(`${name}/${c}/${i}`);
  }
  list(name: string): CacheEntry[] {
    return [...this.m.values()].filter((e) => e.name === name);
  }
  owners(c: string, i: string): string[] {
    return [...this.m.values()].filter((e) => e.containerId === c && e.ifname === i).map((e) => e.name);
  }
}

function setup() {
  const daemon = new FakeDaemon();
  const cache = new MemCache();
  const namespaces = new Set(['/run/netns/c1', '/run/netns/c2', '/run/netns/c3']);
  const run = async (env: Record<string, string>, conf: Record<string, unknown> | string) => {
    const deps: PluginDeps = {
      env: { CNI_PATH: '/opt/cni/bin', CNI_IFNAME: 'eth0', ...env },
      daemon: () => daemon,
      cache: () => cache,
      netnsState: (p) => (namespaces.has(p) ? 'netns' : p === '/etc/hosts' ? 'other' : 'missing'),
    };
    const out = await runCni(typeof conf === 'string' ? conf : JSON.stringify(conf), deps);
    const parsed = out.stdout ? (JSON.parse(out.stdout) as Record<string, unknown>) : undefined;
    return { ...out, json: parsed };
  };
  return { daemon, cache, namespaces, run };
}
const base = (v = '1.1.0', o: Record<string, unknown> = {}) => ({
  cniVersion: v,
  name: 'net1',
  type: 'weft',
  ...o,
});
const add = (id: string, netns = '/run/netns/c1') => ({
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: id,
  CNI_NETNS: netns,
});

describe('CNI plugin commands (fake daemon)', () => {
  test('VERSION answers every supported version, in the version asked', async () => {
    const { run } = setup();
    const r = await run({ CNI_COMMAND: 'VERSION' }, { cniVersion: '0.4.0' });
    assert.equal(r.exitCode, 0);
    assert.deepEqual(r.json, { cniVersion: '0.4.0', supportedVersions: [...SUPPORTED_VERSIONS] });
    const empty = await run({ CNI_COMMAND: 'VERSION' }, '');
    assert.equal(empty.json?.cniVersion, '1.1.0');
  });

  for (const v of SUPPORTED_VERSIONS) {
    test(`ADD in ${v}: a well-formed result pointing at the container interface`, async () => {
      const { run, cache } = setup();
      const r = await run(add('c1'), base(v));
      assert.equal(r.exitCode, 0, r.stdout);
      assert.equal(r.json?.cniVersion, v);
      const res = decodeResult(r.json, v);
      assert.equal(res.interfaces.length, 2);
      assert.equal(res.interfaces[1]?.name, 'eth0');
      assert.equal(res.interfaces[1]?.sandbox, '/run/netns/c1');
      assert.equal(res.interfaces[0]?.sandbox, undefined);
      assert.deepEqual(res.ips, [{ address: '10.88.0.2/24', gateway: '10.88.0.1', interface: 1 }]);
      assert.deepEqual(res.routes, [{ dst: '0.0.0.0/0', gw: '10.88.0.1' }]);
      assert.deepEqual(res.dns, { nameservers: ['10.88.0.1'] });
      assert.equal(cache.read('net1', 'c1', 'eth0')?.network, 'bridge');
    });
  }

  test('ADD passes runtimeConfig and CNI_ARGS to the daemon', async () => {
    const { run, daemon } = setup();
    const r = await run(
      { ...add('c1'), CNI_ARGS: 'IgnoreUnknown=1;IP=10.88.0.50;MAC=02:00:00:00:00:50;K8S_POD_NAME=p' },
      base('1.0.0', {
        runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] },
      }),
    );
    assert.equal(r.exitCode, 0, r.stdout);
    const v = daemon.views.get('c1/eth0')!;
    assert.deepEqual(v.addresses, ['10.88.0.50/24']);
    assert.equal(v.mac, '02:00:00:00:00:50');
    assert.equal(v.ports[0]?.hostPort, 8080);
  });

  test('ADD errors: daemon down 11, unknown network 7, IP outside 7, port taken 7, no netns 3', async () => {
    const { run, daemon } = setup();
    daemon.state = 'down';
    assert.equal((await run(add('c1'), base())).json?.code, 11);
    daemon.state = 'up';
    const unknown = await run(add('c1'), base('1.1.0', { network: 'nope' }));
    assert.equal(unknown.exitCode, 1);
    assert.equal(unknown.json?.code, 7);
    assert.equal(unknown.json?.cniVersion, '1.1.0');
    assert.equal((await run({ ...add('c1'), CNI_ARGS: 'IP=192.168.9.9' }, base())).json?.code, 7);
    const pm = { runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80 }] } };
    assert.equal((await run(add('c1'), base('1.0.0', pm))).exitCode, 0);
    assert.equal((await run(add('c2', '/run/netns/c2'), base('1.0.0', pm))).json?.code, 7);
    assert.equal((await run(add('c3', '/run/netns/gone'), base())).json?.code, 3);
    assert.equal((await run(add('c3', '/etc/hosts'), base())).json?.code, 4);
    assert.deepEqual([...daemon.views.keys()], ['c1/eth0']);
  });

  test('ipMasq and mtu must agree with the weft network', async () => {
    const { run, daemon } = setup();
    assert.equal(
      (await run(add('c1'), base('1.1.0', { network: 'web', mtu: 1400, ipMasq: false }))).exitCode,
      0,
    );
    const r = await run(add('c2', '/run/netns/c2'), base('1.1.0', { network: 'web', ipMasq: true }));
    assert.equal(r.json?.code, 7);
    assert.match(String(r.json?.msg), /masquerade off/);
    assert.equal(daemon.views.has('c2/eth0'), false);
  });

  test('a failed cache write undoes the attachment (nothing half-made)', async () => {
    const { run, daemon, cache } = setup();
    cache.failWrites = true;
    const r = await run(add('c1'), base());
    assert.equal(r.json?.code, 5);
    assert.equal(daemon.views.size, 0);
    assert.deepEqual(daemon.calls, [], 'no record, no attach');
    cache.failWrites = false;
    cache.failCompletion = true;
    assert.equal((await run(add('c1'), base())).json?.code, 5);
    assert.equal(daemon.views.size, 0);
    assert.equal(cache.m.size, 0);
    // The attachment cannot be undone either: its pending record keeps it owned.
    const detach = daemon.detach.bind(daemon);
    daemon.detach = async () => {
      throw new WeftError('BUSY', 'the daemon is busy');
    };
    assert.equal((await run(add('c1'), base())).json?.code, 5);
    assert.equal(cache.read('net1', 'c1', 'eth0')?.pending, true);
    daemon.detach = detach;
  });

  test('ADD again for the same container answers the same; a stale netns is replaced', async () => {
    const { run, daemon } = setup();
    const a = await run(add('c1'), base());
    const b = await run(add('c1'), base());
    assert.deepEqual(a.json, b.json);
    const c = await run(add('c1', '/run/netns/c2'), base());
    assert.equal(c.exitCode, 0);
    assert.equal(daemon.views.get('c1/eth0')?.netns, '/run/netns/c2');
  });

  test('DEL is idempotent, also without a netns; daemon down is 11', async () => {
    const { run, daemon, cache } = setup();
    await run(add('c1'), base());
    const del = { CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'c1' };
    assert.equal((await run(del, base())).exitCode, 0);
    assert.equal((await run(del, base())).exitCode, 0);
    assert.equal((await run({ ...del, CNI_NETNS: '/run/netns/gone' }, base())).exitCode, 0);
    assert.equal(daemon.views.size, 0);
    assert.equal(cache.m.size, 0);
    daemon.state = 'down';
    assert.equal((await run(del, base())).json?.code, 11);
  });

  test('DEL reads only what it needs: cleanup after an ADD refused for its config succeeds', async () => {
    const { run, daemon, cache } = setup();
    const sctp = {
      runtimeConfig: { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'sctp' }] },
    };
    assert.equal((await run(add('c1'), base('1.0.0', sctp))).json?.code, 7, 'ADD refuses sctp');
    assert.equal((await run(add('c2', '/run/netns/c2'), base('1.0.0'))).exitCode, 0);
    const del = (id: string) => ({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: id });
    for (const extra of [
      sctp,
      { runtimeConfig: { portMappings: [{ hostPort: 0, containerPort: 80 }] } },
      { runtimeConfig: [] },
      { runtimeConfig: { ips: '10.0.0.1', aliases: 'x' } },
      { prevResult: { ips: [{ address: 'x' }] } },
      { prevResult: 'garbage' },
      { mtu: 'x' },
      { ipMasq: 'yes' },
      { args: { cni: { ips: 5, mac: 7 } } },
      { ipam: { type: 'host-local' } },
      { network: 3 },
    ]) {
      daemon.calls.length = 0;
      const r = await run(del('c1'), base('1.0.0', extra));
      assert.equal(r.exitCode, 0, `${JSON.stringify(extra)}: ${r.stdout}`);
      assert.equal(r.stdout, '');
      assert.deepEqual(daemon.calls, ['detach c1'], JSON.stringify(extra));
    }
    assert.equal((await run({ ...del('c1'), CNI_ARGS: 'BOGUS=1;IP=nope' }, base('1.0.0'))).exitCode, 0);
    // An attachment that exists goes, whatever the rest of the config says.
    const r = await run(del('c2'), base('1.0.0', { ...sctp, mtu: 'x', prevResult: 'garbage' }));
    assert.equal(r.exitCode, 0, r.stdout);
    assert.equal(daemon.views.size, 0);
    assert.equal(cache.m.size, 0);
    // What DEL does need is still checked.
    assert.equal((await run(del('c1'), '{not json')).json?.code, 6);
    assert.equal((await run(del('c1'), { name: 'net1', type: 'weft' })).json?.code, 1);
    assert.equal((await run(del('c1'), { cniVersion: '1.0.0', type: 'weft' })).json?.code, 7);
    assert.equal((await run(del('c1'), base('1.0.0', { socket: 'rel.sock' }))).json?.code, 7);
    assert.equal((await run(del('c1'), base('1.0.0', { dataDir: 3 }))).json?.code, 7);
  });

  test('CHECK: versions before 0.4.0 refused (1), needs prevResult (7), drift is 100, unknown is 3', async () => {
    const { run, daemon } = setup();
    const r = await run(add('c1'), base('1.0.0'));
    const check = { ...add('c1'), CNI_COMMAND: 'CHECK' };
    assert.equal((await run(check, base('1.0.0', { prevResult: r.json }))).exitCode, 0);
    assert.equal((await run(check, base('0.3.1', { prevResult: r.json }))).json?.code, 1);
    assert.equal((await run(check, base('1.0.0'))).json?.code, 7);
    daemon.problems = ['default route via 10.88.0.1 missing'];
    const drift = await run(check, base('1.0.0', { prevResult: r.json }));
    assert.equal(drift.json?.code, 100);
    assert.match(String(drift.json?.details), /default route/);
    daemon.problems = [];
    // The prevResult says another address than the daemon has.
    const other = JSON.parse(JSON.stringify(r.json)) as { ips: { address: string }[] };
    other.ips[0]!.address = '10.88.0.99/24';
    assert.equal((await run(check, base('1.0.0', { prevResult: other }))).json?.code, 100);
    assert.equal(
      (await run({ ...check, CNI_CONTAINERID: 'zz' }, base('1.0.0', { prevResult: r.json }))).json?.code,
      3,
    );
  });

  test('STATUS: 1.1.0 only; daemon down, starting or without the network: 50', async () => {
    const { run, daemon } = setup();
    const st = { CNI_COMMAND: 'STATUS' };
    assert.equal((await run(st, base())).exitCode, 0);
    assert.equal((await run(st, base('1.0.0'))).json?.code, 1);
    assert.equal((await run(st, base('1.1.0', { network: 'nope' }))).json?.code, 50);
    daemon.state = 'starting';
    assert.equal((await run(st, base())).json?.code, 50);
    daemon.state = 'down';
    const down = await run(st, base());
    assert.equal(down.exitCode, 1);
    assert.equal(down.json?.code, 50);
    assert.match(String(down.json?.msg), /not running/);
  });

  test('GC removes what is not valid, on its own network and CNI network only', async () => {
    const { run, daemon, cache } = setup();
    await run(add('keep'), base());
    await run(add('stale', '/run/netns/c2'), base());
    await run(add('otherweb', '/run/netns/c3'), base('1.1.0', { network: 'web' }));
    await run(add('othercni', '/run/netns/c3'), { ...base(), name: 'net2' });
    const gc = await run(
      { CNI_COMMAND: 'GC' },
      base('1.1.0', { 'cni.dev/valid-attachments': [{ containerID: 'keep', ifname: 'eth0' }] }),
    );
    assert.equal(gc.exitCode, 0, gc.stdout);
    assert.deepEqual([...daemon.views.keys()].sort(), ['keep/eth0', 'othercni/eth0', 'otherweb/eth0']);
    assert.equal(cache.read('net1', 'stale', 'eth0'), undefined);
    assert.equal((await run({ CNI_COMMAND: 'GC' }, base('1.0.0'))).json?.code, 1);
  });

  test('ADD records its attachment (pending) before the attach: GC of another network leaves it', async () => {
    const { run, daemon, cache } = setup();
    let during: CacheEntry | undefined;
    let gc: Awaited<ReturnType<typeof run>> | undefined;
    daemon.afterAttach = async () => {
      daemon.afterAttach = undefined;
      during = cache.read('net1', 'c1', 'eth0');
      // Another CNI network on the same weft network collects its garbage meanwhile.
      gc = await run({ CNI_COMMAND: 'GC' }, { ...base(), name: 'net2' });
    };
    const r = await run(add('c1'), base());
    assert.equal(r.exitCode, 0, r.stdout);
    assert.equal(during?.pending, true);
    assert.equal(during?.name, 'net1');
    assert.equal(gc?.exitCode, 0, gc?.stdout);
    assert.ok(daemon.views.has('c1/eth0'), 'the other network left it');
    const done = cache.read('net1', 'c1', 'eth0');
    assert.equal(done?.pending, undefined);
    assert.equal(done?.network, 'bridge');
    assert.ok(done?.result);
  });

  test('GC takes only attachments with a record of its own network, pending ones too', async () => {
    const { run, daemon, cache } = setup();
    // No record: made by an older plugin (an ADD still running, or killed), or by another dataDir.
    await daemon.attach({ owner: 'cni', containerId: 'norecord', netns: '/run/netns/c1', ifname: 'eth0' });
    // An ADD of net1 killed between the attach and the completed record.
    await daemon.attach({ owner: 'cni', containerId: 'killed', netns: '/run/netns/c2', ifname: 'eth0' });
    cache.write({
      kind: 'weft-cni-result',
      name: 'net1',
      network: 'bridge',
      containerId: 'killed',
      ifname: 'eth0',
      netns: '/run/netns/c2',
      cniVersion: '1.1.0',
      pending: true,
      result: null,
      created: new Date().toISOString(),
    });
    const gc = { CNI_COMMAND: 'GC' };
    assert.equal((await run(gc, { ...base(), name: 'net2' })).exitCode, 0);
    assert.deepEqual([...daemon.views.keys()].sort(), ['killed/eth0', 'norecord/eth0']);
    assert.equal((await run(gc, base())).exitCode, 0);
    assert.deepEqual([...daemon.views.keys()], ['norecord/eth0']);
    assert.equal(cache.m.size, 0);
  });

  test('a failed ADD removes its pending record, unless the daemon may have attached', async () => {
    const { run, daemon, cache } = setup();
    assert.equal((await run(add('c1'), base('1.1.0', { network: 'nope' }))).json?.code, 7);
    daemon.state = 'down';
    assert.equal((await run(add('c1'), base())).json?.code, 11);
    daemon.state = 'up';
    assert.equal(cache.m.size, 0);
    // The daemon attached but its answer never came: the record stays, so DEL or GC finds it.
    daemon.failAfterAttach = new WeftError('TIMEOUT', 'the weft daemon did not answer', {
      details: { sent: true },
    });
    assert.equal((await run(add('c2', '/run/netns/c2'), base())).json?.code, 11);
    daemon.failAfterAttach = undefined;
    assert.equal(cache.read('net1', 'c2', 'eth0')?.pending, true);
    assert.equal((await run({ CNI_COMMAND: 'GC' }, base())).exitCode, 0);
    assert.equal(daemon.views.size, 0);
    assert.equal(cache.m.size, 0);
    // A record that was there before a failed ADD is not the failed ADD's to remove.
    await run(add('c3', '/run/netns/c3'), base());
    daemon.state = 'down';
    await run(add('c3', '/run/netns/c3'), base());
    assert.equal(cache.read('net1', 'c3', 'eth0')?.pending, undefined);
    assert.ok(cache.read('net1', 'c3', 'eth0'));
  });

  test('a GC whose detach fails keeps the record, so the next GC still owns the attachment', async () => {
    const { run, daemon, cache } = setup();
    await run(add('stale'), base());
    const detach = daemon.detach.bind(daemon);
    daemon.detach = async () => {
      throw new WeftError('BUSY', 'the daemon is busy');
    };
    assert.equal((await run({ CNI_COMMAND: 'GC' }, base())).json?.code, 11);
    assert.ok(cache.read('net1', 'stale', 'eth0'));
    daemon.detach = detach;
    assert.equal((await run({ CNI_COMMAND: 'GC' }, base())).exitCode, 0);
    assert.equal(daemon.views.size, 0);
  });

  test('bad input never reaches the daemon', async () => {
    const { run, daemon } = setup();
    const cases: [Record<string, string>, string | Record<string, unknown>, number][] = [
      [add('c1'), '{not json', 6],
      [add('c1'), base('9.9.9'), 1],
      [{ CNI_COMMAND: 'ADD' }, base(), 4],
      [add('c1'), base('1.1.0', { ipam: { type: 'host-local' } }), 2],
      [{ ...add('c1'), CNI_ARGS: 'BOGUS=1' }, base(), 6],
    ];
    for (const [env, conf, c] of cases) {
      const r = await run(env, conf);
      assert.equal(r.exitCode, 1);
      assert.equal(r.json?.code, c, JSON.stringify([env, conf]));
      assert.equal(typeof r.json?.msg, 'string');
      assert.doesNotMatch(r.stdout, /\n\s+at /);
    }
    assert.deepEqual(daemon.calls, []);
  });
});

describe('the plugin executable', () => {
  test('without CNI_COMMAND: the versions on stderr, exit 0, stdin never read', async () => {
    const main = new URL('./main.ts', import.meta.url).pathname;
    const env = { ...process.env };
    delete env.CNI_COMMAND;
    const child = spawn(process.execPath, ['--import', 'tsx', main], {
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => {
      stdout += c.toString();
    });
    child.stderr.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    // stdin stays open: a plugin that waits for it never exits.
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
      child.on('close', (c, s) => resolve([c, s])),
    );
    clearTimeout(timer);
    child.stdin.destroy();
    assert.equal(signal, null, 'it exited on its own');
    assert.equal(code, 0, stderr);
    assert.equal(stdout, '');
    assert.match(stderr, /CNI protocol versions supported: 0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0, 1\.1\.0/);
  });
});
