/**
 * The `weft ui` command: serve the live topology page of a lab on a loopback address until
 * interrupted (SIGINT/SIGTERM close the server and exit).
 */
import type { Command } from 'commander';
import { invalid } from '../../lib/errors.js';

/** Register `weft ui` on `program`. */
export function addUiCommands(program: Command): void {
  program
    .command('ui')
    .description(
      "serve a page that draws a lab's live topology (hosts, bridges, veths, VTEPs, containers, leases)",
    )
    .option('--lab <name>', 'the lab (default $WEFT_LAB or "weft")')
    .option('--port <n>', 'TCP port', '8088')
    .option('--listen <addr>', 'loopback address to listen on', '127.0.0.1')
    .action(async (o: { lab?: string; port: string; listen: string }) => {
      const port = Number(o.port);
      if (!/^\d+$/.test(o.port)) throw invalid(`--port ${o.port}: not a port number`);
      const { startUi } = await import('./server.js');
      const ui = await startUi({ lab: o.lab ?? process.env.WEFT_LAB ?? 'weft', port, listen: o.listen });
      process.stderr.write(`weft ui: ${ui.url} (Ctrl-C to stop)\n`);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await ui.close();
    });
}
