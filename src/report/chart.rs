//! The post-mortem's chart: error rate and p50/p99 latency around the change, the events
//! marked, gaps in the data left as gaps, as SVG.
//!
//! Written by hand (a few hundred lines). A plotting crate was considered: `plotters` with its
//! default features pulls `font-kit`, which links the system's fontconfig and freetype (its own
//! issues #182 and #435 are about fonts that fail to load on small systems); without a font
//! feature it cannot measure text for its axis labels. It would also not give what this chart
//! needs most: lines broken at gaps in the data, and labelled vertical markers that do not
//! overlap. Two line charts with a shared time axis are little code, and the output is stable
//! text that tests can compare.

use std::fmt::Write as _;

use super::document::esc;
use super::units::trim;
use crate::series::{SeriesPoint, BIN_SECS};

#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    pub at: f64,
    pub label: String,
}

/// Width and height of the SVG, in pixels.
pub const CHART_WIDTH: f64 = 720.0;
pub const CHART_HEIGHT: f64 = 432.0;
/// The plotting area, shared by both panels horizontally.
pub const PLOT_LEFT: f64 = 64.0;
pub const PLOT_RIGHT: f64 = 700.0;
/// Vertical extent of the two panels.
const ERRORS_TOP: f64 = 108.0;
const ERRORS_BOTTOM: f64 = 228.0;
const LATENCY_TOP: f64 = 256.0;
const LATENCY_BOTTOM: f64 = 376.0;
/// Marker labels sit in rows above the panels.
const LABEL_ROWS: usize = 5;
const LABEL_ROW_TOP: f64 = 34.0;
const LABEL_ROW_HEIGHT: f64 = 13.0;
/// Approximate width of one character of the 11 px labels.
const CHAR_WIDTH: f64 = 6.2;

const ERROR_COLOUR: &str = "#d1495b";
const P50_COLOUR: &str = "#3a7ca5";
const P99_COLOUR: &str = "#8f5db7";
const MARKER_COLOUR: &str = "#6e7781";
const GRID_COLOUR: &str = "#e6e8eb";

/// The x of time `at` on a chart spanning `[from, to)`.
pub fn chart_x(at: f64, from: i64, to: i64) -> f64 {
    let span = (to - from).max(1) as f64;
    PLOT_LEFT + (at - from as f64) / span * (PLOT_RIGHT - PLOT_LEFT)
}

