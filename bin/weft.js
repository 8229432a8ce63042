#!/usr/bin/env node
// The `weft` executable: runs the compiled CLI (npm run build writes dist/).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = new URL('../dist/entry/cli.js', import.meta.url);
if (!existsSync(fileURLToPath(cli))) {
  process.stderr.write(
    'weft: not built yet; run `npm run build` (or scripts/setup.sh) in the weft checkout\n',
  );
  process.exit(2);
}
await import(cli.href);
