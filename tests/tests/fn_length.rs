//! No function over 150 lines in the code that is easiest to let grow:
//! the engine, the run loop and the API. A long function hides its steps;
//! split it into named ones instead of raising the limit.
//!
//! The scanner is line based, no parser: a function runs from its `fn` line
//! to the first later line that is a lone `}` at the `fn` line's
//! indentation (rustfmt's layout, which `cargo fmt --check` keeps).

use std::path::{Path, PathBuf};

/// Most lines a function may take, from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 150;

/// Folders (from the workspace root) whose `.rs` files are held to it.
const DIRS: &[&str] = &[
    "reference-server/access-core/src/engine",
    "sim/src/run",
    "reference-server/src/api",
];

/// A function found by the scanner.
#[derive(Debug, PartialEq)]
struct FnSpan {
    name: String,
    /// 1-based line of the `fn`.
    line: usize,
    lines: usize,
}

/// The name of the function declared on `line`, if it declares one.
fn fn_name(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    // Qualifiers that may come before `fn`, in any order rustfmt keeps.
    loop {
        let before = rest;
        for q in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "async ",
            "const ",
            "unsafe ",
        ] {
            rest = rest.strip_prefix(q).unwrap_or(rest);
        }
        if let Some(r) = rest.strip_prefix("extern \"C\" ") {
            rest = r;
        }
        if rest == before {
            break;
        }
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// Every function with a body in `text`, with its length in lines.
fn spans(text: &str) -> Vec<FnSpan> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let indent = &line[..line.len() - line.trim_start().len()];
        let close = format!("{indent}}}");
        // The signature ends at the first line ending in `{` (a body) or
        // `;` (a declaration without one, as in a trait).
        let mut body = None;
        for (j, l) in lines.iter().enumerate().skip(i) {
            let t = l.trim_end();
            if t.ends_with(';') && !t.contains('{') {
                break;
            }
            if t.ends_with('{') || (j == i && t.ends_with('}')) {
                body = Some(j);
                break;
            }
        }
        let Some(open) = body else { continue };
        let end = if lines[open].trim_end().ends_with('}') {
            Some(open)
        } else {
            lines
                .iter()
                .enumerate()
                .skip(open + 1)
                .find(|(_, l)| l.trim_end() == close)
                .map(|(j, _)| j)
        };
        if let Some(end) = end {
            out.push(FnSpan {
                name: name.to_string(),
                line: i + 1,
                lines: end - i + 1,
            });
        }
    }
    out
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries {
        let path = e.expect("a directory entry").path();
        if path.is_dir() {
            rs_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_function_is_longer_than_the_limit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for d in DIRS {
        rs_files(&root.join(d), &mut files);
    }
    files.sort();
    assert!(files.len() >= 10, "the scanned folders moved: {files:?}");
    let mut long = Vec::new();
    let mut seen = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).expect("a source file");
        for s in spans(&text) {
            seen += 1;
            if s.lines > MAX_FN_LINES {
                let rel = f.strip_prefix(&root).unwrap_or(f).display().to_string();
                long.push(format!(
                    "{rel}:{} fn {} is {} lines",
                    s.line, s.name, s.lines
                ));
            }
        }
    }
    assert!(seen > 100, "the scanner found only {seen} functions");
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_scanner_measures_what_rustfmt_writes() {
    let text = "\
pub fn one() -> u32 { 1 }

impl X {
    pub(crate) async fn two(
        &self,
    ) -> u32 {
        let f = |x| {
            x
        };
        f(2)
    }

    fn declared(&self);
}

trait T {
    fn also_declared(&self)
        -> u32;
}
";
    let got = spans(text);
    let want = vec![
        FnSpan {
            name: "one".into(),
            line: 1,
            lines: 1,
        },
        FnSpan {
            name: "two".into(),
            line: 4,
            lines: 8,
        },
    ];
    assert_eq!(got, want);
}