/// Two panels sharing the time axis: error rate in %, and p50/p99 latency in ms; the markers
/// as labelled vertical lines across both. Bins missing from `points` are gaps in the lines.
pub fn chart(
    points: &[SeriesPoint],
    markers: &[Marker],
    window: Option<(f64, f64)>,
    from: i64,
    to: i64,
) -> String {
    let to = to.max(from + BIN_SECS);
    let merged = merge_bins(points, from, to);
    let points: Vec<&SeriesPoint> = merged.iter().collect();
    let x = |at: f64| chart_x(at, from, to);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{CHART_WIDTH}\" \
         height=\"{CHART_HEIGHT}\" viewBox=\"0 0 {CHART_WIDTH} {CHART_HEIGHT}\" \
         font-family=\"Helvetica, Arial, sans-serif\" font-size=\"11\" role=\"img\" \
         style=\"max-width:100%;height:auto\">\n\
         <title>Error rate and latency around the change</title>\n\
         <rect x=\"0\" y=\"0\" width=\"{CHART_WIDTH}\" height=\"{CHART_HEIGHT}\" fill=\"#ffffff\"/>\n"
    );
    legend(&mut s);
    if let Some((start, end)) = window.filter(|&(a, b)| a < b && b > from as f64) {
        // Drawn first, under the lines: the deploy's own restart, in neither side.
        let (left, right) = (x(start.max(from as f64)), x(end.min(to as f64)));
        let _ = writeln!(
            s,
            "<rect class=\"deploy-window\" x=\"{left:.1}\" y=\"{ERRORS_TOP:.1}\" \
             width=\"{:.1}\" height=\"{:.1}\" fill=\"#9e9e9e\" fill-opacity=\"0.25\">\
             <title>Deploy window: left out of both the baseline and the watch</title></rect>",
            (right - left).max(1.0),
            LATENCY_BOTTOM - ERRORS_TOP
        );
    }

    // Error rate, in percent.
    let rates: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| p.error_rate().map(|r| (mid(p), r * 100.0)))
        .collect();
    let max_rate = rates.iter().map(|r| r.1).fold(0.0, f64::max);
    let (rate_top, rate_step) = nice_scale(max_rate.max(1.0));
    panel(
        &mut s,
        "Error rate (%)",
        ERRORS_TOP,
        ERRORS_BOTTOM,
        rate_top,
        rate_step,
        |v| format!("{}%", tick_number(v)),
    );
    let y_rate = |v: f64| ERRORS_BOTTOM - v / rate_top * (ERRORS_BOTTOM - ERRORS_TOP);
    let keys: Vec<i64> = points.iter().map(|p| p.at).collect();
    line(
        &mut s,
        "errors",
        ERROR_COLOUR,
        &segments(&keys, &rates, &x, &y_rate),
    );
    if rates.is_empty() {
        no_data(
            &mut s,
            ERRORS_TOP,
            ERRORS_BOTTOM,
            "no traffic data for this period",
        );
    }

    // Latency, in milliseconds.
    let p50: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| p.p50_ms.filter(|v| v.is_finite()).map(|v| (mid(p), v)))
        .collect();
    let p99: Vec<(f64, f64)> = points
        .iter()
        .filter_map(|p| p.p99_ms.filter(|v| v.is_finite()).map(|v| (mid(p), v)))
        .collect();
    let max_ms = p99.iter().chain(&p50).map(|v| v.1).fold(0.0, f64::max);
    let (ms_top, ms_step) = nice_scale(max_ms.max(1.0));
    panel(
        &mut s,
        "Latency (ms)",
        LATENCY_TOP,
        LATENCY_BOTTOM,
        ms_top,
        ms_step,
        |v| format!("{} ms", tick_number(v)),
    );
    let y_ms = |v: f64| LATENCY_BOTTOM - (v / ms_top).min(1.0) * (LATENCY_BOTTOM - LATENCY_TOP);
    let keys50: Vec<i64> = points
        .iter()
        .filter(|p| p.p50_ms.is_some_and(f64::is_finite))
        .map(|p| p.at)
        .collect();
    let keys99: Vec<i64> = points
        .iter()
        .filter(|p| p.p99_ms.is_some_and(f64::is_finite))
        .map(|p| p.at)
        .collect();
    line(
        &mut s,
        "p50",
        P50_COLOUR,
        &segments(&keys50, &p50, &x, &y_ms),
    );
    line(
        &mut s,
        "p99",
        P99_COLOUR,
        &segments(&keys99, &p99, &x, &y_ms),
    );
    if p50.is_empty() && p99.is_empty() {
        let note = if rates.is_empty() {
            "no traffic data for this period"
        } else {
            "no latency data for this period"
        };
        no_data(&mut s, LATENCY_TOP, LATENCY_BOTTOM, note);
    }

    time_axis(&mut s, from, to);
    marker_lines(&mut s, markers, from, to);
    s.push_str("</svg>\n");
    s
}

