/** Output helpers the commands share. */
import * as os from 'node:os';
import type { Command } from 'commander';
import type { PortRecord } from '../control/state.js';
import { DEFAULT_PATH } from '../kernel/run.js';
import { invalid } from '../lib/errors.js';
import { socketFrom } from '../lib/paths.js';
import { ApiClient } from './client.js';

/** A plain text table: columns padded to their widest cell. */
export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  return [head, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

/** The API client of the daemon the command talks to: --socket, else $WEFT_SOCKET, else the default. */
export function daemonClient(cmd: Command): ApiClient {
  const socket = (cmd.optsWithGlobals() as { socket?: string }).socket;
  return new ApiClient(socket ?? socketFrom(process.env));
}

/**
 * Whether the user asked for JSON output, for errors that leave before a command could say:
 * only arguments before a `--` count (after it they are the container's command's).
 */
export function jsonRequested(argv: readonly string[]): boolean {
  const dd = argv.indexOf('--');
  return (dd < 0 ? argv : argv.slice(0, dd)).includes('--json');
}

/** A published port as `docker ps` shows it: `*:8000-8002->8000-8002/tcp`, `[::1]:53->53/udp`. */
export function psPort(p: PortRecord): string {
  const ip = p.hostIp === undefined ? '*' : p.hostIp.includes(':') ? `[${p.hostIp}]` : p.hostIp;
  const range = (a: number, b: number | undefined) => (b === undefined || b === a ? `${a}` : `${a}-${b}`);
  return `${ip}:${range(p.hostPort, p.hostPortEnd)}->${range(p.containerPort, p.containerPortEnd)}/${p.proto}`;
}

/** A child's end as a shell reports it: its code, or 128 + the number of the signal that killed it. */
export function exitStatusOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (signal !== null) return 128 + (os.constants.signals[signal] ?? 0);
  return code ?? 1;
}

/**
 * The environment `exec` runs a command with: the container's, over the PATH and HOSTNAME its
 * main process got by default (so both see the same), never the client's.
 */
export function execEnv(c: {
  readonly env: Readonly<Record<string, string>>;
  readonly hostname: string;
}): Record<string, string> {
  return { PATH: DEFAULT_PATH, HOSTNAME: c.hostname, ...c.env };
}

/** `--tail`: a line count, or `all` (undefined: everything). */
export function parseTail(v: string | undefined): number | undefined {
  if (v === undefined || v === 'all') return undefined;
  if (!/^\d+$/.test(v)) throw invalid(`--tail must be a line count or "all", not "${v}"`);
  return Number(v);
}

/** Byte offset in `log` where its last `n` lines start (as the logs API's ?tail=n counts them). */
export function tailStart(log: string, n: number): number {
  let nl = log.endsWith('\n') ? log.length - 1 : log.length;
  for (let k = 0; k < n; k++) {
    if (nl <= 0) return 0;
    nl = log.lastIndexOf('\n', nl - 1);
    if (nl < 0) return 0;
  }
  return Buffer.byteLength(log.slice(0, nl + 1));
}

const REPLACEMENT = Buffer.from('\uFFFD');

/**
 * What of a growing log to print after `shown` bytes. The API sends the whole file decoded, so
 * a character cut by the read arrives as U+FFFD at the end: while the log may still grow, those
 * are held back (the rest of the character comes with a later read); `final` prints them.
 * Offsets are in bytes of the re-encoded text, whose prefix before the cut never changes.
 */
export function logChunk(log: string, shown: number, final: boolean): { out: Buffer; shown: number } {
  const all = Buffer.from(log, 'utf8');
  let end = all.length;
  if (!final) {
    while (
      end - REPLACEMENT.length >= shown &&
      all.subarray(end - REPLACEMENT.length, end).equals(REPLACEMENT)
    )
      end -= REPLACEMENT.length;
  }
  return end > shown ? { out: all.subarray(shown, end), shown: end } : { out: Buffer.alloc(0), shown };
}
