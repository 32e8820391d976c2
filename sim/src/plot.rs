//! A self-contained SVG of a replay: queue length and utilization over time.

use std::fmt::Write;

use crate::replay::Sample;

const W: f64 = 960.0;
const PANEL_H: f64 = 220.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 36.0;
const TOP: f64 = 56.0;
const GAP: f64 = 60.0;
/// Points per line: enough for a screen, small enough for a browser.
const BINS: usize = 1200;

/// Renders the samples of a replay. Each bin shows the longest queue and the mean
/// utilization among the samples that fall in it.
pub fn render_svg(samples: &[Sample], total_cores: u64, title: &str) -> String {
    let (t0, t1) = match (samples.first(), samples.last()) {
        (Some(a), Some(b)) => (a.time, b.time.max(a.time + 1)),
        _ => (0, 1),
    };
    let span = (t1 - t0) as f64;
    let mut queue = vec![None::<u32>; BINS];
    let mut util = vec![(0f64, 0u32); BINS];
    for s in samples {
        let b = (((s.time - t0) as f64 / span) * (BINS - 1) as f64) as usize;
        queue[b] = Some(queue[b].unwrap_or(0).max(s.queued));
        util[b].0 += s.busy_cores as f64 / total_cores.max(1) as f64;
        util[b].1 += 1;
    }
    let max_q = queue.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
    let days = span / 86_400.0;
    let x = |b: usize| LEFT + (W - LEFT - RIGHT) * b as f64 / (BINS - 1) as f64;
    let height = TOP + 2.0 * PANEL_H + GAP + 40.0;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="22" font-size="15">{}</text>"#,
        escape(title)
    );
    for (panel, label, max, color) in [
        (0, "queued jobs", max_q, "#c0392b"),
        (1, "utilization (%)", 100.0, "#2471a3"),
    ] {
        let y0 = TOP + panel as f64 * (PANEL_H + GAP);
        let y = |v: f64| y0 + PANEL_H - PANEL_H * (v / max).min(1.0);
        let _ = write!(
            svg,
            r##"<rect x="{LEFT}" y="{y0}" width="{}" height="{PANEL_H}" fill="none" stroke="#888"/>"##,
            W - LEFT - RIGHT
        );
        let _ = write!(svg, r#"<text x="{LEFT}" y="{}" >{label}</text>"#, y0 - 6.0);
        for k in 0..=4 {
            let v = max * k as f64 / 4.0;
            let _ = write!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="end">{}</text><line x1="{LEFT}" x2="{}" y1="{2:.1}" y2="{2:.1}" stroke="#eee"/>"##,
                LEFT - 6.0,
                y(v) + 4.0,
                fmt_tick(v),
                W - RIGHT
            );
        }
        let mut points = String::new();
        for b in 0..BINS {
            let v = match panel {
                0 => queue[b].map(|q| q as f64),
                _ => (util[b].1 > 0).then(|| 100.0 * util[b].0 / util[b].1 as f64),
            };
            if let Some(v) = v {
                let _ = write!(points, "{:.1},{:.1} ", x(b), y(v));
            }
        }
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1" points="{points}"/>"#
        );
    }
    let axis_y = TOP + 2.0 * PANEL_H + GAP + 18.0;
    for k in 0..=5 {
        let b = (BINS - 1) * k / 5;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{axis_y}" text-anchor="middle">{:.1} d</text>"#,
            x(b),
            days * k as f64 / 5.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn fmt_tick(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_both_series() {
        let samples: Vec<Sample> = (0..100)
            .map(|i| Sample {
                time: i * 60,
                queued: (i % 7) as u32,
                busy_cores: (i % 10) as u64,
            })
            .collect();
        let svg = render_svg(&samples, 10, "t <1>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
    }
}
