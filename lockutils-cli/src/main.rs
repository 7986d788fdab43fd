//! `lockutils`: run commands under named inter-process locks shared with
//! the lockutils library and oslo.concurrency, and inspect or remove them.
//!
//! Subcommands: `run` (like util-linux `flock(1)`), `wrapper` (like oslo's
//! `lockutils-wrapper`), `status`, `remove`, `elect` and `leader`. See `lockutils --help`, and
//! [`exit`] for the exit codes.
#![warn(missing_docs)]

#[cfg(unix)]
mod child;
#[cfg(unix)]
mod cli;
#[cfg(unix)]
mod duration;
#[cfg(unix)]
mod elect;
#[cfg(unix)]
mod exit;
#[cfg(unix)]
mod holders;
#[cfg(unix)]
mod json;
#[cfg(unix)]
mod leader;
#[cfg(unix)]
mod place;
#[cfg(unix)]
mod remove;
#[cfg(unix)]
mod run;
#[cfg(unix)]
mod signals;
#[cfg(unix)]
mod status;
#[cfg(unix)]
mod wrapper;

#[cfg(unix)]
fn main() {
    use clap::Parser;

    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => std::process::exit(usage_error(&e)),
    };
    let code = match cli.command {
        cli::Command::Run(args) => run::run(args),
        cli::Command::Wrapper(args) => wrapper::wrapper(args),
        cli::Command::Status(args) => status::status(args),
        cli::Command::Remove(args) => remove::remove(args),
        cli::Command::Elect(args) => elect::elect(args),
        cli::Command::Leader(args) => leader::leader(args),
    };
    std::process::exit(code);
}

/// Prints a clap error (or the help or version it carries); returns the
/// exit code: 0 for `--help` and `--version`, [`exit::USAGE`] otherwise.
#[cfg(unix)]
fn usage_error(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    let _ = e.print();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
        ErrorKind::UnknownArgument => {
            // `lockutils run NAME cmd`: clap says "unexpected argument";
            // say what is wrong in our terms too.
            let sub = std::env::args().nth(1).unwrap_or_default();
            if sub == "run" || sub == "wrapper" || sub == "elect" {
                eprintln!(
                    "\nnote: the command goes after `--`: lockutils {sub} ... -- CMD [ARGS...]"
                );
            }
            exit::USAGE
        }
        _ => exit::USAGE,
    }
}

#[cfg(not(unix))]
fn main() {
    eprintln!("lockutils: this command supports Unix only");
    std::process::exit(70);
}
