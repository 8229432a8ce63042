/**
 * The sandbox helper: a constant Perl script that makes the system calls a sandbox's process
 * needs between its spawn and the exec of its command, and the request it takes. net/process.ts
 * drives it (the request's values, the warm helpers, the two phases' timing); this file holds
 * everything of it that talks to the kernel.
 *
 * What it does. Spawned (posix_spawn, ./spawn.ts) in the caller's namespaces with nothing of a
 * sandbox: it makes a network namespace of its own and brings lo up (ioctl) while it waits on
 * fd 3 for one request. Then, itself: with a pin in the request, pins its namespace there first
 * of all (a file and a bind mount of /proc/self/ns/net) and says `netns`; opens the log
 * (O_WRONLY | O_APPEND | O_CREAT, 0640; its folder made if missing) as its stdout and stderr;
 * writes the generated hosts, resolv.conf and hostname into the files folder (made if missing;
 * in place, mode 0644); without a pin enters the namespace named in the request (setns, checked
 * by inode) or goes back to the caller's (the host driver); unshare(CLONE_NEWUTS |
 * CLONE_NEWNS); mount(MS_REC | MS_SLAVE) on /; sethostname; three bind mounts of the files over
 * /etc/hosts, /etc/resolv.conf and /etc/hostname; chdir; and at last it looks the command up the
 * way exec does (execvp: the command's own PATH, a name with a slash as is) and execs it.
 *
 * Why Perl. These calls must be made by the new process itself, between fork and exec:
 * Node runs no code of ours in a child before its exec, and cannot make them on itself (a
 * process with threads cannot unshare its mount namespace, and the daemon must not move). A
 * shell prelude (what net/process.ts did first) needs util-linux unshare, hostname and three mount
 * processes: ~10 ms per start here, against ~2.8 ms with the helper. C would need a compiler at
 * install time, or a binary per arch.
 * perl is always there (perl-base is Essential on Debian), `perl -e 1` starts in ~1.5 ms, and its
 * `syscall()` makes setns(2), unshare(2), mount(2) and sethostname(2) by number; the numbers come
 * from here per `process.arch` (x64 and arm64; others are UNSUPPORTED). The script is a constant
 * and so are its arguments (those numbers, open flags, ioctl numbers, the TTL): every value of
 * a sandbox reaches it in the request, never spliced in. Its own environment is empty, so perl
 * never reads a PERL5OPT, PERL5LIB or locale meant for the command, which gets its environment
 * from the request at the exec.
 *
 * The request. perl-base has no JSON: a decimal count of fields, then the fields, each ended by
 * NUL (a field may be empty; none holds NUL, which the caller's checks ensure): see
 * `InitRequest` (pin, namespace path and inode, hostname, the files folder, the contents of the
 * three files, the /etc overlay folder, the log, the working directory, the number of
 * environment entries, the entries, then argv). The helper reads until it has them
 * all; nothing follows a request before the helper says `ready`, so it never reads past it. The
 * namespace is named by path (its pin, or /proc/…) and checked by inode: a helper refuses a path
 * that now names another namespace than the caller's handle (a pin removed and made again).
 *
 * Its words on fd 3, one a line. After the request: `netns` (a pin was asked and is made), then
 * `ready` once all the setup is done; it then blocks reading one byte from fd 3 (the caller
 * plumbs the network meanwhile). On the byte it says `go` and execs. fd 3 (a socket pair) is
 * close-on-exec in the helper, so after `go` an EOF without a further word means the exec
 * happened: no /proc polling, no grace period. A failed exec is reported as `execfail ERRNO
 * TEXT` (ENOENT: not found; EACCES, ENOEXEC…: cannot be executed), a failed setup step as
 * `setup STEP: TEXT` (also written to the log once it is open). When fd 3 is closed before the
 * request or without the byte (the daemon died, or dropped it), the helper exits without
 * running anything; an idle or prepared helper dies after PREPARED_TTL_S (alarm) so that no
 * forgotten one lingers.
 *
 * Mount propagation is `slave`, not `private`: our bind mounts never reach the host (a slave
 * only receives), while unmounts on the host still reach the sandbox. That matters for namespace
 * pins on a shared mount (iproute2's /run/netns): with `private` every running sandbox would keep
 * a copy of every pin that existed when it started, and a removed namespace would live on.
 *
 * A namespace the helper makes takes no IPv6 router advertisements (accept_ra 0 for `all` and
 * `default`, so also for the interfaces plumbed into it later): weft gives addresses and routes
 * itself, and a container must not hand its neighbours others (Docker's CVE-2020-13401).
 *
 * /etc/resolv.conf is a symlink on some hosts (systemd-resolved). The helper binds over the
 * symlink's target when that is a regular file (mount(2) follows the link); when the link
 * dangles (or its target is no regular file, or a file is missing altogether) it puts a
 * tmpfs-backed overlay on /etc, inside the private mount namespace only, replaces the entry
 * there by an empty file and binds over that. The host's /etc is never touched.
 */
