//! The report page's charts, drawn as SVG by `plotters` (its SVG backend
//! only: text is left to the browser, so no font is read here and the page
//! needs none).
//!
//! Each chart is a function of the run's [`Series`] and returns the SVG
//! markup, ready to inline. Every outcome keeps one colour on every chart,
//! from [`color`], so the page's tables and the test can name a line by it.

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

use flashsale_protocol::OutcomeKind;

use crate::check::Kind;
use crate::timeline::{Column, Series};

/// Size of a chart, in CSS pixels.
const SIZE: (u32, u32) = (960, 380);
const FONT: &str = "sans-serif";
/// The share of a chart's height the data may reach: the legend sits in
/// the upper right corner, above it.
const DATA_HEIGHT: f64 = 0.72;

/// The colour of `kind`'s lines and swatches.
pub fn color(kind: Kind) -> RGBColor {
    match kind {
        Kind::Outcome(OutcomeKind::Won) => RGBColor(27, 158, 119),
        Kind::Outcome(OutcomeKind::Held) => RGBColor(102, 166, 30),
        Kind::Outcome(OutcomeKind::AlreadyOwned) => RGBColor(117, 112, 179),
        Kind::Outcome(OutcomeKind::SoldOut) => RGBColor(110, 110, 110),
        Kind::Outcome(OutcomeKind::NotOpen) => RGBColor(166, 118, 29),
        Kind::Outcome(OutcomeKind::UnknownSale) => RGBColor(230, 171, 2),
        Kind::Outcome(OutcomeKind::Busy) => RGBColor(217, 95, 2),
        Kind::Outcome(OutcomeKind::Paused) => RGBColor(31, 120, 180),
        Kind::Outcome(OutcomeKind::Closed) => RGBColor(0, 0, 0),
        Kind::Outcome(OutcomeKind::Entered) => RGBColor(166, 206, 227),
        Kind::Error => RGBColor(231, 41, 138),
        Kind::Timeout => RGBColor(200, 0, 0),
        Kind::ConnectionError => RGBColor(128, 64, 32),
    }
}

/// `color(kind)` as CSS: `#rrggbb`.
pub fn css(kind: Kind) -> String {
    hex(color(kind))
}

