/**
 * The sandbox's process: a real, minimal container for networking purposes.
 *
 * How it starts. One helper process does the whole setup with system calls and then execs the
 * command, so the pid we get is the command's own. The helper is spawned in the caller's own
 * namespaces knowing nothing of the sandbox, and waits for one request on fd 3 that carries all
 * of it. Then, itself: it opens the log (O_WRONLY | O_APPEND | O_CREAT, 0640, as the daemon did
 * before; its folder made if missing) as its stdout and stderr; writes the generated hosts,
 * resolv.conf and hostname into the files folder (made if missing; in place, mode 0644, as
 * `writeSandboxFiles` does: the daemon's thread does not pay for three file creations, ~0.7 ms on
 * ext4); enters the sandbox's network namespace (setns; not for the
 * host driver); unshare(CLONE_NEWUTS | CLONE_NEWNS); mount(MS_REC | MS_SLAVE) on /; sethostname;
 * three bind mounts of the generated hosts / resolv.conf / hostname files over /etc/hosts,
 * /etc/resolv.conf and /etc/hostname; chdir; and at last it looks the command up the way exec
 * does (execvp: the command's own PATH, a name with a slash as is) and execs it.
 *
 * Why a Perl helper. These calls must be made by the new process itself, between fork and exec:
 * Node runs no code of ours in a child before its exec, and cannot make them on itself (a
 * process with threads cannot unshare its mount namespace, and the daemon must not move). A
 * shell prelude (what this file did first) needs util-linux unshare, hostname and three mount
 * processes: ~10 ms per start here, against ~2.8 ms with a helper. C would need a compiler at
 * install time, or a binary per arch.
 * perl is always there (perl-base is Essential on Debian), `perl -e 1` starts in ~1.5 ms, and its
 * `syscall()` makes setns(2), unshare(2), mount(2) and sethostname(2) by number; the numbers come
 * from here per `process.arch` (x64 and arm64; others are UNSUPPORTED). The script is a constant
 * and so are its arguments (those numbers, the open flags of the log and files, the TTL): every value of a
 * sandbox reaches it in the request, never spliced in. Its own environment is empty, so perl
 * never reads a PERL5OPT, PERL5LIB or locale meant for the command, which gets its environment
 * from the request at the exec.
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
 * The request. perl-base has no JSON: a decimal count of fields, then the fields, each ended by
 * NUL (a field may be empty; none holds NUL, which the checks ensure): namespace path, its inode,
 * hostname, the files folder, the contents of the three files, the /etc overlay folder, the log,
 * the working directory, the number
 * of environment entries, the entries (NAME=value), then argv. The helper reads until it has them
 * all; nothing follows a request before the helper says `ready`, so it never reads past it. The
 * namespace is named by path (its pin, or /proc/…) and checked by inode: a helper refuses a path
 * that now names another namespace than the caller's handle (a pin removed and made again).
 *
 * Two phases. `prepare` sends the request; the helper does all the setup, says `ready` on fd 3
 * and blocks reading one byte from fd 3: the daemon plumbs the network meanwhile. `start()`
 * writes the byte; the helper says `go` and execs. fd 3 (a socket pair) is
 * close-on-exec in the helper, so after `go` an EOF without a further word means the exec
 * happened: no /proc polling, no grace period. A failed exec is reported as `execfail ERRNO
 * TEXT` (ENOENT: not found; EACCES, ENOEXEC…: cannot be executed), a failed setup step as
 * `setup STEP: TEXT` (also written to the log once it is open). When fd 3 is closed before the
 * request or without the byte (the daemon died, `cancel()`, `close()`), the helper exits without
 * running anything; an idle or prepared helper dies after PREPARED_TTL_S (alarm) so that no
 * forgotten one lingers.
 *
 * Mount propagation is `slave`, not `private`: our bind mounts never reach the host (a slave
 * only receives), while unmounts on the host still reach the sandbox. That matters for namespace
 * pins on a shared mount (iproute2's /run/netns): with `private` every running sandbox would keep
 * a copy of every pin that existed when it started, and a removed namespace would live on.
 *
 * /etc/resolv.conf is a symlink on some hosts (systemd-resolved). The helper binds over the
 * symlink's target when that is a regular file (mount(2) follows the link); when the link
 * dangles (or its target is no regular file, or a file is missing altogether) it puts a
 * tmpfs-backed overlay on /etc, inside the private mount namespace only, replaces the entry
 * there by an empty file and binds over that. The host's /etc is never touched.
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
import * as path from 'node:path';
import { Netns } from '../kernel/netns.js';
import { type ExitStatus, type Spawned, spawnWithControl, spawnWithControlAsync } from '../kernel/spawn.js';
import { invalid, KernelError, notFound, WeftError } from '../lib/errors.js';
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
   * The sandbox's network namespace: for a `{ pin }` spec, a handle opened on the pin as soon as
   * the helper has made it (well before `prepared`), the caller's to close; otherwise the spec's
   * own. Rejects as `prepared` does when the helper fails before.
   */
  readonly netns: Promise<Netns | 'host'>;
  readonly prepared: Promise<PreparedProcess>;
}

