/**
 * A weft daemon inside a test-bed namespace: its state and run dirs in a temp folder named with
 * the run id, started as a child process inside the namespace (the daemon owns that namespace's
 * networking as it would own a machine's), stopped by pid at cleanup.
 */
import { type ChildProcess, execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { ApiClient } from '../src/entry/client.js';
import { type Bed, type BedNs, RUN_ID } from './bed.js';

const execFileP = promisify(execFile);
const CLI = new URL('../src/entry/cli.ts', import.meta.url).pathname;

export interface TestDaemon {
  readonly dir: string;
  readonly socket: string;
  readonly runDir: string;
  readonly api: ApiClient;
  readonly child: ChildProcess;
  /** Run the weft CLI against this daemon (from the test runner's namespace, as a user would). */
  cli(
    args: string[],
    opts?: { timeoutMs?: number },
  ): Promise<{ stdout: string; stderr: string; code: number }>;
  /** SIGTERM and wait (the graceful path). */
  stop(): Promise<void>;
  /** Start again on the same state (after stop or a kill). */
  restart(): Promise<TestDaemon>;
}

export async function startDaemon(
  b: Bed,
  host: BedNs,
  opts: { args?: string[]; dir?: string } = {},
): Promise<TestDaemon> {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), `wt-${RUN_ID}-daemon-`));
  if (!opts.dir) b.onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  const socket = path.join(dir, 'run', 'weft.sock');
  const runDir = path.join(dir, 'run');
  const logFile = path.join(dir, 'daemon.log');
  const log = fs.openSync(logFile, 'a');
  const args = [
    '--import',
    'tsx',
    CLI,
    'daemon',
    '--state-dir',
    path.join(dir, 'state'),
    '--run-dir',
    runDir,
    '--socket',
    socket,
    ...(opts.args ?? []),
  ];
  const child = b.spawn(host, process.execPath, args, { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const api = new ApiClient(socket, 60_000);
  // Wait (bounded) for the API to say ready.
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) {
      throw new Error(
        `the daemon exited (${child.exitCode}):\n${fs.readFileSync(logFile, 'utf8').slice(-3000)}`,
      );
    }
    try {
      await api.request('GET', '/readyz');
      break;
    } catch {
      if (Date.now() > deadline)
        throw new Error(`the daemon did not get ready:\n${fs.readFileSync(logFile, 'utf8').slice(-3000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  const d: TestDaemon = {
    dir,
    socket,
    runDir,
    api,
    child,
    async cli(cliArgs, o = {}) {
      try {
        const { stdout, stderr } = await execFileP(
          process.execPath,
          ['--import', 'tsx', CLI, '--socket', socket, ...cliArgs],
          {
            timeout: o.timeoutMs ?? 60_000,
            env: { ...process.env, WEFT_SOCKET: socket },
          },
        );
        return { stdout, stderr, code: 0 };
      } catch (e) {
        const err = e as { stdout?: string; stderr?: string; code?: number };
        return {
          stdout: err.stdout ?? '',
          stderr: err.stderr ?? '',
          code: typeof err.code === 'number' ? err.code : 1,
        };
      }
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000).unref())]);
    },
    restart: () => startDaemon(b, host, { ...opts, dir }),
  };
  return d;
}

/** Stop every container a daemon knows (rm -f), so their processes end before the bed cleans up. */
export async function removeAllContainers(d: TestDaemon): Promise<void> {
  const list = await d.api.request<{ name: string }[]>('GET', '/v1/containers');
  for (const c of list) await d.api.request('DELETE', `/v1/containers/${encodeURIComponent(c.name)}?force=1`);
}