/// The points in `[from, to)` with traffic, in time order, one per bin: a bin given twice
/// (stored, and still open in the daemon) has its counts added and the larger part's
/// quantiles, as the store merges them.
fn merge_bins(points: &[SeriesPoint], from: i64, to: i64) -> Vec<SeriesPoint> {
    let mut sorted: Vec<&SeriesPoint> = points
        .iter()
        .filter(|p| p.at >= from && p.at < to && p.requests > 0)
        .collect();
    sorted.sort_by_key(|p| p.at);
    let mut out: Vec<SeriesPoint> = Vec::with_capacity(sorted.len());
    for p in sorted {
        match out.last_mut() {
            Some(last) if last.at == p.at => {
                if p.requests > last.requests {
                    last.p50_ms = p.p50_ms.or(last.p50_ms);
                    last.p99_ms = p.p99_ms.or(last.p99_ms);
                } else {
                    last.p50_ms = last.p50_ms.or(p.p50_ms);
                    last.p99_ms = last.p99_ms.or(p.p99_ms);
                }
                last.requests = last.requests.saturating_add(p.requests);
                last.errors = last.errors.saturating_add(p.errors).min(last.requests);
            }
            _ => out.push(p.clone()),
        }
    }
    out
}

/// The middle of a bin: where its point is drawn.
fn mid(p: &SeriesPoint) -> f64 {
    p.at as f64 + BIN_SECS as f64 / 2.0
}

/// Splits values into runs of consecutive bins: a missing bin breaks the line.
fn segments(
    keys: &[i64],
    values: &[(f64, f64)],
    x: &dyn Fn(f64) -> f64,
    y: &dyn Fn(f64) -> f64,
) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut last: Option<i64> = None;
    for (&at, &(t, v)) in keys.iter().zip(values) {
        if last != Some(at - BIN_SECS) || out.is_empty() {
            out.push(Vec::new());
        }
        if let Some(seg) = out.last_mut() {
            seg.push((x(t), y(v)));
        }
        last = Some(at);
    }
    out
}

fn line(s: &mut String, class: &str, colour: &str, segments: &[Vec<(f64, f64)>]) {
    for seg in segments {
        match seg.as_slice() {
            [] => {}
            [(x, y)] => {
                let _ = writeln!(
                    s,
                    "<circle class=\"{class}\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2\" fill=\"{colour}\"/>"
                );
            }
            _ => {
                let pts: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = writeln!(
                    s,
                    "<polyline class=\"{class}\" fill=\"none\" stroke=\"{colour}\" \
                     stroke-width=\"1.6\" stroke-linejoin=\"round\" points=\"{}\"/>",
                    pts.join(" ")
                );
            }
        }
    }
}

fn legend(s: &mut String) {
    let items = [
        (ERROR_COLOUR, "error rate", false),
        (P50_COLOUR, "p50 latency", false),
        (P99_COLOUR, "p99 latency", false),
        (MARKER_COLOUR, "what happened", true),
    ];
    let mut x = PLOT_LEFT;
    for (colour, label, dashed) in items {
        let dash = if dashed {
            " stroke-dasharray=\"4 3\""
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"14\" x2=\"{:.1}\" y2=\"14\" stroke=\"{colour}\" \
             stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"18\" fill=\"#1f2328\">{label}</text>",
            x + 18.0,
            x + 23.0
        );
        x += 23.0 + label.len() as f64 * CHAR_WIDTH + 18.0;
    }
    let _ = writeln!(
        s,
        "<text x=\"{PLOT_RIGHT}\" y=\"18\" text-anchor=\"end\" fill=\"#57606a\">10-second bins</text>"
    );
}

fn panel(
    s: &mut String,
    title: &str,
    top: f64,
    bottom: f64,
    max: f64,
    step: f64,
    label: impl Fn(f64) -> String,
) {
    let _ = writeln!(
        s,
        "<text x=\"{PLOT_LEFT}\" y=\"{:.1}\" font-weight=\"bold\" fill=\"#1f2328\">{}</text>",
        top - 6.0,
        esc(title)
    );
    let ticks = (max / step).round() as i64;
    for i in 0..=ticks {
        let v = step * i as f64;
        let y = bottom - v / max * (bottom - top);
        let _ = writeln!(
            s,
            "<line x1=\"{PLOT_LEFT}\" y1=\"{y:.1}\" x2=\"{PLOT_RIGHT}\" y2=\"{y:.1}\" \
             stroke=\"{GRID_COLOUR}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" \
             fill=\"#57606a\">{}</text>",
            PLOT_LEFT - 6.0,
            y + 4.0,
            esc(&label(v))
        );
    }
    let _ = writeln!(
        s,
        "<rect x=\"{PLOT_LEFT}\" y=\"{top}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" \
         stroke=\"#afb8c1\"/>",
        PLOT_RIGHT - PLOT_LEFT,
        bottom - top
    );
}

