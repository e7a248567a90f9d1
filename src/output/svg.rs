//! Line charts as inline SVG, drawn here so that an HTML report needs no script library, no
//! font and no network: counts over time with fitted growth lines, restarts marked, and a
//! second axis for the process's memory next to its objects.
//!
//! Only the drawing is downsampled (at most [`MAX_DRAWN_POINTS`] per line, keeping each
//! bucket's lowest and highest value so that spikes and sawtooth teeth stay visible); every
//! number a report states comes from the full series. Each line says in its `data-points`
//! and `data-samples` attributes how many points it draws of how many.

use crate::text::html;
use std::fmt::Write;

/// Points drawn per line at most: a 1,000-pixel-wide chart shows no more.
pub const MAX_DRAWN_POINTS: usize = 600;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 340.0;
const LEFT: f64 = 78.0;
const RIGHT_MARGIN: f64 = 78.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 48.0;

/// Colours that stay apart for most kinds of colour blindness (Okabe-Ito, then darker ones).
pub const PALETTE: [&str; 10] =
    ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#8C564B", "#7F7F7F", "#B8860B"];

/// Which vertical axis a line is read against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    Left,
    Right,
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Line {
    /// Shown in the legend; escaped here (it may come from the target).
    pub name: String,
    pub color: &'static str,
    /// (seconds, value), in time order.
    pub points: Vec<(f64, f64)>,
    /// A fitted growth line: (slope per second, value at time 0), drawn dashed over the
    /// line's time span.
    pub fit: Option<(f64, f64)>,
    pub axis: Axis,
    /// Text after the name in the legend (the fitted rate).
    pub note: String,
}

/// A vertical marker (a restart) at a time, with its label.
#[derive(Debug, Clone)]
pub struct Marker {
    pub at: f64,
    pub label: String,
}

/// How a value is written on an axis.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Bytes,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub left_label: &'a str,
    pub left_unit: Unit,
    /// The right axis, when a line uses it.
    pub right_label: &'a str,
    pub right_unit: Unit,
    pub lines: &'a [Line],
    pub markers: &'a [Marker],
    /// Seconds the x axis starts at and spans (the series' own span if `None`).
    pub x_range: Option<(f64, f64)>,
    /// Where time 0 is, said under the x axis ("since 2026-12-01T10:00:00Z").
    pub x_origin: &'a str,
}

/// Evenly over time, at most `max` points: each bucket of the series gives its lowest and
/// highest point, in time order. The first and last points are always kept.
pub fn downsample(points: &[(f64, f64)], max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max || max < 4 {
        return points.to_vec();
    }
    let buckets = (max - 2) / 2;
    let inner = &points[1..points.len() - 1];
    let mut out = Vec::with_capacity(max);
    out.push(points[0]);
    for b in 0..buckets {
        let from = b * inner.len() / buckets;
        let to = ((b + 1) * inner.len() / buckets).max(from + 1).min(inner.len());
        let slice = &inner[from..to];
        let low = slice.iter().enumerate().min_by(|a, b| a.1.1.total_cmp(&b.1.1)).map(|(i, _)| i);
        let high = slice.iter().enumerate().max_by(|a, b| a.1.1.total_cmp(&b.1.1)).map(|(i, _)| i);
        if let (Some(low), Some(high)) = (low, high) {
            let (first, second) = if low <= high { (low, high) } else { (high, low) };
            out.push(slice[first]);
            if second != first {
                out.push(slice[second]);
            }
        }
    }
    out.push(points[points.len() - 1]);
    out
}

/// Round steps for an axis from `low` to `high`: about five ticks at 1, 2 or 5 times a power
/// of ten.
fn ticks(low: f64, high: f64) -> Vec<f64> {
    let range = (high - low).max(f64::EPSILON);
    let rough = range / 5.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|s| range / s <= 6.0).unwrap_or(10.0 * power);
    let mut out = Vec::new();
    let mut t = (low / step).ceil() * step;
    while t <= high + step * 1e-9 && out.len() < 20 {
        out.push(t);
        t += step;
    }
    out
}

