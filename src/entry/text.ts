/** Output helpers the commands share. */
import type { Command } from 'commander';
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
