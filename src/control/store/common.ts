/**
 * Input checks shared by both registries, so that bad input fails the same way (INVALID, before
 * anything is sent or written) whichever store is behind the interface.
 */
import { invalid } from '../../lib/errors.js';

/** etcd's default request limit is 1.5 MiB; keys are far smaller in practice. */
const MAX_KEY_BYTES = 4096;
/** Ten years: longer TTLs are almost certainly a unit mistake (ms passed as s). */
const MAX_TTL_SECONDS = 10 * 365 * 24 * 3600;

/** Throws INVALID unless `key` is a non-empty string of at most 4 KiB. */
export function checkKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw invalid('store key must be a non-empty string');
  if (Buffer.byteLength(key) > MAX_KEY_BYTES) {
    throw invalid(`store key longer than ${MAX_KEY_BYTES} bytes`, { key: key.slice(0, 64) });
  }
}

/** Throws INVALID unless `ttl` is absent or a whole number of seconds in [1, 10 years]. */
export function checkTtl(ttl: number | undefined): void {
  if (ttl === undefined) return;
  if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_TTL_SECONDS) {
    throw invalid(`TTL must be a whole number of seconds between 1 and ${MAX_TTL_SECONDS}: ${ttl}`, { ttl });
  }
}

/** Throws INVALID unless `rev` is a non-negative safe integer (a store revision). */
export function checkRevision(rev: number, what = 'revision'): void {
  if (!Number.isSafeInteger(rev) || rev < 0) throw invalid(`${what} must be a non-negative integer: ${rev}`);
}

export const checkValue = (value: string): void => {
  if (typeof value !== 'string') throw invalid('store value must be a string');
};

/**
 * The checks of a write (create, update, put): key, value, TTL and, for an update, the revision
 * it is conditional on. Throws INVALID naming the first bad one.
 */
export function checkWrite(key: string, value: string, ttl: number | undefined, ifRevision?: number): void {
  checkKey(key);
  checkValue(value);
  checkTtl(ttl);
  if (ifRevision !== undefined) checkRevision(ifRevision, 'ifRevision');
}
