/**
 * Sysctls of one network namespace. Files under /proc/sys/net belong to the network namespace
 * of the process (thread) that *opens* them, so the file is opened inside a switched section
 * (`ns.openFile`) and read or written afterwards, outside it: one short section per access, no
 * `ip netns exec`, no child process.
 *
 * Keys are written as sysctl(8) takes them: `net.ipv4.ip_forward` (dots separate), or with
 * slashes when a part holds a dot, such as a device name: `net/ipv4/conf/weft.1/forwarding`.
 * Reads may name any key; writes only `net.*` keys, the ones that belong to a namespace (a
 * write to anything else would change the whole machine).
 */
import * as fs from 'node:fs';
import { KernelError, notFound, WeftError } from '../lib/errors.js';
import type { Netns } from './netns.js';

const PART_RE = /^[A-Za-z0-9_+@-][A-Za-z0-9_.+@-]*$/;
const KEY_MAX = 512;
const VALUE_MAX = 4096;
const READ_MAX = 1 << 16;

/** Where a key lives under /proc/sys. Throws INVALID for a malformed key ('..', empty parts…). */
export function sysctlPath(key: string): string {
  if (typeof key !== 'string' || key.length === 0 || key.length > KEY_MAX) {
    throw new WeftError('INVALID', `sysctl key must be 1-${KEY_MAX} characters`, { details: { key } });
  }
  const parts = key.includes('/') ? key.split('/') : key.split('.');
  for (const p of parts) {
    if (p === '.' || p === '..' || !PART_RE.test(p)) {
      throw new WeftError(
        'INVALID',
        `sysctl key "${key}" is malformed: use net.ipv4.ip_forward or net/ipv4/conf/DEV/forwarding`,
        { details: { key } },
      );
    }
  }
  return `/proc/sys/${parts.join('/')}`;
}

/** Values compare the way sysctl prints them: whitespace runs (tabs in ranges) as one space. */
const normalize = (v: string): string => v.trim().split(/\s+/).join(' ');

function checkValue(key: string, value: string | number): string {
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) {
      throw new WeftError('INVALID', `sysctl ${key}: ${value} is not an integer`, { details: { key } });
    }
    return String(value);
  }
  if (typeof value !== 'string' || value.length > VALUE_MAX || /[\n\r\0]/.test(value)) {
    throw new WeftError(
      'INVALID',
      `sysctl ${key}: the value must be one line of at most ${VALUE_MAX} characters`,
      {
        details: { key },
      },
    );
  }
  return value;
}

export class Sysctl {
  constructor(private readonly ns: Netns) {}

  /**
   * The current value, trimmed (multi-value keys keep their inner whitespace, as the kernel
   * prints it). NOT_FOUND when the key does not exist in this namespace (an unknown key, or a
   * device that is not there), INVALID for a malformed key.
   */
  get(key: string): string {
    const fd = this.#open(key, fs.constants.O_RDONLY, 'read');
    try {
      const chunks: Buffer[] = [];
      let total = 0;
      const buf = Buffer.alloc(4096);
      for (;;) {
        const n = this.#io(key, 'read', () => fs.readSync(fd, buf, 0, buf.length, null));
        if (n === 0) break;
        chunks.push(Buffer.from(buf.subarray(0, n)));
        total += n;
        if (total > READ_MAX)
          throw new WeftError('INTERNAL', `sysctl ${key}: value longer than ${READ_MAX} bytes`);
      }
      return Buffer.concat(chunks).toString('utf8').trim();
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Write a value. Only `net.*` keys (INVALID otherwise); NOT_FOUND for a missing key; INVALID
   * when the kernel refuses the value (nothing is changed then); PERMISSION for a read-only key.
   */
  set(key: string, value: string | number): void {
    const text = checkValue(key, value);
    const p = sysctlPath(key);
    if (!p.startsWith('/proc/sys/net/')) {
      throw new WeftError(
        'INVALID',
        `sysctl ${key}: only net.* keys (per network namespace) may be written`,
        {
          details: { key },
        },
      );
    }
    const fd = this.#open(key, fs.constants.O_WRONLY, 'write');
    try {
      this.#io(key, `write "${text}" to`, () => fs.writeSync(fd, text));
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Set the value unless it already is `value`; returns true when it was changed. */
  ensure(key: string, value: string | number): boolean {
    const text = checkValue(key, value);
    if (normalize(this.get(key)) === normalize(text)) return false;
    this.set(key, text);
    return true;
  }

  #open(key: string, flags: number, verb: string): number {
    const p = sysctlPath(key);
    return this.#io(key, verb, () => this.ns.openFile(p, flags));
  }

  #io<T>(key: string, verb: string, fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'ENOENT') {
        throw notFound(`sysctl ${key} does not exist in ${this.ns.path}`, { key });
      }
      if (typeof err.errno === 'number' && err.code !== undefined) {
        const op = `${verb} sysctl ${key}`;
        const ke = new KernelError(-err.errno, op, { cause: e, details: { key } });
        if (ke.code === 'INVALID') {
          throw new WeftError('INVALID', `${op}: the kernel refused the value`, {
            cause: ke,
            details: { key },
          });
        }
        throw ke;
      }
      throw e;
    }
  }
}
