import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isWeftError } from '../../lib/errors.js';
import { DEFAULT_EMBEDDED_PATH, formatStoreSpec, parseStoreSpec } from './index.js';

test('store specs parse to a kind with its address', () => {
  const cases: [string, ReturnType<typeof parseStoreSpec>][] = [
    ['embedded', { kind: 'embedded', path: DEFAULT_EMBEDDED_PATH }],
    ['embedded:/tmp/lab1/store.db', { kind: 'embedded', path: '/tmp/lab1/store.db' }],
    ['etcd://10.0.0.1:2379', { kind: 'etcd', endpoints: ['10.0.0.1:2379'], tls: false }],
    ['etcd://a:2379,b.example:2379', { kind: 'etcd', endpoints: ['a:2379', 'b.example:2379'], tls: false }],
    ['etcd://[fd00::1]:2379', { kind: 'etcd', endpoints: ['[fd00::1]:2379'], tls: false }],
    [
      'http://a:2379,http://b:2379',
      { kind: 'etcd', endpoints: ['http://a:2379', 'http://b:2379'], tls: false },
    ],
    ['https://a:2379/', { kind: 'etcd', endpoints: ['https://a:2379'], tls: true }],
    ['unix:///run/etcd.sock:0', { kind: 'etcd', endpoints: ['unix:///run/etcd.sock:0'], tls: false }],
  ];
  for (const [spec, want] of cases) assert.deepEqual(parseStoreSpec(spec), want, spec);
});

test('store specs print back to strings that parse to the same', () => {
  for (const s of ['embedded:/x/store.db', 'etcd://a:2379,b:2379', 'https://a:2379,https://b:2379']) {
    const spec = parseStoreSpec(s);
    assert.deepEqual(parseStoreSpec(formatStoreSpec(spec)), spec);
  }
});

test('bad store specs are INVALID, saying what was expected', () => {
  for (const bad of [
    '',
    'sqlite:/x',
    'embedded:relative.db',
    'embedded:/dir/',
    'etcd://',
    'etcd://host',
    'etcd://host:0',
    'etcd://host:70000',
    'etcd://a:2379,etcd://b:2379',
    'http://a:2379,https://b:2379',
    'http://a b:2379',
    'unix://relative.sock',
  ]) {
    assert.throws(
      () => parseStoreSpec(bad),
      (e) => isWeftError(e, 'INVALID') && e.message.includes(`"${bad}"`),
      bad,
    );
  }
});
