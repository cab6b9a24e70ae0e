//! Scenario files: what QA writes (TOML), checked and compiled into a
//! [`Scenario`] the run engine consumes.
//!
//! # Layout
//!
//! - `raw.rs`: serde structs mirroring the file, spans on every value; the
//!   single definition of the format (the JSON Schema derives from it).
//! - `check.rs`: the structural pass over the parsed TOML against that
//!   schema; reports every unknown field, wrong type, bad unit at once.
//! - `compile.rs`: raw -> [`Scenario`], defaults, cross-field rules.
//! - `model.rs`: the checked types. `units.rs`: durations, rates, times.
//! - `threshold.rs`: threshold expressions and their evaluation.
//! - `error.rs`: [`Problem`] (file:line:col, path, message, hint).
//!
//! Loading does no I/O beyond reading the one file (and jiff's time zone
//! database to validate zone names).

mod check;
mod compile;
mod error;
mod model;
mod raw;
pub mod threshold;
pub mod units;

use std::path::Path;

use schemars::gen::SchemaSettings;
use schemars::schema::RootSchema;

pub use compile::{
    transport_conflict, transport_name, DEFAULT_THRESHOLDS, DEFAULT_VIRTUAL_START,
    MAX_DESCRIPTION_LEN, MAX_DEVICES, MAX_FAULT_WINDOWS, MAX_NAME_LEN, MAX_PHASES,
    MAX_RUN_DURATION,
};
pub use error::{edit_distance, suggest, Problem, ProblemKind, ScenarioError};
pub use model::*;
pub use threshold::{evaluate_all, MetricKind, Threshold, ThresholdResult};

/// Largest scenario file accepted; real ones are a few KB.
pub const MAX_SCENARIO_BYTES: u64 = 1024 * 1024;

/// Reads and compiles one scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    use std::io::Read;
    let read_err = |source| ScenarioError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut src = String::new();
    // Read one byte past the limit to tell "at the limit" from "over it".
    file.take(MAX_SCENARIO_BYTES + 1)
        .read_to_string(&mut src)
        .map_err(read_err)?;
    if src.len() as u64 > MAX_SCENARIO_BYTES {
        return Err(ScenarioError::TooLarge {
            path: path.to_path_buf(),
            limit_bytes: MAX_SCENARIO_BYTES,
        });
    }
    parse(&src, &path.display().to_string())
}

/// Compiles scenario text; `file` names it in messages.
pub fn parse(src: &str, file: &str) -> Result<Scenario, ScenarioError> {
    let map = error::SourceMap { file, src };
    let invalid = |problems: Vec<Problem>| ScenarioError::Invalid {
        file: file.to_string(),
        problems,
    };
    // 1. TOML syntax.
    let node: raw::Sp<check::Node> = match toml::from_str(src) {
        Ok(n) => n,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            return Err(invalid(vec![map.problem(
                ProblemKind::Syntax,
                span,
                "",
                format!("not valid TOML: {}", e.message().trim()),
                Some("see https://toml.io for the syntax".to_string()),
            )]));
        }
    };
    // 2. Structure and values, every problem at once.
    let schema = json_schema();
    let mut checker = check::Checker::new(&schema, &map);
    checker.check_root(&node);
    if !checker.problems.is_empty() {
        let mut problems = checker.problems;
        // Top to bottom, the order a reader fixes them in.
        problems.sort_by_key(|p| (p.line, p.col));
        return Err(invalid(problems));
    }
    // 3. Typed, spanned raw structs; the checker has vetted the shape, so a
    //    failure here is a gap in the checker, still reported, never a panic.
    let raw: raw::RawScenario = match toml::from_str(src) {
        Ok(r) => r,
        Err(e) => {
            return Err(invalid(vec![map.problem(
                ProblemKind::WrongType,
                e.span().unwrap_or(0..0),
                "",
                e.message().trim().to_string(),
                None,
            )]))
        }
    };
    // 4. Defaults, units and cross-field rules.
    compile::compile(raw, file, &map).map_err(|mut problems| {
        problems.sort_by_key(|p| (p.line, p.col));
        invalid(problems)
    })
}

/// The JSON Schema of scenario files (for editors; `fleetsim schema`).
pub fn json_schema() -> RootSchema {
    SchemaSettings::draft07()
        .with(|s| {
            // TOML has no null: an absent key is how a default is asked for.
            s.option_add_null_type = false;
        })
        .into_generator()
        .into_root_schema_for::<raw::RawScenario>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_lists_every_section() {
        let v = serde_json::to_value(json_schema()).unwrap();
        for key in [
            "fleet",
            "credentials",
            "phases",
            "actions",
            "faults",
            "thresholds",
        ] {
            assert!(v["properties"].get(key).is_some(), "{key}");
        }
        assert_eq!(v["additionalProperties"], false);
    }
}
