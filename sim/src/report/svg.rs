//! Inline SVG charts for the HTML report, generated here so the report needs
//! no JavaScript, no fonts and no network.

use std::fmt::Write;

use super::fmt_num;
use super::junit::escape;

const W: f64 = 720.0;
const H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 130.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 44.0;

/// A palette that stays readable for common colour blindness (Okabe-Ito).
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

/// Most points a line of a time chart draws: a month at one-minute
/// intervals would put 43,200 points (and megabytes) into the page, more
/// than a chart 720 units wide can show.
pub const MAX_CHART_POINTS: usize = 300;

/// How [`downsample`] folds the points of one bucket into one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fold {
    /// The mean (rates: the bucket's average rate).
    Mean,
    /// The largest (latency percentiles: the worst interval stays visible).
    Max,
}

/// At most `max` points: consecutive points are grouped in equal runs and
/// each run becomes one point at its first x. Fewer points pass unchanged.
pub fn downsample(points: &[(f64, f64)], max: usize, fold: Fold) -> Vec<(f64, f64)> {
    let max = max.max(1);
    if points.len() <= max {
        return points.to_vec();
    }
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .map(|c| {
            let y = match fold {
                Fold::Mean => c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64,
                Fold::Max => c.iter().map(|p| p.1).fold(f64::MIN, f64::max),
            };
            (c[0].0, y)
        })
        .collect()
}

pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
}

pub enum XAxis<'a> {
    /// Plain numbers (seconds since start).
    Linear(&'a str),
    /// Quantiles 0..1, spread as in HdrHistogram plots: x = log10(1 / (1 - q)).
    Percentile,
}

/// Where a quantile lands on the percentile axis; the maximum gets its own slot.
fn percentile_x(q: f64) -> f64 {
    if q >= 1.0 {
        5.5
    } else {
        (1.0 / (1.0 - q)).log10().min(5.0)
    }
}

fn nice_step(range: f64) -> f64 {
    if range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    mag * if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    }
}

fn open(out: &mut String, id: &str, title: &str) {
    let _ = write!(
        out,
        r##"<svg id="{id}" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-label="{t}"><title>{t}</title><rect x="0" y="0" width="{W}" height="{H}" fill="#fff"/><text x="{LEFT}" y="18" class="ct">{t}</text>"##,
        t = escape(title)
    );
}

fn no_data(out: &mut String) {
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" class="muted">no data</text></svg>"#,
        W / 2.0,
        H / 2.0
    );
}

/// Y grid, ticks and label from 0 to a nice maximum; returns the maximum.
fn y_axis(out: &mut String, max: f64, label: &str) -> f64 {
    let step = nice_step(max);
    let top = (max / step).ceil().max(1.0) * step;
    let plot_h = H - TOP - BOTTOM;
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let y = H - BOTTOM - v / top * plot_h;
        let _ = write!(
            out,
            r#"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            fmt_num((v * 1e6).round() / 1e6)
        );
        v += step;
    }
    let _ = write!(
        out,
        r#"<text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle" class="tick">{}</text>"#,
        TOP + plot_h / 2.0,
        escape(label)
    );
    top
}

fn legend(out: &mut String, names: &[(&str, &str)]) {
    for (i, (name, color)) in names.iter().enumerate() {
        let y = TOP + 14.0 + i as f64 * 18.0;
        let x = W - RIGHT + 12.0;
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{:.1}" width="12" height="12" fill="{color}"/><text x="{}" y="{:.1}" class="tick">{}</text>"#,
            y - 10.0,
            x + 18.0,
            y,
            escape(name)
        );
    }
}

