//! Showing who holds a lock, as [`lockutils::holders_of_file`] finds it,
//! in messages and tables.

use std::collections::BTreeSet;
use std::path::Path;

use lockutils::{HoldKind, HoldMode, Holder, Holders};

/// The holders of the lock file at `path`, if it is held and can be
/// inspected.
pub fn of_path(path: &Path) -> Option<Holders> {
    lockutils::holders_of_file(path)
        .ok()
        .filter(Holders::is_held)
}

/// `pid 12 (cmd), pid 34 (cmd)`, or a note that the holder is unknown.
pub fn describe(found: &Holders) -> String {
    let described: BTreeSet<String> = found
        .holders
        .iter()
        .map(|h| {
            let flock = if h.kind == HoldKind::Flock {
                " with flock(2)"
            } else {
                ""
            };
            match (h.pid, &h.command) {
                (Some(pid), Some(cmd)) => format!("pid {pid} ({}){flock}", one_line(cmd, 120)),
                (Some(pid), None) => format!("pid {pid}{flock}"),
                (None, _) => "an unknown process (its /proc entries are not readable)".to_owned(),
            }
        })
        .collect();
    described.into_iter().collect::<Vec<_>>().join(", ")
}

/// `exclusive` if any holder is, else `shared`; `None` when free.
pub fn mode(holders: &[Holder]) -> Option<&'static str> {
    if holders.is_empty() {
        None
    } else if holders.iter().any(|h| h.mode == HoldMode::Exclusive) {
        Some("exclusive")
    } else {
        Some("shared")
    }
}

pub fn mode_label(m: HoldMode) -> &'static str {
    match m {
        HoldMode::Shared => "shared",
        _ => "exclusive",
    }
}

pub fn kind_label(k: HoldKind) -> &'static str {
    match k {
        HoldKind::Ofd => "ofd",
        HoldKind::Posix => "posix",
        HoldKind::Flock => "flock",
        HoldKind::LockFileEx => "lockfileex",
        _ => "unknown",
    }
}

/// `text` on one line (control characters as spaces), at most `max`
/// characters (cut with `…`): for tables and messages.
pub fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_flattens_and_cuts() {
        assert_eq!(
            one_line("python -c \nimport x\tok", 100),
            "python -c  import x ok"
        );
        assert_eq!(one_line("abcdef", 4), "abc…");
        assert_eq!(one_line("abcd", 4), "abcd");
    }
}
