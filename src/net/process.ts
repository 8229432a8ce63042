/**
 * The sandbox's process: a real, minimal container for networking purposes.
 *
 * How it starts. The command runs in the sandbox's network namespace (spawned from a switched
 * section, `netns.spawn`; or the caller's own namespace for the host driver) and, through
 * util-linux `unshare --uts --mount`, in a new UTS namespace and a new mount namespace. A
 * constant `sh -c` prelude (every value reaches it as a positional argument, never spliced into
 * the script) sets the hostname, bind-mounts the generated hosts / resolv.conf / hostname files
 * over /etc/hosts, /etc/resolv.conf and /etc/hostname, then `exec "$@"`s the command. unshare
 * and sh both exec, so the pid we get is the command's own pid.
 *
 * Mount propagation is `slave`, not `private`: our bind mounts never reach the host (a slave
 * only receives), while unmounts on the host still reach the sandbox. That matters for namespace
 * pins on a shared mount (iproute2's /run/netns): with `private` every running sandbox would keep
 * a copy of every pin that existed when it started, and a removed namespace would live on.
 *
 * /etc/resolv.conf is a symlink on some hosts (systemd-resolved). The prelude binds over the
 * symlink's resolved target when that is a regular file; when the link dangles (or a file is
 * missing altogether) it puts a tmpfs-backed overlay on /etc, inside the private mount namespace
 * only, replaces the entry there by an empty file and binds over that. The host's /etc is never
 * touched.
 *
 * Detecting a failed start. fd 3 of the prelude is a socket to us: a setup step that fails, or a
 * command not found the way exec would search for it (PATH, builtins excluded), is reported on it before the prelude exits; otherwise
 * the prelude closes it just before the final exec. After that EOF we wait a short bounded grace
 * period: an exec that still fails (a shell builtin with no binary, an unusable file) exits with
 * 126/127 within it.
 *
 * Lifetime. The process outlives the daemon: its own session (detached), stdin /dev/null, stdout
 * and stderr appended to a log file we open and pass as fds (no pipe to the daemon). A pid is
 * identified together with its start time (field 22 of /proc/PID/stat), so a reused pid is never
 * mistaken for ours; signals go to the process group (the session we created), so helpers the
 * command forked go with it.
 *
 * Files are written in place (truncate and write, same inode): a bind mount pins the inode, so a
 * later update through `writeSandboxFiles` is seen inside the running sandbox, a rename would not be.
 */
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Netns } from '../kernel/netns.js';
import { invalid, notFound, WeftError } from '../lib/errors.js';

export interface SandboxFiles {
  /** Contents of /etc/hosts. */
  readonly hosts: string;
  /** Contents of /etc/resolv.conf. */
  readonly resolvConf: string;
  /** Contents of /etc/hostname. */
  readonly hostname: string;
}

export interface ProcessSpec {
  /** The network namespace to run in; 'host' = the caller's own (the host driver). */
  readonly netns: Netns | 'host';
  /** Hostname inside the sandbox's UTS namespace (RFC 1123, at most 64 bytes). */
  readonly hostname: string;
  /** Absolute folder for the generated files (created if missing). */
  readonly filesDir: string;
  readonly files: SandboxFiles;
  /** argv of the command; cmd[0] is looked up in the sandbox's PATH. */
  readonly cmd: readonly string[];
  /** Environment of the command, over a default PATH and HOSTNAME. The daemon's is not inherited. */
  readonly env?: Readonly<Record<string, string>>;
  /** Absolute path of the log; stdout and stderr are appended to it. */
  readonly logPath: string;
  /** Working directory (absolute, must exist). */
  readonly cwd?: string;
}

