//! `lockutils status`: lock files, free or held, and by whom.

use std::fmt::Write;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lockutils::{Holder, HoldersSource};

use crate::cli::StatusArgs;
use crate::exit;
use crate::holders::{self, kind_label, mode, mode_label};
use crate::json;

/// One lock file's row.
struct Row {
    name: String,
    path: PathBuf,
    state: State,
    holders: Vec<Holder>,
    /// `None`: the OS cannot tell.
    waiters: Option<Vec<Holder>>,
    source: Option<HoldersSource>,
    age: Option<Duration>,
}

enum State {
    Free,
    Held,
    /// Named on the command line, but no file exists.
    Missing,
    /// Cannot be inspected, or is not a regular file.
    Error(String),
}

impl State {
    fn label(&self) -> &'static str {
        match self {
            State::Free => "free",
            State::Held => "held",
            State::Missing => "missing",
            State::Error(_) => "error",
        }
    }
}

/// Runs the subcommand; returns the exit code.
pub fn status(args: StatusArgs) -> i32 {
    let dir = match args.place.dir() {
        Ok(dir) => dir,
        Err(code) => return code,
    };
    let names = match file_names(&args, &dir) {
        Ok(names) => names,
        Err(code) => return code,
    };
    let rows = inspect(&dir, names);
    let out = if args.json {
        render_json(&dir, &rows)
    } else {
        render_table(&dir, &rows)
    };
    print!("{out}");
    0
}

/// The lock files to show: the named ones, or every regular file in `dir`
/// (starting with the prefix, if any), sorted.
fn file_names(args: &StatusArgs, dir: &Path) -> Result<Vec<String>, i32> {
    if !args.names.is_empty() {
        return args
            .names
            .iter()
            .map(|n| {
                args.place
                    .named(n)
                    .map(|named| named.file)
                    .map_err(|e| exit::lock_error(&e))
            })
            .collect();
    }
    // The prefix as it starts file names (with its separator), checked by
    // the library.
    let stem = match args.place.named("x") {
        Ok(named) => named.file.strip_suffix('x').unwrap_or_default().to_owned(),
        Err(e) => return Err(exit::lock_error(&e)),
    };
    let entries = fs::read_dir(dir).map_err(|e| {
        exit::fail(
            exit::LOCK_PATH,
            format!("cannot read lock path {}: {e}", dir.display()),
        )
    })?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(&stem))
        .collect();
    names.sort();
    Ok(names)
}

fn inspect(dir: &Path, names: Vec<String>) -> Vec<Row> {
    let now = SystemTime::now();
    let mut rows = Vec::with_capacity(names.len());
    // Rows of regular files, to ask the library about all at once.
    let mut files = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let mut row = Row {
            name,
            path,
            state: State::Free,
            holders: Vec::new(),
            waiters: Some(Vec::new()),
            source: None,
            age: None,
        };
        match fs::symlink_metadata(&row.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => row.state = State::Missing,
            Err(e) => row.state = State::Error(format!("cannot inspect: {e}")),
            Ok(meta) if !meta.is_file() => {
                row.state = State::Error("not a regular file; lockutils refuses to lock it".into());
            }
            Ok(meta) => {
                // Lock files are never written, so mtime is their creation.
                let born = meta.created().or_else(|_| meta.modified());
                row.age = born.ok().and_then(|t| now.duration_since(t).ok());
                files.push(rows.len());
            }
        }
        rows.push(row);
    }
    let paths: Vec<&Path> = files.iter().map(|&i| rows[i].path.as_path()).collect();
    let answers = lockutils::holders_of_files(&paths);
    for (&i, answer) in files.iter().zip(answers) {
        let row = &mut rows[i];
        match answer {
            Ok(found) => {
                if found.is_held() {
                    row.state = State::Held;
                }
                row.holders = found.holders;
                row.waiters = found.waiters;
                row.source = Some(found.source);
            }
            Err(e) => row.state = State::Error(format!("cannot inspect: {e}")),
        }
    }
    rows
}

fn source_label(s: Option<HoldersSource>) -> Option<&'static str> {
    Some(match s? {
        HoldersSource::ProcLocks => "proc",
        HoldersSource::GetLk => "getlk",
        _ => "lockfileex",
    })
}

/// Seconds since the Unix epoch, with milliseconds.
fn unix_seconds(t: Option<SystemTime>) -> Option<String> {
    let d = t?.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    Some(format!("{:.3}", d.as_secs_f64()))
}

