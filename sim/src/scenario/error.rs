//! Problems found in a scenario file: each one carries the file, line and
//! column, the field path (`phases[1].arrivals.to`), a message and a hint,
//! so that `fleetsim validate` can report every problem at once.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use super::check::is_unsafe;

/// What kind of mistake a [`Problem`] is (stable, for tests and tools).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// Not valid TOML at all.
    Syntax,
    /// A key the format does not know.
    UnknownField,
    /// A required key is absent.
    MissingField,
    /// A value of the wrong TOML type (a string where a number belongs...).
    WrongType,
    /// A value outside the allowed set or range.
    BadValue,
    /// A duration that does not parse ("2 minutes").
    BadDuration,
    /// A rate that does not parse ("fast").
    BadRate,
    /// A time of day or a daily window that does not parse.
    BadTime,
    /// An IANA time zone jiff does not know.
    UnknownTimeZone,
    /// Fractions (the action mix, the PIN schedule mix) that do not add up to 1.
    MixSum,
    /// A threshold whose metric or expression does not parse.
    BadThreshold,
    /// Two settings that contradict each other, or one that needs another.
    Conflict,
    /// A warning, not an error: an action in the mix that can never run
    /// with the given credentials, durations and transport (its arrivals
    /// would all be skipped).
    NeverRuns,
    /// Text holding a control character or a bidirectional override, which
    /// must not reach file names, logs or reports.
    UnsafeText,
}

/// One problem in one scenario file.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    /// Where in the scenario: `fleet.devices[0].per_site`; empty for the file itself.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
    /// The offending source line, for a caret display.
    #[serde(skip)]
    pub source_line: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.col)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if !self.source_line.is_empty() {
            let gutter = self.line.to_string();
            let pad = " ".repeat(gutter.len());
            write!(f, "\n {pad} |\n {gutter} | {}\n {pad} | ", self.source_line)?;
            write!(f, "{}^", " ".repeat(self.col.saturating_sub(1)))?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl Problem {
    /// The problem printed as a warning: `file:line:col: warning: ...`.
    pub fn as_warning(&self) -> String {
        let text = self.to_string();
        let at = format!("{}:{}:{}: ", self.file, self.line, self.col);
        match text.strip_prefix(&at) {
            Some(rest) => format!("{at}warning: {rest}"),
            None => format!("warning: {text}"),
        }
    }
}

/// Everything that can go wrong loading a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario file {} is larger than {limit_bytes} bytes", path.display())]
    TooLarge { path: PathBuf, limit_bytes: u64 },
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl ScenarioError {
    /// The problems in the file (empty for a read error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ScenarioError::Read { .. } | ScenarioError::TooLarge { .. } => &[],
            ScenarioError::Invalid { problems, .. } => problems,
        }
    }
}

fn render_problems(file: &str, problems: &[Problem]) -> String {
    let mut out = String::new();
    for p in problems {
        out.push_str(&p.to_string());
        out.push_str("\n\n");
    }
    let n = problems.len();
    out.push_str(&format!(
        "{file}: {n} problem{} found",
        if n == 1 { "" } else { "s" }
    ));
    out
}

/// Turns byte offsets into line and column for one source text.
pub(crate) struct SourceMap<'a> {
    pub file: &'a str,
    pub src: &'a str,
}

impl SourceMap<'_> {
    /// 1-based line and character column of a byte offset, and the line's text.
    fn locate(&self, offset: usize) -> (usize, usize, &str) {
        let offset = offset.min(self.src.len());
        // Step back to a char boundary so slicing never panics.
        let offset = (0..=offset)
            .rev()
            .find(|&i| self.src.is_char_boundary(i))
            .unwrap_or(0);
        let before = &self.src[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = before.matches('\n').count() + 1;
        let col = self.src[line_start..offset].chars().count() + 1;
        let line_end = self.src[line_start..]
            .find('\n')
            .map_or(self.src.len(), |i| line_start + i);
        let text = self.src[line_start..line_end].trim_end_matches('\r');
        (line, col, text)
    }

    pub fn problem(
        &self,
        kind: ProblemKind,
        span: Range<usize>,
        path: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Problem {
        let (line, col, text) = self.locate(span.start);
        Problem {
            kind,
            file: self.file.to_string(),
            line,
            col,
            path: printable(path),
            message: printable(&message.into()),
            hint: hint.map(|h| printable(&h)),
            // The line is shown under the message: a bidirectional override
            // in it (a comment, say) would reorder what the terminal shows.
            source_line: printable(text),
        }
    }
}

/// `s` with each character that scenario text may not hold replaced by
/// U+FFFD, one for one, so columns still line up with the caret. Tabs
/// stay: harmless on a terminal, and some files indent with them.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c != '\t' && is_unsafe(c) {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// The closest candidate to `word` by edit distance, if it is close enough to
/// be a plausible typo ("per_sit" -> "per_site").
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance over characters, counting a swap of two neighbours as one
/// edit ("fro" -> "for"), as typos go (optimal string alignment).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_pick_close_names_only() {
        let names = ["per_site", "kind", "model", "with"];
        assert_eq!(suggest("per_sit", names), Some("per_site"));
        assert_eq!(suggest("persite", names), Some("per_site"));
        assert_eq!(suggest("modle", names), Some("model"));
        assert_eq!(suggest("colour", names), None);
        assert_eq!(suggest("fro", ["at", "for"]), Some("for"));
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn locate_counts_lines_and_chars() {
        let map = SourceMap {
            file: "f.toml",
            src: "a = 1\nnäme = 2\n",
        };
        let p = map.problem(ProblemKind::BadValue, 13..14, "x", "m", None);
        assert_eq!((p.line, p.col), (2, 7));
        assert_eq!(p.source_line, "näme = 2");
        // An offset inside a multi-byte char or past the end never panics.
        map.problem(ProblemKind::BadValue, 8..9, "x", "m", None);
        map.problem(ProblemKind::BadValue, 999..999, "x", "m", None);
    }
}
