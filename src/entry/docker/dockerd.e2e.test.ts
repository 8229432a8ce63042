/**
 * The real client: Debian's dockerd 20.10 (`docker.io`, installed by scripts/setup.sh) uses
 * weft as its network and IPAM driver. dockerd and the weft daemon share a test "host"
 * namespace (dockerd moves the interfaces the plugin makes there); dockerd runs in a private
 * mount namespace with its own data-root, exec-root, pidfile, socket, vfs storage and cgroupfs,
 * a tmpfs over /run (so its plugin folder is the test's: /run/docker/plugins is a bind mount of
 * it, and nothing of dockerd's or containerd's lands in the machine's /run) and the test's
 * folder over /etc/docker (where it writes key.json). The image is busybox-static, imported.
 *
 * Asserted: `docker network create -d weft --ipam-driver weft` makes a weft bridge network; two
 * containers ping each other; `-p` reaches a container's busybox httpd from another namespace
 * under dockerd's FORWARD policy of DROP; the weft daemon restarts under running containers and
 * traffic goes on; dockerd and the weft daemon both restart and the network still works;
 * `docker rm` and `docker network rm` leave nothing in weft, the kernel or the IPAM state.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { Bed, type BedNs, isRoot, RUN_ID } from '../../../test/bed.js';
import { startDaemon, type TestDaemon } from '../../../test/daemon.js';
import type { AttachView, NetworkView } from '../../control/service.js';
import type { IpamFile } from './ipam.js';

const execFileP = promisify(execFile);
const DOCKER = '/usr/bin/docker'; // Debian's client; another `docker` may come first on PATH
const DOCKERD = '/usr/sbin/dockerd';
const HOST_IP = '198.51.100.2';
const OUTSIDE_IP = '198.51.100.1';
const SUBNET = '10.66.0.0/24';

const skip = !isRoot()
  ? 'needs root (kernel test)'
  : !fs.existsSync(DOCKERD) || !fs.existsSync(DOCKER)
    ? 'needs Debian’s docker.io (scripts/setup.sh installs it)'
    : false;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A bound on a wait that does not keep the process alive once the wait is over. */
const bound = (ms: number) => new Promise((r) => setTimeout(r, ms).unref());

/** Pids of processes whose command line mentions `text` (dockerd's containerd and shims name the test dir). */
function pidsMentioning(text: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(text)) out.push(Number(p));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Pids of processes inside the cgroups of these containers (cgroupfs: …/docker/<id>). */
function pidsOfContainers(ids: readonly string[]): number[] {
  if (ids.length === 0) return [];
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cg = fs.readFileSync(`/proc/${p}/cgroup`, 'utf8');
      if (ids.some((id) => cg.includes(`/docker/${id}`))) out.push(Number(p));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

async function killAndWait(pids: readonly number[], timeoutMs: number): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const deadline = Date.now() + timeoutMs;
  while (pids.some((p) => fs.existsSync(`/proc/${p}`)) && Date.now() < deadline) await sleep(50);
}

