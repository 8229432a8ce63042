/**
 * The sandbox's process: a real, minimal container for networking purposes.
 *
 * How it starts. One helper process (kernel/sandbox-init.ts: a constant Perl script, which makes
 * the system calls) does the whole setup and then execs the command, so the pid we get is the
 * command's own. Spawned knowing nothing of a sandbox, it makes a network namespace of its own
 * while it waits for one request on fd 3 that carries all of it; then it pins that namespace
 * (a `{ pin }` spec: the caller plumbs it while the helper goes on, see `ProcessStarter.begin`)
 * or enters the spec's, writes the log and the hosts / resolv.conf / hostname files (the
 * daemon's thread does not pay for three file creations, ~0.7 ms on ext4), makes its own UTS
 * and mount namespaces, binds the files over /etc, says `ready` and waits for `start()`.
 *
 * Two phases. `prepare` sends the request and resolves on `ready`: the daemon plumbs the network
 * meanwhile. `start()` sends the start byte and resolves once the exec happened (the control
 * socket is close-on-exec in the helper: EOF after `go` means it did); a failed exec is
 * NOT_FOUND or INVALID, a failed setup step INTERNAL naming it.
 *
 * Why warm (`ProcessStarter`). Spawning is what a start costs the daemon: with child_process the
 * fork of a ~90 MB process held its main thread ~2 ms; posix_spawn (kernel/spawn.ts) waits only
 * for the exec, ~0.3-1 ms; perl then needs ~1.5 ms more before it reads. A helper spawned
 * beforehand and idle on fd 3 takes all of it off the request path; a request is then one
 * write. An idle helper can serve any sandbox, since it knows none: its own session, stdin,
 * stdout and stderr /dev/null, an empty environment. The next one is spawned with posix_spawn on
 * libuv's thread pool (the daemon's thread does not even wait for the exec) when the sandbox it
 * served is told to start, or has otherwise settled (cancelled or failed); a request that comes
 * while it is being spawned waits for it. A second request while one is in flight gets a helper
 * spawned on demand, which is also all that `prepareProcess` does (the cold path: spawn, then the
 * same request). Measured here (sleep in a namespace, median of 40, before posix_spawn):
 * prepare + start 1.2 ms warm (1.8 ms when it comes within ~1.5 ms of the previous start: perl
 * is still starting) against 3.3 ms cold. An
 * idle helper that died (killed, or its TTL) is noticed on its exit and replaced, at most once a
 * second; one found dead when a request comes is not used, and one that dies without a word while
 * taking a request is replaced by a helper spawned on demand.
 *
 * Lifetime. The process outlives the daemon: its own session (detached), stdin /dev/null, stdout
 * and stderr appended to its log (no pipe to the daemon). A pid is identified together with its
 * start time (field 22 of /proc/PID/stat), so a reused pid is never mistaken for ours; signals go
 * to the process group (the session we created), so helpers the command forked go with it.
 *
 * Files are written in place (truncate and write, same inode): a bind mount pins the inode, so a
 * later update through `writeSandboxFiles` is seen inside the running sandbox, a rename would not be.
 */
import * as fs from 'node:fs';
import type { Socket } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Netns } from '../kernel/netns.js';
import { DEFAULT_PATH } from '../kernel/run.js';
import {
  encodeInitRequest,
  type InitCommand,
  initCommand,
  PREPARED_TTL_S,
  spawnInit,
  spawnInitAsync,
} from '../kernel/sandbox-init.js';
import type { ExitStatus, Spawned } from '../kernel/spawn.js';
import { invalid, notFound, WeftError } from '../lib/errors.js';
import { type Logger, nullLogger } from '../lib/log.js';

export interface SandboxFiles {
  /** Contents of /etc/hosts. */
  readonly hosts: string;
  /** Contents of /etc/resolv.conf. */
  readonly resolvConf: string;
  /** Contents of /etc/hostname. */
  readonly hostname: string;
}

