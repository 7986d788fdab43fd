//! `lockutils leader`: who leads an election.

use lockutils::LockError;

use crate::cli::LeaderArgs;
use crate::exit;
use crate::json;

/// Runs the subcommand; returns the exit code.
pub fn leader(args: LeaderArgs) -> i32 {
    let mut e = lockutils::election(&args.name);
    if let Some(url) = &args.backend {
        e = e.backend(url);
    }
    if let Some(dir) = &args.lock_path {
        e = e.lock_path(dir);
    }
    let found = match e.leader() {
        Ok(found) => found,
        Err(LockError::LockPathNotSet { .. }) => {
            return exit::fail(exit::LOCK_PATH, exit::NO_LOCK_PATH);
        }
        Err(e) => return exit::lock_error(&e),
    };
    if args.json {
        let mut out = String::from("{\"name\": ");
        json::string(&mut out, &args.name);
        out.push_str(", \"leader\": ");
        match &found {
            Some(l) => {
                out.push_str("{\"identity\": ");
                json::string(&mut out, &l.identity);
                out.push_str(", \"fencing_token\": ");
                json::opt_number(&mut out, l.fencing_token);
                out.push('}');
            }
            None => out.push_str("null"),
        }
        out.push('}');
        println!("{out}");
        return 0;
    }
    match found {
        None => println!("no leader"),
        Some(l) => {
            let who = if l.identity.is_empty() {
                "(held without an identity)"
            } else {
                &l.identity
            };
            match l.fencing_token {
                Some(t) => println!("{who} (fencing token {t})"),
                None => println!("{who}"),
            }
        }
    }
    0
}
