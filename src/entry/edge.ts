/**
 * The edges' error formats, in one place: a WeftError's stable code becomes an HTTP status (the
 * daemon's API), a process exit status (the CLI), and back (the API client rebuilds the error
 * from the JSON body, so the CLI reports the daemon's words and code).
 */
import { asWeftError, type ErrorCode, ErrorCodes, WeftError } from '../lib/errors.js';

export const httpStatus: Record<ErrorCode, number> = {
  INVALID: 400,
  NOT_FOUND: 404,
  EXISTS: 409,
  CONFLICT: 409,
  BUSY: 409,
  PERMISSION: 403,
  UNAVAILABLE: 503,
  TIMEOUT: 504,
  UNSUPPORTED: 501,
  INTERNAL: 500,
};

/** Exit statuses by error code: 1 for "it failed", 2 for "you asked wrongly". */
export const exitStatus: Record<ErrorCode, number> = {
  INVALID: 2,
  NOT_FOUND: 3,
  EXISTS: 4,
  CONFLICT: 4,
  BUSY: 5,
  PERMISSION: 6,
  UNAVAILABLE: 7,
  TIMEOUT: 7,
  UNSUPPORTED: 8,
  INTERNAL: 1,
};

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details: Record<string, unknown> };
}

export function errorBody(e: unknown): { status: number; body: ErrorBody } {
  const err = asWeftError(e);
  return { status: httpStatus[err.code], body: { error: err.toJSON() } };
}

/** Rebuild the WeftError an API answer carries (anything malformed is INTERNAL). */
export function errorFromBody(status: number, body: unknown): WeftError {
  const e = (body as Partial<ErrorBody> | undefined)?.error;
  if (e && typeof e.message === 'string' && (ErrorCodes as readonly string[]).includes(e.code)) {
    return new WeftError(e.code, e.message, { details: e.details ?? {} });
  }
  return new WeftError('INTERNAL', `the daemon answered HTTP ${status} without an error body`);
}
