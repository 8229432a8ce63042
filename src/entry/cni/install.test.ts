import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildCniPlugin } from '../../../scripts/build-cni.js';
import { isWeftError } from '../../lib/errors.js';
import { exampleConflist, installCni } from './install.js';

const cli = new URL('../cli.ts', import.meta.url).pathname;

describe('weft cni install', () => {
  let tmp: string;
  let bundle: string;
  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wt-cni-install-'));
    bundle = path.join(tmp, 'build', 'weft');
    await buildCniPlugin(bundle);
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test('the CLI copies the plugin and writes the example conflist; the copy answers VERSION', () => {
    const bin = path.join(tmp, 'a', 'bin');
    const conf = path.join(tmp, 'a', 'net.d');
    const r = spawnSync(
      process.execPath,
      [
        '--import',
        'tsx',
        cli,
        'cni',
        'install',
        '--bin-dir',
        bin,
        '--conf-dir',
        conf,
        '--from',
        bundle,
        '--json',
      ],
      { encoding: 'utf8', timeout: 20_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { plugin: string; conflist: string; conflistWritten: boolean };
    assert.equal(out.plugin, path.join(bin, 'weft'));
    assert.equal(out.conflistWritten, true);
    assert.equal(fs.statSync(out.plugin).mode & 0o777, 0o755);
    const list = JSON.parse(fs.readFileSync(out.conflist, 'utf8')) as {
      cniVersion: string;
      name: string;
      plugins: { type: string; capabilities?: Record<string, boolean> }[];
    };
    assert.equal(list.cniVersion, '1.0.0');
    assert.deepEqual(
      list.plugins.map((p) => p.type),
      ['weft', 'portmap'],
    );
    assert.equal(list.plugins[0]?.capabilities?.portMappings, undefined, 'portmap publishes the ports');
    // The installed copy runs on its own (no package.json above it in a real bin dir).
    const v = spawnSync(out.plugin, [], {
      env: { CNI_COMMAND: 'VERSION', PATH: process.env.PATH },
      input: '',
      encoding: 'utf8',
    });
    assert.equal(v.status, 0, v.stderr);
    assert.deepEqual(JSON.parse(v.stdout).supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
  });

  test('an existing conflist is kept unless --force; --ports weft makes weft publish ports', () => {
    const o = {
      binDir: path.join(tmp, 'b', 'bin'),
      confDir: path.join(tmp, 'b', 'net.d'),
      name: 'weft',
      plugin: bundle,
    };
    const first = installCni({ ...o, ports: 'portmap', force: false });
    fs.writeFileSync(first.conflist, '{"edited": true}\n');
    const second = installCni({ ...o, ports: 'weft', force: false });
    assert.equal(second.conflistWritten, false);
    assert.equal(fs.readFileSync(first.conflist, 'utf8'), '{"edited": true}\n');
    const third = installCni({ ...o, ports: 'weft', network: 'web', force: true });
    assert.equal(third.conflistWritten, true);
    assert.deepEqual(
      JSON.parse(fs.readFileSync(first.conflist, 'utf8')),
      exampleConflist({ name: 'weft', network: 'web', ports: 'weft' }),
    );
    const ex = exampleConflist({ name: 'weft', ports: 'weft' }) as {
      cniVersion: string;
      plugins: { capabilities: Record<string, boolean> }[];
    };
    assert.equal(ex.cniVersion, '1.1.0');
    assert.equal(ex.plugins.length, 1);
    assert.equal(ex.plugins[0]?.capabilities.portMappings, true);
  });

  test('bad input: relative dirs, a bad name, a missing plugin', () => {
    const base = {
      binDir: path.join(tmp, 'c'),
      confDir: path.join(tmp, 'c'),
      name: 'weft',
      ports: 'portmap' as const,
      force: false,
      plugin: bundle,
    };
    assert.throws(
      () => installCni({ ...base, binDir: 'rel/bin' }),
      (e: unknown) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => installCni({ ...base, name: 'bad name' }),
      (e: unknown) => isWeftError(e, 'INVALID'),
    );
    assert.throws(
      () => installCni({ ...base, plugin: path.join(tmp, 'nope') }),
      (e: unknown) => isWeftError(e, 'NOT_FOUND'),
    );
    assert.equal(fs.existsSync(path.join(tmp, 'c')), false, 'nothing was made');
  });
});