/// Tick labels for one axis: one scale for all (k, M, G; KiB, MiB, GiB chosen by the largest
/// tick) and as many decimals as the step between ticks needs, so that no two ticks read alike.
fn tick_labels(ticks: &[f64], unit: Unit) -> Vec<String> {
    let largest = ticks.iter().fold(0.0f64, |m, t| m.max(t.abs()));
    let step = ticks.windows(2).map(|w| (w[1] - w[0]).abs()).fold(f64::INFINITY, f64::min);
    let (scale, suffix) = match unit {
        Unit::Count if largest >= 1e9 => (1e9, "G"),
        Unit::Count if largest >= 1e6 => (1e6, "M"),
        Unit::Count if largest >= 1e4 => (1e3, "k"),
        Unit::Count => (1.0, ""),
        Unit::Bytes if largest >= (1u64 << 30) as f64 => ((1u64 << 30) as f64, " GiB"),
        Unit::Bytes if largest >= (1u64 << 20) as f64 => ((1u64 << 20) as f64, " MiB"),
        Unit::Bytes if largest >= 1024.0 => (1024.0, " KiB"),
        Unit::Bytes => (1.0, " B"),
    };
    let decimals =
        if step.is_finite() && step > 0.0 { (-(step / scale).log10()).ceil().clamp(0.0, 3.0) as usize } else { 0 };
    ticks.iter().map(|t| format!("{:.*}{suffix}", decimals, t / scale)).collect()
}

/// Seconds in the unit that suits a span: (divisor, unit name).
fn time_unit(span: f64) -> (f64, &'static str) {
    if span >= 2.0 * 86_400.0 {
        (86_400.0, "days")
    } else if span >= 2.0 * 3600.0 {
        (3600.0, "hours")
    } else if span >= 120.0 {
        (60.0, "minutes")
    } else {
        (1.0, "seconds")
    }
}

/// A vertical scale: value to pixel, linear or logarithmic (values below 1 drawn at 1).
struct Scale {
    low: f64,
    high: f64,
    log: bool,
}

impl Scale {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Scale {
        let (mut low, mut high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
        if !low.is_finite() {
            (low, high) = (0.0, 1.0);
        }
        if log {
            let low = low.max(1.0).log10().floor();
            let high = high.max(10.0).log10().ceil().max(low + 1.0);
            return Scale { low, high, log };
        }
        // Counts read best from zero unless the series is far from it.
        if low > 0.0 && low < high * 0.6 {
            low = 0.0;
        }
        if high <= low {
            high = low + 1.0;
            low = (low - 1.0).max(0.0);
        }
        let pad = (high - low) * 0.05;
        Scale { low: if low == 0.0 { 0.0 } else { low - pad }, high: high + pad, log }
    }

    fn y(&self, v: f64) -> f64 {
        let v = if self.log { v.max(1.0).log10() } else { v };
        let frac = ((v - self.low) / (self.high - self.low)).clamp(-0.05, 1.05);
        TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - frac)
    }

    /// Round ticks in the axis's unit: bytes at round numbers of KiB, MiB or GiB.
    fn ticks(&self, unit: Unit) -> Vec<f64> {
        if self.log {
            return (self.low as i32..=self.high as i32).map(|p| 10f64.powi(p)).collect();
        }
        let divisor = match unit {
            Unit::Bytes if self.high >= (1u64 << 30) as f64 => (1u64 << 30) as f64,
            Unit::Bytes if self.high >= (1u64 << 20) as f64 => (1u64 << 20) as f64,
            Unit::Bytes if self.high >= 1024.0 => 1024.0,
            _ => 1.0,
        };
        ticks(self.low / divisor, self.high / divisor).into_iter().map(|t| t * divisor).collect()
    }
}