export interface ProcessRef {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat (clock ticks after boot): tells our process from a reused pid. */
  readonly startTime: string;
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** How long the prelude may take to set the sandbox up before the start counts as failed. */
const SETUP_TIMEOUT_MS = 10_000;
/** After the prelude's last word: how long an exec failure (exit 126/127) is waited for. */
const EXEC_GRACE_MS = 50;
/** Bound on waiting for a killed process to disappear. */
const KILL_WAIT_MS = 5_000;
const HOST_NAME_MAX = 64;
const LABEL = '[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?';
const HOSTNAME_RE = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);
const OVERLAY_DIR = '.etc-overlay';

// The prelude. $1 hostname, $2..$4 the hosts / resolv.conf / hostname files, $5 a folder for the
// /etc overlay (only used when an /etc entry dangles or is missing), then the command.
// Setup runs with a fixed PATH; the command's own PATH is restored before it is looked up.
const PRELUDE = `
userpath=$PATH
PATH=/usr/sbin:/usr/bin:/sbin:/bin
fail() { printf 'setup %s\\n' "$1" >&3; exit 125; }
name=$1 hosts=$2 resolv=$3 hostnamef=$4 ovl=$5
shift 5
hostname "$name" 2>/dev/null || printf '%s' "$name" > /proc/sys/kernel/hostname || fail "sethostname $name"
ovl_done=
overlay_etc() {
  [ -n "$ovl_done" ] && return 0
  mkdir -p "$ovl" && mount -n -t tmpfs -o mode=0700 weft-etc "$ovl" && mkdir "$ovl/u" "$ovl/w" &&
    mount -n -t overlay weft-etc -o "lowerdir=/etc,upperdir=$ovl/u,workdir=$ovl/w" /etc && ovl_done=1
}
bindetc() {
  src=$1 dst=$2
  if [ -L "$dst" ]; then
    real=$(readlink -f "$dst" 2>/dev/null) || real=
    if [ -n "$real" ] && [ -f "$real" ]; then
      dst=$real
    else
      overlay_etc || return 1
      rm -f "$dst" && : > "$dst" || return 1
    fi
  elif [ ! -e "$dst" ]; then
    overlay_etc || return 1
    : > "$dst" || return 1
  fi
  mount -n --bind "$src" "$dst"
}
bindetc "$hosts" /etc/hosts || fail "bind /etc/hosts"
bindetc "$resolv" /etc/resolv.conf || fail "bind /etc/resolv.conf"
bindetc "$hostnamef" /etc/hostname || fail "bind /etc/hostname"
PATH=$userpath
# The search exec will do: a path as is, a bare name through PATH (builtins do not count).
found=
case $1 in
  */*) [ -f "$1" ] && [ -x "$1" ] && found=1 ;;
  *)
    set -f; oldifs=$IFS; IFS=:
    for d in $PATH; do
      [ -n "$d" ] || d=.
      if [ -f "$d/$1" ] && [ -x "$d/$1" ]; then found=1; break; fi
    done
    IFS=$oldifs; set +f ;;
esac
[ -n "$found" ] || { printf 'notfound\\n' >&3; exit 127; }
printf 'exec\\n' >&3
exec 3>&-
exec "$@"
`;

/** Paths of the three generated files inside `filesDir`. */
export function sandboxFilePaths(filesDir: string): { hosts: string; resolvConf: string; hostname: string } {
  return {
    hosts: path.join(filesDir, 'hosts'),
    resolvConf: path.join(filesDir, 'resolv.conf'),
    hostname: path.join(filesDir, 'hostname'),
  };
}

/**
 * Write (or rewrite) the three files into `filesDir`, mode 0644, in place so that a running
 * sandbox's bind mounts see the new contents. Throws INVALID for a relative folder; fs errors
 * (EACCES, ENOSPC…) as they come.
 */
