//! The demo's SVG plot (`run --demo --plot FILE`): per pipeline, the load the loop saw and
//! planned for at every decision (observed load, point forecast, upper bound, provisioned
//! load, profiled capacity of the decided plan) with fast-path decisions marked, and the p99
//! of each tick's window against the SLO. Same style as `simulate --plot`.

use std::path::Path;

use infadapt_model::Pipeline;
use plotters::prelude::*;

use crate::commands::simulate::plot::{
    PANEL_HEIGHT, WIDTH, draw_error, draw_legend, latency_axis_max, legend_line, minutes, panel,
};
use crate::service::status::DecisionRecord;

/// A line of the load panel: label, colour and the value it reads from a decision.
type Series<'a> = (
    &'static str,
    RGBColor,
    Box<dyn Fn(&DecisionRecord) -> Option<f64> + 'a>,
);

/// Label of the fast-path markers.
pub const FAST_PATH_LABEL: &str = "fast-path decision";

/// Writes the decisions of each pipeline (`records` in the order they were taken) as an SVG
/// at `path`: two panels per pipeline.
pub fn write_svg(
    path: &Path,
    pipelines: &[(&Pipeline, Vec<DecisionRecord>)],
) -> anyhow::Result<()> {
    let panels = 2 * pipelines.len().max(1);
    let root = SVGBackend::new(path, (WIDTH, PANEL_HEIGHT * panels as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let areas = root.split_evenly((panels, 1));
    for (k, (pipeline, records)) in pipelines.iter().enumerate() {
        draw_load(&areas[2 * k], pipeline, records)?;
        draw_latency(&areas[2 * k + 1], pipeline, records)?;
    }
    root.present().map_err(draw_error)?;
    Ok(())
}

/// The end of the time axis, minutes.
fn t_max(records: &[DecisionRecord]) -> f64 {
    records
        .iter()
        .map(|r| minutes(r.decision.time_s))
        .filter(|t| t.is_finite())
        .fold(1.0 / 60.0, f64::max)
}

fn draw_load(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    pipeline: &Pipeline,
    records: &[DecisionRecord],
) -> anyhow::Result<()> {
    let capacity = |r: &DecisionRecord| -> Option<f64> {
        let c = infadapt_eval::plan_capacity(pipeline, &r.decision.plan);
        (c.is_finite() && !r.decision.plan.stages.is_empty()).then_some(c)
    };
    let fast = records.iter().filter(|r| r.fast_path).count();
    let series: [Series; 5] = [
        ("observed load", BLACK, Box::new(|r| Some(r.observed_rps))),
        (
            "point forecast",
            BLUE,
            Box::new(|r| r.decision.forecast_rps),
        ),
        ("upper bound", CYAN, Box::new(|r| r.decision.upper_rps)),
        (
            "provisioned load",
            MAGENTA,
            Box::new(|r| Some(r.decision.provisioned_rps).filter(|v| *v > 0.0)),
        ),
        ("capacity of the plan", GREEN, Box::new(capacity)),
    ];
    let y_max = records
        .iter()
        .flat_map(|r| series.iter().filter_map(|(_, _, get)| get(r)))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.1;
    let t_max = t_max(records);
    let mut chart = panel(
        area,
        format!(
            "{} — load (requests/s) per decision; {fast} fast-path decisions",
            pipeline.name
        ),
        t_max,
        y_max,
    )?;
    for (label, color, get) in &series {
        let color = *color;
        let points: Vec<(f64, f64)> = records
            .iter()
            .filter_map(|r| {
                get(r)
                    .filter(|v| v.is_finite())
                    .map(|v| (minutes(r.decision.time_s), v.min(y_max)))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(draw_error)?
            .label(*label)
            .legend(legend_line(color.stroke_width(2)));
    }
    // Fast-path decisions: a red triangle on the load they provisioned for.
    chart
        .draw_series(
            records
                .iter()
                .filter(|r| r.fast_path && r.decision.provisioned_rps.is_finite())
                .map(|r| {
                    TriangleMarker::new(
                        (
                            minutes(r.decision.time_s),
                            r.decision.provisioned_rps.min(y_max),
                        ),
                        6,
                        RED.filled(),
                    )
                }),
        )
        .map_err(draw_error)?
        .label(FAST_PATH_LABEL)
        .legend(|(x, y)| TriangleMarker::new((x + 8, y), 6, RED.filled()));
    draw_legend(&mut chart)
}

fn draw_latency(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    pipeline: &Pipeline,
    records: &[DecisionRecord],
) -> anyhow::Result<()> {
    let slo = pipeline.slo_ms;
    let lat_max = latency_axis_max(records.iter().filter_map(|r| r.latency_p99_ms), slo);
    let t_max = t_max(records);
    let mut chart = panel(
        area,
        format!(
            "{} — p99 latency of each tick's window (ms) vs SLO",
            pipeline.name
        ),
        t_max,
        lat_max,
    )?;
    chart
        .draw_series(LineSeries::new(
            records.iter().filter_map(|r| {
                r.latency_p99_ms
                    .filter(|v| v.is_finite())
                    .map(|l| (minutes(r.decision.time_s), l.min(lat_max)))
            }),
            RED.stroke_width(2),
        ))
        .map_err(draw_error)?
        .label("p99")
        .legend(legend_line(RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            vec![(0.0, slo), (t_max, slo)],
            BLACK.stroke_width(1),
        ))
        .map_err(draw_error)?
        .label("SLO")
        .legend(legend_line(BLACK.stroke_width(1)));
    draw_legend(&mut chart)
}
