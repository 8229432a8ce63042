/**
 * Test and benchmark support (not built into dist/, not imported by production code): running
 * one CNI plugin executable the way a runtime does, inside a namespace, with the CNI_* variables
 * in its environment and the network configuration on stdin.
 */
import type { Netns } from '../../kernel/netns.js';

export interface PluginRun {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed, when it is JSON. */
  json: Record<string, unknown> | undefined;
}

/**
 * Run `file` inside `ns` with `env` (over a PATH) and `stdin` (a string as is, anything else as
 * JSON), killed after `timeoutMs`. Resolves with its exit code and output whatever the code;
 * rejects only when it cannot be started.
 */
export function runCniPlugin(
  ns: Netns,
  file: string,
  env: Record<string, string>,
  stdin: unknown,
  timeoutMs = 30_000,
): Promise<PluginRun> {
  return new Promise((resolve, reject) => {
    const child = ns.spawn(file, [], {
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (c: Buffer) => out.push(c));
    child.stderr?.on('data', (c: Buffer) => err.push(c));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const stdout = Buffer.concat(out).toString('utf8');
      let json: Record<string, unknown> | undefined;
      try {
        json = stdout.trim() ? (JSON.parse(stdout) as Record<string, unknown>) : undefined;
      } catch {
        json = undefined;
      }
      resolve({ code: code ?? -1, stdout, stderr: Buffer.concat(err).toString('utf8'), json });
    });
    child.stdin?.end(typeof stdin === 'string' ? stdin : JSON.stringify(stdin));
  });
}
