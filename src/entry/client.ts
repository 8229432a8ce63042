/**
 * The API client used by the CLI (and later the plugins): JSON over HTTP on the daemon's unix
 * socket. A daemon that is not running is UNAVAILABLE with a hint, not a stack trace.
 */
import * as http from 'node:http';
import { WeftError } from '../lib/errors.js';
import { errorFromBody } from './edge.js';

export class ApiClient {
  constructor(
    readonly socketPath: string,
    readonly timeoutMs = 120_000,
  ) {}

  request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<T>((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              parsed = undefined;
            }
            if ((res.statusCode ?? 500) >= 400) reject(errorFromBody(res.statusCode ?? 500, parsed));
            else resolve(parsed as T);
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(new WeftError('TIMEOUT', `the weft daemon did not answer ${method} ${path} in time`)),
      );
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (e instanceof WeftError) return reject(e);
        if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
          return reject(
            new WeftError(
              'UNAVAILABLE',
              `the weft daemon is not running (no answer on ${this.socketPath}); start it with \`weft daemon\``,
              {
                cause: e,
              },
            ),
          );
        }
        reject(
          new WeftError('UNAVAILABLE', `cannot reach the weft daemon at ${this.socketPath}: ${e.message}`, {
            cause: e,
          }),
        );
      });
      if (payload) req.write(payload);
      req.end();
    });
  }
}
