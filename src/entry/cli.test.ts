import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

const cli = new URL('./cli.ts', import.meta.url).pathname;
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};
const weft = (...args: string[]) =>
  spawnSync(process.execPath, ['--import', 'tsx', cli, ...args], { encoding: 'utf8', timeout: 20_000 });

describe('weft CLI', () => {
  test('version, as text and as JSON', () => {
    const text = weft('version');
    assert.equal(text.status, 0);
    assert.match(text.stdout, new RegExp(`^weft ${pkg.version.replaceAll('.', '\\.')} \\(node `));
    const json = weft('version', '--json');
    assert.equal(json.status, 0);
    const v = JSON.parse(json.stdout) as { weft: string; node: string; kernel: string };
    assert.equal(v.weft, pkg.version);
    assert.equal(v.node, process.versions.node);
  });

  test('--help lists the commands and exits 0', () => {
    const r = weft('--help');
    assert.equal(r.status, 0);
    assert.match(r.stdout, /Usage: weft/);
    assert.match(r.stdout, /version/);
    assert.match(r.stdout, /demo/);
  });

  test('an unknown command is a usage error (exit 2) with a hint', () => {
    const r = weft('frobnicate');
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown command 'frobnicate'/);
    assert.match(r.stderr, /weft --help/);
  });
});
