//! A server-rendered SVG chart: attempts per time bucket, delivered stacked under failed. Pure
//! (no I/O), drawn with presentation attributes and CSS classes (no inline style), so that the
//! page's Content-Security-Policy holds.

use crate::store::SeriesBucket;
use std::fmt::Write as _;

const W: f64 = 760.0;
const H: f64 = 200.0;
const LEFT: f64 = 40.0;
const BOTTOM: f64 = 22.0;

/// The chart of `buckets` over `[since_ms, since_ms + count * bucket_ms)`: one bar per bucket
/// (empty buckets drawn empty), a y axis with a rounded maximum, and the time at both ends.
pub(super) fn attempts_svg(
    buckets: &[SeriesBucket],
    since_ms: i64,
    bucket_ms: i64,
    count: usize,
    label: &str,
) -> String {
    let count = count.max(1);
    let mut per = vec![(0u64, 0u64); count];
    for b in buckets {
        let i = ((b.start_ms - since_ms) / bucket_ms.max(1)) as usize;
        if let Some(slot) = per.get_mut(i) {
            slot.0 += b.delivered;
            slot.1 += b.attempts.saturating_sub(b.delivered);
        }
    }
    let max = per.iter().map(|(d, f)| d + f).max().unwrap_or(0);
    let step = nice_ceiling(max.div_ceil(4));
    let top = step * 4;
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - BOTTOM - 8.0;
    let slot = plot_w / count as f64;
    let bar = (slot * 0.72).max(1.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(label)
    );
    for i in 0..=4 {
        let y = 8.0 + plot_h - plot_h * i as f64 / 4.0;
        let v = step * i as u64;
        let _ = write!(
            s,
            r#"<line class="grid-line" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{}" y="{:.1}" text-anchor="end">{v}</text>"#,
            W - 8.0,
            LEFT - 6.0,
            y + 4.0
        );
    }
    for (i, (ok, failed)) in per.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let h_ok = plot_h * *ok as f64 / top as f64;
        let h_fail = plot_h * *failed as f64 / top as f64;
        let base = 8.0 + plot_h;
        if *ok > 0 {
            let _ = write!(
                s,
                r#"<rect class="ok" x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{h_ok:.1}"><title>{ok} delivered</title></rect>"#,
                base - h_ok
            );
        }
        if *failed > 0 {
            let _ = write!(
                s,
                r#"<rect class="fail" x="{x:.1}" y="{:.1}" width="{bar:.1}" height="{h_fail:.1}"><title>{failed} failed</title></rect>"#,
                base - h_ok - h_fail
            );
        }
    }
    let end_ms = since_ms + bucket_ms * count as i64;
    let _ = write!(
        s,
        r#"<text class="axis" x="{LEFT}" y="{}">{}</text><text class="axis" x="{}" y="{}" text-anchor="end">{}</text></svg>"#,
        H - 4.0,
        clock(since_ms),
        W - 8.0,
        H - 4.0,
        clock(end_ms)
    );
    s
}

/// The smallest of 1, 2, 5 × 10ⁿ at or above `v` (at least 1): a step of the axis.
fn nice_ceiling(v: u64) -> u64 {
    let v = v.max(1);
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if m * step >= v {
                return m * step;
            }
        }
        step *= 10;
    }
}

/// `MM-DD HH:MM` (UTC).
fn clock(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    let full = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} {} UTC", &full[5..10], &full[11..16])
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_follow_the_buckets_and_the_axis_rounds_up() {
        let b = |i: i64, attempts, delivered| SeriesBucket { start_ms: 1_000 + i * 100, attempts, delivered };
        let svg = attempts_svg(&[b(0, 3, 3), b(2, 7, 4)], 1_000, 100, 4, "attempts");
        assert_eq!(svg.matches("<rect class=\"ok\"").count(), 2);
        assert_eq!(svg.matches("<rect class=\"fail\"").count(), 1);
        assert!(svg.contains("<title>3 failed</title>"));
        assert!(svg.contains(">8</text>"), "7 attempts round up to an axis of 4 steps of 2: {svg}");
        assert!(!svg.contains("style="), "no inline style (CSP)");
        assert_eq!(nice_ceiling(0), 1);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(300), 500);
    }
}
