/**
 * Structured logging: one JSON object per line on stderr (or a sink of the caller's), with a
 * level, a message and fields. Components get child loggers carrying their own fields.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const order: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export type Sink = (line: string) => void;

function serialise(v: unknown): unknown {
  if (v instanceof Error) {
    const e = v as Error & { code?: unknown; details?: unknown };
    return { name: e.name, message: e.message, ...(e.code === undefined ? {} : { code: e.code }) };
  }
  if (typeof v === 'bigint') return v.toString();
  return v;
}

export function createLogger(
  opts: { level?: Level; sink?: Sink; fields?: Record<string, unknown> } = {},
): Logger {
  const min = order[opts.level ?? (process.env.WEFT_LOG_LEVEL as Level | undefined) ?? 'info'] ?? 20;
  const sink: Sink = opts.sink ?? ((line) => process.stderr.write(`${line}\n`));
  const base = opts.fields ?? {};
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (order[level] < min) return;
    const rec: Record<string, unknown> = { time: new Date().toISOString(), level, msg, ...base };
    for (const [k, v] of Object.entries(fields ?? {})) rec[k] = serialise(v);
    sink(JSON.stringify(rec));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger({ ...opts, fields: { ...base, ...fields } }),
  };
}

/** A logger that drops everything (tests, quiet library use). */
export const nullLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => nullLogger,
};