export interface ProcessRef {
  readonly pid: number;
  /** Field 22 of /proc/PID/stat (clock ticks after boot): tells our process from a reused pid. */
  readonly startTime: string;
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
  start(): Promise<ProcessRef>;
  /**
   * Kill the helper (by pid) and wait for it: the command never runs and the sandbox's mount and
   * UTS namespaces go with it. Idempotent; a no-op once `start()` was called (start settles it;
   * stop a started process with `stopProcess`). Throws TIMEOUT when the helper does not exit
   * after SIGKILL within a bounded wait.
   */
  cancel(): Promise<void>;
}

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** How long the helper may take to set the sandbox up (and, after `start()`, to exec). */
const SETUP_TIMEOUT_MS = 10_000;
/** An idle helper, or a prepared one whose `start()` never comes, exits after this long. */
const PREPARED_TTL_S = 300;
/** Bound on waiting for a killed process to disappear. */
const KILL_WAIT_MS = 5_000;
/** An idle helper that died is replaced no sooner than this after it was spawned. */
const IDLE_RESPAWN_MS = 1_000;
const HOST_NAME_MAX = 64;
const LABEL = '[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?';
const HOSTNAME_RE = new RegExp(`^${LABEL}(?:\\.${LABEL})*$`);
const OVERLAY_DIR = '.etc-overlay';
/** How the helper opens the log: what the daemon used when it opened it itself. */
const LOG_FLAGS = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT;
/** How the helper writes the three files: in place, as `writeSandboxFiles` does. */
const FILE_FLAGS = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC;
/** How the helper makes a namespace's pin file: as Netns.create does, never over another. */
const PIN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_CREAT | fs.constants.O_EXCL;
/** ioctl numbers to read and set an interface's flags (the same on x86_64 and arm64). */
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;

/**
 * System call numbers of unshare, mount, sethostname and setns per `process.arch` (x86_64's own
 * table; arm64 uses the generic one of asm-generic/unistd.h).
 */
const SYSCALLS: Readonly<Record<string, readonly [number, number, number, number]>> = {
  x64: [272, 165, 170, 308],
  arm64: [97, 40, 161, 268],
};