/// The chart as an SVG element, with a linear or a logarithmic left axis.
pub fn render(chart: &Chart, log: bool) -> String {
    let all: Vec<(f64, f64)> = chart.lines.iter().flat_map(|l| l.points.iter().copied()).collect();
    let (x0, span) = chart.x_range.unwrap_or_else(|| {
        let low = all.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let high = all.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        if low.is_finite() { (low, (high - low).max(1.0)) } else { (0.0, 1.0) }
    });
    let plot_w = WIDTH - LEFT - RIGHT_MARGIN;
    let x = |t: f64| LEFT + plot_w * ((t - x0) / span).clamp(0.0, 1.0);
    let values =
        |axis: Axis| chart.lines.iter().filter(move |l| l.axis == axis).flat_map(|l| l.points.iter().map(|p| p.1));
    let left = Scale::new(values(Axis::Left), log);
    let right = chart.lines.iter().any(|l| l.axis == Axis::Right).then(|| Scale::new(values(Axis::Right), false));
    let bottom = HEIGHT - BOTTOM;

    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart-svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" aria-label="{}">"#,
        html::escape(chart.title)
    );
    let _ = write!(
        out,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{}" fill="#fff" stroke="#999"/>"##,
        bottom - TOP
    );
    // Left axis: grid lines and labels.
    let left_ticks = left.ticks(chart.left_unit);
    for (t, label) in left_ticks.iter().zip(tick_labels(&left_ticks, chart.left_unit)) {
        let y = left.y(*t);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end" class="tick">{label}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
        );
    }
    let _ = write!(
        out,
        r#"<text transform="translate(16,{:.1}) rotate(-90)" text-anchor="middle" class="axis">{}{}</text>"#,
        (TOP + bottom) / 2.0,
        html::escape(chart.left_label),
        if log { " (log scale)" } else { "" }
    );
    if let Some(right) = &right {
        let right_ticks = right.ticks(chart.right_unit);
        for (t, label) in right_ticks.iter().zip(tick_labels(&right_ticks, chart.right_unit)) {
            let _ = write!(
                out,
                r#"<text x="{}" y="{:.1}" class="tick">{label}</text>"#,
                LEFT + plot_w + 6.0,
                right.y(*t) + 4.0,
            );
        }
        let _ = write!(
            out,
            r#"<text transform="translate({},{:.1}) rotate(90)" text-anchor="middle" class="axis">{}</text>"#,
            WIDTH - 14.0,
            (TOP + bottom) / 2.0,
            html::escape(chart.right_label)
        );
    }
    // Time axis.
    let (divisor, unit) = time_unit(span);
    let time_ticks = ticks(x0 / divisor, (x0 + span) / divisor);
    for (t, label) in time_ticks.iter().zip(tick_labels(&time_ticks, Unit::Count)) {
        let px = x(t * divisor);
        let _ = write!(
            out,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{bottom}" y2="{}" stroke="#999"/><text x="{px:.1}" y="{}" text-anchor="middle" class="tick">{label}</text>"##,
            bottom + 5.0,
            bottom + 18.0,
        );
    }
    let _ = write!(
        out,
        r#"<text x="{:.1}" y="{}" text-anchor="middle" class="axis">{unit} since {}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 8.0,
        html::escape(chart.x_origin)
    );
    for m in chart.markers {
        let px = x(m.at);
        let _ = write!(
            out,
            r##"<line class="restart" x1="{px:.1}" x2="{px:.1}" y1="{TOP}" y2="{bottom}" stroke="#c00" stroke-dasharray="6 3" stroke-width="1.5"/><text x="{:.1}" y="{}" class="marker" fill="#c00">{}</text>"##,
            px + 4.0,
            TOP + 14.0,
            html::escape(&m.label)
        );
    }
    for line in chart.lines {
        let scale = match (line.axis, &right) {
            (Axis::Right, Some(r)) => r,
            _ => &left,
        };
        let drawn = downsample(&line.points, MAX_DRAWN_POINTS);
        let mut coords = String::with_capacity(drawn.len() * 12);
        for (t, v) in &drawn {
            let _ = write!(coords, "{:.1},{:.1} ", x(*t), scale.y(*v));
        }
        let _ = write!(
            out,
            r#"<polyline class="series" data-name="{}" data-points="{}" data-samples="{}" fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
            html::name(&line.name),
            drawn.len(),
            line.points.len(),
            line.color,
            coords.trim_end()
        );
        if let (Some((slope, intercept)), Some(first), Some(last)) = (line.fit, line.points.first(), line.points.last())
        {
            let (t0, t1) = (first.0, last.0);
            let _ = write!(
                out,
                r#"<line class="fit" x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="1.2" stroke-dasharray="5 4" opacity="0.9"/>"#,
                x(t0),
                scale.y(intercept + slope * t0),
                x(t1),
                scale.y(intercept + slope * t1),
                line.color
            );
        }
    }
    out.push_str("</svg>");
    out
}

