//! `lockutils elect`: campaign, run the command while leading, resign.

use std::ffi::{OsStr, OsString};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use lockutils::{Election, Leadership, LockError};

use crate::child;
use crate::cli::ElectArgs;
use crate::exit;
use crate::run::{FENCING_TOKEN_ENV, LOCK_NAME_ENV};
use crate::signals;

/// The variable that gives the command the identity it leads as.
pub const IDENTITY_ENV: &str = "LOCKUTILS_LEADER_IDENTITY";

/// How often the campaign checks for signals.
const TICK: Duration = Duration::from_millis(100);

/// Runs the subcommand; returns the exit code.
pub fn elect(args: ElectArgs) -> i32 {
    signals::install();
    let lead = match campaign(&args) {
        Ok(lead) => lead,
        Err(code) => return code,
    };
    let token = lead.fencing_token().map(|t| OsString::from(t.to_string()));
    let mut env = vec![
        (LOCK_NAME_ENV, OsStr::new(&args.name)),
        (IDENTITY_ENV, OsStr::new(lead.identity())),
    ];
    if let Some(t) = &token {
        env.push((FENCING_TOKEN_ENV, t.as_os_str()));
    }
    let watch = child::Watch {
        lost: lead.lost(),
        kill_after: args.on_loss.kill_after,
        what: format!("leadership of {:?}", args.name),
    };
    let code = child::run(&args.command, &env, None, Some(watch));
    drop(lead);
    code
}

/// The election as the arguments describe it.
fn election(args: &ElectArgs) -> Election<'_> {
    let mut e = lockutils::election(&args.name);
    if let Some(id) = &args.identity {
        e = e.identity(id);
    }
    if let Some(url) = &args.backend {
        e = e.backend(url);
    }
    if let Some(dir) = &args.lock_path {
        e = e.lock_path(dir);
    }
    if args.nonblock {
        e = e.blocking(false);
    } else if let Some(t) = args.timeout {
        e = e.timeout(t);
    }
    e
}

/// Campaigns on a helper thread while this one watches for signals (the
/// leadership is `Send`: it comes back here). On failure, prints why and
/// returns the exit code.
fn campaign(args: &ElectArgs) -> Result<Leadership, i32> {
    let (tx, rx) = mpsc::channel();
    let theirs = (
        args.name.clone(),
        args.identity.clone(),
        args.backend.clone(),
        args.lock_path.clone(),
        args.nonblock,
        args.timeout,
    );
    let spawned = std::thread::Builder::new()
        .name("lockutils-campaign".into())
        .spawn(move || {
            signals::block_in_this_thread();
            let (name, identity, backend, lock_path, nonblock, timeout) = theirs;
            let args = ElectArgs {
                name,
                identity,
                backend,
                lock_path,
                timeout,
                nonblock,
                quiet: true,
                on_loss: crate::cli::OnLoss {
                    kill_after: Duration::ZERO,
                },
                command: Vec::new(),
            };
            let _ = tx.send(election(&args).campaign());
        });
    if let Err(e) = spawned {
        return Err(exit::fail(
            exit::INTERNAL,
            format!("cannot start a thread: {e}"),
        ));
    }
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Ok(lead)) => break Ok(lead),
            Ok(Err(e)) => break Err(not_elected(args, &e)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                break Err(exit::fail(exit::INTERNAL, "the campaigning thread failed"));
            }
        }
        if let Some(sig) = signals::take_pending() {
            // Exiting ends the campaign; whatever it got is released by
            // the kernel or the server as the process goes.
            if !args.quiet {
                eprintln!(
                    "lockutils: {} while campaigning in {:?}; not elected, command not run",
                    signals::name(sig),
                    args.name
                );
            }
            break Err(exit::SIGNAL_BASE + sig);
        }
    }
}

/// Says why the campaign failed (naming the leader when another leads);
/// returns the exit code.
fn not_elected(args: &ElectArgs, e: &LockError) -> i32 {
    let code = exit::code_for(e);
    if args.quiet && e.is_busy() {
        return code;
    }
    let name = &args.name;
    let led_by = || match election(args).leader() {
        Ok(Some(l)) if !l.identity.is_empty() => format!(", led by {:?}", l.identity),
        _ => String::new(),
    };
    let msg = match e {
        LockError::LockPathNotSet { .. } => exit::NO_LOCK_PATH.to_owned(),
        LockError::WouldBlock { .. } => format!("election {name:?} has another leader{}", led_by()),
        LockError::Timeout { timeout, .. } => {
            format!(
                "timed out after {timeout:?} campaigning in {name:?}{}",
                led_by()
            )
        }
        e => e.to_string(),
    };
    exit::fail(code, msg)
}