fn no_data(s: &mut String, top: f64, bottom: f64, note: &str) {
    let _ = writeln!(
        s,
        "<text class=\"no-data\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
         fill=\"#57606a\">{}</text>",
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        (top + bottom) / 2.0 + 4.0,
        esc(note)
    );
}

/// A round upper bound for the axis and the step between its 3 to 5 ticks.
fn nice_scale(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    ((max / step).ceil().max(1.0) * step, step)
}

fn tick_number(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        trim(v)
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn time_axis(s: &mut String, from: i64, to: i64) {
    let span = (to - from) as f64;
    let step = [
        30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400,
    ]
    .into_iter()
    .find(|&st| span / st as f64 <= 8.0)
    .unwrap_or(86_400);
    let first = from.div_euclid(step) * step + if from.rem_euclid(step) == 0 { 0 } else { step };
    let mut at = first;
    while at < to {
        let x = chart_x(at as f64, from, to);
        let label = chrono::DateTime::from_timestamp(at, 0)
            .map(|d| {
                if step < 60 {
                    d.format("%H:%M:%S").to_string()
                } else {
                    d.format("%H:%M").to_string()
                }
            })
            .unwrap_or_default();
        for (top, bottom) in [(ERRORS_TOP, ERRORS_BOTTOM), (LATENCY_TOP, LATENCY_BOTTOM)] {
            let _ = writeln!(
                s,
                "<line x1=\"{x:.1}\" y1=\"{top}\" x2=\"{x:.1}\" y2=\"{bottom}\" \
                 stroke=\"{GRID_COLOUR}\"/>"
            );
        }
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"{LATENCY_BOTTOM}\" x2=\"{x:.1}\" y2=\"{:.1}\" \
             stroke=\"#57606a\"/><text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             fill=\"#57606a\">{label}</text>",
            LATENCY_BOTTOM + 4.0,
            LATENCY_BOTTOM + 16.0
        );
        at += step;
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#57606a\">time (UTC)</text>",
        (PLOT_LEFT + PLOT_RIGHT) / 2.0,
        LATENCY_BOTTOM + 34.0
    );
}

