//! The runtime's imports point one way: each module (a folder counts as
//! one) may name only the modules below it in [`LAYERS`]. This reads the
//! sources, so a new upward `use crate::...` fails here rather than growing
//! an import cycle.
//!
//! It also checks the lists the docs write out by hand against the code
//! they describe: the `#[synchronized]` argument table against the options
//! codegen's parser accepts, the "Lock servers" section against the URL
//! schemes `external/mod.rs` selects a backend by, and the layer comment of
//! lib.rs against [`LAYERS`].

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

// ---------------------------------------------------------------------------
// Docs that describe the code, checked against it: each list below is
// written by hand in a doc comment, so a new option, backend or module
// fails here until the docs name it.

/// The workspace root (the facade crate's directory).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the runtime lives inside the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `path` relative to the workspace root, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The `//!` and `///` lines of a Rust file (markers stripped), or all of
/// a Markdown file (`#[doc = include_str!(..)]` pages).
fn doc_lines(path: &Path) -> Vec<String> {
    let text = read(path);
    if path.extension().is_some_and(|x| x == "md") {
        return text.lines().map(str::to_owned).collect();
    }
    text.lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix("//!").or_else(|| l.strip_prefix("///"))?;
            Some(rest.strip_prefix(' ').unwrap_or(rest).to_owned())
        })
        .collect()
}

/// Every `.rs` and `.md` file under `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs" || x == "md") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// What a user of the facade reads on docs.rs: the facade's own docs
/// (`src/`, guide pages included) and the attribute's, which the facade
/// re-exports.
fn facade_docs() -> Vec<(PathBuf, Vec<String>)> {
    let mut files = files_under(&root().join("src"));
    files.push(root().join("lockutils-macros/src/lib.rs"));
    files
        .into_iter()
        .map(|f| (f.clone(), doc_lines(&f)))
        .collect()
}

/// The doc lines outside code blocks (a doctest's hidden `# fn main()` is
/// no heading).
fn prose(lines: &[String]) -> Vec<&str> {
    let mut in_code = false;
    lines
        .iter()
        .filter(|l| {
            if l.trim_start().starts_with("```") {
                in_code = !in_code;
                return false;
            }
            !in_code
        })
        .map(String::as_str)
        .collect()
}

/// The options `#[synchronized]`'s parser accepts: what `parse_option` in
/// codegen's `args.rs` peeks for (`kw::fair`, `Token![crate]`, ...).
fn parsed_options() -> BTreeSet<String> {
    let path = root().join("lockutils-macros/codegen/src/args.rs");
    let text = read(&path);
    let start = text
        .find("fn parse_option(")
        .unwrap_or_else(|| panic!("no fn parse_option in {}", shown(&path)));
    let body = &text[start..];
    let body = &body[..body.find("\n    }\n").unwrap_or(body.len())];
    let mut out = BTreeSet::new();
    for (i, _) in body.match_indices("lookahead.peek(") {
        let arg = &body[i + "lookahead.peek(".len()..];
        let arg = arg
            .strip_prefix("kw::")
            .or_else(|| arg.strip_prefix("Token!["));
        if let Some(arg) = arg {
            let end = arg
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(arg.len());
            out.insert(arg[..end].to_owned());
        }
    }
    assert!(
        out.len() > 3,
        "found only {out:?} in {}'s parse_option: has the parser changed shape?",
        shown(&path)
    );
    out
}

/// The options a Markdown table headed `| argument | ... |` documents: the
/// leading lowercase word of each code span in its first column
/// (`` `prefix = "nova-"` `` is `prefix`; `"name"` and `NAME` are not
/// options).
fn tables_of_arguments(lines: &[&str]) -> Vec<BTreeSet<String>> {
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect()
    };
    let mut tables = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let header = lines[i].trim();
        let is_table = header.starts_with('|')
            && cells(header)
                .first()
                .is_some_and(|c| c.eq_ignore_ascii_case("argument"));
        i += 1;
        if !is_table {
            continue;
        }
        let mut options = BTreeSet::new();
        while i < lines.len() && lines[i].trim().starts_with('|') {
            let first = cells(lines[i]).into_iter().next().unwrap_or_default();
            for span in first.split('`').skip(1).step_by(2) {
                let word: String = span
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !word.is_empty() {
                    options.insert(word);
                }
            }
            i += 1;
        }
        tables.push(options);
    }
    tables
}

#[test]
fn the_argument_table_lists_every_option_the_parser_accepts() {
    let accepted = parsed_options();
    let mut found = 0;
    let mut drift = Vec::new();
    for (file, lines) in facade_docs() {
        for documented in tables_of_arguments(&prose(&lines)) {
            found += 1;
            for missing in accepted.difference(&documented) {
                drift.push(format!(
                    "{}: the #[synchronized] argument table leaves out `{missing}`, which \
                     lockutils-macros/codegen/src/args.rs accepts",
                    shown(&file)
                ));
            }
            for extra in documented.difference(&accepted) {
                drift.push(format!(
                    "{}: the #[synchronized] argument table lists `{extra}`, which \
                     lockutils-macros/codegen/src/args.rs does not accept",
                    shown(&file)
                ));
            }
        }
    }
    assert!(
        found > 0,
        "no `| argument | ... |` table in the facade's docs (src/, lockutils-macros/src/lib.rs)"
    );
    assert!(drift.is_empty(), "{}", drift.join("\n"));
}

