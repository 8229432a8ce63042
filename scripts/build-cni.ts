/**
 * Bundle the CNI plugin into one executable file, dist/cni/weft (`npm run build` runs this after
 * tsc). A CNI plugin is started once per call, so it must load little: esbuild puts the entry
 * (src/entry/cni/main.ts) and the few modules it imports into one minified CommonJS file with a
 * `#!/usr/bin/env node` line; a package.json beside it says "commonjs" so the extensionless file
 * runs as such inside this ES-module package too (a copy in /opt/cni/bin has none above it).
 *   node --import tsx scripts/build-cni.ts [--quiet] [OUTFILE]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const DEFAULT_OUT = path.join(root, 'dist', 'cni', 'weft');

/** Build the plugin into `outFile` (made executable); resolves to its size in bytes. */
export async function buildCniPlugin(outFile = DEFAULT_OUT): Promise<number> {
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  await build({
    entryPoints: [path.join(root, 'src', 'entry', 'cni', 'main.ts')],
    outfile: outFile,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    minify: true,
    legalComments: 'none',
    banner: { js: '#!/usr/bin/env node' },
    logLevel: 'error',
  });
  fs.writeFileSync(path.join(path.dirname(outFile), 'package.json'), '{ "type": "commonjs" }\n');
  fs.chmodSync(outFile, 0o755);
  return fs.statSync(outFile).size;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith('--'));
  const out = file ? path.resolve(file) : DEFAULT_OUT;
  const size = await buildCniPlugin(out);
  if (!args.includes('--quiet'))
    process.stdout.write(
      `cni plugin: ${path.relative(process.cwd(), out)} (${(size / 1024).toFixed(1)} KiB)\n`,
    );
}