/// A line chart with one line per series.
pub fn line_chart(id: &str, title: &str, x: XAxis, y_label: &str, series: &[Series]) -> String {
    let mut out = String::new();
    open(&mut out, id, title);
    let pts = series.iter().flat_map(|s| s.points.iter());
    if series.iter().all(|s| s.points.is_empty()) {
        no_data(&mut out);
        return out;
    }
    let to_x = |v: f64| match x {
        XAxis::Linear(_) => v,
        XAxis::Percentile => percentile_x(v),
    };
    let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0f64);
    for (px, py) in pts {
        x_min = x_min.min(to_x(*px));
        x_max = x_max.max(to_x(*px));
        y_max = y_max.max(*py);
    }
    if let XAxis::Percentile = x {
        (x_min, x_max) = (0.0, 5.5);
    }
    if x_max <= x_min {
        x_max = x_min + 1.0;
    }
    let y_top = y_axis(&mut out, y_max, y_label);
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let sx = |v: f64| LEFT + (to_x(v) - x_min) / (x_max - x_min) * plot_w;
    let sy = |v: f64| H - BOTTOM - v / y_top * plot_h;
    // X ticks.
    match x {
        XAxis::Percentile => {
            for (v, label) in [
                (0.0, "0%"),
                (1.0, "90%"),
                (2.0, "99%"),
                (3.0, "99.9%"),
                (4.0, "99.99%"),
                (5.0, "99.999%"),
                (5.5, "max"),
            ] {
                let px = LEFT + (v - x_min) / (x_max - x_min) * plot_w;
                let _ = write!(
                    out,
                    r#"<line x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{}" class="grid"/><text x="{px:.1}" y="{}" text-anchor="middle" class="tick">{label}</text>"#,
                    H - BOTTOM,
                    H - BOTTOM + 16.0
                );
            }
        }
        XAxis::Linear(label) => {
            let step = nice_step(x_max - x_min);
            let mut v = (x_min / step).ceil() * step;
            while v <= x_max + 1e-9 {
                let px = sx(v);
                let _ = write!(
                    out,
                    r#"<line x1="{px:.1}" x2="{px:.1}" y1="{}" y2="{}" class="axis"/><text x="{px:.1}" y="{}" text-anchor="middle" class="tick">{}</text>"#,
                    H - BOTTOM,
                    H - BOTTOM + 4.0,
                    H - BOTTOM + 16.0,
                    fmt_num((v * 1e6).round() / 1e6)
                );
                v += step;
            }
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{}" text-anchor="middle" class="tick">{}</text>"#,
                LEFT + plot_w / 2.0,
                H - 6.0,
                escape(label)
            );
        }
    }
    let _ = write!(
        out,
        r#"<line x1="{LEFT}" x2="{}" y1="{b}" y2="{b}" class="axis"/><line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{b}" class="axis"/>"#,
        W - RIGHT,
        b = H - BOTTOM
    );
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let path: Vec<String> = s
            .points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", sx(*px), sy(*py)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></polyline>"#,
            path.join(" "),
            s.color,
            escape(&s.name)
        );
        if s.points.len() == 1 {
            let _ = write!(
                out,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                sx(s.points[0].0),
                sy(s.points[0].1),
                s.color
            );
        }
    }
    let names: Vec<(&str, &str)> = series.iter().map(|s| (s.name.as_str(), s.color)).collect();
    legend(&mut out, &names);
    out.push_str("</svg>");
    out
}

/// A bar chart; each bar carries its value as a label.
pub fn bar_chart(id: &str, title: &str, y_label: &str, bars: &[(String, f64, &str)]) -> String {
    let mut out = String::new();
    open(&mut out, id, title);
    if bars.is_empty() {
        no_data(&mut out);
        return out;
    }
    let y_max = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    // Headroom so the value above the tallest bar stays clear of the title.
    let y_top = y_axis(&mut out, y_max * 1.12, y_label);
    let plot_w = W - LEFT - RIGHT + 110.0;
    let plot_h = H - TOP - BOTTOM;
    let slot = plot_w / bars.len() as f64;
    let bar_w = (slot * 0.7).min(80.0);
    for (i, (label, v, color)) in bars.iter().enumerate() {
        let h = v / y_top * plot_h;
        let x = LEFT + i as f64 * slot + (slot - bar_w) / 2.0;
        let y = H - BOTTOM - h;
        let _ = write!(
            out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{color}"><title>{l}: {v}</title></rect><text x="{cx:.1}" y="{:.1}" text-anchor="middle" class="tick">{v}</text><text x="{cx:.1}" y="{:.1}" text-anchor="middle" class="tick">{l}</text>"#,
            y - 4.0,
            H - BOTTOM + 16.0,
            l = escape(label),
            v = fmt_num(*v),
            cx = x + bar_w / 2.0,
        );
    }
    let _ = write!(
        out,
        r#"<line x1="{LEFT}" x2="{}" y1="{b}" y2="{b}" class="axis"/></svg>"#,
        LEFT + plot_w,
        b = H - BOTTOM
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(0.7), 0.2);
        assert_eq!(nice_step(0.0), 1.0);
        assert!(percentile_x(0.99) > 1.99 && percentile_x(0.99) < 2.01);
    }

    #[test]
    fn long_series_are_folded_to_a_bounded_number_of_points() {
        // A month of one-minute points, alternating 0 and 1.
        let pts: Vec<(f64, f64)> = (0..43_200).map(|i| (i as f64, (i % 2) as f64)).collect();
        let mean = downsample(&pts, MAX_CHART_POINTS, Fold::Mean);
        assert_eq!(mean.len(), MAX_CHART_POINTS);
        assert_eq!(mean[0], (0.0, 0.5));
        assert_eq!(mean[1].0, 144.0);
        let max = downsample(&pts, MAX_CHART_POINTS, Fold::Max);
        assert!(max.iter().all(|p| p.1 == 1.0));
        let few = [(0.0, 1.0), (1.0, 2.0)];
        assert_eq!(downsample(&few, MAX_CHART_POINTS, Fold::Max), few.to_vec());
    }

    #[test]
    fn empty_charts_say_so() {
        assert!(line_chart("a", "t", XAxis::Linear("s"), "ms", &[]).contains("no data"));
        assert!(bar_chart("b", "t", "n", &[]).contains("no data"));
    }
}
