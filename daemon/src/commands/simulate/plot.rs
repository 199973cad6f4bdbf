//! SVG plots of one policy's run: load, forecast and capacity; latency against the SLO;
//! the variant of each stage; replicas and cores; all over time. The first title carries
//! the run's on-time accuracy, accuracy of the served requests and SLO violation rate.

use std::path::Path;

use infadapt_eval::{PolicyReport, TimelinePoint};
use infadapt_model::Pipeline;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

pub(crate) const WIDTH: u32 = 1200;

/// A line of the load panel: label, colour and the value it reads from a timeline point.
type Series = (
    &'static str,
    RGBColor,
    Box<dyn Fn(&TimelinePoint) -> Option<f64>>,
);
pub(crate) const PANEL_HEIGHT: u32 = 260;

/// Writes `report`'s timeline as an SVG at `path`.
pub fn write_svg(path: &Path, report: &PolicyReport, pipeline: &Pipeline) -> anyhow::Result<()> {
    let panels = 3 + pipeline.stages.len();
    let height = PANEL_HEIGHT * panels as u32;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let areas = root.split_evenly((panels, 1));
    let t = &report.timeline;
    let t_max = t.last().map_or(1.0, |p| minutes(p.time_s)).max(1.0 / 60.0);
    let name = if report.oracle {
        format!("{} (oracle)", report.policy)
    } else {
        report.policy.clone()
    };
    let title = |what: &str| format!("{name} — {what}");
    let headline = format!(
        "{name} — on-time accuracy {:.4}, accuracy (served) {:.4}, SLO violations {:.2} % — load (requests/s)",
        report.on_time_accuracy,
        report.mean_accuracy,
        report.slo_violation_rate * 100.0
    );

    // Load, forecast, provisioned and capacity.
    let load_max = t
        .iter()
        .flat_map(|p| {
            [
                p.observed_peak_rps,
                p.forecast_rps.unwrap_or(0.0),
                p.upper_rps.unwrap_or(0.0),
                p.provisioned_rps,
                p.capacity_rps,
            ]
        })
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.1;
    let mut chart = panel(&areas[0], headline, t_max, load_max)?;
    let series: [Series; 5] = [
        ("observed mean", BLACK, Box::new(|p| Some(p.observed_rps))),
        ("forecast", BLUE, Box::new(|p| p.forecast_rps)),
        ("upper", CYAN, Box::new(|p| p.upper_rps)),
        (
            "provisioned",
            MAGENTA,
            Box::new(|p| Some(p.provisioned_rps).filter(|v| *v > 0.0)),
        ),
        ("capacity", GREEN, Box::new(|p| Some(p.capacity_rps))),
    ];
    for (label, color, get) in series {
        let points: Vec<(f64, f64)> = t
            .iter()
            .filter_map(|p| {
                get(p)
                    .filter(|v| v.is_finite())
                    .map(|v| (minutes(p.time_s), v))
            })
            .collect();
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(draw_error)?
            .label(label)
            .legend(legend_line(color.stroke_width(2)));
    }
    draw_legend(&mut chart)?;

    // Latency against the SLO.
    let slo = pipeline.slo_ms;
    let lat_max = latency_axis_max(t.iter().filter_map(|p| p.p99_ms), slo);
    let mut chart = panel(
        &areas[1],
        title("p99 latency per decision window (ms) vs SLO"),
        t_max,
        lat_max,
    )?;
    chart
        .draw_series(LineSeries::new(
            t.iter()
                .filter_map(|p| p.p99_ms.map(|l| (minutes(p.time_s), l.min(lat_max)))),
            RED.stroke_width(2),
        ))
        .map_err(draw_error)?;
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, slo), (t_max, slo)],
            BLACK.stroke_width(1),
        ))
        .map_err(draw_error)?;

    // Replicas per stage and cores.
    let cores_max = t.iter().map(|p| p.cores as f64).fold(1.0f64, f64::max) * 1.1;
    let mut chart = panel(
        &areas[2],
        title("cores held (black) and replicas per stage"),
        t_max,
        cores_max,
    )?;
    chart
        .draw_series(LineSeries::new(
            t.iter().map(|p| (minutes(p.time_s), p.cores as f64)),
            BLACK.stroke_width(2),
        ))
        .map_err(draw_error)?;
    for (k, stage) in pipeline.stages.iter().enumerate() {
        let color = Palette99::pick(k).to_rgba();
        chart
            .draw_series(LineSeries::new(
                t.iter().map(|p| {
                    (
                        minutes(p.time_s),
                        f64::from(p.replicas.get(k).copied().unwrap_or(0)),
                    )
                }),
                color.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label(stage.name.clone())
            .legend(legend_line(color.stroke_width(2)));
    }
    draw_legend(&mut chart)?;

    // Variant per stage: the index in the stage's variant list (a mix shows its first).
    for (k, stage) in pipeline.stages.iter().enumerate() {
        let names: Vec<&str> = stage.variants.iter().map(|v| v.name.as_str()).collect();
        let levels = names.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&areas[3 + k])
            .caption(
                title(&format!("variant of stage {} (+ marks a mix)", stage.name)),
                ("sans-serif", 18),
            )
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(110)
            .build_cartesian_2d(0.0..t_max, -0.5..levels - 0.5)
            .map_err(draw_error)?;
        let label_names = names.clone();
        chart
            .configure_mesh()
            .x_desc("minutes")
            .y_labels(names.len().max(1))
            .y_label_formatter(&move |y| {
                let i = y.round();
                if (y - i).abs() < 0.01 && i >= 0.0 {
                    label_names
                        .get(i as usize)
                        .map_or_else(String::new, |s| (*s).to_owned())
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(draw_error)?;
        let level = |p: &TimelinePoint| -> Option<f64> {
            let shown = p.variants.get(k)?;
            let first = shown.split('+').next()?;
            names.iter().position(|n| *n == first).map(|i| i as f64)
        };
        chart
            .draw_series(LineSeries::new(
                t.iter()
                    .filter_map(|p| level(p).map(|l| (minutes(p.time_s), l))),
                Palette99::pick(k).stroke_width(3),
            ))
            .map_err(draw_error)?;
        chart
            .draw_series(
                t.iter()
                    .filter(|p| p.variants.get(k).is_some_and(|v| v.contains('+')))
                    .filter_map(|p| {
                        level(p)
                            .map(|l| Cross::new((minutes(p.time_s), l), 3, BLACK.stroke_width(1)))
                    }),
            )
            .map_err(draw_error)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

/// A panel's chart: time in minutes against a value.
pub(crate) type Chart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Minutes of `seconds`, the time axis of every panel.
pub(crate) fn minutes(seconds: f64) -> f64 {
    seconds / 60.0
}

/// A panel in the plots' style: `caption`, time from 0 to `t_max` minutes, values from 0 to
/// `y_max`, the mesh drawn.
pub(crate) fn panel<'a, 'b>(
    area: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: String,
    t_max: f64,
    y_max: f64,
) -> anyhow::Result<Chart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_max, 0.0..y_max)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .draw()
        .map_err(draw_error)?;
    Ok(chart)
}

/// The legend's sample of a line drawn in `style`.
pub(crate) fn legend_line(
    style: ShapeStyle,
) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> + 'static {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style)
}

/// Draws the legend box of `chart`.
pub(crate) fn draw_legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>) -> anyhow::Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_error)
}

/// Top of a latency panel: the largest finite p99, at least the SLO, at most 5× it, plus
/// 10 %.
pub(crate) fn latency_axis_max(p99s: impl Iterator<Item = f64>, slo_ms: f64) -> f64 {
    p99s.filter(|v| v.is_finite())
        .fold(slo_ms, f64::max)
        .min(slo_ms * 5.0)
        * 1.1
}

pub(crate) fn draw_error<E: std::fmt::Display>(error: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the plot: {error}")
}
