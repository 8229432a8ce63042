/**
 * Debian's podman 4.3 (CNI backend) with weft's CNI plugin: the real runtime calls the bundled
 * plugin, which asks a weft daemon in the test's "host" namespace. Everything podman keeps is in
 * a temp folder (storage root, runroot, tmpdir, runc's state, CONTAINERS_CONF, the CNI conf and
 * bin dirs), and podman runs in a private mount namespace of the test (pinned in that folder) with
 * its own /dev/shm (podman's lock file) and /var/lib (libcni's result cache
 * /var/lib/cni/results, the image blob cache): the machine's folders stay untouched. The
 * container namespaces podman makes appear under /run/netns, which stays shared so the daemon
 * can open them. Afterwards every container is removed, conmon and podman's cleanup processes
 * are waited for (killed if they linger), the mount namespace and the folder are removed.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { buildCniPlugin } from '../../../scripts/build-cni.js';
import { Bed, type BedNs, isRoot, RUN_ID } from '../../../test/bed.js';
import { startDaemon, type TestDaemon } from '../../../test/daemon.js';
import type { AttachView } from '../../control/service.js';

const execFileP = promisify(execFile);
const HOST_IP = '198.51.100.2';
const OUTSIDE_IP = '198.51.100.1';
const SUBNET = '10.62.0';
const TOOLS = [
  '/usr/bin/podman',
  '/usr/bin/conmon',
  '/usr/sbin/runc',
  '/usr/bin/busybox',
  '/usr/bin/nsenter',
];
const missing = TOOLS.filter((t) => !fs.existsSync(t) && !fs.existsSync(t.replace('/usr/bin/', '/bin/')));
const skip = !isRoot()
  ? 'needs root'
  : missing.length > 0
    ? `missing ${missing.join(' ')} (scripts/setup.sh installs them)`
    : false;

describe('podman runs containers on weft through the CNI plugin', { skip }, () => {
  const b = new Bed();
  let host: BedNs;
  let outside: BedNs;
  let d: TestDaemon;
  let T: string;
  let mntPin: string;
  let mntInode = 0;

  const podmanArgs = () => [
    '--root',
    path.join(T, 'storage'),
    '--runroot',
    path.join(T, 'runroot'),
    '--tmpdir',
    path.join(T, 'tmp'),
    '--storage-driver',
    'vfs',
  ];
  /** Run podman as a user would, in the test's host network namespace and private mount namespace. */
  const podman = async (args: string[], timeoutMs = 60_000) => {
    try {
      const { stdout, stderr } = await execFileP(
        'nsenter',
        [`--mount=${mntPin}`, `--net=${host.ns.path}`, 'podman', ...podmanArgs(), ...args],
        {
          env: { ...process.env, CONTAINERS_CONF: path.join(T, 'containers.conf') },
          timeout: timeoutMs,
          killSignal: 'SIGKILL',
        },
      );
      return { code: 0, stdout, stderr };
    } catch (e) {
      const err = e as { code?: number; stdout?: string; stderr?: string };
      return {
        code: typeof err.code === 'number' ? err.code : 1,
        stdout: err.stdout ?? '',
        stderr: err.stderr ?? '',
      };
    }
  };
  const ok = async (args: string[]) => {
    const r = await podman(args);
    assert.equal(r.code, 0, `podman ${args.join(' ')}: ${r.stderr}`);
    return r.stdout.trim();
  };
  /** `podman run --rm --network weftnet OPTS… bb ip -4 -o addr show eth0`: the container's address. */
  const eth0Addr = (...opts: string[]) =>
    ok([
      'run',
      '--rm',
      '--network',
      'weftnet',
      ...opts,
      'localhost/bb:latest',
      'ip',
      '-4',
      '-o',
      'addr',
      'show',
      'eth0',
    ]);
  const attachments = () => d.api.request<AttachView[]>('GET', '/v1/attachments?owner=cni');
  /** Processes whose mount namespace is the test's (podman, conmon, containers). */
  const inMountNs = (): number[] => {
    if (!mntInode) return [];
    const pids: number[] = [];
    for (const e of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      try {
        if (fs.statSync(`/proc/${e}/ns/mnt`).ino === mntInode) pids.push(Number(e));
      } catch {
        // gone meanwhile
      }
    }
    return pids;
  };
  const cniNetns = () => new Set(fs.readdirSync('/run/netns').filter((n) => n.startsWith('cni-')));
  let netnsBefore: Set<string>;

  before(async () => {
    T = fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-podman-`));
    b.onCleanup(() => fs.rmSync(T, { recursive: true, force: true }));
    netnsBefore = cniNetns();
    for (const dir of [
      'storage',
      'runroot',
      'tmp',
      'runc',
      'cni/net.d',
      'cni/data',
      'ns',
      'image/bin',
      'image/www',
    ])
      fs.mkdirSync(path.join(T, dir), { recursive: true });
    await buildCniPlugin(path.join(T, 'cni', 'bin', 'weft'));

    // The private mount namespace, pinned on a private bind mount inside T.
    const nsDir = path.join(T, 'ns');
    mntPin = path.join(nsDir, 'mnt');
    execFileSync('mount', ['--bind', nsDir, nsDir]);
    b.onCleanup(() => {
      execFileSync('umount', ['-l', nsDir]);
    });
    execFileSync('mount', ['--make-private', nsDir]);
    fs.writeFileSync(mntPin, '');
    // "unchanged": /run/netns stays shared with the machine (podman pins container namespaces
    // there and the daemon opens them); the other mounts here are private already.
    execFileSync('unshare', [`--mount=${mntPin}`, '--propagation', 'unchanged', 'true']);
    b.onCleanup(async () => {
      // Everything podman started ends before the namespace goes (bounded; then killed).
      for (let i = 0; i < 100 && inMountNs().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
      for (const pid of inMountNs()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {}
      }
      for (let i = 0; i < 20 && inMountNs().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
      execFileSync('umount', ['-l', mntPin]);
    });
    mntInode = Number(
      execFileSync('nsenter', [`--mount=${mntPin}`, 'stat', '-L', '-c', '%i', '/proc/self/ns/mnt'], {
        encoding: 'utf8',
      }).trim(),
    );
    execFileSync('nsenter', [
      `--mount=${mntPin}`,
      'sh',
      '-c',
      'mount -t tmpfs -o mode=1777 wt-shm /dev/shm && mount -t tmpfs -o mode=755 wt-varlib /var/lib',
    ]);

    // The image: busybox-static and a page to serve.
    const img = path.join(T, 'image');
    fs.copyFileSync(
      fs.existsSync('/bin/busybox') ? '/bin/busybox' : '/usr/bin/busybox',
      path.join(img, 'bin', 'busybox'),
    );
    fs.chmodSync(path.join(img, 'bin', 'busybox'), 0o755);
    for (const l of ['sh', 'ip', 'ping', 'wget', 'httpd', 'hostname', 'cat', 'ls', 'nc', 'sleep'])
      fs.symlinkSync('busybox', path.join(img, 'bin', l));
    fs.writeFileSync(path.join(img, 'www', 'index.html'), 'hello from podman on weft\n');
    execFileSync('tar', ['-C', img, '-cf', path.join(T, 'bb.tar'), '.']);

    // podman's configuration: the CNI backend with the test's folders, cgroupfs, runc (crun 1.8
    // refuses these machines' mixed cgroup layout), ulimits it may set without CAP_SYS_RESOURCE.
    const conf = [
      '[containers]',
      'default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]',
      '[network]',
      'network_backend = "cni"',
      `cni_plugin_dirs = ["${path.join(T, 'cni', 'bin')}", "/usr/lib/cni"]`,
      `network_config_dir = "${path.join(T, 'cni', 'net.d')}"`,
      '[engine]',
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      'runtime = "runc"',
      // runc through a wrapper that keeps its state in T (podman's own cleanup process does not
      // pass --runtime-flag on, and runc would make /run/runc).
      '[engine.runtimes]',
      `runc = ["${path.join(T, 'bin', 'runc')}"]`,
      '',
    ].join('\n');
    fs.mkdirSync(path.join(T, 'bin'));
    fs.writeFileSync(
      path.join(T, 'bin', 'runc'),
      `#!/bin/sh\nexec /usr/sbin/runc --root ${path.join(T, 'runc')} "$@"\n`,
      {
        mode: 0o755,
      },
    );
    fs.writeFileSync(path.join(T, 'containers.conf'), conf);

    // The host: a daemon, a network for podman, an "outside" namespace to reach published ports.
    host = b.ns('host');
    outside = b.ns('outside');
    b.uplink(host, outside, { hostIp: HOST_IP, outsideIp: OUTSIDE_IP });
    d = await startDaemon(b, host, { args: ['--upstream', OUTSIDE_IP, '--default-subnet', '10.60.0.0/24'] });
    b.onCleanup(() => d.stop());
    await d.api.request('POST', '/v1/networks', {
      name: 'weftnet',
      driver: 'bridge',
      subnets: [{ subnet: `${SUBNET}.0/24` }],
    });
    // podman 4.3's libcni speaks CNI up to 1.0.0.
    fs.writeFileSync(
      path.join(T, 'cni', 'net.d', 'weftnet.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'weftnet',
        plugins: [
          {
            type: 'weft',
            network: 'weftnet',
            socket: d.socket,
            dataDir: path.join(T, 'cni', 'data'),
            capabilities: { portMappings: true, ips: true, mac: true, dns: true, aliases: true },
          },
        ],
      }),
    );
    // Containers go before the daemon and the namespaces (registered last: runs first).
    b.onCleanup(async () => {
      await podman(['rm', '-af', '-t', '0'], 60_000);
    });
    await ok(['import', path.join(T, 'bb.tar'), 'localhost/bb:latest']);
  });
  after(() => b.cleanup());

  test('podman run --network weftnet: the container gets its address from weft', async () => {
    const out = await eth0Addr();
    assert.match(out, new RegExp(`inet ${SUBNET.replaceAll('.', '\\.')}\\.\\d+/24`));
    // --rm: the attachment went with the container.
    assert.deepEqual(await attachments(), []);
  });

  test('two containers ping each other; the daemon and libcni know them', async () => {
    const id1 = await ok([
      'run',
      '-d',
      '--name',
      'c1',
      '--network',
      'weftnet',
      'localhost/bb:latest',
      'sleep',
      '600',
    ]);
    await ok(['run', '-d', '--name', 'c2', '--network', 'weftnet', 'localhost/bb:latest', 'sleep', '600']);
    const ip1 = /inet ([\d.]+)\//.exec(
      await ok(['exec', 'c1', 'ip', '-4', '-o', 'addr', 'show', 'eth0']),
    )?.[1];
    assert.ok(ip1, 'c1 has an address');
    const views = await attachments();
    const v1 = views.find((a) => a.containerId === id1);
    assert.deepEqual(v1?.addresses, [`${ip1}/24`], 'the daemon holds the address podman sees');
    assert.equal(views.length, 2);
    const ping = await podman(['exec', 'c2', 'ping', '-c', '1', '-W', '3', ip1!]);
    assert.equal(ping.code, 0, ping.stdout + ping.stderr);
    // libcni cached the result where runtimes keep it (in the test's /var/lib).
    const cached = execFileSync('nsenter', [`--mount=${mntPin}`, 'ls', '/var/lib/cni/results'], {
      encoding: 'utf8',
    });
    assert.match(cached, new RegExp(`weftnet-${id1}-eth0`));
  });

  test('-p 8080:80 reaches a busybox httpd through weft’s port mapping', async () => {
    await ok([
      'run',
      '-d',
      '--name',
      'web',
      '--network',
      'weftnet',
      '-p',
      '8080:80',
      'localhost/bb:latest',
      'httpd',
      '-f',
      '-p',
      '80',
      '-h',
      '/www',
    ]);
    const v = (await attachments()).find((a) => a.ports.length > 0);
    assert.deepEqual(
      v?.ports.map((p) => `${p.hostPort}:${p.containerPort}/${p.proto}`),
      ['8080:80/tcp'],
    );
    let body = '';
    for (let i = 0; i < 20 && body === ''; i++) {
      try {
        body = (await b.exec(outside, 'curl', ['-s', '--max-time', '3', `http://${HOST_IP}:8080/`])).stdout;
      } catch {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    assert.equal(body, 'hello from podman on weft\n');
  });

  test('podman rm releases the address (and --ip can take it again)', async () => {
    const ip1 = /inet ([\d.]+)\//.exec(
      await ok(['exec', 'c1', 'ip', '-4', '-o', 'addr', 'show', 'eth0']),
    )?.[1];
    const before = (await attachments()).length;
    await ok(['rm', '-f', '-t', '0', 'c1']);
    const after = await attachments();
    assert.equal(after.length, before - 1);
    assert.ok(!after.some((a) => a.addresses.includes(`${ip1}/24`)), 'the address is free');
    // podman sends --ip as CNI_ARGS IP=…: the freed address is handed out again.
    const out = await eth0Addr('--ip', ip1!);
    assert.match(out, new RegExp(`inet ${ip1!.replaceAll('.', '\\.')}/24`));
    await ok(['rm', '-af', '-t', '0']);
    assert.deepEqual(await attachments(), []);
    assert.deepEqual(
      [...cniNetns()].filter((n) => !netnsBefore.has(n)),
      [],
      'podman removed its namespaces',
    );
  });
});