export interface ProcessSpec {
  /**
   * The network namespace to run in: an existing one (entered by its path, checked against the
   * handle's inode); 'host' = the caller's own (the host driver); `{ pin }` = a new one, made by
   * the helper while it was idle (lo up) and pinned at that path when the request comes (see
   * `ProcessStarter.begin`).
   */
  readonly netns: Netns | 'host' | NewNetns;
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

/** A new network namespace for the sandbox, pinned (bind-mounted) at `pin`, which must not exist. */
export interface NewNetns {
  readonly pin: string;
}

/** A prepare under way (see `ProcessStarter.begin`). */
export interface Preparing {
  /**
   * The sandbox's network namespace: for a `{ pin }` spec, a handle on the helper's new
   * namespace as soon as there is one — at once from an idle helper that made it already
   * (through /proc, while it pins it), else once the helper says it is pinned — well before
   * `prepared`; the caller's to close, also when `prepared` then rejects (the pin could not be
   * made). Otherwise the spec's own. Rejects as `prepared` does when the helper fails before.
   */
  readonly netns: Promise<Netns | 'host'>;
  readonly prepared: Promise<PreparedProcess>;
}

export interface ProcessRef {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat (clock ticks after boot): tells our process from a reused pid. */
  readonly startTime: string;
}

/** A command started by its sandbox helper: ours (our child) until it ends. */
export interface StartedProcess extends ProcessRef {
  /** Its exit status as a shell gives it: the exit code, or 128 + the number of the signal. */
  readonly exited: Promise<number>;
}

/** A sandbox set up (namespaces, hostname, files) whose command has not run yet. */
export interface PreparedProcess {
  /** The helper's pid; after `start()` the command's own. */
  readonly pid: number;
  /**
   * Run the command. Resolves once the exec happened. Throws NOT_FOUND when the command is not
   * found, INVALID when it cannot be executed or after `cancel()`, INTERNAL when the helper died
   * (with the log's tail), TIMEOUT when the exec did not happen in time or the helper waited
   * longer than PREPARED_TTL_S for this call. A failed start leaves no process behind. Calling it
   * again returns the same promise.
   */
  start(): Promise<StartedProcess>;
  /**
   * Kill the helper (by pid) and wait for it: the command never runs and the sandbox's mount and
   * UTS namespaces go with it. Idempotent; a no-op once `start()` was called (start settles it;
   * stop a started process with `stopProcess`). Throws TIMEOUT when the helper does not exit
   * after SIGKILL within a bounded wait.
   */
  cancel(): Promise<void>;
}

/** How long the helper may take to set the sandbox up (and, after `start()`, to exec). */
const SETUP_TIMEOUT_MS = 10_000;
/** Bound on waiting for a killed process to disappear. */
const KILL_WAIT_MS = 5_000;
/** An idle helper that died is replaced no sooner than this after it was spawned. */
const IDLE_RESPAWN_MS = 1_000;
const HOST_NAME_MAX = 64;
const LABEL = '[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?';
const HOSTNAME_RE = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);
const OVERLAY_DIR = '.etc-overlay';
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

/** Throws INVALID unless `p` is an absolute path without NUL. */
function checkAbsolute(what: string, p: string): void {
  if (typeof p !== 'string' || !path.isAbsolute(p)) throw invalid(`${what} must be absolute: "${p}"`);
  if (p.includes('\0')) throw invalid(`${what} must not contain NUL`);
}

const isNewNetns = (n: ProcessSpec['netns']): n is NewNetns =>
  n !== 'host' && typeof (n as NewNetns).pin === 'string';