/// The chart's legend, as HTML (names escaped): a swatch, the name, its note and its axis.
pub fn legend(chart: &Chart) -> String {
    let mut out = String::from(r#"<ul class="legend">"#);
    for line in chart.lines {
        let axis = if line.axis == Axis::Right && chart.lines.iter().any(|l| l.axis == Axis::Left) {
            " (right axis)"
        } else {
            ""
        };
        let _ = write!(
            out,
            r#"<li><span class="swatch" style="background:{}"></span><span class="name">{}</span>{}{axis}</li>"#,
            line.color,
            html::name(&line.name),
            if line.note.is_empty() {
                String::new()
            } else {
                format!(" <span class=\"note\">{}</span>", html::escape(&line.note))
            }
        );
    }
    if chart.lines.iter().any(|l| l.fit.is_some()) {
        out.push_str(r#"<li class="key">dashed: fitted growth (Theil-Sen)</li>"#);
    }
    if !chart.markers.is_empty() {
        out.push_str(r#"<li class="key"><span style="color:#c00">red dashes</span>: restarts</li>"#);
    }
    out.push_str("</ul>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_keeps_extremes_ends_and_order() {
        let points: Vec<(f64, f64)> =
            (0..10_000).map(|i| (i as f64, if i == 5_000 { 1e6 } else { (i % 7) as f64 })).collect();
        let drawn = downsample(&points, 600);
        assert!(drawn.len() <= 600, "{}", drawn.len());
        assert_eq!(drawn.first(), points.first());
        assert_eq!(drawn.last(), points.last());
        assert!(drawn.iter().any(|p| p.1 == 1e6), "the spike is kept");
        assert!(drawn.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(downsample(&points[..10], 600).len(), 10);
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(0.0, 100.0), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(ticks(3.0, 9.0), vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        assert_eq!(tick_labels(&[12_000.0, 12_500.0, 13_000.0], Unit::Count), ["12.0k", "12.5k", "13.0k"]);
        assert_eq!(tick_labels(&[0.0, 20.0, 40.0], Unit::Count), ["0", "20", "40"]);
        let mib = 1024.0 * 1024.0;
        assert_eq!(tick_labels(&[15.0 * mib, 15.2 * mib], Unit::Bytes), ["15.0 MiB", "15.2 MiB"]);
    }

    #[test]
    fn a_chart_escapes_names_and_counts_its_points() {
        let line = Line {
            name: "<script>alert(1)</script>\"".into(),
            color: PALETTE[0],
            points: (0..2000).map(|i| (i as f64, i as f64)).collect(),
            fit: Some((1.0, 0.0)),
            axis: Axis::Left,
            note: "+60/min".into(),
        };
        let chart = Chart {
            title: "t",
            left_label: "objects",
            left_unit: Unit::Count,
            right_label: "",
            right_unit: Unit::Bytes,
            lines: std::slice::from_ref(&line),
            markers: &[Marker { at: 10.0, label: "restart".into() }],
            x_range: None,
            x_origin: "the first sample",
        };
        for log in [false, true] {
            let svg = render(&chart, log);
            assert!(!svg.contains("<script"), "{svg}");
            assert!(svg.contains(r#"data-samples="2000""#));
            assert!(svg.contains(r#"class="fit""#) && svg.contains(r#"class="restart""#));
        }
        assert!(legend(&chart).contains("&lt;script&gt;"));
    }
}
