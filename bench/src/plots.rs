//! The sweep's SVG plots, drawn with plotters (SVG backend, line series):
//!
//! - `latency.svg`: publish p50 and p99 against `batchInterval`, one line per
//!   `maxBytesInBatch` (and each peer's figure as a flat grey line);
//! - `frontier.svg`: every point's publish p99 against its Ferry $/month,
//!   the cost-latency frontier joined up;
//! - `throughput.svg`: MB/s acknowledged and S3 PUTs per second against
//!   `batchInterval`, one line per `maxBytesInBatch`;
//! - `zones.svg`, for a sweep across zones: same-zone and cross-zone publish
//!   p99, their ratio (with the 1.25 goal), and the cross-zone bytes as a
//!   share of the produced bytes, against `batchInterval`, one line per
//!   `maxBytesInBatch` (and path).

use crate::error::BenchError;
use crate::results::{PointMeasure, SweepReport};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// A named polyline in data coordinates.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One line per `maxBytesInBatch`, over `batchInterval` (ms), sorted by it,
/// of `value` at each measured point.
pub fn lines_by_max_bytes(report: &SweepReport, value: fn(&PointMeasure) -> f64) -> Vec<Line> {
    lines_of(report, "", &|m| Some(value(m)))
}

/// [`lines_by_max_bytes`] of a value some points lack (they are left out),
/// each line's name starting with `prefix`.
pub fn lines_of(
    report: &SweepReport,
    prefix: &str,
    value: &dyn Fn(&PointMeasure) -> Option<f64>,
) -> Vec<Line> {
    let mut sizes: Vec<u64> = report
        .points
        .iter()
        .map(|p| p.point.max_bytes_in_batch)
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
        .into_iter()
        .map(|size| {
            let mut points: Vec<(f64, f64)> = report
                .points
                .iter()
                .filter(|p| p.point.max_bytes_in_batch == size)
                .filter_map(|p| {
                    let m = p.measured.as_ref()?;
                    Some((p.point.batch_interval_ms as f64, value(m)?))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Line {
                name: format!(
                    "{prefix}maxBytesInBatch {} MiB",
                    size as f64 / (1u64 << 20) as f64
                ),
                points,
            }
        })
        .collect()
}

/// `lo..hi` around every value, padded; never empty.
fn span(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero {
        lo = 0.0;
    }
    if hi <= lo {
        hi = lo + lo.abs().max(1.0);
    }
    let pad = (hi - lo) * 0.08;
    (if from_zero { 0.0 } else { lo - pad }, hi + pad)
}

fn colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    COLOURS[i % COLOURS.len()]
}

const GREY: RGBColor = RGBColor(120, 120, 120);

fn err(path: &Path) -> impl Fn(String) -> BenchError + '_ {
    move |reason| BenchError::Plot {
        path: path.to_path_buf(),
        reason,
    }
}

/// A line chart against batchInterval (ms, from 0), with flat reference
/// lines (peers) in grey.
fn interval_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    lines: &[Line],
    flat: &[(String, f64)],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
    let (x_lo, x_hi) = span(xs, true);
    let ys = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(flat.iter().map(|f| f.1));
    // Headroom above the data for the legend.
    let y_hi = span(ys, true).1 * 1.25;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_lo..x_hi, 0.0..y_hi)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("batchInterval (ms)")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, line) in lines.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(line.points.clone(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(line.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(line.points.iter().map(|p| Circle::new(*p, 3, c.filled())))
            .map_err(|e| e.to_string())?;
    }
    for (name, y) in flat {
        chart
            .draw_series(LineSeries::new(
                vec![(x_lo, *y), (x_hi, *y)],
                GREY.stroke_width(1),
            ))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREY));
    }
    if !lines.is_empty() || !flat.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn peer_lines(
    report: &SweepReport,
    what: &str,
    value: fn(&crate::results::RunSummary) -> f64,
) -> Vec<(String, f64)> {
    report
        .peers
        .iter()
        .filter_map(|p| {
            p.measured
                .as_ref()
                .map(|m| (format!("{} {what}", p.peer.name), value(m)))
        })
        .collect()
}

/// `latency.svg`: p50 and p99 side by side.
pub fn latency(report: &SweepReport, path: &Path) -> Result<(), BenchError> {
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path)(e.to_string()))?;
    let (left, right) = root.split_horizontally(600);
    interval_chart(
        &left,
        "Publish latency p50",
        "ms",
        &lines_by_max_bytes(report, |m| m.run.publish.p50_ms),
        &peer_lines(report, "p50", |r| r.publish.p50_ms),
    )
    .map_err(err(path))?;
    interval_chart(
        &right,
        "Publish latency p99",
        "ms",
        &lines_by_max_bytes(report, |m| m.run.publish.p99_ms),
        &peer_lines(report, "p99", |r| r.publish.p99_ms),
    )
    .map_err(err(path))?;
    root.present().map_err(|e| err(path)(e.to_string()))
}

/// `throughput.svg`: MB/s and PUT/s side by side.
pub fn throughput(report: &SweepReport, path: &Path) -> Result<(), BenchError> {
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path)(e.to_string()))?;
    let (left, right) = root.split_horizontally(600);
    interval_chart(
        &left,
        "Acknowledged throughput",
        "MB/s",
        &lines_by_max_bytes(report, |m| m.run.publish_throughput.mb_per_sec),
        &peer_lines(report, "MB/s", |r| r.publish_throughput.mb_per_sec),
    )
    .map_err(err(path))?;
    interval_chart(
        &right,
        "S3 PUTs per second",
        "PUT/s",
        &lines_by_max_bytes(report, |m| m.rates.puts_per_sec),
        &[],
    )
    .map_err(err(path))?;
    root.present().map_err(|e| err(path)(e.to_string()))
}

