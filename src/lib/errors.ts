/**
 * Typed errors with stable codes. Callers branch on `code`, never on message text; the edges
 * (CLI, HTTP API, CNI, Docker plugin) map codes to their own formats in one place each.
 */

export const ErrorCodes = [
  'NOT_FOUND', // the object (link, namespace, route, network, sandbox) does not exist
  'EXISTS', // an object of that identity already exists
  'BUSY', // in use (e.g. a network with endpoints, an address range exhausted by callers)
  'PERMISSION', // the kernel or the OS refused: not root, missing capability
  'INVALID', // bad input: a name, an address, an option; nothing was changed
  'CONFLICT', // valid on its own but clashes with existing state (overlapping subnet, port taken)
  'UNAVAILABLE', // try again later: a daemon or store does not answer
  'TIMEOUT', // the kernel or a peer did not answer in time
  'UNSUPPORTED', // the kernel or this build lacks the feature
  'INTERNAL', // a bug or an unexpected kernel answer
] as const;
export type ErrorCode = (typeof ErrorCodes)[number];

export interface WeftErrorOptions {
  cause?: unknown;
  /** Structured context for logs and API answers (names, addresses, the request). */
  details?: Record<string, unknown>;
}

export class WeftError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: WeftErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WeftError';
    this.code = code;
    this.details = options.details ?? {};
  }

  toJSON(): { code: ErrorCode; message: string; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

export const notFound = (message: string, details?: Record<string, unknown>): WeftError =>
  new WeftError('NOT_FOUND', message, details ? { details } : {});
export const invalid = (message: string, details?: Record<string, unknown>): WeftError =>
  new WeftError('INVALID', message, details ? { details } : {});
export const conflict = (message: string, details?: Record<string, unknown>): WeftError =>
  new WeftError('CONFLICT', message, details ? { details } : {});

/** Linux errno values that the kernel layer maps to codes. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EINVAL: 22,
  ENOSPC: 28,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ENODATA: 61,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETUNREACH: 101,
  ETIMEDOUT: 110,
} as const;

const errnoNames = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));
export const errnoName = (errno: number): string => errnoNames.get(errno) ?? `errno ${errno}`;

export function codeForErrno(errno: number): ErrorCode {
  switch (errno) {
    case Errno.ENOENT:
    case Errno.ENODEV:
    case Errno.ESRCH:
    case Errno.ENXIO:
    case Errno.EADDRNOTAVAIL:
      return 'NOT_FOUND';
    case Errno.EEXIST:
    case Errno.EADDRINUSE:
    case Errno.ENOTEMPTY:
      return 'EXISTS';
    case Errno.EBUSY:
      return 'BUSY';
    case Errno.EPERM:
    case Errno.EACCES:
      return 'PERMISSION';
    case Errno.EINVAL:
    case Errno.ERANGE:
    case Errno.ENAMETOOLONG:
    case Errno.ENETUNREACH:
      return 'INVALID';
    case Errno.EAGAIN:
    case Errno.ETIMEDOUT:
      return 'TIMEOUT';
    case Errno.EOPNOTSUPP:
    case Errno.EPROTONOSUPPORT:
    case Errno.EAFNOSUPPORT:
    case Errno.ENOSYS:
      return 'UNSUPPORTED';
    default:
      return 'INTERNAL';
  }
}

/** An error the kernel returned (a netlink NLMSG_ERROR or a failed syscall). */
export class KernelError extends WeftError {
  readonly errno: number;
  /** What was asked: `RTM_NEWLINK veth0`, `setns(/run/netns/x)`, … */
  readonly op: string;

  constructor(errno: number, op: string, options: WeftErrorOptions & { message?: string } = {}) {
    const msg = `${op}: ${options.message ?? errnoName(errno)}`;
    super(codeForErrno(errno), msg, { ...options, details: { errno, op, ...options.details } });
    this.name = 'KernelError';
    this.errno = errno;
    this.op = op;
  }
}

export const isWeftError = (e: unknown, code?: ErrorCode): e is WeftError =>
  e instanceof WeftError && (code === undefined || e.code === code);

/** Turn anything thrown into a WeftError without losing the original. */
export function asWeftError(e: unknown): WeftError {
  if (e instanceof WeftError) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new WeftError('INTERNAL', message, { cause: e });
}
