//! The command line, as clap derives it, with the help texts.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration;
use crate::exit;

const ABOUT: &str = "Run commands under named inter-process locks shared with lockutils (Rust) \
and oslo.concurrency (Python) services, and inspect or remove those locks.";

const LONG_ABOUT: &str = "\
Run commands under named inter-process locks shared with lockutils (Rust) and
oslo.concurrency (Python) services, and inspect or remove those locks.

A lock NAME with prefix P is the file <lock path>/<P>[-]<NAME> ('/' in NAME
becomes '_'), exactly the file oslo.concurrency's
lockutils.lock(NAME, P, external=True) locks. The lock path is --lock-path,
else $LOCKUTILS_LOCK_PATH, else $OSLO_LOCK_PATH.";

/// The `lockutils` command line.
#[derive(Debug, Parser)]
#[command(
    name = "lockutils",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = exit::TABLE,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command while holding a lock (like flock(1)).
    #[command(long_about = RUN_ABOUT, after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Run a command with a private, temporary lock path (oslo's lockutils-wrapper).
    #[command(long_about = WRAPPER_ABOUT, after_help = WRAPPER_EXAMPLES)]
    Wrapper(WrapperArgs),
    /// Show lock files: free or held, by which process.
    #[command(long_about = STATUS_ABOUT, after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Remove lock files safely (never while someone holds them).
    #[command(long_about = REMOVE_ABOUT, after_help = REMOVE_EXAMPLES)]
    Remove(RemoveArgs),
    /// Run a command while this host leads an election (one leader at a time).
    #[command(long_about = ELECT_ABOUT, after_help = ELECT_EXAMPLES)]
    Elect(ElectArgs),
    /// Show who leads an election.
    #[command(long_about = LEADER_ABOUT, after_help = LEADER_EXAMPLES)]
    Leader(LeaderArgs),
}

/// What a command gets when its lock is lost on a lock server.
#[derive(Debug, Args)]
pub struct OnLoss {
    /// When the lock is lost, CMD gets SIGTERM, then SIGKILL after DUR.
    #[arg(long, value_name = "DUR", value_parser = duration::parse, default_value = "10s")]
    pub kill_after: Duration,
}

/// Which lock files: prefix and lock path.
#[derive(Debug, Args)]
pub struct Place {
    /// Lock name prefix, joined to NAME with '-' unless empty or ending in '-'
    /// (oslo's lock_file_prefix).
    #[arg(long, short = 'p', value_name = "P", default_value = "")]
    pub prefix: String,
    /// Directory of the lock files [default: $LOCKUTILS_LOCK_PATH, else $OSLO_LOCK_PATH].
    #[arg(long, short = 'd', value_name = "DIR")]
    pub lock_path: Option<PathBuf>,
}

const RUN_ABOUT: &str = "\
Run a command while holding a lock.

Takes the external lock NAME (waiting for it unless --nonblock or --timeout
say otherwise), runs CMD, and releases the lock when CMD ends, passing CMD's
exit code through (128+N if CMD died of signal N).