/// `{"pid", "kind", "mode", "start", "end", "since", "command"}`.
fn holder_json(out: &mut String, h: &Holder) {
    out.push_str("{\"pid\": ");
    json::opt_number(out, h.pid);
    out.push_str(", \"kind\": ");
    json::string(out, kind_label(h.kind));
    out.push_str(", \"mode\": ");
    json::string(out, mode_label(h.mode));
    let _ = write!(out, ", \"start\": {}, \"end\": ", h.start);
    json::opt_number(out, h.end);
    out.push_str(", \"since\": ");
    json::opt_number(out, unix_seconds(h.since));
    out.push_str(", \"command\": ");
    json::opt_string(out, h.command.as_deref());
    out.push('}');
}

fn holders_json(out: &mut String, list: &[Holder]) {
    out.push('[');
    for (j, h) in list.iter().enumerate() {
        if j > 0 {
            out.push_str(", ");
        }
        holder_json(out, h);
    }
    out.push(']');
}

fn render_json(dir: &Path, rows: &[Row]) -> String {
    let mut out = String::from("{\"lock_path\": ");
    json::string(&mut out, &dir.to_string_lossy());
    out.push_str(", \"locks\": [");
    for (i, row) in rows.iter().enumerate() {
        out.push_str(if i == 0 {
            "\n  {\"name\": "
        } else {
            ",\n  {\"name\": "
        });
        json::string(&mut out, &row.name);
        out.push_str(", \"path\": ");
        json::string(&mut out, &row.path.to_string_lossy());
        out.push_str(", \"state\": ");
        json::string(&mut out, row.state.label());
        out.push_str(", \"mode\": ");
        json::opt_string(&mut out, mode(&row.holders));
        out.push_str(", \"holders\": ");
        holders_json(&mut out, &row.holders);
        out.push_str(", \"waiters\": ");
        json::opt_number(&mut out, row.waiters.as_ref().map(Vec::len));
        out.push_str(", \"waiting\": ");
        match &row.waiters {
            Some(w) => holders_json(&mut out, w),
            None => out.push_str("null"),
        }
        out.push_str(", \"source\": ");
        json::opt_string(&mut out, source_label(row.source));
        out.push_str(", \"age_seconds\": ");
        json::opt_number(&mut out, row.age.map(|a| format!("{:.3}", a.as_secs_f64())));
        out.push_str(", \"error\": ");
        json::opt_string(
            &mut out,
            match &row.state {
                State::Error(e) => Some(e),
                _ => None,
            },
        );
        out.push('}');
    }
    out.push_str(if rows.is_empty() { "]}\n" } else { "\n]}\n" });
    out
}

/// `5s`, `3m`, `2h`, `4d`.
fn short_age(age: Option<Duration>) -> String {
    let Some(age) = age else { return "-".into() };
    let s = age.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn render_table(dir: &Path, rows: &[Row]) -> String {
    let mut out = format!("lock path: {}\n", dir.display());
    if rows.is_empty() {
        out.push_str("no lock files\n");
        return out;
    }
    let header = [
        "LOCK", "STATE", "MODE", "KIND", "PID", "WAITERS", "AGE", "COMMAND",
    ];
    let mut lines: Vec<[String; 8]> = Vec::new();
    for row in rows {
        let mut cells = [
            row.name.clone(),
            row.state.label().to_owned(),
            mode(&row.holders).unwrap_or("-").to_owned(),
            "-".to_owned(),
            "-".to_owned(),
            row.waiters
                .as_ref()
                .map_or("?".to_owned(), |w| w.len().to_string()),
            short_age(row.age),
            match &row.state {
                State::Error(e) => e.clone(),
                _ => "-".to_owned(),
            },
        ];
        let mut holders = row.holders.iter();
        if let Some(h) = holders.next() {
            holder_cells(&mut cells, h);
        }
        lines.push(cells);
        // Further holders (shared locks, processes sharing the open file)
        // on their own lines.
        for h in holders {
            let mut more: [String; 8] = Default::default();
            holder_cells(&mut more, h);
            lines.push(more);
        }
    }
    let mut widths = header.map(str::len);
    for cells in &lines {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut push = |cells: [&str; 8]| {
        let mut line = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i == cells.len() - 1 {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push(header);
    for cells in &lines {
        push(cells.each_ref().map(String::as_str));
    }
    out
}

/// KIND, PID and COMMAND of one holder.
fn holder_cells(cells: &mut [String; 8], h: &Holder) {
    cells[3] = kind_label(h.kind).to_owned();
    cells[4] = h.pid.map_or("?".into(), |p| p.to_string());
    cells[7] = h
        .command
        .as_deref()
        .map_or("?".into(), |c| holders::one_line(c, 100));
}
