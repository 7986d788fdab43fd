//! `lockutils status`: lock files, free or held, and by whom.

use std::fmt::Write;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::cli::StatusArgs;
use crate::exit;
use crate::holders::{self, Access, FileId, Kind, Usage};
use crate::json;

/// One lock file's row.
struct Row {
    name: String,
    path: PathBuf,
    state: State,
    usage: Usage,
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
    let mut ids = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let mut row = Row {
            name,
            path,
            state: State::Free,
            usage: Usage::default(),
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
                ids.push((rows.len(), FileId::of(&meta)));
            }
        }
        rows.push(row);
    }
    let file_ids: Vec<FileId> = ids.iter().map(|(_, id)| *id).collect();
    match holders::inspect(&file_ids) {
        Some(usages) => {
            for ((i, _), usage) in ids.iter().zip(usages) {
                rows[*i].usage = usage;
            }
        }
        None => {
            for (i, _) in &ids {
                match holders::probe(&rows[*i].path) {
                    Ok(usage) => rows[*i].usage = usage,
                    Err(e) => rows[*i].state = State::Error(format!("cannot inspect: {e}")),
                }
            }
        }
    }
    for (i, _) in &ids {
        let row = &mut rows[*i];
        if matches!(row.state, State::Free) && !row.usage.holders.is_empty() {
            row.state = State::Held;
        }
    }
    rows
}

fn mode(usage: &Usage) -> Option<&'static str> {
    if usage.holders.is_empty() {
        None
    } else if usage.holders.iter().any(|h| h.access == Access::Exclusive) {
        Some("exclusive")
    } else {
        Some("shared")
    }
}

fn access_label(a: Access) -> &'static str {
    match a {
        Access::Exclusive => "exclusive",
        Access::Shared => "shared",
    }
}

fn kind_label(k: Kind) -> &'static str {
    match k {
        Kind::Ofd => "ofd",
        Kind::Posix => "posix",
    }
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
        json::opt_string(&mut out, mode(&row.usage));
        out.push_str(", \"holders\": [");
        for (j, h) in row.usage.holders.iter().enumerate() {
            out.push_str(if j == 0 { "{\"pid\": " } else { ", {\"pid\": " });
            json::opt_number(&mut out, h.pid);
            out.push_str(", \"kind\": ");
            json::string(&mut out, kind_label(h.kind));
            out.push_str(", \"mode\": ");
            json::string(&mut out, access_label(h.access));
            let _ = write!(out, ", \"start\": {}, \"end\": ", h.start);
            json::opt_number(&mut out, h.end);
            out.push_str(", \"command\": ");
            json::opt_string(&mut out, h.command.as_deref());
            out.push('}');
        }
        let _ = write!(
            out,
            "], \"waiters\": {}, \"age_seconds\": ",
            row.usage.waiters
        );
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
    let header = ["LOCK", "STATE", "MODE", "PID", "WAITERS", "AGE", "COMMAND"];
    let mut lines: Vec<[String; 7]> = Vec::new();
    for row in rows {
        let mut cells = [
            row.name.clone(),
            row.state.label().to_owned(),
            mode(&row.usage).unwrap_or("-").to_owned(),
            "-".to_owned(),
            row.usage.waiters.to_string(),
            short_age(row.age),
            match &row.state {
                State::Error(e) => e.clone(),
                _ => "-".to_owned(),
            },
        ];
        let mut holders = row.usage.holders.iter();
        if let Some(h) = holders.next() {
            cells[3] = h.pid.map_or("?".into(), |p| p.to_string());
            cells[6] = h
                .command
                .as_deref()
                .map_or("?".into(), |c| holders::one_line(c, 100));
        }
        lines.push(cells);
        // Further holders (shared locks, forked children) on their own lines.
        for h in holders {
            let mut more: [String; 7] = Default::default();
            more[3] = h.pid.map_or("?".into(), |p| p.to_string());
            more[6] = h
                .command
                .as_deref()
                .map_or("?".into(), |c| holders::one_line(c, 100));
            lines.push(more);
        }
    }
    let mut widths = header.map(str::len);
    for cells in &lines {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut push = |cells: [&str; 7]| {
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
