//! The runtime's imports point one way: each module (a folder counts as
//! one) may name only the modules below it in [`LAYERS`]. This reads the
//! sources, so a new upward `use crate::...` fails here rather than growing
//! an import cycle.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The runtime's modules, top layer first (as lib.rs describes them).
const LAYERS: &[&str] = &[
    "private", "election", "holders", "builder", "acquire", "guard", "trace", "hold", "order",
    "registry", "metrics", "external", "local", "mounts", "fork", "config", "name", "spec",
    "error",
];

/// The `mod x;` lines of lib.rs.
fn declared() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim_start_matches("pub ").strip_prefix("mod "))
        .map(|l| l.trim_end_matches(';').to_owned())
        .collect()
}

fn sources(module: &str) -> Vec<PathBuf> {
    let dir = src().join(module);
    if dir.is_dir() {
        let mut out = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        out
    } else {
        vec![src().join(format!("{module}.rs"))]
    }
}

/// Every top-level module a file names as `crate::x`.
fn named(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        out.insert(rest[..end].to_owned());
    }
    out
}

#[test]
fn every_module_names_only_modules_below_it() {
    let layers: Vec<String> = LAYERS.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        declared(),
        layers.iter().cloned().collect(),
        "LAYERS must list exactly the modules of lib.rs"
    );
    let mut upward = Vec::new();
    for (i, module) in layers.iter().enumerate() {
        for file in sources(module) {
            for other in named(&file) {
                match layers.iter().position(|m| *m == other) {
                    Some(j) if j < i => upward.push(format!(
                        "{} names crate::{other}, which is not below {module}",
                        file.strip_prefix(src()).unwrap().display()
                    )),
                    _ => {}
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports pointing up:\n{}",
        upward.join("\n")
    );
}
