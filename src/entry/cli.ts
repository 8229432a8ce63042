/**
 * The `weft` command line. Thin: parse, validate, call the layers below, print. Every failure
 * leaves through `fail()`, which maps a WeftError's code to an exit status and a one-line
 * message (with `--json`, an error object).
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { asWeftError } from '../lib/errors.js';
import { addClusterCommands } from './cluster-commands.js';
import { addCniCommands } from './cni/install.js';
import { addCommands, globalOptionsEverywhere } from './commands.js';
import { exitStatus } from './edge.js';
import { addLabCommands } from './lab/commands.js';
import { jsonRequested } from './text.js';
import { addTraceCommand } from './trace/command.js';
import { addUiCommands } from './ui/commands.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
  description: string;
};

function fail(e: unknown, json: boolean): never {
  const err = asWeftError(e);
  if (json) process.stdout.write(`${JSON.stringify({ error: err.toJSON() })}\n`);
  else process.stderr.write(`weft: ${err.message}\n`);
  if (err.code === 'INTERNAL' && process.env.WEFT_DEBUG && e instanceof Error)
    process.stderr.write(`${e.stack}\n`);
  process.exit(exitStatus[err.code]);
}

export function buildCli(): Command {
  const program = new Command('weft')
    .description(pkg.description)
    .version(pkg.version, '-V, --version', 'print the version')
    .showHelpAfterError('(run `weft --help` for usage)')
    .exitOverride();

  program
    .command('version')
    .description('print the version of weft and of what it runs on')
    .option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }) => {
      const info = { weft: pkg.version, node: process.versions.node, kernel: kernelRelease() };
      if (opts.json) process.stdout.write(`${JSON.stringify(info)}\n`);
      else process.stdout.write(`weft ${info.weft} (node ${info.node}, linux ${info.kernel})\n`);
    });

  program
    .command('demo')
    .description('show the kernel layer at work: two containers on a bridge in throwaway namespaces, pinging')
    .option('--keep', 'leave the namespaces up to explore (remove with `weft demo --down`)')
    .option('--down', 'remove what a kept demo left')
    .action(async (opts: { keep?: boolean; down?: boolean }) => {
      const { runDemo, removeDemo } = await import('./demo.js');
      if (opts.down) removeDemo();
      else await runDemo({ keep: opts.keep === true });
    });

  addCommands(program);
  addClusterCommands(program);
  addLabCommands(program);
  addCniCommands(program);
  addTraceCommand(program);
  addUiCommands(program);
  globalOptionsEverywhere(program);
  return program;
}

function kernelRelease(): string {
  try {
    return readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

export async function main(argv: string[]): Promise<void> {
  let json = jsonRequested(argv);
  const program = buildCli();
  // Once parsed, the command that runs says exactly (`weft run echo --json` is the command's).
  program.hook('preAction', (_p, action) => {
    json = (action.opts() as { json?: unknown }).json === true;
  });
  try {
    await program.parseAsync(argv, { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version exit through here with code 0; usage errors with 1 → 2.
      process.exit(e.exitCode === 0 ? 0 : 2);
    }
    fail(e, json);
  }
}

await main(process.argv.slice(2));