export function writeSandboxFiles(filesDir: string, files: SandboxFiles): void {
  if (!path.isAbsolute(filesDir)) throw invalid(`files folder must be absolute: "${filesDir}"`);
  fs.mkdirSync(filesDir, { recursive: true, mode: 0o755 });
  const p = sandboxFilePaths(filesDir);
  for (const [file, body] of [
    [p.hosts, files.hosts],
    [p.resolvConf, files.resolvConf],
    [p.hostname, files.hostname],
  ] as const) {
    fs.writeFileSync(file, body, { mode: 0o644 });
    fs.chmodSync(file, 0o644);
  }
}

/** Throws INVALID unless `name` is a hostname the sandbox can carry. */
export function checkHostname(name: string): string {
  if (typeof name !== 'string' || Buffer.byteLength(name) > HOST_NAME_MAX || !HOSTNAME_RE.test(name)) {
    throw invalid(
      `hostname "${name}" is invalid: use dot-separated labels of [a-zA-Z0-9-] (not starting or ending with -), at most ${HOST_NAME_MAX} bytes`,
      { hostname: name },
    );
  }
  return name;
}

function checkSpec(spec: ProcessSpec): Record<string, string> {
  checkHostname(spec.hostname);
  if (!path.isAbsolute(spec.filesDir)) throw invalid(`files folder must be absolute: "${spec.filesDir}"`);
  if (!path.isAbsolute(spec.logPath)) throw invalid(`log path must be absolute: "${spec.logPath}"`);
  if (!Array.isArray(spec.cmd) || spec.cmd.length === 0 || spec.cmd[0] === '') {
    throw invalid('the command must not be empty');
  }
  for (const a of spec.cmd) {
    if (typeof a !== 'string' || a.includes('\0'))
      throw invalid('command arguments must be strings without NUL');
  }
  const env: Record<string, string> = { PATH: DEFAULT_PATH, HOSTNAME: spec.hostname };
  for (const [k, v] of Object.entries(spec.env ?? {})) {
    if (k === '' || k.includes('=') || k.includes('\0') || typeof v !== 'string' || v.includes('\0')) {
      throw invalid(`invalid environment variable "${k}"`, { name: k });
    }
    env[k] = v;
  }
  if (spec.cwd !== undefined) {
    if (!path.isAbsolute(spec.cwd)) throw invalid(`working directory must be absolute: "${spec.cwd}"`);
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(spec.cwd);
    } catch {
      st = undefined;
    }
    if (!st?.isDirectory()) throw notFound(`working directory ${spec.cwd} does not exist`, { cwd: spec.cwd });
  }
  return env;
}

/** A program in one of the usual system folders (or the daemon's PATH); undefined if none. */
function findProgram(name: string): string | undefined {
  const dirs = ['/usr/bin', '/bin', '/usr/sbin', '/sbin', ...(process.env.PATH ?? '').split(':')];
  for (const d of dirs) {
    if (!d) continue;
    const p = path.join(d, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // next
    }
  }
  return undefined;
}

type Outcome =
  | { kind: 'ready' }
  | { kind: 'message'; text: string }
  | { kind: 'exit'; code: number | null; signal: NodeJS.Signals | null }
  | { kind: 'error'; error: Error }
  | { kind: 'timeout' };

/**
 * Waits for the prelude's verdict on fd 3: `exec` (it is about to exec the command), a failure
 * message, or EOF without a word (it died before: unshare failed); or a spawn error, or the bound.
 */
function preludeOutcome(child: ChildProcess): Promise<Outcome> {
  return new Promise((resolve) => {
    const status = child.stdio[3] as NodeJS.ReadableStream | null | undefined;
    let text = '';
    let done = false;
    const finish = (o: Outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(o);
    };
    const timer = setTimeout(() => finish({ kind: 'timeout' }), SETUP_TIMEOUT_MS);
    child.once('error', (error) => finish({ kind: 'error', error }));
    if (!status) {
      child.once('exit', (code, signal) => finish({ kind: 'exit', code, signal }));
      return;
    }
    status.on('data', (d: string | Buffer) => {
      text += d.toString();
    });
    status.on('error', () => {});
    status.once('end', () => {
      const word = text.trim();
      if (word === 'exec') return finish({ kind: 'ready' });
      if (word) return finish({ kind: 'message', text: word });
      // No word: the prelude never ran or died; its exit status tells why.
      void waitChildExit(child, KILL_WAIT_MS).then((e) =>
        finish(e ? { kind: 'exit', code: e.code, signal: e.signal } : { kind: 'timeout' }),
      );
    });
  });
}