/// `zones.svg`: publish p99 by path, the cross/same p99 ratio against the
/// 1.25 goal, and cross-zone bytes as % of produced.
pub fn zones(report: &SweepReport, path: &Path) -> Result<(), BenchError> {
    let root = SVGBackend::new(path, (1800, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path)(e.to_string()))?;
    let panels = root.split_evenly((1, 3));
    let mut by_path = lines_of(report, "cross zone, ", &|m| {
        m.run.paths.as_ref().map(|p| p.cross_zone.p99_ms)
    });
    by_path.extend(lines_of(report, "same zone, ", &|m| {
        m.run.paths.as_ref().map(|p| p.same_zone.p99_ms)
    }));
    interval_chart(&panels[0], "Publish p99 by path", "ms", &by_path, &[]).map_err(err(path))?;
    interval_chart(
        &panels[1],
        "Cross-zone / same-zone publish p99",
        "ratio",
        &lines_of(report, "", &|m| {
            m.run.paths.as_ref().and_then(|p| p.cross_same_p99_ratio)
        }),
        &[("goal 1.25".to_string(), 1.25)],
    )
    .map_err(err(path))?;
    interval_chart(
        &panels[2],
        "Cross-zone bytes, % of produced",
        "%",
        &lines_of(report, "", &|m| m.cross_zone_fraction.map(|f| f * 100.0)),
        &[],
    )
    .map_err(err(path))?;
    root.present().map_err(|e| err(path)(e.to_string()))
}

/// `frontier.svg`: publish p99 against Ferry $/month.
pub fn frontier(report: &SweepReport, path: &Path) -> Result<(), BenchError> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path)(e.to_string()))?;
    let measured: Vec<(f64, f64, String, bool)> = report
        .points
        .iter()
        .filter_map(|p| {
            p.measured.as_ref().map(|m| {
                (
                    m.cost.total_usd,
                    m.run.publish.p99_ms,
                    p.point.label(),
                    p.on_frontier,
                )
            })
        })
        .collect();
    let (x_lo, x_hi) = span(measured.iter().map(|m| m.0), false);
    // Room on the right for the last point's label.
    let x_hi = x_hi + (x_hi - x_lo) * 0.15;
    let (_, y_hi) = span(measured.iter().map(|m| m.1), true);
    let draw = || -> Result<(), String> {
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Cost-latency frontier (red), at the measured rate",
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_lo..x_hi, 0.0..y_hi)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("Ferry $/month (PUT + GET + storage + cross-zone)")
            .y_desc("publish p99 (ms)")
            .draw()
            .map_err(|e| e.to_string())?;
        let mut on: Vec<(f64, f64)> = measured
            .iter()
            .filter(|m| m.3)
            .map(|m| (m.0, m.1))
            .collect();
        on.sort_by(|a, b| a.0.total_cmp(&b.0));
        let red = colour(3);
        chart
            .draw_series(LineSeries::new(on, red.stroke_width(2)))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(measured.iter().map(|(x, y, label, on)| {
                let c = if *on { red } else { GREY };
                EmptyElement::at((*x, *y))
                    + Circle::new((0, 0), 4, c.filled())
                    + Text::new(label.clone(), (6, -14), ("sans-serif", 11).into_font())
            }))
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    draw().map_err(err(path))?;
    root.present().map_err(|e| err(path)(e.to_string()))
}

/// Draws the three plots into `dir`; returns (file, title) pairs.
pub fn draw_all(
    report: &SweepReport,
    dir: &Path,
) -> Result<Vec<(&'static str, &'static str)>, BenchError> {
    latency(report, &dir.join("latency.svg"))?;
    frontier(report, &dir.join("frontier.svg"))?;
    throughput(report, &dir.join("throughput.svg"))?;
    let mut drawn = vec![
        (
            "latency.svg",
            "publish latency p50 and p99 against batchInterval",
        ),
        ("frontier.svg", "publish p99 against Ferry $/month"),
        ("throughput.svg", "MB/s and PUT/s against batchInterval"),
    ];
    if report.config.layout.zoned() {
        zones(report, &dir.join("zones.svg"))?;
        drawn.push((
            "zones.svg",
            "same-zone and cross-zone publish p99, their ratio, and cross-zone bytes as % of produced, against batchInterval",
        ));
    }
    Ok(drawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_pad_and_never_collapse() {
        // 10..=500: pad 8% of 490 = 39.2 on each side.
        let (lo, hi) = span([10.0, 500.0, 250.0].into_iter(), false);
        assert!((lo - (10.0 - 39.2)).abs() < 1e-9 && (hi - 539.2).abs() < 1e-9);
        // From zero: 0..(80 + 6.4).
        assert_eq!(span([40.0, 80.0].into_iter(), true), (0.0, 86.4));
        // One value, or none, still gives a range.
        let (lo, hi) = span([5.0].into_iter(), false);
        assert!(lo < 5.0 && hi > 5.0);
        assert_eq!(span(std::iter::empty(), true), (0.0, 1.0));
    }
}