import * as fs from 'node:fs';
import { KernelError, notFound, WeftError } from '../lib/errors.js';
import { findProgram } from './run.js';
import { type Spawned, spawnWithControl, spawnWithControlAsync } from './spawn.js';

/** An idle helper, or a prepared one whose start byte never comes, exits after this long. */
export const PREPARED_TTL_S = 300;

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
# No router advertisements: a container could otherwise give its neighbours addresses and routes
# (Docker's CVE-2020-13401). default: every interface made in here later. No IPv6: nothing to do.
for my $k ('all', 'default') {
  open(my $f, '>', "/proc/sys/net/ipv6/conf/$k/accept_ra") or next;
  syswrite($f, "0\n");
  close($f);
}
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
  (my $oe = $ovl) =~ s/([\\,:])/\\$1/g; # overlayfs reads \ , and : escaped in its options
  my $o = "lowerdir=/etc,upperdir=$oe/u,workdir=$oe/w";
  syscall($nm, $tag, $etc, $ovlfs, 0, $o) == 0 or return 0;
  $layered = 1;
}
sub empty_file { open(my $f, '>', $_[0]) or return 0; close($f) }
# An entry that is missing, or a link to no regular file, needs a file to bind onto: made in an
# overlay of /etc, which goes on before any bind (binds made first would be hidden under it).
sub unbindable { (-l $_[0] && !-f $_[0]) || !-e $_[0] }
my @etc = ([$hosts, '/etc/hosts'], [$resolv, '/etc/resolv.conf'], [$hostf, '/etc/hostname']);
!grep({ unbindable($_->[1]) } @etc) || overlay_etc() or fail('overlay /etc');
for (@etc) {
  my ($src, $dst) = @$_;
  if (-l $dst && !-f $dst) { unlink($dst) && empty_file($dst) or fail("make $dst") }
  elsif (!-e $dst) { empty_file($dst) or fail("make $dst") }
  syscall($nm, $src, $dst, undef, 4096, undef) == 0 or fail("bind $dst");
}
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

let perlPath: string | undefined;
/** perl in one of the usual system folders first, then on the daemon's PATH. */
function findPerl(): string | undefined {
  perlPath ??= findProgram('perl', `/usr/bin:/bin:/usr/sbin:/sbin:${process.env.PATH ?? ''}`);
  return perlPath;
}

/** What spawning a helper takes: perl and its constant arguments. */
export interface InitCommand {
  readonly perl: string;
  readonly args: readonly string[];
}

/** Throws UNSUPPORTED on an architecture other than x64 and arm64, NOT_FOUND without perl. */
export function initCommand(): InitCommand {
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

/** Fields, each ended by NUL, after their count (see the note at the top). */
function encodeFields(fields: readonly string[]): Buffer {
  return Buffer.from(`${[String(fields.length), ...fields].join('\0')}\0`);
}

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

/** One request: everything of one sandbox (see "The request" at the top). */
export interface InitRequest {
  /** Pin the helper's own new namespace here ('' = none). */
  readonly pin: string;
  /** Without a pin: the namespace to enter ('' = the caller's own) and its inode. */
  readonly nsPath: string;
  readonly nsInode: string;
  readonly hostname: string;
  /** The files folder and the contents of its three files. */
  readonly dir: string;
  readonly hosts: string;
  readonly resolvConf: string;
  readonly hostnameFile: string;
  /** Where an /etc overlay may go (see above). */
  readonly overlay: string;
  readonly log: string;
  /** '' = stay where it is. */
  readonly cwd: string;
  /** NAME=value entries: the command's whole environment. */
  readonly env: readonly string[];
  readonly argv: readonly string[];
}

/** The request's bytes. Its values must hold no NUL (the caller's checks ensure it). */
export function encodeInitRequest(r: InitRequest): Buffer {
  return encodeFields([
    r.pin,
    r.nsPath,
    r.nsInode,
    r.hostname,
    r.dir,
    r.hosts,
    r.resolvConf,
    r.hostnameFile,
    r.overlay,
    r.log,
    r.cwd,
    String(r.env.length),
    ...r.env,
    ...r.argv,
  ]);
}

/**
 * Spawn a helper: detached, stdin, stdout and stderr /dev/null, an empty environment, fd 3 the
 * control socket. Throws NOT_FOUND when perl is missing, INTERNAL for any other failure.
 */
export function spawnInit(cmd: InitCommand): Spawned {
  try {
    return spawnWithControl(cmd.perl, [cmd.perl, ...cmd.args], {});
  } catch (e) {
    throw spawnError(e, cmd.perl);
  }
}

/** `spawnInit` with the wait for the exec on libuv's thread pool, not on the caller's thread. */
export async function spawnInitAsync(cmd: InitCommand): Promise<Spawned> {
  try {
    return await spawnWithControlAsync(cmd.perl, [cmd.perl, ...cmd.args], {});
  } catch (e) {
    throw spawnError(e, cmd.perl);
  }
}