/// A colour as CSS: `#rrggbb`.
pub fn hex(RGBColor(r, g, b): RGBColor) -> String {
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// The lines of the overall latency chart and their colours; the slowest
/// first, so the percentiles are drawn over it where a bucket's p99 is its
/// max.
pub const PERCENTILES: [(&str, RGBColor); 3] = [
    ("max", RGBColor(200, 0, 0)),
    ("p99", RGBColor(217, 95, 2)),
    ("p50", RGBColor(31, 120, 180)),
];

/// A line of a chart: its legend, colour and points.
type Line = (String, RGBColor, Vec<(f64, f64)>);

/// Answers per second over time, one line per outcome.
///
/// # Errors
///
/// Only if plotters refuses to draw (it writes into a string).
pub fn answers_per_second(series: &Series) -> anyhow::Result<String> {
    let per_sec = 1000.0 / series.bucket_ms.max(f64::MIN_POSITIVE);
    let lines: Vec<Line> = series
        .per_kind
        .iter()
        .map(|(kind, column)| {
            let points = column
                .count
                .iter()
                .enumerate()
                .map(|(i, &n)| (mid(series, i), n as f64 * per_sec))
                .collect();
            (kind.name().to_owned(), color(*kind), points)
        })
        .collect();
    let top = lines
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    draw(|root| {
        let y = Axis {
            range: 0.0..top / DATA_HEIGHT,
            labels: 12,
            desc: "answers per second",
            format: &format_count,
        };
        plot(root, series, "Answers per second, per outcome", y, lines)
    })
}

/// Latency over time, over every answer: p50, p99 and max per bucket, on
/// a logarithmic axis.
///
/// # Errors
///
/// Only if plotters refuses to draw.
pub fn latency_overall(series: &Series) -> anyhow::Result<String> {
    let all = &series.all;
    let columns = [&all.max_ms, &all.p99_ms, &all.p50_ms];
    let lines = PERCENTILES
        .into_iter()
        .zip(columns)
        .map(|((name, color), values)| (name.to_owned(), color, points(series, values)))
        .collect();
    latency_chart(series, "Latency over time, every answer", lines)
}

/// The 99th percentile latency over time, one line per outcome.
///
/// # Errors
///
/// Only if plotters refuses to draw.
pub fn latency_per_outcome(series: &Series) -> anyhow::Result<String> {
    let lines = series
        .per_kind
        .iter()
        .map(|(kind, column): (&Kind, &Column)| {
            (
                kind.name().to_owned(),
                color(*kind),
                points(series, &column.p99_ms),
            )
        })
        .collect();
    latency_chart(series, "p99 latency over time, per outcome", lines)
}

fn latency_chart(series: &Series, caption: &str, lines: Vec<Line>) -> anyhow::Result<String> {
    let values = || lines.iter().flat_map(|(_, _, p)| p.iter().map(|p| p.1));
    // An empty run still gets an axis: 1 ms to 10 ms.
    let low = values().fold(f64::INFINITY, f64::min);
    let low = if low.is_finite() { low.max(0.001) } else { 1.0 };
    let high = values().fold(0.0, f64::max).max(low);
    // Whole decades: plotters labels a logarithmic axis from its first
    // power of ten, so a range inside one decade would show no label.
    let low = 10f64.powf(low.log10().floor());
    let high = 10f64.powf(high.log10().ceil()).max(low * 10.0);
    let high = low * (high / low).powf(1.0 / DATA_HEIGHT);
    draw(|root| {
        let y = Axis {
            range: (low..high).log_scale(),
            // Few enough for plotters to label the powers of ten only: the
            // steps between crowd the top of each decade.
            labels: 8,
            desc: "latency (ms, log scale)",
            format: &format_ms,
        };
        plot(root, series, caption, y, lines)
    })
}

/// A chart's vertical axis.
struct Axis<'f, R> {
    range: R,
    labels: usize,
    desc: &'static str,
    format: &'f dyn Fn(f64) -> String,
}

/// Draws `lines` over time since t0, with their legend.
fn plot<Y>(
    root: &Root<'_>,
    series: &Series,
    caption: &str,
    y: Axis<'_, Y>,
    lines: Vec<Line>,
) -> DrawResult
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FONT, 24))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..span_s(series), y.range)?;
    let format = y.format;
    chart
        .configure_mesh()
        .x_desc("time since t0 (s)")
        .y_desc(y.desc)
        .y_labels(y.labels)
        .y_label_formatter(&|v| format(*v))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .light_line_style(RGBColor(240, 240, 240))
        .max_light_lines(2)
        .draw()?;
    for (name, color, points) in lines {
        // A line of one or two points would be hard to see without dots.
        let dots = if points.len() < 3 {
            3
        } else {
            point_size(series)
        };
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)).point_size(dots))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 17))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .draw()?;
    Ok(())
}

type Root<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error + 'static>>;

/// Runs `body` on a fresh SVG canvas and returns the markup, ready to sit
/// inside an HTML page.
fn draw(body: impl FnOnce(&Root<'_>) -> DrawResult) -> anyhow::Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow::anyhow!("chart: {e}"))?;
        body(&root).map_err(|e| anyhow::anyhow!("chart: {e}"))?;
        root.present().map_err(|e| anyhow::anyhow!("chart: {e}"))?;
    }
    // Inside HTML an <svg> needs no namespace declaration; leaving it out
    // keeps the page free of URLs.
    let start = svg.find("<svg").unwrap_or(0);
    Ok(svg[start..].replace(" xmlns=\"http://www.w3.org/2000/svg\"", ""))
}