/** The command's environment (defaults included), or INVALID / NOT_FOUND for a bad spec. */
function checkSpec(spec: ProcessSpec): Record<string, string> {
  checkHostname(spec.hostname);
  if (isNewNetns(spec.netns)) checkAbsolute('namespace pin', spec.netns.pin);
  checkAbsolute('files folder', spec.filesDir);
  checkAbsolute('log path', spec.logPath);
  for (const [name, body] of Object.entries(spec.files)) {
    if (typeof body !== 'string' || body.includes('\0'))
      throw invalid(`the ${name} file must be text without NUL`);
  }
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
    checkAbsolute('working directory', spec.cwd);
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

/** A checked spec and the request that tells a helper all of it. */
interface Request {
  readonly spec: ProcessSpec;
  readonly message: Buffer;
}

/**
 * Check `spec`, find the helper and make the request (the helper writes the files: see the note
 * at the top). Throws what `prepareProcess` documents for bad input, a missing perl or
 * architecture, and INTERNAL for a closed namespace handle; nothing is written here.
 */
function makeRequest(spec: ProcessSpec): { helper: InitCommand; req: Request } {
  const env = checkSpec(spec);
  const helper = initCommand();
  const pin = isNewNetns(spec.netns) ? spec.netns.pin : '';
  const ns =
    spec.netns === 'host' || isNewNetns(spec.netns)
      ? undefined
      : { path: path.resolve(spec.netns.path), inode: spec.netns.inode };
  const dir = path.resolve(spec.filesDir);
  const message = encodeInitRequest({
    pin,
    nsPath: ns?.path ?? '',
    nsInode: ns ? String(ns.inode) : '',
    hostname: spec.hostname,
    dir,
    hosts: spec.files.hosts,
    resolvConf: spec.files.resolvConf,
    hostnameFile: spec.files.hostname,
    overlay: path.join(dir, OVERLAY_DIR),
    log: spec.logPath,
    cwd: spec.cwd ?? '',
    env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
    argv: spec.cmd,
  });
  return { helper, req: { spec, message } };
}

type Event = { kind: 'line'; text: string } | { kind: 'eof' } | { kind: 'timeout' };

/** The helper's fd 3 seen from here: its words, one a line, then EOF; the request and start byte. */
class Control {
  readonly #sock: Socket;
  readonly #lines: string[] = [];
  #partial = '';
  #eof = false;
  #wake: (() => void) | undefined;

  constructor(sock: Socket) {
    const wake = () => {
      const w = this.#wake;
      this.#wake = undefined;
      w?.();
    };
    const ended = () => {
      if (this.#partial) this.#lines.push(this.#partial);
      this.#partial = '';
      this.#eof = true;
      wake();
    };
    this.#sock = sock;
    // Strings, not Buffers: a character split between two reads is joined first.
    this.#sock.setEncoding('utf8');
    this.#sock.on('data', (d: string) => {
      const parts = (this.#partial + d).split('\n');
      this.#partial = parts.pop() ?? '';
      this.#lines.push(...parts);
      wake();
    });
    this.#sock.once('end', ended);
    // EPIPE or ECONNRESET on a write: the helper is gone; its exit status tells why.
    this.#sock.on('error', ended);
    this.#sock.once('close', ended);
  }

  /** The next word, EOF, or a timeout after `ms`. */
  async next(ms: number): Promise<Event> {
    const deadline = Date.now() + ms;
    for (;;) {
      const text = this.#lines.shift();
      if (text !== undefined) return { kind: 'line', text };
      if (this.#eof) return { kind: 'eof' };
      const left = deadline - Date.now();
      if (left <= 0) return { kind: 'timeout' };
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.#wake = undefined;
          resolve();
        }, left);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }

  /** The request, or the start byte. */
  send(data: Buffer): void {
    if (!this.#sock.destroyed) this.#sock.write(data);
  }

  /** Whether the socket keeps the event loop alive (an idle helper's does not). */
  ref(on: boolean): void {
    if (on) this.#sock.ref();
    else this.#sock.unref();
  }

  close(): void {
    this.#sock.destroy();
  }
}

/** The child's exit, or undefined after `ms` (the timer keeps the event loop alive meanwhile). */
function waitChildExit(child: Spawned, ms: number): Promise<ExitStatus | undefined> {
  if (child.status) return Promise.resolve(child.status);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    void child.exited.then((st) => {
      clearTimeout(timer);
      resolve(st);
    });
  });
}

/** execfail errnos that say "this file cannot be executed" (a shell's exit 126). */
const NOT_EXECUTABLE = new Set([1, 7, 8, 13, 21, 22, 26, 36, 40]); // EPERM E2BIG ENOEXEC EACCES EISDIR EINVAL ETXTBSY ENAMETOOLONG ELOOP