/** True while `pid` still runs the prelude (`/bin/sh -c PRELUDE weft-init …`), i.e. before its exec. */
function inPrelude(pid: number): boolean {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv[0] === '/bin/sh' && argv[1] === '-c' && argv[3] === 'weft-init';
  } catch {
    return false;
  }
}

/**
 * After the prelude said it is about to exec: resolve as soon as the exec happened (the
 * process's argv is no longer the prelude's), or with the exit when the exec failed, polling
 * every 2 ms for at most `ms`. The usual case returns in a few ms instead of waiting `ms`.
 */
async function waitExecOrExit(
  child: ChildProcess,
  pid: number | undefined,
  ms: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const exited = await waitChildExit(child, 2);
    if (exited) return exited;
    if (pid !== undefined && !inPrelude(pid)) return undefined;
  }
  return undefined;
}

function waitChildExit(
  child: ChildProcess,
  ms: number,
): Promise<{ code: number | null; signal: NodeJS.Signals | null } | undefined> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(undefined);
    }, ms);
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      clearTimeout(timer);
      resolve({ code, signal });
    };
    child.once('exit', onExit);
  });
}

/**
 * Write the files and start the sandbox's command (see the note at the top). Resolves once the
 * sandbox is set up and the command is being exec'd.
 *
 * Throws (before anything is written) INVALID for a bad hostname, relative paths, an empty
 * command or bad environment; NOT_FOUND for a missing working directory. After the files are
 * written: NOT_FOUND when the command (named in the message and `details.command`) cannot be
 * found or `unshare` is missing; INVALID when the command exists but cannot be executed (exit
 * 126); INTERNAL when a setup step (hostname, a bind mount, the namespaces) fails, with the tail
 * of the log in `details.log`; TIMEOUT when setup does not finish in time. A failed start leaves
 * no process behind (the log keeps the shell's message).
 */