/// The middle of bucket `i`, in seconds since t0.
fn mid(series: &Series, i: usize) -> f64 {
    (i as f64 + 0.5) * series.bucket_ms / 1000.0
}

/// The run's length on the time axis, in seconds (never empty).
fn span_s(series: &Series) -> f64 {
    (series.buckets as f64 * series.bucket_ms / 1000.0).max(0.001)
}

/// Points of the buckets that had answers; the line bridges the others.
fn points(series: &Series, values: &[Option<f64>]) -> Vec<(f64, f64)> {
    values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (mid(series, i), v)))
        .collect()
}

/// Dots on the lines only while there are few enough buckets to tell apart.
fn point_size(series: &Series) -> u32 {
    if series.buckets <= 40 {
        3
    } else {
        0
    }
}

/// An axis label for a count: `950`, `12k`, `1.5M`.
pub fn format_count(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// An axis label for milliseconds, with a unit that keeps it short.
pub fn format_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{} s", trim(v / 1000.0))
    } else if v >= 1.0 {
        format!("{} ms", trim(v))
    } else {
        format!("{} µs", trim(v * 1000.0))
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::timeline::Timeline;

    const WON: Kind = Kind::Outcome(OutcomeKind::Won);
    const SOLD_OUT: Kind = Kind::Outcome(OutcomeKind::SoldOut);

    /// How plotters writes a text element's content.
    fn text(content: &str) -> String {
        format!("\n{content}\n</text>")
    }

    fn run() -> Series {
        let mut t = Timeline::default();
        for i in 0..300u64 {
            let kind = if i < 50 { WON } else { SOLD_OUT };
            t.record(kind, 200 + i * 40, Duration::from_millis(i / 2));
        }
        t.series()
    }

    #[test]
    fn each_outcome_is_a_labelled_line_of_its_colour() {
        let series = run();
        for svg in [
            answers_per_second(&series).unwrap(),
            latency_per_outcome(&series).unwrap(),
        ] {
            assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
            for kind in [WON, SOLD_OUT] {
                let stroke = format!("stroke=\"{}\"", css(kind)).to_uppercase();
                assert!(
                    svg.to_uppercase().contains(&stroke),
                    "no line of {}",
                    kind.name()
                );
                assert!(svg.contains(&text(kind.name())), "no legend");
            }
            assert!(!svg.contains(&css(Kind::Timeout).to_uppercase()));
            assert!(svg.contains(&text("time since t0 (s)")));
        }
        let svg = latency_overall(&series).unwrap();
        for label in ["p50", "p99", "max", "latency (ms, log scale)"] {
            assert!(svg.contains(&text(label)), "{label}");
        }
    }

    #[test]
    fn charts_carry_no_url_and_survive_an_empty_run() {
        let empty = Timeline::default().series();
        for series in [run(), empty] {
            for svg in [
                answers_per_second(&series).unwrap(),
                latency_overall(&series).unwrap(),
                latency_per_outcome(&series).unwrap(),
            ] {
                assert!(!svg.contains("http"), "{svg}");
                assert!(svg.ends_with("</svg>\n") || svg.ends_with("</svg>"));
            }
        }
    }

    #[test]
    fn a_latency_axis_inside_one_decade_is_labelled() {
        let mut t = Timeline::default();
        for i in 0..50u64 {
            t.record(WON, 35_000 + i * 1_000, Duration::from_millis(i));
        }
        let svg = latency_overall(&t.series()).unwrap();
        for label in ["10 ms", "100 ms"] {
            assert!(svg.contains(&text(label)), "no {label} on the axis");
        }
    }

    #[test]
    fn axis_labels_are_short_and_carry_units() {
        assert_eq!(format_count(950.0), "950");
        assert_eq!(format_count(12_000.0), "12k");
        assert_eq!(format_count(1_500_000.0), "1.5M");
        assert_eq!(format_ms(0.25), "250 µs");
        assert_eq!(format_ms(12.5), "12.5 ms");
        assert_eq!(format_ms(2500.0), "2.5 s");
    }
}