const START_BYTE = Buffer.of(0x31);

/** One helper, from spawn to exec (or to its end): idle until `request`, then prepared. */
class Helper implements PreparedProcess {
  readonly pid: number;
  /** When it was spawned (performance.now()). */
  readonly spawnedAt = performance.now();
  readonly #child: Spawned;
  readonly #ctl: Control;
  readonly #startTime: string | undefined;
  #spec: ProcessSpec | undefined;
  #onSettled: (() => void) | undefined;
  #vanished = false;
  #started: Promise<StartedProcess> | undefined;
  #cancelled: Promise<void> | undefined;

  /**
   * Spawn a helper in the caller's own namespaces: detached, stdin, stdout and stderr /dev/null,
   * an empty environment, fd 3 the control socket. It waits for its request. posix_spawn, not
   * child_process (see kernel/spawn.ts): the daemon's page tables are not copied.
   */
  static spawn(h: InitCommand): Helper {
    return new Helper(spawnInit(h));
  }

  /** `spawn` with the wait for the exec on libuv's thread pool, not on the caller's thread. */
  static async spawnAsync(h: InitCommand): Promise<Helper> {
    return new Helper(await spawnInitAsync(h));
  }

  private constructor(child: Spawned) {
    this.#child = child;
    this.pid = this.#child.pid;
    // Read the start time before returning to the event loop: until then the child is not
    // reaped, so /proc/PID is still there even if it has already ended. exec keeps it.
    this.#startTime = readStat(this.pid)?.startTime;
    this.#ctl = new Control(this.#child.control);
  }

  /** Still running and still ours (an idle helper may have been killed meanwhile). */
  get alive(): boolean {
    if (this.#child.status || this.#startTime === undefined) return false;
    return processAlive(this.pid, this.#startTime);
  }

  /** True when it ended without a word while taking its request: it did nothing with it. */
  get vanished(): boolean {
    return this.#vanished;
  }

  /** Whether the helper keeps the event loop alive: an idle one does not, a handed-out one does. */
  ref(on: boolean): void {
    this.#ctl.ref(on);
  }

  onExit(fn: () => void): void {
    void this.#child.exited.then(fn);
  }

  /**
   * Send the request and wait for `ready`; `onSettled` runs once, when this sandbox is told to
   * start or is otherwise settled (cancelled or failed). Throws as `prepareProcess` says.
   */
  request(req: Request, onSettled?: () => void, onNetns?: (ns: Netns) => void): Promise<PreparedProcess> {
    this.#spec = req.spec;
    this.#onSettled = onSettled;
    this.ref(true);
    this.#ctl.send(req.message);
    // A helper that has made its namespace already (an idle one has) is handed over at once, by
    // its /proc entry, while it pins it: no wait for its `netns`. The namespace is the helper's
    // own for good once it differs from ours (it unshares once at its start, and its pid cannot
    // be reused before we reap it).
    if (onNetns && isNewNetns(req.spec.netns)) {
      const ns = this.#ownNetns();
      if (ns) {
        onNetns(ns);
        return this.#prepared(undefined);
      }
    }
    return this.#prepared(onNetns);
  }

  /** The helper's own new namespace, or undefined while it is still in ours (just spawned). */
  #ownNetns(): Netns | undefined {
    let ns: Netns;
    try {
      ns = Netns.openPid(this.pid);
    } catch {
      return undefined;
    }
    if (ns.inode !== Netns.homeInode()) return ns;
    ns.close();
    return undefined;
  }

  #settled(): void {
    const fn = this.#onSettled;
    this.#onSettled = undefined;
    fn?.();
  }