export async function startProcess(spec: ProcessSpec): Promise<ProcessRef> {
  const env = checkSpec(spec);
  const command = spec.cmd[0] as string;
  const unshare = findProgram('unshare');
  if (!unshare) throw notFound('util-linux unshare is not installed', { program: 'unshare' });

  writeSandboxFiles(spec.filesDir, spec.files);
  const files = sandboxFilePaths(spec.filesDir);
  const ovl = path.join(spec.filesDir, OVERLAY_DIR);
  fs.mkdirSync(ovl, { recursive: true, mode: 0o700 });
  fs.mkdirSync(path.dirname(spec.logPath), { recursive: true });

  const args = [
    '--uts',
    '--mount',
    '--propagation',
    'slave',
    '--',
    '/bin/sh',
    '-c',
    PRELUDE,
    'weft-init',
    spec.hostname,
    files.hosts,
    files.resolvConf,
    files.hostname,
    ovl,
    ...spec.cmd,
  ];
  const logFd = fs.openSync(
    spec.logPath,
    fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT,
    0o640,
  );
  const opts: SpawnOptions = {
    detached: true,
    stdio: ['ignore', logFd, logFd, 'pipe'],
    env,
    ...(spec.cwd !== undefined && { cwd: spec.cwd }),
  };
  let child: ChildProcess;
  let startTime: string | undefined;
  try {
    const netns = spec.netns;
    // Read the start time before returning to the event loop: until then libuv cannot reap the
    // child, so /proc/PID is still there even if the command has already finished.
    const spawnAndStamp = (): ChildProcess => {
      const c = netns === 'host' ? spawn(unshare, args, opts) : netns.spawn(unshare, args, opts);
      if (c.pid !== undefined) startTime = readStat(c.pid)?.startTime;
      return c;
    };
    child = spawnAndStamp();
  } finally {
    fs.closeSync(logFd);
  }
  const pid = child.pid;
  const outcome = await preludeOutcome(child);
  const status = child.stdio[3] as (NodeJS.ReadableStream & { destroy?: () => void }) | null | undefined;
  status?.destroy?.();

  const fail = async (err: WeftError): Promise<never> => {
    if (pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await waitChildExit(child, KILL_WAIT_MS);
    }
    throw err;
  };
  const details = { command, cmd: spec.cmd, hostname: spec.hostname };
  const logTail = () => {
    try {
      return readLog(spec.logPath, { tail: 5 });
    } catch {
      return '';
    }
  };
  const exitFailure = (code: number | null, signal: NodeJS.Signals | null): WeftError => {
    if (code === 127) return notFound(`command "${command}" not found in the sandbox`, details);
    if (code === 126) return invalid(`command "${command}" cannot be executed`, details);
    const log = logTail();
    return new WeftError(
      'INTERNAL',
      `sandbox setup failed before "${command}" ran (${signal ?? `exit ${code}`})${log ? `: ${log.trim().split('\n').at(-1)}` : ''}`,
      { details: { ...details, code, signal, log } },
    );
  };

  switch (outcome.kind) {
    case 'error': {
      const e = outcome.error as NodeJS.ErrnoException;
      if (e.code === 'ENOENT') {
        return fail(
          new WeftError('NOT_FOUND', `cannot start the sandbox: ${unshare} not found`, {
            cause: e,
            details: { program: unshare },
          }),
        );
      }
      return fail(new WeftError('INTERNAL', `cannot start the sandbox: ${e.message}`, { cause: e, details }));
    }
    case 'timeout':
      return fail(
        new WeftError('TIMEOUT', `sandbox setup did not finish within ${SETUP_TIMEOUT_MS} ms`, {
          details: { ...details, log: logTail() },
        }),
      );
    case 'message': {
      if (outcome.text === 'notfound')
        return fail(notFound(`command "${command}" not found in the sandbox`, details));
      const log = logTail();
      return fail(
        new WeftError('INTERNAL', `sandbox setup failed: ${outcome.text.replace(/^setup /, '')}`, {
          details: { ...details, step: outcome.text, log },
        }),
      );
    }
    case 'exit':
      return fail(exitFailure(outcome.code, outcome.signal));
    case 'ready':
      break;
  }
  const early = await waitExecOrExit(child, pid, EXEC_GRACE_MS);
  if (early && (early.code === 126 || early.code === 127)) return fail(exitFailure(early.code, early.signal));
  if (pid === undefined || startTime === undefined) {
    return fail(
      new WeftError('INTERNAL', `started "${command}" but could not read its pid or start time`, { details }),
    );
  }
  child.unref();
  return { pid, startTime };
}

interface Stat {
  state: string;
  startTime: string;
}

/** State and start time from /proc/PID/stat; undefined when there is no such process. */
function readStat(pid: number): Stat | undefined {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // comm (field 2) is in parentheses and may itself hold spaces and parentheses.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = rest[0]; // field 3
  const startTime = rest[19]; // field 22
  if (state === undefined || startTime === undefined) return undefined;
  return { state, startTime };
}

function checkPid(pid: number): void {
  if (!Number.isInteger(pid) || pid <= 0) throw invalid(`invalid pid ${pid}`, { pid });
}

/**
 * True when `pid` is still the process we started (same start time) and has not exited (a
 * zombie counts as exited). Throws INVALID for a pid that is not a positive integer.
 */
export function processAlive(pid: number, startTime: string): boolean {
  checkPid(pid);
  const st = readStat(pid);
  return st !== undefined && st.startTime === startTime && st.state !== 'Z' && st.state !== 'X';
}