/// Vertical dashed lines across both panels, each labelled above them; labels that would
/// overlap go to the next row down.
fn marker_lines(s: &mut String, markers: &[Marker], from: i64, to: i64) {
    let mut sorted: Vec<&Marker> = markers
        .iter()
        .filter(|m| m.at >= from as f64 && m.at <= to as f64)
        .collect();
    sorted.sort_by(|a, b| a.at.total_cmp(&b.at));
    // The right end of the last label in each row.
    let mut row_end = [f64::NEG_INFINITY; LABEL_ROWS];
    for m in sorted {
        let x = chart_x(m.at, from, to);
        let width = m.label.chars().count() as f64 * CHAR_WIDTH;
        // Labels start at the line, or end at it near the right edge.
        let (left, anchor) = if x + width > CHART_WIDTH - 4.0 {
            (x - width, "end")
        } else {
            (x, "start")
        };
        let (row, left, anchor) = match (0..LABEL_ROWS).find(|&r| row_end[r] + 4.0 <= left) {
            Some(row) => (row, left, anchor),
            None => {
                // Every row is taken here: the label goes after the shortest row's last one.
                let row = (0..LABEL_ROWS)
                    .min_by(|&a, &b| row_end[a].total_cmp(&row_end[b]))
                    .unwrap_or(0);
                (row, row_end[row] + 4.0, "start")
            }
        };
        row_end[row] = left + width;
        let label_y = LABEL_ROW_TOP + LABEL_ROW_HEIGHT * row as f64;
        let text_x = if anchor == "end" { x - 2.0 } else { left + 2.0 };
        let _ = writeln!(
            s,
            "<line class=\"marker\" data-label=\"{}\" x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" \
             y2=\"{LATENCY_BOTTOM}\" stroke=\"{MARKER_COLOUR}\" stroke-width=\"1\" \
             stroke-dasharray=\"4 3\"/><text x=\"{text_x:.1}\" y=\"{label_y:.1}\" \
             text-anchor=\"{anchor}\" fill=\"#1f2328\">{}</text>",
            esc(&m.label),
            label_y + 2.0,
            esc(&m.label)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::check_xml;

    /// 2025-11-24 16:00:00 UTC, on a bin edge.
    const T0: f64 = 1_764_000_000.0;
    const T: i64 = 1_764_000_000;

    #[test]
    fn marker_labels_never_overlap_however_close_the_events() {
        let at = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 900.0, 901.0];
        let markers: Vec<Marker> = at
            .iter()
            .enumerate()
            .map(|(i, &dt)| Marker {
                at: T0 + dt,
                label: format!("event number {i}"),
            })
            .collect();
        let svg = chart(&[], &markers, None, T - 600, T + 902);
        check_xml(&svg).unwrap();
        // (left, right, y) of each label, from its x, anchor and length.
        let boxes: Vec<(f64, f64, String)> = svg
            .lines()
            .filter(|l| l.contains("class=\"marker\""))
            .map(|l| {
                let text = &l[l.find("<text").unwrap()..];
                let attr = |name: &str| {
                    let start = text.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    text[start..start + text[start..].find('"').unwrap()].to_owned()
                };
                let x: f64 = attr("x").parse().unwrap();
                let width = "event number 0".len() as f64 * CHAR_WIDTH;
                let left = if attr("text-anchor") == "end" {
                    x - width
                } else {
                    x
                };
                (left, left + width, attr("y"))
            })
            .collect();
        assert_eq!(boxes.len(), at.len());
        for (i, a) in boxes.iter().enumerate() {
            assert!(a.0 >= 0.0 && a.1 <= CHART_WIDTH, "{a:?} is off the chart");
            for b in &boxes[i + 1..] {
                let apart = a.2 != b.2 || a.1 <= b.0 || b.1 <= a.0;
                assert!(apart, "{a:?} overlaps {b:?}");
            }
        }
    }

    /// `(data-label, x1)` of each marker line, in document order.

    #[test]
    fn points_out_of_order_or_given_twice_are_one_line() {
        let p = |at: i64, requests: u64, p50: f64| SeriesPoint {
            at,
            requests,
            errors: 1,
            p50_ms: Some(p50),
            p99_ms: None,
        };
        // Stored bins, and the daemon's live snapshot overlapping the last one.
        let points = [
            p(T + 20, 10, 5.0),
            p(T, 10, 5.0),
            p(T + 10, 10, 5.0),
            p(T + 20, 30, 9.0),
        ];
        assert_eq!(
            merge_bins(&points, T - 600, T + 600),
            [
                p(T, 10, 5.0),
                p(T + 10, 10, 5.0),
                SeriesPoint {
                    errors: 2,
                    ..p(T + 20, 40, 9.0)
                }
            ]
        );
        let svg = chart(&points, &[], None, T - 600, T + 600);
        assert_eq!(
            svg.matches("<polyline class=\"errors\"").count(),
            1,
            "{svg}"
        );
    }

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_scale(9.0), (10.0, 2.5));
        assert_eq!(nice_scale(0.0), (1.0, 0.25));
    }
}
