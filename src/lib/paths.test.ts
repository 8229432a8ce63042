import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_RUN_DIR, DEFAULT_STATE_DIR, runDirFrom, socketFrom, stateDirFrom } from './paths.js';

test('defaults when nothing is set, and an empty variable counts as unset', () => {
  for (const env of [{}, { WEFT_SOCKET: '', WEFT_RUN_DIR: '', WEFT_STATE_DIR: '' }]) {
    assert.equal(runDirFrom(env), DEFAULT_RUN_DIR);
    assert.equal(stateDirFrom(env), DEFAULT_STATE_DIR);
    assert.equal(socketFrom(env), '/run/weft/weft.sock');
  }
});

test('the socket: $WEFT_SOCKET, else weft.sock in the run dir ($WEFT_RUN_DIR or the one given)', () => {
  assert.equal(socketFrom({ WEFT_RUN_DIR: '/run/lab/h1' }), '/run/lab/h1/weft.sock');
  assert.equal(socketFrom({ WEFT_RUN_DIR: '/run/lab/h1' }, '/srv/run'), '/srv/run/weft.sock');
  assert.equal(
    socketFrom({ WEFT_SOCKET: '/tmp/x.sock', WEFT_RUN_DIR: '/run/lab/h1' }, '/srv/run'),
    '/tmp/x.sock',
  );
  assert.equal(stateDirFrom({ WEFT_STATE_DIR: '/srv/weft' }), '/srv/weft');
});
