#!/usr/bin/env node
// The whole test suite: typecheck-free fast path through tsx, node's own test runner, files run
// in parallel (namespace tests mostly wait on the kernel), then a leftover check: nothing made
// by this run (namespaces, mounts, root-namespace links, processes) may survive it.
//   node scripts/test.mjs            all tests (kernel tests need root)
//   node scripts/test.mjs --unit     only the pure tests (no root)
//   node scripts/test.mjs FILE...    only these files
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
process.chdir(root);
const args = process.argv.slice(2);
const unitOnly = args.includes('--unit');
const explicit = args.filter((a) => !a.startsWith('--'));

function walk(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? walk(p) : e.name.endsWith('.test.ts') ? [p] : [];
  });
}
// Kernel and end-to-end tests carry .kernel. or .e2e. in their names; the rest are pure.
const isPure = (f) => !/\.(kernel|e2e)\.test\.ts$/.test(f);
let files = explicit.length > 0 ? explicit : [...walk('src'), ...walk('test')].sort();
if (unitOnly) files = files.filter(isPure);
if (files.length === 0) {
  console.error('no test files found');
  process.exit(1);
}

const run = randomBytes(3).toString('hex');
const netnsDir = '/run/netns';
const rootLinks = () => {
  try {
    return new Set(
      JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })).map((l) => l.ifname),
    );
  } catch {
    return new Set();
  }
};
const before = rootLinks();
const concurrency = Number(process.env.WEFT_TEST_CONCURRENCY ?? 4);

const started = Date.now();
const child = spawn(
  process.execPath,
  ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, ...files],
  { stdio: 'inherit', env: { ...process.env, WEFT_TEST_RUN: run } },
);
const code = await new Promise((resolve) => child.on('exit', (c, s) => resolve(c ?? (s ? 1 : 0))));

// ---- leftover check --------------------------------------------------------------------------
const marker = `wt-${run}`;
const leftovers = [];
// Anywhere in the name: labs made by tests are weft-<lab>-<role> with the marker in <lab>.
const nsLeft = fs.existsSync(netnsDir) ? fs.readdirSync(netnsDir).filter((n) => n.includes(marker)) : [];
if (nsLeft.length) leftovers.push(`namespaces: ${nsLeft.join(' ')}`);
// Labs' state and run folders (/var/lib/weft/lab/<lab>, /run/weft/lab/<lab>).
const labDirs = ['/var/lib/weft/lab', '/run/weft/lab'].flatMap((d) =>
  fs.existsSync(d)
    ? fs
        .readdirSync(d)
        .filter((n) => n.includes(marker))
        .map((n) => path.join(d, n))
    : [],
);
if (labDirs.length) leftovers.push(`lab folders: ${labDirs.join(' ')}`);
const mounts = fs
  .readFileSync('/proc/self/mountinfo', 'utf8')
  .split('\n')
  .filter((l) => l.includes(marker));
if (mounts.length) leftovers.push(`mounts: ${mounts.length} under ${netnsDir}/${marker}*`);
const after = rootLinks();
const newLinks = [...after].filter((l) => !before.has(l));
if (newLinks.length) leftovers.push(`links in the root namespace: ${newLinks.join(' ')}`);
const procs = [];
for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
  if (Number(pid) === process.pid) continue;
  try {
    if (fs.readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`WEFT_TEST_RUN=${run}`)) {
      procs.push(`${pid} ${fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ').trim()}`);
    }
  } catch {
    // gone meanwhile
  }
}
if (procs.length) leftovers.push(`processes: ${procs.join('; ')}`);

const secs = ((Date.now() - started) / 1000).toFixed(1);
if (leftovers.length) {
  console.error(`\nleftover check FAILED (run ${run}): the tests left behind`);
  for (const l of leftovers) console.error(`  - ${l}`);
  // Clean up so the machine stays usable, but fail the run: a test's cleanup is broken.
  for (const p of procs) {
    try {
      process.kill(Number(p.split(' ')[0]), 'SIGKILL');
    } catch {}
  }
  for (const m of mounts) {
    const target = m.split(' ')[4];
    try {
      if (target) execFileSync('umount', ['-l', target]);
    } catch {}
  }
  for (const n of nsLeft) {
    try {
      execFileSync('ip', ['netns', 'delete', n]);
    } catch {}
  }
  for (const d of labDirs) fs.rmSync(d, { recursive: true, force: true });
  process.exit(1);
}
console.error(
  `\nleftover check passed (run ${run}, ${files.length} files, ${secs}s): no namespace, mount, link or process left`,
);
process.exit(code);