/// The URL schemes of lock servers: the `Some("scheme" | ..) => Ok(..)`
/// arms of `make` in `external/mod.rs`, each arm one backend named by its
/// first scheme (`postgres | postgresql` is `postgres`).
fn server_schemes() -> BTreeSet<String> {
    let path = src().join("external/mod.rs");
    let text = read(&path);
    let start = text
        .find("fn make(")
        .unwrap_or_else(|| panic!("no fn make in {}", shown(&path)));
    let body = &text[start..];
    let body = &body[..body.find("\n}\n").unwrap_or(body.len())];
    let schemes: BTreeSet<String> = body
        .lines()
        .filter_map(|l| {
            let arm = l.trim().strip_prefix("Some(\"")?;
            l.contains("=> Ok(")
                .then(|| arm[..arm.find('"').unwrap_or(0)].to_owned())
        })
        .collect();
    assert!(
        !schemes.is_empty(),
        "no `Some(\"scheme\") => Ok(..)` arm in {}'s make: has it changed shape?",
        shown(&path)
    );
    schemes
}

/// A Markdown heading's level and title.
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.chars().take_while(|c| *c == '#').count();
    let title = &line[level..];
    (level > 0 && title.starts_with(' ')).then(|| (level, title.trim()))
}

/// The text of each section headed "Lock servers" (any level), up to the
/// next heading of the same or a higher level.
fn lock_server_sections(lines: &[&str]) -> Vec<String> {
    let mut sections = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some((level, title)) = heading(l) else {
            continue;
        };
        if !title.eq_ignore_ascii_case("lock servers") {
            continue;
        }
        let body: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| heading(l).is_none_or(|(deeper, _)| deeper > level))
            .copied()
            .collect();
        sections.push(body.join("\n"));
    }
    sections
}

#[test]
fn the_lock_server_docs_name_every_backend() {
    let schemes = server_schemes();
    let mut found = 0;
    let mut drift = Vec::new();
    for (file, lines) in facade_docs() {
        for section in lock_server_sections(&prose(&lines)) {
            found += 1;
            let text = section.to_lowercase();
            for scheme in schemes.iter().filter(|s| !text.contains(s.as_str())) {
                drift.push(format!(
                    "{}: the \"Lock servers\" section never names {scheme} (no \"{scheme}\" \
                     in it, any case), a backend lockutils-runtime/src/external/mod.rs \
                     selects by URL",
                    shown(&file)
                ));
            }
        }
    }
    assert!(
        found > 0,
        "no section headed \"Lock servers\" in the facade's docs (src/, \
         lockutils-macros/src/lib.rs)"
    );
    assert!(drift.is_empty(), "{}", drift.join("\n"));
}

/// The layers lib.rs's comment lists: `a > b > ... > z`, in the comment
/// that starts with "Layers".
fn documented_layers() -> Vec<String> {
    let path = src().join("lib.rs");
    let text = read(&path);
    let comment: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("// Layers"))
        .take_while(|l| l.starts_with("//"))
        .map(|l| l.trim_start_matches('/').trim())
        .collect();
    let comment = comment.join(" ");
    let parts: Vec<&str> = comment.split('>').map(str::trim).collect();
    assert!(
        parts.len() > 1,
        "no `// Layers ...: a > b > ...` comment in {}",
        shown(&path)
    );
    let word = |s: &str| {
        s.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_'))
            .to_owned()
    };
    let last = parts.len() - 1;
    parts
        .iter()
        .enumerate()
        .map(|(i, part)| match i {
            0 => word(part.rsplit(' ').next().unwrap_or(part)),
            i if i == last => word(part.split(' ').next().unwrap_or(part)),
            _ => word(part),
        })
        .collect()
}

#[test]
fn lib_rs_lists_the_layers() {
    let documented = documented_layers();
    let missing: Vec<&&str> = LAYERS
        .iter()
        .filter(|m| !documented.iter().any(|d| d == *m))
        .collect();
    let extra: Vec<&String> = documented
        .iter()
        .filter(|d| !LAYERS.contains(&d.as_str()))
        .collect();
    assert!(
        documented == LAYERS,
        "lockutils-runtime/src/lib.rs's layer comment differs from LAYERS in \
         lockutils-runtime/tests/layout.rs:\n  comment: {}\n  LAYERS:  {}\n  missing \
         from the comment: {missing:?}; not in LAYERS: {extra:?}",
        documented.join(" > "),
        LAYERS.join(" > ")
    );
}