describe('dockerd 20.10 with weft as its network and IPAM driver', { skip }, () => {
  const b = new Bed();
  let host: BedNs;
  let outside: BedNs;
  let d: TestDaemon;
  let dir: string;
  let dockerd: ChildProcess | undefined;
  let dockerdLog: string;
  let netId = '';
  const containerIds: string[] = [];
  // What exists before, so that only what this test made is removed afterwards.
  const preexisting = {
    keyJson: fs.existsSync('/etc/docker/key.json'),
    runDocker: fs.existsSync('/run/docker'),
    runContainerd: fs.existsSync('/run/containerd'),
  };

  const docker = async (args: string[], timeoutMs = 60_000): Promise<string> => {
    try {
      const { stdout } = await execFileP(DOCKER, ['-H', `unix://${dir}/docker.sock`, ...args], {
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        env: { ...process.env, DOCKER_CONFIG: path.join(dir, 'cli') },
      });
      return stdout.trim();
    } catch (e) {
      const err = e as { stderr?: string; message: string };
      throw new Error(`docker ${args.join(' ')}: ${err.stderr?.trim() || err.message}`);
    }
  };
  /** `docker network create -d weft --ipam-driver weft ARGS…`; resolves to the network's id. */
  const createNet = (...args: string[]) =>
    docker(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', ...args]);
  /** `docker run -d --stop-timeout 1 --name NAME --network wnet ARGS…`; its id is kept for the cleanup. */
  const runOnWnet = async (name: string, ...args: string[]) => {
    containerIds.push(
      await docker(['run', '-d', '--stop-timeout', '1', '--name', name, '--network', 'wnet', ...args]),
    );
  };
  const curl = (url: string) =>
    b.exec(outside, 'curl', ['-s', '--max-time', '3', url]).then(
      (r) => r.stdout,
      () => '',
    );
  async function curlEventually(url: string, want: string): Promise<string> {
    let got = '';
    for (let i = 0; i < 40 && got !== want; i++) {
      got = await curl(url);
      if (got !== want) await sleep(150);
    }
    return got;
  }
  const ipOf = (name: string) =>
    docker(['inspect', '-f', '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}', name]);
  const attachments = () => d.api.request<AttachView[]>('GET', '/v1/attachments?owner=docker');

  async function startDockerd(): Promise<void> {
    const script = [
      'set -e',
      'mount -t tmpfs -o mode=755 tmpfs /run',
      'mkdir -p /run/docker/plugins',
      `mount --bind ${dir}/plugins /run/docker/plugins`,
      `mount --bind ${dir}/etc-docker /etc/docker`,
      `exec ${DOCKERD} --config-file ${dir}/daemon.json`,
    ].join('\n');
    const log = fs.openSync(dockerdLog, 'a');
    dockerd = b.spawn(host, 'unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], {
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (dockerd.exitCode !== null || dockerd.signalCode !== null) {
        throw new Error(`dockerd exited:\n${fs.readFileSync(dockerdLog, 'utf8').slice(-3000)}`);
      }
      try {
        await docker(['version', '--format', '{{.Server.Version}}'], 5000);
        return;
      } catch {
        if (Date.now() > deadline)
          throw new Error(`dockerd did not answer:\n${fs.readFileSync(dockerdLog, 'utf8').slice(-3000)}`);
        await sleep(200);
      }
    }
  }

  /** SIGTERM and wait (dockerd stops its containers and its containerd); then kill what is left. */
  async function stopDockerd(): Promise<void> {
    const c = dockerd;
    dockerd = undefined;
    if (c && c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await Promise.race([exited, bound(45_000)]);
    }
    await killAndWait([...pidsMentioning(`${dir}/dexec`), ...pidsOfContainers(containerIds)], 10_000);
  }

  before(async () => {
    host = b.ns('dock');
    outside = b.ns('outside');
    b.uplink(host, outside, { hostIp: HOST_IP, outsideIp: OUTSIDE_IP });

    dir = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-dockerd-`));
    dockerdLog = path.join(dir, 'dockerd.log');
    b.onCleanup(() => {
      fs.rmSync(dir, { recursive: true, force: true });
      // Only what this test may have made, and only if it was not there before.
      if (!preexisting.keyJson) fs.rmSync('/etc/docker/key.json', { force: true });
      for (const [p, was] of [
        ['/run/docker', preexisting.runDocker],
        ['/run/containerd', preexisting.runContainerd],
      ] as const) {
        if (!was) fs.rmSync(p, { recursive: true, force: true });
      }
    });
    for (const sub of ['plugins', 'etc-docker', 'cli', 'img/bin', 'img/www']) {
      fs.mkdirSync(path.join(dir, sub), { recursive: true });
    }
    fs.writeFileSync(
      path.join(dir, 'daemon.json'),
      JSON.stringify({
        'data-root': `${dir}/docker`,
        'exec-root': `${dir}/dexec`,
        pidfile: `${dir}/dockerd.pid`,
        hosts: [`unix://${dir}/docker.sock`],
        'storage-driver': 'vfs',
        'exec-opts': ['native.cgroupdriver=cgroupfs'],
        bip: '10.97.0.1/24',
      }),
    );
    // The image: busybox-static and its applets, a page for httpd.
    fs.copyFileSync('/bin/busybox', path.join(dir, 'img/bin/busybox'));
    fs.chmodSync(path.join(dir, 'img/bin/busybox'), 0o755);
    for (const l of ['sh', 'ip', 'ping', 'wget', 'httpd', 'hostname', 'cat', 'ls', 'nc', 'sleep']) {
      fs.symlinkSync('busybox', path.join(dir, 'img/bin', l));
    }
    fs.writeFileSync(path.join(dir, 'img/www/index.html'), 'hello from docker on weft\n');
    await execFileP('tar', ['-C', path.join(dir, 'img'), '-cf', path.join(dir, 'bb.tar'), '.']);

    // dockerd first, as on a fresh machine: it turns IP forwarding on and so sets the FORWARD
    // policy to DROP (the plugin is found lazily, when a network needs it).
    await startDockerd();
    b.onCleanup(() => stopDockerd());
    d = await startDaemon(b, host, {
      args: ['--default-subnet', '10.88.0.0/24', '--docker-plugin', `${dir}/plugins/weft.sock`],
    });
    b.onCleanup(() => d.stop());
    b.onCleanup(async () => {
      // Containers and the network go first, while the plugin answers.
      if (dockerd) {
        await docker(['rm', '-f', ...containerIds], 30_000).catch(() => undefined);
        if (netId) await docker(['network', 'rm', netId], 30_000).catch(() => undefined);
      }
    });
    await docker(['import', path.join(dir, 'bb.tar'), 'bb']);
  });
  after(() => b.cleanup());

  test('docker network create -d weft --ipam-driver weft makes a weft bridge network', async () => {
    netId = await createNet('--subnet', SUBNET, 'wnet');
    assert.match(netId, /^[0-9a-f]{64}$/);
    const n = await d.api.request<NetworkView>('GET', `/v1/networks/d-${netId.slice(0, 12)}`);
    assert.deepEqual(
      n.subnets.map((s) => [s.subnet, s.gateway]),
      [[SUBNET, '10.66.0.1']],
    );
    assert.equal(host.h.links.get(n.bridge).kind, 'bridge');
    const inspect = JSON.parse(await docker(['network', 'inspect', 'wnet']))[0];
    assert.equal(inspect.Driver, 'weft');
    assert.equal(inspect.IPAM.Driver, 'weft');
    assert.equal(inspect.IPAM.Config[0].Subnet, SUBNET);
  });

  test('a pool weft picks, an internal network with driver options; bad options refused', async () => {
    const id = await createNet('--internal', '-o', 'mtu=1400', 'inner');
    const n = await d.api.request<NetworkView>('GET', `/v1/networks/d-${id.slice(0, 12)}`);
    const picked = JSON.parse(await docker(['network', 'inspect', 'inner']))[0].IPAM.Config[0].Subnet;
    assert.equal(n.subnets[0]?.subnet, picked);
    assert.notEqual(picked, SUBNET);
    assert.equal(n.internal, true);
    assert.equal(n.mtu, 1400);
    await docker(['network', 'rm', 'inner']);
    await assert.rejects(createNet('-o', 'vlan=3', 'bad'), /driver option "vlan" is not known to weft/);
    await assert.rejects(createNet('--subnet', '10.66.0.0/16', 'overlapping'), /overlaps/);
    const nets = await d.api.request<NetworkView[]>('GET', '/v1/networks');
    assert.deepEqual(
      nets.filter((x) => x.name.startsWith('d-')).map((x) => x.subnets[0]?.subnet),
      [SUBNET],
    );
    const pools = JSON.parse(
      fs.readFileSync(path.join(d.dir, 'state', 'docker-ipam.json'), 'utf8'),
    ) as IpamFile;
    assert.deepEqual(
      pools.pools.map((p) => p.pool),
      [SUBNET],
    );
  });

  test('two containers ping each other; -p reaches httpd from another namespace under FORWARD DROP', async () => {
    await runOnWnet('web', '-p', '8080:80', 'bb', 'httpd', '-f', '-p', '80', '-h', '/www');
    await runOnWnet('client', 'bb', 'sleep', '3600');
    const webIp = await ipOf('web');
    const clientIp = await ipOf('client');
    assert.equal(webIp, '10.66.0.2');
    assert.equal(clientIp, '10.66.0.3');
    const atts = await attachments();
    assert.deepEqual(atts.map((a) => a.addresses[0]).sort(), ['10.66.0.2/24', '10.66.0.3/24']);
    assert.deepEqual(atts.find((a) => a.addresses[0] === '10.66.0.2/24')?.ports, [
      { proto: 'tcp', hostPort: 8080, containerPort: 80 },
    ]);
    // Inside the container: eth0 with the address, the default route through weft's gateway.
    const route = await docker(['exec', 'client', 'ip', 'route']);
    assert.match(route, /default via 10\.66\.0\.1 dev eth0/);
    await docker(['exec', 'client', 'ping', '-c', '2', '-W', '2', webIp]);
    await docker(['exec', 'web', 'ping', '-c', '1', '-W', '2', clientIp]);
    assert.equal(
      await curlEventually(`http://${HOST_IP}:8080/`, 'hello from docker on weft\n'),
      'hello from docker on weft\n',
    );
    const { stdout } = await b.exec(host, 'iptables', ['-S', 'FORWARD']);
    assert.match(stdout, /^-P FORWARD DROP$/m, 'dockerd set the FORWARD policy to DROP');
    assert.match(stdout, /DOCKER-USER/, 'dockerd’s own chains are there');
  });

  test('the weft daemon restarts under running containers: traffic goes on', async () => {
    await d.stop();
    d = await d.restart();
    await docker(['exec', 'client', 'ping', '-c', '1', '-W', '2', await ipOf('web')]);
    assert.equal(
      await curlEventually(`http://${HOST_IP}:8080/`, 'hello from docker on weft\n'),
      'hello from docker on weft\n',
    );
    assert.equal((await attachments()).length, 2);
  });

  test('dockerd and the weft daemon restart: the network still works', async () => {
    await stopDockerd();
    // dockerd stopped its containers: their endpoints were deleted through the plugin.
    assert.deepEqual(await attachments(), []);
    await d.stop();
    d = await d.restart();
    await startDockerd();
    assert.equal(JSON.parse(await docker(['network', 'inspect', 'wnet']))[0].Id, netId);
    await docker(['start', 'web', 'client']);
    const webIp = await ipOf('web');
    await docker(['exec', 'client', 'ping', '-c', '2', '-W', '2', webIp]);
    assert.equal(
      await curlEventually(`http://${HOST_IP}:8080/`, 'hello from docker on weft\n'),
      'hello from docker on weft\n',
    );
    // A new container gets an address nobody holds.
    containerIds.push(
      await docker(['run', '-d', '--name', 'third', '--network', 'wnet', 'bb', 'sleep', '3600']),
    );
    const ips = [webIp, await ipOf('client'), await ipOf('third')];
    assert.equal(new Set(ips).size, 3, ips.join(' '));
  });

  test('docker rm and docker network rm remove everything', async () => {
    const n = await d.api.request<NetworkView>('GET', `/v1/networks/d-${netId.slice(0, 12)}`);
    await docker(['rm', '-f', 'web', 'client', 'third']);
    assert.deepEqual(await attachments(), []);
    assert.equal(await curl(`http://${HOST_IP}:8080/`), '');
    await docker(['network', 'rm', 'wnet']);
    netId = '';
    assert.equal(host.h.links.find(n.bridge), undefined);
    assert.ok(!host.h.links.list().some((l) => l.kind === 'veth' && l.name !== 'eth0'));
    const nets = await d.api.request<NetworkView[]>('GET', '/v1/networks');
    assert.ok(!nets.some((x) => x.name.startsWith('d-')));
    const state = JSON.parse(
      fs.readFileSync(path.join(d.dir, 'state', 'docker-ipam.json'), 'utf8'),
    ) as IpamFile;
    assert.deepEqual(state.pools, []);
  });
});
