/**
 * CNI errors: the error object a plugin prints on stdout (`{cniVersion, code, msg, details}`),
 * and the one mapping of weft's error codes to CNI's well-known codes. Codes 0-99 are the
 * spec's; 100+ are plugin-specific (weft uses 100 for "CHECK found drift" and 999, as libcni
 * does, for internal errors).
 *
 *   1 incompatible CNI version      2 unsupported field in the network configuration
 *   3 container unknown             4 invalid or missing environment variables
 *   5 I/O failure                   6 failed to decode content (config, CNI_ARGS, prevResult)
 *   7 invalid network configuration 11 try again later (the daemon is not running)
 *   50 plugin not available         51 not available, existing containers may be limited
 */
import type { ErrorCode } from '../../lib/errors.js';

export const CniCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  UnknownContainer: 3,
  InvalidEnvironment: 4,
  IOFailure: 5,
  DecodingFailure: 6,
  InvalidConfig: 7,
  TryAgainLater: 11,
  NotAvailable: 50,
  LimitedConnectivity: 51,
  /** weft: CHECK found the container's networking different from what ADD made. */
  Drift: 100,
  Internal: 999,
} as const;
export type CniCodeValue = (typeof CniCode)[keyof typeof CniCode];

/** An error with its CNI code; `details` is the long message (a string, as the spec says). */
export class CniError extends Error {
  readonly code: number;
  readonly details: string;

  constructor(code: number, msg: string, details = '') {
    super(msg);
    this.name = 'CniError';
    this.code = code;
    this.details = details;
  }

  /** The object printed on stdout. */
  toJSON(cniVersion: string): { cniVersion: string; code: number; msg: string; details?: string } {
    return {
      cniVersion,
      code: this.code,
      msg: this.message,
      ...(this.details !== '' && { details: this.details }),
    };
  }
}

/** The commands a weft error can come from, for the few codes that depend on it. */
export type Command = 'ADD' | 'DEL' | 'CHECK' | 'STATUS' | 'GC' | 'VERSION';

/**
 * The CNI code for an error the daemon (or the client) reported with a weft code.
 * UNAVAILABLE/TIMEOUT/BUSY are transient (11); INVALID/CONFLICT/EXISTS/NOT_FOUND mean the
 * configuration (network, address, port, MAC) cannot be honoured (7), except for CHECK, where
 * NOT_FOUND is an unknown container (3) and CONFLICT is drift (100). STATUS answers 50 ("the
 * plugin is not available") for all of these: 11 is not a STATUS code in the spec.
 */
export function cniCodeFor(code: ErrorCode, command: Command): number {
  switch (code) {
    case 'UNAVAILABLE':
    case 'TIMEOUT':
    case 'BUSY':
      return command === 'STATUS' ? CniCode.NotAvailable : CniCode.TryAgainLater;
    case 'NOT_FOUND':
      if (command === 'CHECK') return CniCode.UnknownContainer;
      if (command === 'STATUS') return CniCode.NotAvailable;
      return CniCode.InvalidConfig;
    case 'CONFLICT':
      return command === 'CHECK' ? CniCode.Drift : CniCode.InvalidConfig;
    case 'INVALID':
    case 'EXISTS':
      return command === 'STATUS' ? CniCode.NotAvailable : CniCode.InvalidConfig;
    default:
      return CniCode.Internal;
  }
}

/** Turn anything thrown into a CniError (a WeftError-like value keeps its message and details). */
export function asCniError(e: unknown, command: Command): CniError {
  if (e instanceof CniError) return e;
  const w = e as { code?: unknown; message?: unknown; details?: unknown } | null;
  if (w && typeof w === 'object' && typeof w.code === 'string' && typeof w.message === 'string') {
    const problems = (w.details as { problems?: unknown } | undefined)?.problems;
    const details = Array.isArray(problems) ? problems.map(String).join('; ') : '';
    return new CniError(cniCodeFor(w.code as ErrorCode, command), w.message, details);
  }
  const message = e instanceof Error ? e.message : String(e);
  return new CniError(CniCode.Internal, `internal error: ${message}`);
}
