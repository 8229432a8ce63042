import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { nftError } from './nft.js';

describe('nftError', () => {
  test('a syntax error: INVALID with nft’s message, line, column and the quoted source line', () => {
    const stderr =
      '/dev/stdin:4:40-44: Error: syntax error, unexpected string\nadd rule inet weft input tcp dport 22 acept\n                                       ^^^^^\n';
    const e = nftError(stderr, 'nft -f');
    assert.equal(e.code, 'INVALID');
    assert.equal(e.details.line, 4);
    assert.equal(e.details.column, 40);
    assert.equal(e.details.nftMessage, 'syntax error, unexpected string');
    assert.equal(e.details.source, 'add rule inet weft input tcp dport 22 acept');
    assert.equal(
      e.message,
      'nft -f: syntax error, unexpected string (line 4, column 40: add rule inet weft input tcp dport 22 acept)',
    );
  });

  test('the kernel’s refusals map by errno text; the first error names the place', () => {
    const cases: [string, string][] = [
      ['/dev/stdin:5:8-8: Error: Could not process rule: Operation not supported\n chain c\n', 'UNSUPPORTED'],
      [
        '/dev/stdin:1:19-20: Error: No such file or directory; did you mean table ‘t’ in family inet?\n',
        'NOT_FOUND',
      ],
      ['/dev/stdin:2:1-5: Error: Could not process rule: File exists\n', 'EXISTS'],
      ['/dev/stdin:2:1-5: Error: Could not process rule: Device or resource busy\n', 'BUSY'],
      ['Error: Could not process rule: Operation not permitted\n', 'PERMISSION'],
      ['netlink: Error: cache initialization failed: Operation not permitted\n', 'PERMISSION'],
      ['/dev/stdin:1:1-3: Error: Could not process rule: Invalid argument\n', 'INVALID'],
      ['', 'INVALID'],
    ];
    for (const [stderr, code] of cases) assert.equal(nftError(stderr, 'nft').code, code, stderr);
    const two = nftError(
      '/dev/stdin:2:2-5: Error: syntax error, unexpected string\n junk\n ^^^^\n/dev/stdin:3:1-1: Error: syntax error, unexpected end of file\n',
      'nft',
    );
    assert.equal(two.details.line, 2);
    assert.equal(nftError('', 'nft').message, 'nft: nft failed without a message');
  });
});
