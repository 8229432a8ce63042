/**
 * A throwaway etcd for tests: Debian's `etcd` (package etcd-server) started inside a namespace
 * of the test bed, with a temporary data dir, removed with the bed.
 *
 * It listens on 127.0.0.1:2379 of that namespace (for daemons started inside the bed) and on a
 * unix socket in its temp dir. The socket is what the test process uses: a path-bound unix
 * socket belongs to the filesystem, not to a network namespace, so the root-namespace test
 * process reaches it while the root namespace's own loopback is never touched (a TCP client
 * socket made inside a namespace would need a switched section, and gRPC connects lazily).
 */
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Bed, BedNs } from './bed.js';

export interface TestEtcd {
  /** For the test process: `unix:///tmp/…/etcd.sock:0`, a valid `--store` string. */
  readonly endpoint: string;
  /** For processes inside the bed namespace: `http://127.0.0.1:2379`. */
  readonly tcpEndpoint: string;
  readonly dataDir: string;
  /** Stop (SIGTERM, then SIGKILL) and start again on the same data: a store restart. */
  restart(): Promise<void>;
  /** Stop etcd and remove its data; idempotent (also run at the bed's cleanup). */
  stop(): Promise<void>;
}

const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

export const etcdInstalled = (): boolean => fs.existsSync('/usr/bin/etcd');

/** Start etcd in `bns` and wait (bounded) until it reports healthy. */
export async function startEtcd(bed: Bed, bns: BedNs): Promise<TestEtcd> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-etcd-'));
  const dataDir = path.join(dir, 'data');
  // etcd takes a unix listen URL's host part as a socket path relative to its working dir.
  const sock = path.join(dir, 'etcd.sock:0');
  let child: ChildProcess | undefined;
  let stopped = false;

  const start = async () => {
    const log = fs.openSync(path.join(dir, 'etcd.log'), 'a');
    try {
      child = bed.spawn(
        bns,
        'etcd',
        [
          '--name=weft-test',
          `--data-dir=${dataDir}`,
          '--listen-client-urls=http://127.0.0.1:2379,unix://etcd.sock:0',
          '--advertise-client-urls=http://127.0.0.1:2379',
          '--listen-peer-urls=http://127.0.0.1:2380',
          '--initial-advertise-peer-urls=http://127.0.0.1:2380',
          '--initial-cluster=weft-test=http://127.0.0.1:2380',
          // One member on loopback: short timers make it elect itself (and start) sooner, and
          // lower the minimum lease TTL (1.5 × election timeout) below the tests' 2 s.
          '--heartbeat-interval=50',
          '--election-timeout=500',
          '--logger=zap',
          '--log-level=warn',
        ],
        { cwd: dir, stdio: ['ignore', log, log] },
      );
    } finally {
      fs.closeSync(log);
    }
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (!(await healthy(sock))) {
      if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
        const tail = fs.readFileSync(path.join(dir, 'etcd.log'), 'utf8').split('\n').slice(-15).join('\n');
        throw new Error(`etcd did not become healthy (exit ${child.exitCode ?? child.signalCode}):\n${tail}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const kill = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), STOP_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  };

  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await kill();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  bed.onCleanup(stop);

  await start();
  return {
    endpoint: `unix://${sock}`,
    tcpEndpoint: 'http://127.0.0.1:2379',
    dataDir,
    async restart() {
      await kill();
      await start();
    },
    stop,
  };
}

/** GET /health over the unix socket: true once etcd answers {"health":"true"}. */
function healthy(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ socketPath, path: '/health', timeout: 1000 }, (res) => {
      let body = '';
      res.on('data', (d) => {
        body += d;
      });
      res.on('end', () => resolve(res.statusCode === 200 && body.includes('"health":"true"')));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}