CMD inherits the locked open file (as with flock(1)): on Linux the lock
belongs to that open file, so it stays held while CMD runs even if
lockutils itself is killed with SIGKILL, and is free once CMD (and any
process it handed the descriptor to) has closed it too. When CMD ends,
lockutils releases the lock. --close (flock's -o) does not pass the file
on: the lock is then held by lockutils alone, and SIGKILL of lockutils
frees it while CMD runs on. Lock servers (postgres://, etcd://) and
classic POSIX locks (not Linux) are held by lockutils alone either way.

The lock is an open-file-description lock, which excludes lockutils and
oslo.concurrency (lockf) users but not flock(2) users such as util-linux
flock(1) or py-filelock. --flock also takes flock(2) on the same file,
after the OFD lock (always in that order, so lockutils users never
deadlock each other), and so excludes them too (Linux).

While it waits longer than about a second and stderr is a terminal, it
shows who holds the lock (PID and command line, where the OS tells) and the
time waited; --quiet or a non-terminal stderr turns this off.

SIGINT, SIGTERM, SIGHUP and SIGQUIT that arrive while waiting end the wait:
the lock is not taken, CMD does not run, and the exit code is 128+N (130
for SIGINT, 143 for SIGTERM). While CMD runs they are forwarded to it
(except those the terminal already sent to CMD's process group), and
lockutils waits for CMD to end.

On a lock server (--backend URL, else $LOCKUTILS_BACKEND: postgres://,
etcd://, redis://, mysql://), CMD gets LOCKUTILS_LOCK_NAME and, where the
server gives one, LOCKUTILS_FENCING_TOKEN (a number that grows with every
acquisition: pass it to what CMD writes, which can then refuse a stale
holder). If the server lets the lock go while CMD runs (the session or
lease ended, the key was deleted), CMD gets SIGTERM, then SIGKILL after
--kill-after (10s), and lockutils exits 76 whatever CMD returns.

--at-least DUR keeps the lock until DUR after it was taken even if CMD
ends sooner (ShedLock's lockAtLeastFor): a job started by cron on several
hosts at once runs once, and a host whose clock is a little late does not
run it again.";

const RUN_EXAMPLES: &str = "\
Examples:
  # One backup at a time; the lock file is /var/lock/myapp/backup
  lockutils run backup --lock-path /var/lock/myapp -- /usr/local/bin/backup --full

  # Exclude nova's own `@synchronized('iptables', 'nova-', external=True)`
  OSLO_LOCK_PATH=/var/lib/nova/tmp lockutils run iptables --prefix nova -- iptables-restore < rules

  # Give up at once if busy (exit 75), or after 30 seconds (exit 79)
  lockutils run cron-job --nonblock -- ./job.sh || echo \"busy: $?\"
  lockutils run cron-job --timeout 30s -- ./job.sh

  # Readers share the lock, writers exclude everyone
  lockutils run db --shared -- ./read-report.sh

  # Also exclude `flock /var/lock/myapp/backup ...` users
  lockutils run backup --lock-path /var/lock/myapp --flock -- ./backup.sh

  # A cron job on several hosts, run by one of them each time
  lockutils run nightly-report --backend etcd://10.0.0.5:2379 --nonblock --at-least 5m -- ./report.sh

  # Pass the fencing token on
  lockutils run ledger --backend postgres://locks@db/locks -- sh -c 'ledger-apply --fence \"$LOCKUTILS_FENCING_TOKEN\"'

Exit codes: CMD's own; 64 bad arguments, 69 lock server unavailable, 73
lock path error, 75 lock busy (--nonblock), 76 lock lost while CMD ran, 79
timed out, 126/127 CMD cannot run / not found, 130/143 interrupted by
SIGINT/SIGTERM while waiting. See `lockutils --help`.";

/// `lockutils run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Lock name.
    pub name: String,
    #[command(flatten)]
    pub place: Place,
    /// Wait at most DUR for the lock (200ms, 1.5s, 2m; a bare number is seconds), then exit 79.
    #[arg(long, short = 'w', value_name = "DUR", value_parser = duration::parse)]
    pub timeout: Option<Duration>,
    /// Do not wait: exit 75 at once if the lock is busy.
    #[arg(long, short = 'n', conflicts_with = "timeout")]
    pub nonblock: bool,
    /// Take the lock shared (a reader): shared holders run together, an exclusive holder excludes all.
    #[arg(long, short = 's')]
    pub shared: bool,
    /// No waiting display, and no message when busy, timed out or interrupted.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Also take flock(2) on the lock file, so util-linux flock(1) and py-filelock users are excluded too.
    #[arg(long)]
    pub flock: bool,
    /// Do not let CMD inherit the locked file (flock's -o): the lock is held by lockutils alone.
    #[arg(long, short = 'o')]
    pub close: bool,
    /// Take the lock on this lock server (postgres://, etcd://, redis://, mysql://) [default: $LOCKUTILS_BACKEND, else lock files].
    #[arg(long, short = 'b', value_name = "URL")]
    pub backend: Option<String>,
    /// Keep the lock until DUR after it was taken, even if CMD ends sooner.
    #[arg(long, value_name = "DUR", value_parser = duration::parse)]
    pub at_least: Option<Duration>,
    #[command(flatten)]
    pub on_loss: OnLoss,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

const ELECT_ABOUT: &str = "\
Run a command while this host leads an election.

Campaigns in the election NAME (waiting until elected unless --nonblock or
--timeout say otherwise), runs CMD while it leads, and resigns when CMD
ends, passing CMD's exit code through. The election is the exclusive lock
NAME on the lock server (--backend URL, else $LOCKUTILS_BACKEND) or on lock
files (--lock-path, else the lock path), with this candidate's identity
(--identity, default <hostname>:<pid>) kept beside it, where `lockutils
leader NAME` and lockutils::election(NAME).leader() read it.

CMD gets LOCKUTILS_LOCK_NAME, LOCKUTILS_LEADER_IDENTITY and, where the
backend gives one, LOCKUTILS_FENCING_TOKEN (it grows with every leader).
If the leadership is lost while CMD runs (the lock server let the lock
go), CMD gets SIGTERM, then SIGKILL after --kill-after (10s), and lockutils
exits 76. Signals while campaigning end the campaign (128+N); while CMD
runs they are forwarded to it.";

const ELECT_EXAMPLES: &str = "\
Examples:
  # A daemon that only the leader runs; the others wait to take over
  lockutils elect scheduler --backend etcd://10.0.0.5:2379 -- /usr/bin/scheduler

  # Give up at once if another host leads (exit 75)
  lockutils elect scheduler --nonblock --identity \"$(hostname)\" -- ./run-once.sh

Exit codes: CMD's own; 64 bad arguments, 69 lock server unavailable, 73
lock path error, 75 another leads (--nonblock), 76 leadership lost while
CMD ran, 79 timed out, 126/127, 128+N as for run.";

/// `lockutils elect`.
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// Election name.
    pub name: String,
    /// Who this candidate is, as `lockutils leader` shows it [default: <hostname>:<pid>].
    #[arg(long, short = 'i', value_name = "ID")]
    pub identity: Option<String>,
    /// Hold the election on this lock server [default: $LOCKUTILS_BACKEND, else lock files].
    #[arg(long, short = 'b', value_name = "URL")]
    pub backend: Option<String>,
    /// Hold the election on lock files in DIR.
    #[arg(long, short = 'd', value_name = "DIR")]
    pub lock_path: Option<PathBuf>,
    /// Campaign at most DUR, then exit 79.
    #[arg(long, short = 'w', value_name = "DUR", value_parser = duration::parse)]
    pub timeout: Option<Duration>,
    /// Do not wait: exit 75 at once if another candidate leads.
    #[arg(long, short = 'n', conflicts_with = "timeout")]
    pub nonblock: bool,
    /// No message when another leads, the campaign timed out or was interrupted.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub on_loss: OnLoss,
    /// The command to run while leading, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

const LEADER_ABOUT: &str = "\
Show who leads an election: the identity the leader campaigned with and
its fencing token, as the backend records them (one look; any host can
ask). A holder of the lock NAME that is no candidate (`lockutils run NAME`)
shows with an empty identity. Prints `no leader` when nobody holds it.";

const LEADER_EXAMPLES: &str = "\
Examples:
  lockutils leader scheduler --backend etcd://10.0.0.5:2379
  lockutils leader scheduler --json | jq -r '.leader.identity // \"none\"'

JSON: {\"name\": NAME, \"leader\": null or {\"identity\", \"fencing_token\" (null
if the backend gives none)}}. Exit codes: 0 (leader or not); 64 bad
arguments; 69 lock server unavailable; 73 lock path error.";

/// `lockutils leader`.
#[derive(Debug, Args)]
pub struct LeaderArgs {
    /// Election name.
    pub name: String,
    /// The election's lock server [default: $LOCKUTILS_BACKEND, else lock files].
    #[arg(long, short = 'b', value_name = "URL")]
    pub backend: Option<String>,
    /// The election's lock files are in DIR.
    #[arg(long, short = 'd', value_name = "DIR")]
    pub lock_path: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

const WRAPPER_ABOUT: &str = "\
Run a command with a private, temporary lock path.

Creates a new directory (mode 0700) in the temporary directory, runs CMD
with LOCKUTILS_LOCK_PATH and OSLO_LOCK_PATH set to it, removes the directory
and everything in it when CMD ends (also when CMD fails), and passes CMD's
exit code through. Like oslo.concurrency's lockutils-wrapper: for test runs
whose processes must share locks with each other but with nothing else.
If lockutils is killed with SIGKILL, the directory stays behind.";

const WRAPPER_EXAMPLES: &str = "\
Examples:
  lockutils wrapper -- stestr run
  lockutils wrapper -- cargo test
  lockutils wrapper -- sh -c 'echo $OSLO_LOCK_PATH'

Exit codes: CMD's own; 73 if the directory cannot be created; 126/127 CMD
cannot run / not found.";

/// `lockutils wrapper`.
#[derive(Debug, Args)]
pub struct WrapperArgs {
    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

const STATUS_ABOUT: &str = "\
Show lock files: free or held, exclusive or shared, by which process.

Without NAME, lists every regular file in the lock path (with --prefix,
those whose name starts with it). For each: whether it is held, exclusive
(a writer) or shared (readers), the holders' PIDs and command lines, how
many processes wait for it, and the age of the file.

How holders are found (Linux): /proc/locks lists every lock with the file's
device and inode. Classic POSIX locks (Python oslo.concurrency and
fasteners use lockf) show their owner's PID there. Open-file-description
locks (lockutils' own) show PID -1, and flock(2) locks (util-linux
flock(1), py-filelock, Rust's File::lock) show only the PID that took
them, so for those lockutils looks through /proc/PID/fd and
/proc/PID/fdinfo of every process: an open file's fdinfo lists the locks
held through it. KIND says which: ofd, posix or flock. A flock(2) lock does
not exclude lockutils or oslo (nor they it) unless `run --flock` is used.
Limits: processes of other users may be unreadable unless you are root
(their holders show as '?'); a lock held through a descriptor shared with
forked children, or with the command of `lockutils run`, shows every
process that shares it; PIDs are those of lockutils' PID namespace.
Elsewhere, F_GETLK tells whether a file is locked and, for POSIX locks, one
holder's PID; waiters then show as '?'.

The same answer is available to programs as lockutils::holders().

The output is a snapshot: a lock can change hands right after.";

const STATUS_EXAMPLES: &str = "\
Examples:
  lockutils status --lock-path /var/lib/nova/tmp
  lockutils status iptables --prefix nova
  lockutils status --json | jq '.locks[] | select(.state == \"held\")'

JSON: {\"lock_path\": DIR, \"locks\": [{\"name\", \"path\", \"state\" (\"free\",
\"held\", \"missing\" or \"error\"), \"mode\" (\"exclusive\", \"shared\" or null),
\"holders\": [HOLDER], \"waiters\" (a count, null if unknown), \"waiting\"
([HOLDER] of the blocked requests, null if unknown), \"source\" (\"proc\",
\"getlk\" or \"lockfileex\"), \"age_seconds\", \"error\"}]}; HOLDER is
{\"pid\" (null if unknown), \"kind\" (\"ofd\", \"posix\", \"flock\" or
\"unknown\"), \"mode\", \"start\", \"end\" (null: to end of file), \"since\"
(Unix time the process started: the lock was taken no earlier; or null),
\"command\" (or null)}. Exit codes: 0; 64 bad arguments;
73 lock path not set or unreadable.";

/// `lockutils status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Lock names to show (default: every lock file in the lock path).
    pub names: Vec<String>,
    #[command(flatten)]
    pub place: Place,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

const REMOVE_ABOUT: &str = "\
Remove lock files safely.

Lock files are normally kept: removing one while processes wait on it
would let a newcomer lock a new file while they lock the old one. This uses
lockutils' safe removal: it takes the lock, removes the file while holding
it, and releases; waiters notice and retry on a new file.

Without --wait, a lock that someone holds is not removed: lockutils checks
with a non-blocking attempt first and exits 75. (A process that takes the
lock between that check and the removal makes the removal wait for it.)
A missing lock file is not an error.";

const REMOVE_EXAMPLES: &str = "\
Examples:
  lockutils remove backup --lock-path /var/lock/myapp
  lockutils remove iptables --prefix nova --wait

Exit codes: 0 removed (or no such file); 64 bad arguments; 73 lock path
error; 75 held by someone (without --wait).";

/// `lockutils remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Lock names whose files to remove.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub place: Place,
    /// Wait for a held lock to be released, then remove it.
    #[arg(long)]
    pub wait: bool,
}
