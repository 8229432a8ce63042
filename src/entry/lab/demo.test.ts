/**
 * scripts/demo.sh's own steps and hints follow the lab's name (`--name NAME`, `--name=NAME`,
 * else $WEFT_LAB, else weft). Run on a copy with a no-op setup.sh and a `weft` stub on PATH that
 * records its arguments: no lab is built.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-demo-sh-'));
const calls = path.join(root, 'calls');
fs.mkdirSync(path.join(root, 'scripts'));
fs.mkdirSync(path.join(root, 'bin'));
fs.copyFileSync(new URL('../../../scripts/demo.sh', import.meta.url), path.join(root, 'scripts', 'demo.sh'));
fs.writeFileSync(path.join(root, 'scripts', 'setup.sh'), 'exit 0\n');
const status = {
  hosts: [
    { name: 'host1', containers: [{ name: 'h1c1', ip: '10.244.1.2' }] },
    { name: 'host2', containers: [{ name: 'h2c1', ip: '10.244.2.2' }] },
  ],
  published: { publicIp: '192.168.100.11', port: 8080 },
};
fs.writeFileSync(path.join(root, 'status.json'), JSON.stringify(status));
fs.writeFileSync(
  path.join(root, 'bin', 'weft'),
  `#!/bin/sh\necho "WEFT_LAB=$WEFT_LAB $*" >>${calls}\n[ "$1 $2" = "lab status" ] && cat ${root}/status.json\nexit 0\n`,
  { mode: 0o755 },
);

function demo(args: string[], env: Record<string, string> = {}): { calls: string[]; out: string } {
  fs.rmSync(calls, { force: true });
  const base = { ...process.env };
  delete base.WEFT_LAB;
  const out = execFileSync('bash', [path.join(root, 'scripts', 'demo.sh'), ...args], {
    encoding: 'utf8',
    env: { ...base, PATH: `${path.join(root, 'bin')}:${process.env.PATH}`, ...env },
  });
  return { calls: fs.readFileSync(calls, 'utf8').trim().split('\n'), out };
}

/** The hint lines (commands the reader is told to run). */
const hints = (out: string): string[] => out.split('\n').filter((l) => /\bweft (lab|trace|ui)\b/.test(l));

describe('scripts/demo.sh', () => {
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  for (const [how, args, env] of [
    ['--name NAME', ['--hosts', '2', '--name', 'revx'], {}],
    ['--name=NAME', ['--name=revx', '--hosts', '2'], {}],
    ['WEFT_LAB', ['--hosts', '2'], { WEFT_LAB: 'revx' }],
    ['--name over WEFT_LAB', ['--name', 'revx'], { WEFT_LAB: 'other' }],
  ] as const) {
    test(`the lab named by ${how}: every step and every hint names it`, () => {
      const r = demo([...args], { ...env });
      assert.deepEqual(r.calls, [
        `WEFT_LAB=revx lab up ${args.join(' ')}`,
        'WEFT_LAB=revx lab check --name revx',
        'WEFT_LAB=revx lab status --name revx --json',
      ]);
      const lines = hints(r.out);
      assert.ok(lines.length >= 10, r.out);
      for (const l of lines) {
        if (/weft (trace|ui)/.test(l)) assert.match(l, /--lab revx\b/, l);
        for (const m of l.matchAll(/weft lab \S+(?: --name [\w-]+)?/g))
          assert.match(m[0], / --name revx$/, l);
      }
      assert.match(r.out, /^Take it down: {2}weft lab down --name revx$/m);
      assert.match(r.out, /weft lab exec --name revx host1 h1c1 -- curl -s http:\/\/10\.244\.2\.2\//);
    });
  }

  test('the default lab: hints as the CLI gives them, without --name', () => {
    const r = demo([]);
    // A real lab "weft" on this machine makes the script take it down first (here: the stub).
    assert.deepEqual(
      r.calls.filter((c) => c !== 'WEFT_LAB=weft lab down --name weft'),
      [
        'WEFT_LAB=weft lab up',
        'WEFT_LAB=weft lab check --name weft',
        'WEFT_LAB=weft lab status --name weft --json',
      ],
    );
    for (const l of hints(r.out)) assert.doesNotMatch(l, /--name|--lab/, l);
    assert.match(r.out, /^Take it down: {2}weft lab down$/m);
  });
});
