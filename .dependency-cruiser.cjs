// Layers import downward only (../shared/design/ARCHITECTURE.md):
// entry → control → net → kernel → netlink → lib. Also: no cycles anywhere.
const layers = ['lib', 'netlink', 'kernel', 'net', 'control', 'entry'];
const forbidden = [
  { name: 'no-circular', severity: 'error', from: {}, to: { circular: true } },
  // Test support that lives under src/ (shared by several test files and benchmarks) is test code
  // too: tsconfig.build.json leaves it out of dist/, and nothing else may import it.
  {
    name: 'no-tests-from-src',
    severity: 'error',
    from: { path: '^src/', pathNot: '(\\.test\\.ts$|/testbed\\.ts$|/contract\\.ts$|/testkit\\.ts$|/testserver\\.ts$)' },
    to: { path: '(\\.test\\.ts$|^test/|^src/net/backends/testbed\\.ts$|^src/control/store/contract\\.ts$|^src/entry/(docker|cni)/testkit\\.ts$|^src/net/dns/testserver\\.ts$)' },
  },
];
layers.forEach((layer, i) => {
  const above = layers.slice(i + 1);
  if (above.length === 0) return;
  forbidden.push({
    name: `${layer}-imports-downward-only`,
    comment: `src/${layer} may not import from ${above.join(', ')}`,
    severity: 'error',
    from: { path: `^src/${layer}/` },
    to: { path: `^src/(${above.join('|')})/` },
  });
});
module.exports = {
  forbidden,
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