// The helper (perl -e INIT -- ARGS). Arguments: the numbers of unshare, mount, sethostname and
// setns, the log's open flags and the TTL in seconds; everything else comes in the request (see
// the note at the top). Constants: CLONE_NEWNET 0x40000000, CLONE_NEWUTS|CLONE_NEWNS 0x04020000,
// MS_REC|MS_SLAVE 0x84000, MS_BIND 4096, F_SETFD 2, FD_CLOEXEC 1. Perl's syscall() passes a
// number as a number, undef as NULL and a string as a pointer to it, which must be a modifiable
// variable (never a literal). Opening STDOUT and STDERR again keeps their fds 1 and 2.
const INIT = String.raw`
my ($nu, $nm, $nh, $nn, $logflags, $fileflags, $pinflags, $siocg, $siocs, $ttl) = @ARGV;
open(my $ctl, '+<&=', 3) or exit 125;
fcntl($ctl, 2, 1) or exit 125;
sub say3 { syswrite($ctl, "$_[0]\n") }
sub quit { print STDERR "weft-init: $_[0]\n"; say3("setup $_[0]"); exit 125 }
sub fail { quit("$_[0]: $!") }
alarm($ttl);
# While idle: a network namespace of its own, lo up (ioctl on a struct ifreq: name, then flags).
open(my $home, '<', '/proc/self/ns/net') or exit 125;
syscall($nu, 0x40000000) == 0 or exit 125;
socket(my $sk, 2, 2, 0) or exit 125;
my $ifr = pack('Z16 x24', 'lo');
ioctl($sk, $siocg, $ifr) or exit 125;
$ifr = pack('Z16 s x22', 'lo', unpack('x16 s', $ifr) | 1);
ioctl($sk, $siocs, $ifr) or exit 125;
close($sk);
my ($req, $count) = ('');
until (defined($count) && ($req =~ tr/\0//) > $count) {
  sysread($ctl, $req, 65536, length($req)) or exit 125;
  $count = $1 if !defined($count) && $req =~ /^(\d+)\0/;
}
alarm(0);
my @f = split(/\0/, $req, -1);
pop(@f);
shift(@f);
my ($pin, $nsp, $nsino, $name, $dir, $hostsb, $resolvb, $hostf_b, $ovl, $logp, $cwd, $nenv, @cmd) = @f;
@f == $count && @cmd > $nenv or quit('malformed request');
my @env = splice(@cmd, 0, $nenv);
sub mkpath {
  my ($d) = @_;
  return 1 if -d $d;
  my ($up) = $d =~ m{^(.+)/[^/]+/*$};
  (!defined($up) || mkpath($up)) && (mkdir($d, 0755) || -d $d);
}
if ($pin ne '') {
  my ($pindir) = $pin =~ m{^(.+)/[^/]+$};
  my $self = '/proc/self/ns/net';
  !defined($pindir) || mkpath($pindir) or fail("mkdir $pindir");
  sysopen(my $pf, $pin, $pinflags, 0444) or fail("pin $pin");
  close($pf);
  unless (syscall($nm, $self, $pin, undef, 4096, undef) == 0) { my $e = "$!"; unlink($pin); quit("pin $pin: $e") }
  say3('netns');
}
my ($logdir) = $logp =~ m{^(.+)/[^/]+$};
!defined($logdir) || mkpath($logdir) or fail("mkdir $logdir");
sysopen(my $log, $logp, $logflags, 0640) or fail("open log $logp");
open(STDOUT, '>&', $log) && open(STDERR, '>&', $log) or fail("log to $logp");
close($log);
mkpath($dir) or fail("mkdir $dir");
my ($hosts, $resolv, $hostf) = ("$dir/hosts", "$dir/resolv.conf", "$dir/hostname");
for ([$hosts, $hostsb], [$resolv, $resolvb], [$hostf, $hostf_b]) {
  my ($p, $b) = @$_;
  sysopen(my $fh, $p, $fileflags, 0644) && chmod(0644, $p) or fail("write $p");
  (syswrite($fh, $b) // -1) == length($b) && close($fh) or fail("write $p");
}
if ($pin eq '' && $nsp ne '') {
  sysopen(my $nsf, $nsp, 0) or fail("open $nsp");
  (stat($nsf))[1] == $nsino or quit("enter $nsp: not the namespace of the handle (inode $nsino)");
  syscall($nn, fileno($nsf), 0x40000000) == 0 or fail("enter $nsp");
  close($nsf);
} elsif ($pin eq '') {
  syscall($nn, fileno($home), 0x40000000) == 0 or fail('return to the host namespace');
}
close($home);
my ($none, $root, $tag, $tmpfs, $mode, $ovlfs, $etc) = ('none', '/', 'weft-etc', 'tmpfs', 'mode=0700', 'overlay', '/etc');
syscall($nu, 0x04020000) == 0 or fail('unshare');
syscall($nm, $none, $root, undef, 0x84000, undef) == 0 or fail('make / a slave');
syscall($nh, $name, length($name)) == 0 or fail("sethostname $name");
my $layered;
sub overlay_etc {
  return 1 if $layered;
  (-d $ovl || mkdir($ovl, 0700)) && syscall($nm, $tag, $ovl, $tmpfs, 0, $mode) == 0 or return 0;
  mkdir("$ovl/u") && mkdir("$ovl/w") or return 0;
  my $o = "lowerdir=/etc,upperdir=$ovl/u,workdir=$ovl/w";
  syscall($nm, $tag, $etc, $ovlfs, 0, $o) == 0 or return 0;
  $layered = 1;
}
sub empty_file { open(my $f, '>', $_[0]) or return 0; close($f) }
sub bind_etc {
  my ($src, $dst) = @_;
  if (-l $dst) {
    -f $dst or overlay_etc() && unlink($dst) && empty_file($dst) or return 0;
  } elsif (!-e $dst) {
    overlay_etc() && empty_file($dst) or return 0;
  }
  syscall($nm, $src, $dst, undef, 4096, undef) == 0;
}
bind_etc($hosts, '/etc/hosts') or fail('bind /etc/hosts');
bind_etc($resolv, '/etc/resolv.conf') or fail('bind /etc/resolv.conf');
bind_etc($hostf, '/etc/hostname') or fail('bind /etc/hostname');
$cwd eq '' || chdir($cwd) or fail("chdir $cwd");
say3('ready');
alarm($ttl);
my $n = sysread($ctl, my $byte, 1);
unless ($n) { print STDERR "weft-init: closed before the start, not running $cmd[0]\n"; exit 125 }
alarm(0);
say3('go');
%ENV = map { split(/=/, $_, 2) } @env;
exec { $cmd[0] } @cmd;
my ($e, $m) = ($! + 0, "$!");
print STDERR "weft-init: $cmd[0]: $m\n";
say3("execfail $e $m");
exit($e == 2 ? 127 : 126);
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

let perlPath: string | undefined;
function findPerl(): string | undefined {
  perlPath ??= findProgram('perl');
  return perlPath;
}

/** What spawning a helper takes: perl and its constant arguments. */
interface HelperArgs {
  readonly perl: string;
  readonly args: readonly string[];
}

/** Throws UNSUPPORTED on an architecture other than x64 and arm64, NOT_FOUND without perl. */
function helperArgs(): HelperArgs {
  const nrs = SYSCALLS[process.arch];
  if (!nrs) {
    throw new WeftError('UNSUPPORTED', `sandboxes need x64 or arm64, not ${process.arch}`, {
      details: { arch: process.arch },
    });
  }
  const perl = findPerl();
  if (!perl) throw notFound('perl is not installed (Debian: perl-base)', { program: 'perl' });
  return {
    perl,
    args: [
      '-e',
      INIT,
      '--',
      ...nrs.map(String),
      String(LOG_FLAGS),
      String(FILE_FLAGS),
      String(PIN_FLAGS),
      String(SIOCGIFFLAGS),
      String(SIOCSIFFLAGS),
      String(PREPARED_TTL_S),
    ],
  };
}

/** A checked spec and the request that tells a helper all of it. */
interface Request {
  readonly spec: ProcessSpec;
  readonly message: Buffer;
}

/** Fields, each ended by NUL, after their count (see the note at the top). */
function encodeFields(fields: readonly string[]): Buffer {
  return Buffer.from(`${[String(fields.length), ...fields].join('\0')}\0`);
}

/**
 * Check `spec`, find the helper and make the request (the helper writes the files: see the note
 * at the top). Throws what `prepareProcess` documents for bad input, a missing perl or
 * architecture, and INTERNAL for a closed namespace handle; nothing is written here.
 */
function makeRequest(spec: ProcessSpec): { helper: HelperArgs; req: Request } {
  const env = checkSpec(spec);
  const helper = helperArgs();
  const pin = isNewNetns(spec.netns) ? spec.netns.pin : '';
  const ns =
    spec.netns === 'host' || isNewNetns(spec.netns)
      ? undefined
      : { path: path.resolve(spec.netns.path), inode: spec.netns.inode };
  const dir = path.resolve(spec.filesDir);
  const entries = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  const message = encodeFields([
    pin,
    ns?.path ?? '',
    ns ? String(ns.inode) : '',
    spec.hostname,
    dir,
    spec.files.hosts,
    spec.files.resolvConf,
    spec.files.hostname,
    path.join(dir, OVERLAY_DIR),
    spec.logPath,
    spec.cwd ?? '',
    String(entries.length),
    ...entries,
    ...spec.cmd,
  ]);
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
    this.#sock.on('data', (d: Buffer) => {
      const parts = (this.#partial + d.toString()).split('\n');
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

/** NOT_FOUND when perl is missing, INTERNAL for any other failure to spawn it. */
function spawnError(e: unknown, perl: string): WeftError {
  if (e instanceof KernelError && e.errno === 2) {
    return new WeftError('NOT_FOUND', `cannot start the sandbox: ${perl} not found`, {
      cause: e,
      details: { program: perl },
    });
  }
  return new WeftError('INTERNAL', `cannot start the sandbox: ${(e as Error).message}`, { cause: e });
}

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
  #started: Promise<ProcessRef> | undefined;
  #cancelled: Promise<void> | undefined;

  /**
   * Spawn a helper in the caller's own namespaces: detached, stdin, stdout and stderr /dev/null,
   * an empty environment, fd 3 the control socket. It waits for its request. posix_spawn, not
   * child_process (see kernel/spawn.ts): the daemon's page tables are not copied.
   */
  static spawn(h: HelperArgs): Helper {
    try {
      return new Helper(spawnWithControl(h.perl, [h.perl, ...h.args], {}));
    } catch (e) {
      throw spawnError(e, h.perl);
    }
  }

  /** `spawn` with the wait for the exec on libuv's thread pool, not on the caller's thread. */
  static async spawnAsync(h: HelperArgs): Promise<Helper> {
    try {
      return new Helper(await spawnWithControlAsync(h.perl, [h.perl, ...h.args], {}));
    } catch (e) {
      throw spawnError(e, h.perl);
    }
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
    return this.#prepared(onNetns);
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
      onNetns?.(ns);
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

  start(): Promise<ProcessRef> {
    if (this.#cancelled) {
      return Promise.reject(invalid(`the sandbox of "${this.#command}" was cancelled`, this.#details));
    }
    this.#started ??= this.#start();
    return this.#started;
  }

  async #start(): Promise<ProcessRef> {
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
    return { pid: this.pid, startTime: this.#startTime as string };
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
    if (idle) {
      try {
        return await idle.request(req, refill, onNetns);
      } catch (e) {
        if (!idle.vanished) throw e;
        this.#log.warn('the idle sandbox helper died as it took a request; spawning another', {
          pid: idle.pid,
        });
      }
    }
    return Helper.spawn(helper).request(req, refill, onNetns);
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
    let args: HelperArgs;
    try {
      args = helperArgs();
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
  state: string;
  startTime: string;
}

/** State and start time from /proc/PID/stat; undefined when there is no such process. */
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
