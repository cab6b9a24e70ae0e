//! `junit.xml`: one test case per threshold, so any CI shows which limit a
//! run broke and by how much.

use super::{fmt_num, RunReport};

/// Escapes text for XML attributes and character data.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Renders the thresholds of a report as a JUnit XML document.
pub fn render_junit(report: &RunReport) -> String {
    let failures = report
        .thresholds
        .iter()
        .filter(|t| !t.passed && t.not_judged.is_none())
        .count();
    let skipped = report
        .thresholds
        .iter()
        .filter(|t| t.not_judged.is_some())
        .count();
    let suite = format!("fleetsim thresholds: {}", report.name);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"fleetsim\" tests=\"{n}\" failures=\"{failures}\" errors=\"0\" time=\"{t}\">\n",
        n = report.thresholds.len(),
        t = fmt_num(report.duration_s),
    ));
    x.push_str(&format!(
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{}\">\n",
        escape(&suite),
        report.thresholds.len(),
        fmt_num(report.duration_s),
    ));
    x.push_str("    <properties>\n");
    for (k, v) in [
        ("seed", report.seed.to_string()),
        ("command", report.command.clone()),
        ("fleetsim_version", report.fleetsim_version.clone()),
        ("transport", report.transport.clone()),
        ("model", report.model_label.clone()),
    ] {
        x.push_str(&format!(
            "      <property name=\"{k}\" value=\"{}\"/>\n",
            escape(&v)
        ));
    }
    x.push_str("    </properties>\n");
    for t in &report.thresholds {
        x.push_str(&format!(
            "    <testcase classname=\"fleetsim.thresholds\" name=\"{}\" time=\"0\"",
            escape(&format!("{} {}", t.metric, t.expression))
        ));
        if let Some(why) = &t.not_judged {
            x.push_str(&format!(
                ">\n      <skipped message=\"not judged: {}\"/>\n      <system-out>{}</system-out>\n    </testcase>\n",
                escape(why),
                escape(&t.describe())
            ));
        } else if t.passed {
            x.push_str(&format!(
                ">\n      <system-out>{}</system-out>\n    </testcase>\n",
                escape(&t.describe())
            ));
        } else {
            // The examples behind a failed decision threshold, so the CI
            // page shows which checks went wrong without the report.
            let mut text = t.describe();
            if let Some((title, list)) = report.examples_for(&t.metric) {
                if !list.is_empty() {
                    text.push_str(&format!("\n{title}, {} kept:", list.len()));
                    for e in list {
                        text.push_str(&format!("\n  {e}"));
                    }
                }
            }
            x.push_str(&format!(
                ">\n      <failure message=\"{}\" type=\"threshold\">{}\nreproduce: {}</failure>\n    </testcase>\n",
                escape(&t.describe()),
                escape(&text),
                escape(&report.command),
            ));
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}
