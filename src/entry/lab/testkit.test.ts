/**
 * Helpers shared by the lab's end-to-end tests (lab, backends, etcd, down) and the trace tests:
 * what "nothing of a lab is left" means, the typed-error matcher and the routes of a lab host.
 * A *.test.ts file so the build leaves it out; it defines no tests of its own.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import { promisify } from 'node:util';
import { WeftError } from '../../lib/errors.js';
import { DEFAULT_PATHS, labDirs, nsName, roleOf } from './topology.js';

const execFileP = promisify(execFile);

/** A matcher for assert.rejects/throws: a WeftError with code `c` and, if given, a message matching `re`. */
export const code = (c: string, re?: RegExp) => (e: unknown) =>
  e instanceof WeftError && e.code === c && (re === undefined || re.test(e.message));

/** Pids and command lines of the processes of lab `name` (WEFT_LAB=name in the environment, or its dirs in the command line). */
export function labProcesses(name: string): string[] {
  const procs: string[] = [];
  for (const p of fs.readdirSync('/proc').filter((x) => /^\d+$/.test(x))) {
    try {
      const env = fs.readFileSync(`/proc/${p}/environ`, 'utf8').split('\0');
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (env.includes(`WEFT_LAB=${name}`) || cmd.includes(`/lab/${name}/`)) procs.push(`${p} ${cmd}`);
    } catch {
      // gone
    }
  }
  return procs;
}

/** Nothing of lab `name` is left: namespace, mount, process, state or run dir. */
export function assertGone(name: string): void {
  const nss = fs.readdirSync(DEFAULT_PATHS.netnsDir).filter((n) => roleOf(name, n));
  assert.deepEqual(nss, [], 'namespaces left');
  const d = labDirs(DEFAULT_PATHS, name);
  const mounts = fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(`/weft-${name}-`) || l.includes(`${d.run}/`) || l.includes(`${d.state}/`));
  assert.deepEqual(mounts, [], 'mounts left');
  assert.deepEqual(labProcesses(name), [], 'processes left');
  assert.equal(fs.existsSync(d.state), false, 'state dir left');
  assert.equal(fs.existsSync(d.run), false, 'run dir left');
}

/** The routes of a lab host's main table, as `ip -j route show` gives them. */
export async function ipRoutes(
  name: string,
  host: string,
): Promise<{ dst: string; gateway?: string; dev: string }[]> {
  const { stdout } = await execFileP(
    'ip',
    ['-n', nsName(name, host as `host${number}`), '-j', 'route', 'show'],
    {
      timeout: 10_000,
    },
  );
  return JSON.parse(stdout || '[]') as { dst: string; gateway?: string; dev: string }[];
}
