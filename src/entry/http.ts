/**
 * The JSON-over-HTTP plumbing the daemon's API and the Docker plugin share: read a bounded
 * body, parse it as JSON (an empty body is `undefined`), run the handler, answer JSON with the
 * content type the caller speaks; errors become the caller's error answer. Routing and the error
 * format stay with each server.
 */
import type * as http from 'node:http';
import { invalid, type WeftError } from '../lib/errors.js';

export const MAX_BODY = 1 << 20;

export interface JsonExchange {
  readonly url: URL;
  /** ms since the request arrived, for access logs. */
  elapsed(): number;
}

/**
 * Serve one request: `handle` gets the parsed body and returns the answer (status 200), or
 * throws; `fail` turns the thrown value into a status and a body. `done` sees every answer (logs).
 */
export function serveJson(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  o: {
    readonly contentType: string;
    readonly handle: (body: unknown, x: JsonExchange) => Promise<unknown>;
    readonly fail: (e: unknown) => { status: number; body: unknown };
    readonly done?: (status: number, x: JsonExchange, error?: unknown) => void;
  },
): void {
  const started = performance.now();
  // The target is a path: joined to a base, never parsed as a URL of its own ("//host/x" would
  // name a host, "//[" throw). One that still does not parse is a 400, never a throw out of here.
  let url: URL | undefined;
  try {
    url = new URL(`http://weft${(req.url ?? '/').startsWith('/') ? '' : '/'}${req.url ?? ''}`);
  } catch {
    url = undefined;
  }
  const x: JsonExchange = {
    url: url ?? new URL('http://weft/'),
    elapsed: () => Math.round((performance.now() - started) * 10) / 10,
  };
  let answered = false;
  const send = (status: number, body: unknown, error?: unknown) => {
    if (answered) return;
    answered = true;
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': o.contentType, 'content-length': Buffer.byteLength(text) });
    res.end(text);
    o.done?.(status, x, error);
  };
  const refuse = (e: WeftError, status?: number) => {
    const f = o.fail(e);
    send(status ?? f.status, f.body, e);
  };
  if (!url) {
    refuse(invalid(`"${req.url}" is not a request path`));
    req.resume();
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (c: Buffer) => {
    size += c.length;
    if (size <= MAX_BODY) chunks.push(c);
    else if (!answered) {
      // Answered at once, and the rest not read: the connection closes after the answer.
      res.setHeader('connection', 'close');
      res.once('finish', () => req.socket.destroy());
      refuse(invalid(`the request body is larger than ${MAX_BODY} bytes`), 413);
    }
  });
  req.on('end', () => {
    if (answered) return;
    void (async () => {
      try {
        const text = Buffer.concat(chunks).toString('utf8').trim();
        let body: unknown;
        if (text !== '') {
          try {
            body = JSON.parse(text);
          } catch {
            throw invalid('the request body is not valid JSON');
          }
        }
        send(200, (await o.handle(body, x)) ?? {});
      } catch (e) {
        const { status, body } = o.fail(e);
        send(status, body, e);
      }
    })();
  });
}
