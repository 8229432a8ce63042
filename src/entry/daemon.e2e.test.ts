/**
 * Single-host networking end to end: a weft daemon in a "host" namespace with an uplink to an
 * "outside" namespace that plays both a remote client and an internet server; containers run
 * busybox. Every assertion is a real packet or a file seen from inside a container.
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Bed, type BedNs, needsRoot } from '../../test/bed.js';
import { removeAllContainers, startDaemon, type TestDaemon } from '../../test/daemon.js';
import type { ContainerView, NetworkView } from '../control/service.js';
import { isWeftError } from '../lib/errors.js';

const HOST_IP = '198.51.100.2';
const OUTSIDE_IP = '198.51.100.1';

describe('weft daemon on one host', needsRoot, () => {
  const b = new Bed();
  let host: BedNs;
  let outside: BedNs;
  let d: TestDaemon;
  let www: string;

  const run = (body: Record<string, unknown>) => d.api.request<ContainerView>('POST', '/v1/containers', body);
  /** Run a command inside a container (through the CLI's exec, as a user would). */
  const exec = async (name: string, ...cmd: string[]) =>
    d.cli(['exec', name, '--', ...cmd], { timeoutMs: 20_000 });
  // curl, not busybox wget: the static busybox's wget crashes in name lookups on this platform.
  const fetch = (name: string, url: string) => exec(name, 'curl', '-s', '--max-time', '3', url);

  before(async () => {
    host = b.ns('host');
    outside = b.ns('outside');
    b.uplink(host, outside, { hostIp: HOST_IP, outsideIp: OUTSIDE_IP });
    // The "internet" server: answers with the address it sees the request come from.
    www = fs.mkdtempSync(path.join(fs.realpathSync('/tmp'), 'wt-www-'));
    b.onCleanup(() => fs.rmSync(www, { recursive: true, force: true }));
    fs.writeFileSync(path.join(www, 'index.html'), 'hello from web\n');
    b.spawn(outside, 'socat', ['-T5', 'TCP-LISTEN:8000,fork,reuseaddr', 'SYSTEM:echo peer=$SOCAT_PEERADDR']);
    d = await startDaemon(b, host, { args: ['--upstream', OUTSIDE_IP, '--default-subnet', '10.88.0.0/24'] });
    b.onCleanup(() => d.stop());
    b.onCleanup(() => removeAllContainers(d));
  });
  after(() => b.cleanup());

  test('the default network exists out of the box, with host and none', async () => {
    const nets = await d.api.request<NetworkView[]>('GET', '/v1/networks');
    const def = nets.find((n) => n.name === 'bridge');
    assert.equal(def?.bridge, 'weft0');
    assert.equal(def?.subnets[0]?.subnet, '10.88.0.0/24');
    assert.ok(nets.some((n) => n.name === 'host') && nets.some((n) => n.name === 'none'));
    assert.equal(host.h.links.get('weft0').kind, 'bridge');
    assert.equal(host.h.addrs.list({ dev: 'weft0' })[0]?.ipnet.len, 24);
  });

  test('containers on a user network reach each other by name and IP; files and hostname inside', async () => {
    const made = await d.cli(['network', 'create', '--subnet', '10.123.0.0/24', 'front']);
    assert.equal(made.code, 0, made.stderr);
    const web = await run({
      name: 'web',
      networks: ['front'],
      ip: '10.123.0.10',
      ports: ['8080:80'],
      hostname: 'webhost',
      aliases: ['www'],
      cmd: ['busybox', 'httpd', '-f', '-p', '80', '-h', www],
    });
    assert.equal(web.status, 'running');
    assert.deepEqual(web.networks[0]?.addresses, ['10.123.0.10/24']);
    const r = await d.cli([
      'run',
      '-d',
      '--name',
      'client',
      '--network',
      'front',
      '--add-host',
      'db.local:192.0.2.7',
      '--',
      'sleep',
      '600',
    ]);
    assert.equal(r.code, 0, r.stderr);

    assert.equal(
      (await fetch('client', 'http://web/')).stdout,
      'hello from web\n',
      'by name through the network DNS',
    );
    assert.equal((await fetch('client', 'http://www/')).stdout, 'hello from web\n', 'by --network-alias');
    assert.equal((await fetch('client', 'http://10.123.0.10/')).stdout, 'hello from web\n', 'by IP');
    assert.equal((await exec('client', 'ping', '-c', '1', '-W', '2', '10.123.0.10')).code, 0);

    assert.equal((await exec('web', 'hostname')).stdout.trim(), 'webhost');
    const hosts = (await exec('client', 'cat', '/etc/hosts')).stdout;
    assert.match(hosts, /^127\.0\.0\.1\tlocalhost$/m);
    assert.match(hosts, /^10\.123\.0\.\d+\tclient$/m);
    assert.match(hosts, /^192\.0\.2\.7\tdb\.local$/m);
    const resolv = (await exec('client', 'cat', '/etc/resolv.conf')).stdout;
    assert.match(resolv, /^nameserver 10\.123\.0\.1$/m);
    assert.match(resolv, /^options ndots:0$/m, "a peer's short name is asked as is first (Docker's)");
    assert.equal((await exec('client', 'cat', '/etc/hostname')).stdout.trim(), 'client');
    assert.notEqual(
      fs.readFileSync('/etc/hostname', 'utf8').trim(),
      'client',
      "the runner's own files are untouched",
    );
  });

  test('a published port is reached from outside, from the host, and by hairpin', async () => {
    const fromOutside = await b.exec(outside, 'curl', ['-s', '--max-time', '3', `http://${HOST_IP}:8080/`]);
    assert.equal(fromOutside.stdout, 'hello from web\n');
    const fromHost = await b.exec(host, 'curl', ['-s', '--max-time', '3', `http://${HOST_IP}:8080/`]);
    assert.equal(fromHost.stdout, 'hello from web\n');
    assert.equal(
      (await fetch('client', `http://${HOST_IP}:8080/`)).stdout,
      'hello from web\n',
      'hairpin from a neighbour',
    );
    assert.equal(
      (await fetch('web', `http://${HOST_IP}:8080/`)).stdout,
      'hello from web\n',
      'hairpin to itself',
    );
  });

  test('outbound traffic is masqueraded behind the host address', async () => {
    const r = await exec('client', 'busybox', 'nc', '-w', '3', OUTSIDE_IP, '8000');
    assert.match(r.stdout, new RegExp(`peer=${HOST_IP.replaceAll('.', '\\.')}`));
  });

  test('isolation between networks, icc=false, and --internal', async () => {
    await d.api.request('POST', '/v1/networks', { name: 'back', subnets: [{ subnet: '10.124.0.0/24' }] });
    await run({ name: 'other', networks: ['back'], cmd: ['sleep', '600'] });
    assert.notEqual(
      (await exec('other', 'ping', '-c', '1', '-W', '1', '10.123.0.10')).code,
      0,
      'another network cannot reach web',
    );

    await d.api.request('POST', '/v1/networks', { name: 'quiet', options: { icc: 'false' } });
    const q1 = await run({ name: 'q1', networks: ['quiet'], cmd: ['sleep', '600'] });
    await run({ name: 'q2', networks: ['quiet'], cmd: ['sleep', '600'] });
    const q1ip = q1.networks[0]!.addresses[0]!.split('/')[0]!;
    assert.notEqual(
      (await exec('q2', 'ping', '-c', '1', '-W', '1', q1ip)).code,
      0,
      'icc=false blocks neighbours',
    );
    assert.equal(
      (await exec('q2', 'busybox', 'nc', '-w', '3', OUTSIDE_IP, '8000')).code,
      0,
      'but the way out stays open',
    );

    await d.api.request('POST', '/v1/networks', { name: 'sealed', internal: true });
    await run({ name: 'sealed1', networks: ['sealed'], cmd: ['sleep', '600'] });
    assert.notEqual(
      (await exec('sealed1', 'busybox', 'nc', '-w', '2', OUTSIDE_IP, '8000')).code,
      0,
      'internal cannot leave',
    );
    const routes = (await exec('sealed1', 'ip', '-j', 'route')).stdout;
    assert.ok(!routes.includes('"default"'), 'no default route on an internal network');
  });

  test('connect and disconnect a second network', async () => {
    await d.cli(['network', 'connect', '--ip', '10.124.0.50', 'back', 'client']);
    const c = await d.api.request<ContainerView>('GET', '/v1/containers/client');
    assert.deepEqual(
      c.networks.map((n) => [n.network, n.ifname]),
      [
        ['front', 'eth0'],
        ['back', 'eth1'],
      ],
    );
    assert.equal((await exec('client', 'ping', '-c', '1', '-W', '2', '10.124.0.1')).code, 0);
    // Its /etc/hosts follows (rewritten in place, seen through the bind mount).
    assert.match((await exec('client', 'cat', '/etc/hosts')).stdout, /^10\.124\.0\.50\tclient$/m);
    await d.cli(['network', 'disconnect', 'back', 'client']);
    assert.doesNotMatch((await exec('client', 'cat', '/etc/hosts')).stdout, /10\.124\.0\.50/);

    // Leaving the network that held the default route: the remaining one takes it (Docker's).
    await run({ name: 'rover', networks: ['front'], cmd: ['sleep', '600'] });
    assert.equal((await d.cli(['network', 'connect', 'back', 'rover'])).code, 0);
    assert.equal((await d.cli(['network', 'disconnect', 'front', 'rover'])).code, 0);
    assert.match((await exec('rover', 'ip', 'route')).stdout, /^default via 10\.124\.0\.1 dev eth1/m);
    await d.api.request('DELETE', '/v1/containers/rover?force=1');
    assert.match((await exec('client', 'ip', '-br', 'link')).stdout, /^eth0/m);
    assert.doesNotMatch((await exec('client', 'ip', '-br', 'link')).stdout, /^eth1/m);
  });

  test('bad input: clear errors, exit codes, nothing changed', async () => {
    const before = JSON.stringify(await d.api.request('GET', '/v1/networks'));
    const links = host.h.links.list().length;
    const cases: [string[], RegExp, number][] = [
      [['network', 'create', '--subnet', '10.123.0.128/25', 'overlap'], /overlaps network front/, 4],
      [['network', 'create', '--subnet', '10.200.0.0/24', '--gateway', '10.201.0.1', 'gw'], /gateway/, 2],
      [['network', 'create', '--subnet', '10.200.0.5/24', 'hostbits'], /host bits/, 2],
      [['network', 'create', 'front'], /already exists/, 4],
      [
        ['network', 'create', '-d', 'macvlan', '-o', 'parent=nope0', '--subnet', '192.0.2.0/24', 'mv'],
        /nope0/,
        3,
      ],
      [['network', 'rm', 'front'], /active endpoints/, 5],
      [['network', 'rm', 'missing'], /not found/, 3],
      [['run', '-d', '--network', 'missing', '--', 'sleep', '1'], /network "missing" not found/, 3],
      [['run', '-d', '--name', 'web', '--', 'sleep', '1'], /already exists/, 4],
      [['run', '-d', '-p', '8080:80', '--', 'sleep', '1'], /already published by container "web"/, 4],
      [['run', '-d', '-p', '70000:80', '--', 'sleep', '1'], /out of range/, 2],
      [['run', '-d', '--network', 'front', '--ip', '10.123.0.10', '--', 'sleep', '1'], /10\.123\.0\.10/, 4],
      [['run', '-d', '--', 'no-such-command-xyz'], /no-such-command-xyz/, 3],
    ];
    for (const [args, re, code] of cases) {
      const r = await d.cli(args);
      assert.equal(r.code, code, `weft ${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re, `weft ${args.join(' ')}`);
    }
    assert.equal(JSON.stringify(await d.api.request('GET', '/v1/networks')), before, 'networks unchanged');
    assert.equal(host.h.links.list().length, links, 'no link left behind by failed requests');
    // The API's own bad input: 400 (INVALID) naming the field, never a 500 from deep inside.
    const api: [string, string, unknown, RegExp][] = [
      ['POST', '/v1/networks', { name: 'x', subnets: 'nope' }, /"subnets" must be a list/],
      ['POST', '/v1/networks', { name: ['x'] }, /"name" must be a string/],
      ['POST', '/v1/containers', { cmd: 'sleep' }, /"cmd" must be a list of strings/],
      ['POST', '/v1/containers', { cmd: ['true'], env: { A: 1 } }, /"env" must be an object of strings/],
      ['GET', '/v1/networks/%E0%A4', undefined, /percent-encoding/],
    ];
    for (const [method, url, body, re] of api) {
      await assert.rejects(d.api.request(method, url, body), (e) => {
        assert.ok(isWeftError(e, 'INVALID'), `${method} ${url}: ${String(e)}`);
        assert.match(e.message, re);
        return true;
      });
    }
    assert.equal(JSON.stringify(await d.api.request('GET', '/v1/networks')), before, 'still unchanged');
  });

  test("a container's end: its exit code, and its port and name freed (also by stop); ids by their start", async () => {
    const c = await run({
      name: 'ends',
      networks: ['front'],
      ports: ['9090:80'],
      cmd: ['sh', '-c', 'exit 3'],
    });
    let v = c;
    for (let i = 0; i < 100 && v.exitCode === undefined; i++) {
      await new Promise((r) => setTimeout(r, 50));
      v = await d.api.request<ContainerView>('GET', '/v1/containers/ends');
    }
    assert.equal(v.status, 'exited');
    assert.equal(v.exitCode, 3);
    // Its port is free again, and so is a stopped container's (killed: 128 + 9, or 143 for TERM).
    const p2 = await run({ name: 'holds', networks: ['front'], ports: ['9090:80'], cmd: ['sleep', '600'] });
    const dup = await d.cli(['run', '-d', '--network', 'front', '-p', '9090:80', '--', 'sleep', '1']);
    assert.equal(dup.code, 4, 'taken while it runs');
    const stop = await d.cli(['stop', p2.id.slice(0, 5)]);
    assert.equal(stop.code, 0, stop.stderr);
    const after = await run({
      name: 'takes',
      networks: ['front'],
      ports: ['9090:80'],
      cmd: ['sleep', '600'],
    });
    assert.equal(after.status, 'running');
    assert.doesNotMatch((await exec('client', 'getent', 'hosts', 'holds')).stdout, /10\.123/, 'no name');
    for (const n of ['ends', 'holds', 'takes']) await d.api.request('DELETE', `/v1/containers/${n}?force=1`);
  });

  test('stop -t: SIGKILL after t seconds; a slow stop holds no other request up', async () => {
    await run({ name: 'stubborn', networks: ['front'], cmd: ['sh', '-c', 'trap "" TERM; sleep 600'] });
    const started = Date.now();
    const stopping = d.cli(['stop', '-t', '2', 'stubborn']);
    await new Promise((r) => setTimeout(r, 200));
    const quick = await run({ name: 'meanwhile', networks: ['front'], cmd: ['sleep', '600'] });
    assert.equal(quick.status, 'running');
    assert.ok(Date.now() - started < 1500, 'another request went through while it stopped');
    const r = await stopping;
    assert.equal(r.code, 0, r.stderr);
    assert.ok(Date.now() - started >= 2000, 'SIGTERM was ignored: SIGKILL after 2 s');
    let v = await d.api.request<ContainerView>('GET', '/v1/containers/stubborn');
    for (let i = 0; i < 40 && v.exitCode === undefined; i++) {
      await new Promise((res) => setTimeout(res, 50));
      v = await d.api.request<ContainerView>('GET', '/v1/containers/stubborn');
    }
    assert.equal(v.exitCode, 137);
    assert.equal((await d.cli(['stop', '-t', 'x', 'meanwhile'])).code, 2);
    for (const n of ['stubborn', 'meanwhile']) await d.api.request('DELETE', `/v1/containers/${n}?force=1`);
  });

  test('a restarted daemon keeps containers reachable and their state', async () => {
    await d.stop();
    const fromOutside = await b.exec(outside, 'curl', ['-s', '--max-time', '3', `http://${HOST_IP}:8080/`]);
    assert.equal(fromOutside.stdout, 'hello from web\n', 'traffic flows while the daemon is down');
    d = await d.restart();
    const ps = await d.api.request<ContainerView[]>('GET', '/v1/containers');
    assert.equal(ps.find((c) => c.name === 'web')?.status, 'running');
    assert.equal((await fetch('client', 'http://web/')).stdout, 'hello from web\n');
    const again = await b.exec(outside, 'curl', ['-s', '--max-time', '3', `http://${HOST_IP}:8080/`]);
    assert.equal(again.stdout, 'hello from web\n');
  });

  test('the CLI as Docker users expect: run attached, exec, ps, logs -f', async () => {
    // Attached: the output only (no id), a character split between two writes whole, its exit code.
    const three = await d.cli([
      'run',
      '--name',
      'three',
      'sh',
      '-c',
      "printf 'h\\303'; sleep 0.5; printf '\\251 \\360\\237'; sleep 0.5; printf '\\230\\200\\n'; exit 3",
    ]);
    assert.equal(three.code, 3, three.stderr);
    assert.equal(three.stdout, 'hé 😀\n');
    const zero = await d.cli(['run', '--name', 'zero', '--', 'true']);
    assert.equal(zero.code, 0, zero.stderr);
    assert.equal(zero.stdout, '');
    const asJson = await d.cli(['run', '--json', '--name', 'js', '--', 'sh', '-c', 'echo out; exit 4']);
    assert.equal(asJson.code, 4, '--json does not detach');
    assert.match(asJson.stdout, /^\{[\s\S]*\}\nout\n$/);

    // exec: the command's options without --, the container's environment, a signal's status.
    const d1 = await d.cli([
      'run',
      '-d',
      '--name',
      'envy',
      '-e',
      'FOO=bar',
      '-p',
      '8100-8102:8100-8102',
      'sleep',
      '600',
    ]);
    assert.equal(d1.code, 0, d1.stderr);
    assert.match(d1.stdout, /^[0-9a-f]+\n$/, '-d prints the id');
    const env = await d.cli(['exec', 'envy', 'sh', '-c', 'echo $FOO $HOSTNAME $PATH; env']);
    assert.equal(env.code, 0, env.stderr);
    assert.match(
      env.stdout,
      /^bar envy \/usr\/local\/sbin:\/usr\/local\/bin:\/usr\/sbin:\/usr\/bin:\/sbin:\/bin\n/,
    );
    assert.doesNotMatch(env.stdout, /WEFT_SOCKET/, "not the client's environment");
    assert.equal((await d.cli(['exec', 'envy', 'ls', '-d', '/'])).stdout, '/\n');
    assert.equal((await d.cli(['exec', 'envy', 'sh', '-c', 'kill -TERM $$'])).code, 143);

    // ps: running ones only, unless -a; port ranges as ranges.
    const ps = await d.cli(['ps']);
    assert.match(ps.stdout, /^\S+\s+envy\s+running\s.*\*:8100-8102->8100-8102\/tcp/m);
    assert.doesNotMatch(ps.stdout, /\bthree\b/);
    const names = async (...a: string[]) =>
      (JSON.parse((await d.cli(['ps', '--json', ...a])).stdout) as ContainerView[]).map((c) => c.name);
    assert.ok(!(await names()).includes('three'));
    assert.ok((await names('-a')).includes('three'));
    assert.match((await d.cli(['ps', '-a'])).stdout, /\bthree\s+exited \(3\)/);

    // logs -f follows until the container ends; --tail all is everything.
    await d.cli(['run', '-d', '--name', 'talk', 'sh', '-c', 'echo one; sleep 1; echo two']);
    const f = await d.cli(['logs', '-f', '--tail', 'all', 'talk']);
    assert.equal(f.code, 0, f.stderr);
    assert.equal(f.stdout, 'one\ntwo\n');
    assert.equal((await d.cli(['logs', '-f', '-n', '1', 'talk'])).stdout, 'two\n');
    for (const n of ['three', 'zero', 'js', 'envy', 'talk']) {
      await d.api.request('DELETE', `/v1/containers/${n}?force=1`);
    }
  });

  test('removing everything leaves no veth, bridge, namespace, rule or file behind', async () => {
    await removeAllContainers(d);
    for (const n of ['front', 'back', 'quiet', 'sealed']) {
      const r = await d.cli(['network', 'rm', n]);
      assert.equal(r.code, 0, r.stderr);
    }
    const left = host.h.links.list().map((l) => l.name);
    assert.deepEqual(
      left.filter((n) => n.startsWith('veth') || n.startsWith('br-')),
      [],
    );
    assert.deepEqual(fs.readdirSync(path.join(d.runDir, 'netns')), []);
    assert.deepEqual(fs.readdirSync(path.join(d.runDir, 'containers')), []);
    const rules = (await b.exec(host, 'nft', ['list', 'table', 'inet', 'weft'])).stdout;
    assert.doesNotMatch(rules, /10\.12[34]\./, 'no rule of a removed network');
  });
});
