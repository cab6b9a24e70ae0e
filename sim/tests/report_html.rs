//! report.html in a real browser (headless Chromium, apt package `chromium`):
//! it renders without console errors, with its SVG charts in the DOM, and
//! needs nothing from the network.
//!
//! `FLEETSIM_REPORT_SCREENSHOT=docs/report-screenshot.png cargo test -p
//! fleetsim --test report_html` also refreshes the screenshot in the docs.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use fleetsim::metrics::DecisionExample;
use fleetsim::report::write_all;

/// Runs headless Chromium on a local file; returns (stdout, stderr).
fn chromium(file: &Path, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", file.display()))
        .output()
        .expect("chromium is installed (apt-get install chromium; tests/run.sh does it)");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Console messages Chromium logged (`...:CONSOLE(line)] "message"`).
fn console_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.contains(":CONSOLE")).collect()
}

#[test]
fn report_html_renders_in_chromium_without_console_errors() {
    let mut report = sample_report();
    // A reason mismatch (only the oracle finds those), with a keypad history.
    report.decisions.reason_mismatch_examples = vec![DecisionExample {
        at: "2026-03-02T07:00:05Z".into(),
        answered_at: "2026-03-02T07:00:05.02Z".into(),
        site: Some(1),
        door: 7,
        device: 12,
        credential: None,
        credential_kind: "pin".into(),
        action: "pin_wrong".into(),
        expected: "denied:wrong_pin".into(),
        actual: "denied:expired".into(),
        note: "denied for another reason than the rules give".into(),
        wrong_pins_at: vec!["2026-03-02T07:00:01Z".into()],
        locked_until: None,
    }];
    let dir = tempfile::tempdir().unwrap();
    write_all(dir.path(), &report).unwrap();
    let html_path = dir.path().join("report.html");
    let html = std::fs::read_to_string(&html_path).unwrap();
    // Self-contained: nothing to fetch.
    for needle in ["http://", "https://", "<script", "src="] {
        let outside_svg_ns = html.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !outside_svg_ns.contains(needle),
            "report.html contains {needle}"
        );
    }

    let (dom, stderr) = chromium(&html_path, &["--dump-dom"]);
    assert!(
        console_lines(&stderr).is_empty(),
        "console output:\n{stderr}"
    );
    for id in [
        "chart-percentiles",
        "chart-throughput",
        "chart-p99",
        "chart-decisions",
        "chart-battery",
        "chart-events",
    ] {
        assert!(
            dom.contains(&format!("<svg id=\"{id}\"")),
            "{id} missing from the DOM"
        );
    }
    assert!(dom.contains("<polyline"), "line charts have lines");
    for id in [
        "examples-false-accept",
        "examples-false-reject",
        "examples-reason-mismatch",
        "examples-no-answer",
    ] {
        assert!(
            dom.contains(&format!("<table id=\"{id}\"")),
            "{id} missing from the DOM"
        );
    }
    assert!(dom.contains("denied:expired") && dom.contains("2026-03-02T07:00:01Z"));
    assert!(dom.contains("FAILED"));
    assert!(dom.contains("check.card.p999"), "thresholds table");
    assert!(
        dom.contains("fleetsim run scenarios/office.toml --seed 42"),
        "reproduce command"
    );

    let shot = std::env::var("FLEETSIM_REPORT_SCREENSHOT")
        .map(|p| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p))
        .unwrap_or_else(|_| dir.path().join("shot.png"));
    let (_, stderr) = chromium(
        &html_path,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1100,3600",
            "--hide-scrollbars",
        ],
    );
    assert!(
        console_lines(&stderr).is_empty(),
        "console output:\n{stderr}"
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot of {} bytes",
        png.len()
    );
}

#[test]
fn the_console_check_catches_a_page_that_logs_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><script>console.error('boom')</script></body></html>",
    )
    .unwrap();
    let (_, stderr) = chromium(&page, &["--dump-dom"]);
    let lines = console_lines(&stderr);
    assert!(
        lines.iter().any(|l| l.contains("boom")),
        "stderr:\n{stderr}"
    );
}

#[test]
fn capacity_html_renders_in_chromium_with_its_charts() {
    use fleetsim::run::capacity::{execute, CapacityPlan, Precision};
    use fleetsim::run::{RunOptions, Shard};
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/capacity_support/known-capacity.toml");
    let s = fleetsim::scenario::load(&file).unwrap();
    let plan = CapacityPlan {
        start_per_s: 4.0,
        max_per_s: 100.0,
        step: std::time::Duration::from_secs(60),
        warmup: std::time::Duration::from_secs(5),
        repeats: 1,
        precision: Precision::Percent(20.0),
        precision_text: "20%".into(),
    };
    let dir = tempfile::tempdir().unwrap();
    let base = RunOptions {
        seed: 5,
        transport: s.transport,
        broker: None,
        target: None,
        report_dir: dir.path().to_path_buf(),
        metrics_addr: None,
        shard: Shard::WHOLE,
        run_id: String::new(),
        reproduce: "fleetsim capacity known-capacity.toml --seed 5".into(),
        fleet: None,
        warmup: plan.warmup,
    };
    let r = execute(&s, &plan, &base, &mut |_| {}).unwrap();
    assert!(r.max_passing_per_s.is_some() && r.first_failing_per_s.is_some());
    let html_path = dir.path().join("capacity.html");
    let html = std::fs::read_to_string(&html_path).unwrap();
    let outside_svg_ns = html.replace("http://www.w3.org/2000/svg", "");
    for needle in ["http://", "https://", "<script", "src="] {
        assert!(
            !outside_svg_ns.contains(needle),
            "capacity.html contains {needle}"
        );
    }
    let (dom, stderr) = chromium(&html_path, &["--dump-dom"]);
    assert!(
        console_lines(&stderr).is_empty(),
        "console output:\n{stderr}"
    );
    for id in ["chart-capacity-rate", "chart-capacity-p99"] {
        assert!(
            dom.contains(&format!("<svg id=\"{id}\"")),
            "{id} missing from the DOM"
        );
    }
    assert!(dom.contains("<table id=\"capacity-steps\""));
    assert!(
        dom.contains("highest pass") && dom.contains("first failure"),
        "the boundary"
    );
    assert!(dom.contains("FOUND") && dom.contains("arrivals.dropped_rate &lt; 20%"));
    // Every step's row links to its own report, which exists.
    for st in &r.steps {
        let link = format!(
            "steps/{}",
            Path::new(&st.report_dir)
                .file_name()
                .unwrap()
                .to_string_lossy()
        );
        assert!(dom.contains(&format!("{link}/report.html")), "{link}");
        assert!(
            dir.path().join(&link).join("report.html").exists(),
            "{link}"
        );
    }
}
