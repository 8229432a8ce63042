/** serveJson against raw requests on a real socket: what a client cannot do to the server. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { isWeftError } from '../lib/errors.js';
import { MAX_BODY, serveJson } from './http.js';

async function server(t: { after(fn: () => Promise<void>): void }) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-http-'));
  const sock = path.join(dir, 's.sock');
  const paths: string[] = [];
  const srv = http.createServer((req, res) =>
    serveJson(req, res, {
      contentType: 'application/json',
      handle: async (body, x) => {
        paths.push(x.url.pathname);
        return { path: x.url.pathname, body };
      },
      fail: (e) => ({ status: isWeftError(e, 'INVALID') ? 400 : 500, body: { error: String(e) } }),
    }),
  );
  await new Promise<void>((r) => srv.listen(sock, r));
  t.after(async () => {
    srv.closeAllConnections();
    await new Promise((r) => srv.close(r));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return { sock, paths };
}

/** Send `raw` and read until the server closes or `ms` pass; the status line's code. */
function rawRequest(sock: string, raw: string | Buffer[], ms = 3000): Promise<number | undefined> {
  return new Promise((resolve) => {
    const c = net.connect(sock);
    let got = '';
    const done = () => {
      c.destroy();
      resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(got)?.[1]) || undefined);
    };
    const timer = setTimeout(done, ms);
    c.on('data', (d) => {
      got += d.toString('latin1');
      if (/\r\n\r\n/.test(got)) {
        clearTimeout(timer);
        done();
      }
    });
    c.on('error', () => {});
    c.on('close', () => {
      clearTimeout(timer);
      done();
    });
    for (const part of typeof raw === 'string' ? [Buffer.from(raw)] : raw) c.write(part);
  });
}

test('targets that a URL parser reads as hosts stay paths (they threw out of the server: a crash)', async (t) => {
  const { sock, paths } = await server(t);
  assert.equal(await rawRequest(sock, 'GET //[ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), 200);
  assert.equal(
    await rawRequest(sock, 'GET //evil/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'),
    200,
  );
  assert.deepEqual(paths, ['//[', '//evil/healthz']);
  assert.equal(await rawRequest(sock, 'GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), 200);
});

test('a body over the limit is a 413 as soon as it crosses it, not after all of it', async (t) => {
  const { sock } = await server(t);
  const big = MAX_BODY * 4;
  const head = `POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${big}\r\n\r\n`;
  // Only a bit more than the limit is sent: the answer must not wait for the rest.
  const code = await rawRequest(sock, [Buffer.from(head), Buffer.alloc(MAX_BODY + 1024, 0x20)]);
  assert.equal(code, 413);
});
