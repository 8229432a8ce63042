#!/usr/bin/env -S node --max-semi-space-size=2
// The `weft` executable: runs the compiled CLI (npm run build writes dist/). The small young
// generation keeps a daemon with 1,000 peers under 100 MB (bench:overlay); short commands do not mind.
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