/**
 * Wait until the process has exited (or was never ours): resolves true, or false after
 * `timeoutMs`. Throws INVALID for a bad pid.
 */
export async function waitExit(pid: number, startTime: string, timeoutMs: number): Promise<boolean> {
  checkPid(pid);
  const deadline = Date.now() + Math.max(0, timeoutMs);
  let step = 10;
  for (;;) {
    if (!processAlive(pid, startTime)) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await new Promise((r) => setTimeout(r, Math.min(step, left)));
    step = Math.min(step * 2, 100);
  }
}

/** Signal the process group (our detached session), or the process alone if that fails. */
function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      // exited meanwhile
    }
  }
}

/**
 * Stop the sandbox's process: SIGTERM to its process group, SIGKILL after `timeoutMs`. Only
 * signals it while it is still our process (pid and start time match); idempotent (an exited
 * process is success). Throws INVALID for a bad pid, TIMEOUT when even SIGKILL does not end it
 * within a bounded wait (a process stuck in the kernel).
 */
export async function stopProcess(
  pid: number,
  startTime: string,
  opts: { timeoutMs: number },
): Promise<void> {
  checkPid(pid);
  if (!processAlive(pid, startTime)) return;
  signal(pid, 'SIGTERM');
  if (await waitExit(pid, startTime, opts.timeoutMs)) return;
  if (!processAlive(pid, startTime)) return;
  signal(pid, 'SIGKILL');
  if (await waitExit(pid, startTime, KILL_WAIT_MS)) return;
  throw new WeftError('TIMEOUT', `process ${pid} did not exit after SIGKILL`, {
    details: { pid, startTime },
  });
}

/**
 * The argv prefix that runs a command inside the sandbox's namespaces (network, UTS, mount),
 * for `weft exec`: `[...execArgs(pid), 'cat', '/etc/hostname']`. Throws INVALID for a bad pid.
 */
export function execArgs(pid: number): string[] {
  checkPid(pid);
  return ['nsenter', '--target', String(pid), '--net', '--uts', '--mount', '--'];
}

const CHUNK = 64 * 1024;
/** Without `tail`, at most this much of the end of the log is returned. */
const LOG_MAX = 16 * 1024 * 1024;

/**
 * The log of a sandbox (for `weft logs`): the last `tail` lines, or the whole log (its last 16
 * MiB when larger). Throws NOT_FOUND when there is no log, INVALID for a bad `tail`.
 */
export function readLog(logPath: string, opts: { tail?: number } = {}): string {
  const { tail } = opts;
  if (tail !== undefined && (!Number.isInteger(tail) || tail < 0)) {
    throw invalid(`tail must be a non-negative integer, not ${tail}`, { tail });
  }
  let fd: number;
  try {
    fd = fs.openSync(logPath, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw notFound(`no log at ${logPath}`, { logPath });
    throw e;
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (tail === 0 || size === 0) return '';
    // Read backwards until `tail` line ends are in hand (the final newline does not start a line).
    const parts: Buffer[] = [];
    let pos = size;
    let newlines = 0;
    let lastByteChecked = false;
    const want = tail === undefined ? Number.POSITIVE_INFINITY : tail;
    while (pos > 0 && size - pos < LOG_MAX) {
      const len = Math.min(CHUNK, pos);
      pos -= len;
      const buf = Buffer.alloc(len);
      fs.readSync(fd, buf, 0, len, pos);
      parts.unshift(buf);
      if (tail === undefined) continue;
      for (let i = len - 1; i >= 0; i--) {
        if (!lastByteChecked) {
          lastByteChecked = true;
          if (buf[i] === 0x0a) continue;
        }
        if (buf[i] === 0x0a && ++newlines === want) {
          parts[0] = buf.subarray(i + 1);
          return Buffer.concat(parts).toString('utf8');
        }
      }
    }
    return Buffer.concat(parts).toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}