  get #command(): string {
    return this.#spec?.cmd[0] ?? 'the command';
  }

  get #details(): Record<string, unknown> {
    const s = this.#spec;
    return s ? { command: this.#command, cmd: s.cmd, hostname: s.hostname } : {};
  }

  #logTail(): string {
    if (!this.#spec) return '';
    try {
      return readLog(this.#spec.logPath, { tail: 5 });
    } catch {
      return '';
    }
  }

  /** Kill what is left of the helper (or the command it became) and wait for it. */
  async #kill(): Promise<boolean> {
    this.#ctl.close();
    const child = this.#child;
    if (!child.status) signal(child.pid, 'SIGKILL');
    return (await waitChildExit(child, KILL_WAIT_MS)) !== undefined;
  }

  async #fail(err: WeftError): Promise<never> {
    await this.#kill();
    this.#settled();
    throw err;
  }

  /** The helper ended without a word: its exit status says why. */
  async #died(phase: string): Promise<never> {
    const e = await waitChildExit(this.#child, KILL_WAIT_MS);
    if (e?.signal === 'SIGALRM') {
      return this.#fail(
        new WeftError('TIMEOUT', `the sandbox helper waited more than ${PREPARED_TTL_S} s`, {
          details: this.#details,
        }),
      );
    }
    const log = this.#logTail();
    const how = e ? (e.signal ?? `exit ${e.code}`) : 'no exit';
    return this.#fail(
      new WeftError(
        'INTERNAL',
        `the sandbox helper ended ${phase} "${this.#command}" ran (${how})${log ? `: ${log.trim().split('\n').at(-1)}` : ''}`,
        { details: { ...this.#details, code: e?.code ?? null, signal: e?.signal ?? null, log } },
      ),
    );
  }

  #timeout(what: string): Promise<never> {
    return this.#fail(
      new WeftError('TIMEOUT', `${what} did not finish within ${SETUP_TIMEOUT_MS} ms`, {
        details: { ...this.#details, log: this.#logTail() },
      }),
    );
  }

  #unexpected(text: string): Promise<never> {
    return this.#fail(
      new WeftError('INTERNAL', `unexpected word from the sandbox helper: "${text}"`, {
        details: this.#details,
      }),
    );
  }

  /** Phase one: wait for `ready`. Resolves to this helper, or throws as `prepareProcess` says. */
  async #prepared(onNetns?: (ns: Netns) => void): Promise<PreparedProcess> {
    const pin = this.#spec && isNewNetns(this.#spec.netns) ? this.#spec.netns.pin : undefined;
    let ev = await this.#ctl.next(SETUP_TIMEOUT_MS);
    let spoke = false;
    // A new namespace is pinned first of all, and reported at once: the caller plumbs it while
    // the helper goes on with the files and mounts.
    if (pin !== undefined && ev.kind === 'line' && ev.text === 'netns') {
      if (onNetns) {
        let ns: Netns;
        try {
          ns = Netns.open(pin);
        } catch (e) {
          return this.#fail(
            new WeftError('INTERNAL', `the sandbox's namespace pinned at ${pin} cannot be opened`, {
              cause: e,
              details: { ...this.#details, pin },
            }),
          );
        }
        onNetns(ns);
      }
      spoke = true;
      ev = await this.#ctl.next(SETUP_TIMEOUT_MS);
    } else if (pin !== undefined && ev.kind === 'line' && ev.text === 'ready') {
      return this.#unexpected('ready before netns');
    }
    switch (ev.kind) {
      case 'timeout':
        return this.#timeout('sandbox setup');
      case 'eof':
        // Gone without a word: it did nothing with the request (another helper may take it).
        this.#vanished = !spoke;
        return this.#died('before');
      case 'line':
        break;
    }
    if (ev.text.startsWith('setup ')) {
      const step = ev.text.slice('setup '.length);
      return this.#fail(
        new WeftError('INTERNAL', `sandbox setup failed: ${step}`, {
          details: { ...this.#details, step, log: this.#logTail() },
        }),
      );
    }
    if (ev.text !== 'ready') return this.#unexpected(ev.text);
    if (this.#startTime === undefined) {
      return this.#fail(
        new WeftError('INTERNAL', `prepared "${this.#command}" but could not read its pid or start time`, {
          details: this.#details,
        }),
      );
    }
    return this;
  }

  start(): Promise<StartedProcess> {
    if (this.#cancelled) {
      return Promise.reject(invalid(`the sandbox of "${this.#command}" was cancelled`, this.#details));
    }
    this.#started ??= this.#start();
    return this.#started;
  }

  async #start(): Promise<StartedProcess> {
    this.#ctl.send(START_BYTE);
    // The next helper is spawned now, while this one execs (the daemon's thread would only wait
    // for the exec here), rather than after: the fork then delays this answer by what is left of
    // it instead of the next request by all of it.
    this.#settled();
    const ev = await this.#ctl.next(SETUP_TIMEOUT_MS);
    if (ev.kind === 'timeout') return this.#timeout('the start');
    if (ev.kind === 'eof') return this.#died('before');
    if (ev.text !== 'go') return this.#unexpected(ev.text);
    // fd 3 is close-on-exec: EOF now means the exec happened; a word means it failed.
    const after = await this.#ctl.next(SETUP_TIMEOUT_MS);
    if (after.kind === 'timeout') return this.#timeout(`exec of "${this.#command}"`);
    if (after.kind === 'line') {
      const m = /^execfail (\d+) ?(.*)$/.exec(after.text);
      if (!m) return this.#unexpected(after.text);
      const errno = Number(m[1]);
      const text = m[2] ?? '';
      const details = { ...this.#details, errno };
      if (errno === 2 || errno === 20) {
        return this.#fail(notFound(`command "${this.#command}" not found in the sandbox`, details));
      }
      if (NOT_EXECUTABLE.has(errno)) {
        return this.#fail(invalid(`command "${this.#command}" cannot be executed: ${text}`, details));
      }
      return this.#fail(
        new WeftError('INTERNAL', `cannot execute "${this.#command}": ${text}`, {
          details: { ...details, log: this.#logTail() },
        }),
      );
    }
    this.#ctl.close();
    this.#settled();
    const exited = this.#child.exited.then(
      (st) => st.code ?? 128 + (st.signal === null ? 0 : (os.constants.signals[st.signal] ?? 0)),
    );
    return { pid: this.pid, startTime: this.#startTime as string, exited };
  }

  cancel(): Promise<void> {
    if (this.#started) return Promise.resolve();
    this.#cancelled ??= this.#kill().then((gone) => {
      this.#settled();
      if (!gone) {
        throw new WeftError('TIMEOUT', `sandbox helper ${this.pid} did not exit after SIGKILL`, {
          details: { ...this.#details, pid: this.pid },
        });
      }
    });
    return this.#cancelled;
  }
}

/**
 * Phase one of a start: spawn a helper and send it the request; the helper writes the files, sets
 * the sandbox up (namespaces, hostname, the /etc files) and then waits for `start()` before the
 * command is looked up and exec'd (see the note at the top). The caller must `start()` or
 * `cancel()` it. `ProcessStarter.prepare` does the same with a helper spawned beforehand.
 *
 * Throws (before anything is written) INVALID for a bad hostname, relative paths, an empty
 * command, files holding NUL or bad environment; NOT_FOUND for a missing working directory or
 * when perl is not installed; UNSUPPORTED on an architecture other than x64 and arm64; INTERNAL
 * for a closed namespace handle. Then: INTERNAL when a setup step (the log, a folder, a file,
 * entering
 * the namespace, or one that is not the handle's any more, the namespaces, hostname, a bind
 * mount, the working directory) fails, named in the message and `details.step`, with the tail of
 * the log in `details.log`; TIMEOUT when setup does not finish in time. A failed prepare leaves
 * no process behind.
 */
export async function prepareProcess(spec: ProcessSpec): Promise<PreparedProcess> {
  const { helper, req } = makeRequest(spec);
  return Helper.spawn(helper).request(req);
}

/**
 * Prepares sandboxes with helpers spawned beforehand (see "Why warm" at the top): `warm` idle
 * helpers are kept (default 1), the next spawned as a sandbox starts, so a steady stream of
 * starts finds one; starts beyond them spawn their own. The oldest idle helper serves first:
 * with two kept, the one handed out was spawned a whole start earlier and has long finished
 * starting perl. Idle helpers do not keep the process alive.
 */
export class ProcessStarter {
  readonly #log: Logger;
  readonly #warm: number;
  /** Idle helpers, oldest first. */
  #idle: Helper[] = [];
  #closed = false;
  #closing: Promise<void> | undefined;
  #cancelPending: (() => void) | undefined;
  /** The idle helper being spawned (on the thread pool), settled once it is idle or failed. */
  #spawning: Promise<void> | undefined;

  /**
   * Spawns nothing yet: the first `prepare` spawns on demand and the idle helpers after it.
   * Throws INVALID unless `warm` is an integer from 1 to 8.
   */
  constructor(opts: { log?: Logger; warm?: number } = {}) {
    this.#log = opts.log ?? nullLogger;
    this.#warm = opts.warm ?? 1;
    if (!Number.isInteger(this.#warm) || this.#warm < 1 || this.#warm > 8) {
      throw invalid(`warm helpers must be an integer from 1 to 8, not ${opts.warm}`);
    }
  }

  /** The pid of the idle helper that serves next, if there is one now (diagnostics, tests). */
  get idlePid(): number | undefined {
    return this.#idle[0]?.pid;
  }

  /** The pids of all idle helpers now, next first (diagnostics, tests). */
  get idlePids(): number[] {
    return this.#idle.map((h) => h.pid);
  }

  /**
   * `prepareProcess` with an idle helper when there is a live one: same result, same throws.
   * After `close()` it still works, spawning on demand.
   */
  prepare(spec: ProcessSpec): Promise<PreparedProcess> {
    return this.#prepare(spec);
  }

  /**
   * `prepare`, with the sandbox's network namespace reported apart: for a `{ pin }` spec the
   * helper made it while idle and pins it first thing, so the caller can plumb it while the
   * helper writes the files and mounts (the namespace's creation, ~0.5 ms of kernel time, is
   * off the request path altogether). Throws nothing itself: both promises reject instead.
   */
  begin(spec: ProcessSpec): Preparing {
    if (!isNewNetns(spec.netns)) {
      return { netns: Promise.resolve(spec.netns), prepared: this.#prepare(spec) };
    }
    let pinned!: (ns: Netns) => void;
    let failed!: (e: unknown) => void;
    const netns = new Promise<Netns>((resolve, reject) => {
      pinned = resolve;
      failed = reject;
    });
    // Seen through `prepared` as well: not an unhandled rejection when the caller awaits that.
    netns.catch(() => {});
    const prepared = this.#prepare(spec, pinned);
    prepared.catch(failed);
    return { netns, prepared };
  }

  async #prepare(spec: ProcessSpec, onNetns?: (ns: Netns) => void): Promise<PreparedProcess> {
    const { helper, req } = makeRequest(spec);
    const refill = () => this.#refill(0);
    // A helper on its way (spawned as an earlier sandbox started) is nearly there; one spawned
    // here would start from nothing.
    if (this.#idle.length === 0 && this.#spawning) await this.#spawning;
    const idle = this.#take();
    let handed = false;
    const report =
      onNetns &&
      ((ns: Netns) => {
        handed = true;
        onNetns(ns);
      });
    if (idle) {
      try {
        return await idle.request(req, refill, report);
      } catch (e) {
        // Another helper takes the request only when the dead one left nothing of it: not a
        // namespace handed over already (the command would run in another one), not a pin file
        // (which may be its own, half made, or one that was there before: the caller's to clear).
        const pin = isNewNetns(spec.netns) ? spec.netns.pin : undefined;
        if (!idle.vanished || handed || (pin !== undefined && fs.existsSync(pin))) throw e;
        this.#log.warn('the idle sandbox helper died as it took a request; spawning another', {
          pid: idle.pid,
        });
      }
    }
    return Helper.spawn(helper).request(req, refill, report);
  }

  /**
   * Kill the idle helpers (by pid) and wait for them; none is spawned afterwards. Prepared
   * sandboxes are the caller's. Idempotent. Throws TIMEOUT when an idle helper does not exit
   * after SIGKILL within a bounded wait.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    this.#cancelPending?.();
    this.#cancelPending = undefined;
    await this.#spawning;
    const idle = this.#idle;
    this.#idle = [];
    await Promise.all(idle.map((h) => h.cancel()));
  }

  /** The oldest live idle helper; dead ones are dropped (and replaced later). */
  #take(): Helper | undefined {
    for (;;) {
      const h = this.#idle.shift();
      if (!h) return undefined;
      if (h.alive) return h;
      this.#log.info('an idle sandbox helper is gone; spawning another', { pid: h.pid });
      void h.cancel().catch(() => {});
    }
  }

  /** Spawn the next idle helper after `delayMs` (0: on setImmediate), unless enough are there or due. */
  #refill(delayMs: number): void {
    if (this.#closed || this.#idle.length >= this.#warm || this.#cancelPending || this.#spawning) return;
    const run = () => {
      this.#cancelPending = undefined;
      this.#spawnIdle();
    };
    if (delayMs > 0) {
      const t = setTimeout(run, delayMs).unref();
      this.#cancelPending = () => clearTimeout(t);
    } else {
      const i = setImmediate(run).unref();
      this.#cancelPending = () => clearImmediate(i);
    }
  }

  /**
   * Spawn one idle helper off the daemon's thread (the wait for its exec is the pool's), then
   * the next while fewer than `warm` are idle.
   */
  #spawnIdle(): void {
    if (this.#closed || this.#idle.length >= this.#warm || this.#spawning) return;
    let args: InitCommand;
    try {
      args = initCommand();
    } catch (e) {
      this.#log.warn('cannot spawn an idle sandbox helper', { error: e });
      return;
    }
    let more = false;
    this.#spawning = Helper.spawnAsync(args)
      .then(
        (h): Promise<void> | undefined => {
          if (this.#closed) return h.cancel().catch(() => {});
          if (!h.alive) {
            this.#log.warn('an idle sandbox helper did not start', { pid: h.pid });
            return h.cancel().catch(() => {});
          }
          h.ref(false);
          h.onExit(() => {
            const i = this.#idle.indexOf(h);
            if (i < 0) return;
            this.#idle.splice(i, 1);
            this.#log.debug('an idle sandbox helper ended; replacing it', { pid: h.pid });
            this.#refill(Math.max(1, IDLE_RESPAWN_MS - (performance.now() - h.spawnedAt)));
          });
          this.#idle.push(h);
          more = true;
          return undefined;
        },
        (e: unknown) => this.#log.warn('cannot spawn an idle sandbox helper', { error: e }),
      )
      .finally(() => {
        this.#spawning = undefined;
        if (more) this.#refill(0);
      });
  }
}

/**
 * Set the sandbox up and start its command: `prepareProcess` then `start()`. Resolves
 * once the command was exec'd. Throws what `prepareProcess` and `PreparedProcess.start` throw:
 * INVALID, NOT_FOUND or UNSUPPORTED before anything is written; then NOT_FOUND when the command
 * (named in the message and `details.command`) cannot be found, INVALID when it cannot be
 * executed, INTERNAL when a setup step fails (with the log's tail), TIMEOUT. A failed start
 * leaves no process behind.
 */
export async function startProcess(spec: ProcessSpec): Promise<ProcessRef> {
  return (await prepareProcess(spec)).start();
}

export interface ProcStat {
  /** Field 2, without its parentheses. */
  comm: string;
  state: string;
  ppid: number;
  session: number;
  startTime: string;
}

/** Name, state, parent, session and start time from /proc/PID/stat; undefined when there is no such process. */
export function readStat(pid: number): ProcStat | undefined {
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
  return {
    comm: text.slice(text.indexOf('(') + 1, text.lastIndexOf(')')),
    state,
    ppid: Number(rest[1]), // field 4
    session: Number(rest[3]), // field 6
    startTime,
  };
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
  let step = 1;
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
