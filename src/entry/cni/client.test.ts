/**
 * The plugin's daemon client on a real unix socket: which failures may have left the request
 * carried out (ADD keeps its pending record for those).
 */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isWeftError } from '../../lib/errors.js';
import { DaemonClient, mayHaveApplied } from './client.js';

/** A server on a fresh socket that answers each connection with `reply` (or closes on it). */
async function serve(sock: string, reply: (c: net.Socket) => void): Promise<net.Server> {
  const srv = net.createServer((c) => c.once('data', () => reply(c)));
  await new Promise<void>((resolve) => srv.listen(sock, resolve));
  return srv;
}

describe('CNI daemon client', () => {
  let tmp: string;
  const servers: net.Server[] = [];
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wt-cni-client-'));
  });
  after(() => {
    for (const s of servers) s.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  const failure = async (p: Promise<unknown>): Promise<unknown> => {
    try {
      await p;
    } catch (e) {
      return e;
    }
    assert.fail('expected a failure');
  };
  const req = { owner: 'cni', containerId: 'c1', netns: '/run/netns/c1', ifname: 'eth0' } as const;

  test('nobody listening, or an error answer: nothing was done', async () => {
    const down = await failure(new DaemonClient(path.join(tmp, 'none.sock')).attach(req));
    assert.ok(isWeftError(down, 'UNAVAILABLE'));
    assert.equal(mayHaveApplied(down), false);
    const sock = path.join(tmp, 'err.sock');
    const body = JSON.stringify({ error: { code: 'CONFLICT', message: 'port 80 is taken' } });
    servers.push(
      await serve(sock, (c) =>
        c.end(`HTTP/1.1 409 Conflict\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`),
      ),
    );
    const answered = await failure(new DaemonClient(sock).attach(req));
    assert.ok(isWeftError(answered, 'CONFLICT'));
    assert.equal(mayHaveApplied(answered), false);
  });

  test('sent but unanswered (closed, garbled, timed out): the daemon may have done it', async () => {
    const closed = path.join(tmp, 'closed.sock');
    servers.push(await serve(closed, (c) => c.destroy()));
    assert.equal(mayHaveApplied(await failure(new DaemonClient(closed).attach(req))), true);
    const garbled = path.join(tmp, 'garbled.sock');
    servers.push(await serve(garbled, (c) => c.end('nonsense')));
    assert.equal(mayHaveApplied(await failure(new DaemonClient(garbled).attach(req))), true);
    const silent = path.join(tmp, 'silent.sock');
    servers.push(await serve(silent, () => undefined));
    const timeout = await failure(new DaemonClient(silent, 200).attach(req));
    assert.ok(isWeftError(timeout, 'TIMEOUT'));
    assert.equal(mayHaveApplied(timeout), true);
  });
});
