//! The readable report of `infadaptd profile --report FILE`: per variant, a table of the
//! measured configurations (batch, instances, cores, capacity, p50/p99, GPU memory or
//! "unmeasured") and plots of capacity and p99 against the batch size, one line per instance
//! count. Markdown (`.md`, one SVG per variant written next to it) or self-contained HTML
//! (`.html`, the SVGs inline). Pure: data in, text out; `cmd_profile` writes the files.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::bail;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::commands::simulate::plot::{
    PANEL_HEIGHT, WIDTH, draw_error, draw_legend, latency_axis_max, legend_line,
};

/// What the table shows for a GPU memory that was not measured.
pub const UNMEASURED: &str = "unmeasured";

/// Everything the report shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Latency SLO (ms) that defined capacity.
    pub slo_ms: f64,
    /// Offered rates tried, rising (requests/s).
    pub rates: Vec<f64>,
    /// Seconds of load per rate.
    pub duration_s: f64,
    /// How GPU memory was measured, or why it was not.
    pub gpu_method: String,
    pub variants: Vec<VariantReport>,
}

/// One profiled variant.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantReport {
    pub name: String,
    /// GPU memory of one replica as written to the catalog (MiB), `None`: unmeasured.
    pub gpu_mem_mb: Option<f64>,
    pub points: Vec<ReportPoint>,
}

/// One measured configuration (variant, batch, instances).
#[derive(Debug, Clone, PartialEq)]
pub struct ReportPoint {
    pub batch: u32,
    pub instances: u32,
    /// Cores per instance.
    pub cores: u32,
    /// Seconds from the apply until it served.
    pub ready_s: f64,
    /// Capacity: the highest offered rate served with no failure within the SLO, for all
    /// instances together (requests/s); `None` when no rate was.
    pub throughput_rps: Option<f64>,
    /// Latency percentiles at that rate (ms).
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// GPU memory the configuration held, all instances (MiB); `None`: unmeasured.
    pub gpu_mem_mb: Option<f64>,
}

/// The report's format, from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

impl Format {
    /// `.md` is Markdown, `.html` or `.htm` HTML; anything else is refused.
    pub fn of(path: &Path) -> anyhow::Result<Format> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("md") => Ok(Format::Markdown),
            Some("html" | "htm") => Ok(Format::Html),
            _ => bail!(
                "--report {}: the file name must end in .md (Markdown) or .html",
                path.display()
            ),
        }
    }
}

/// A file of the report: the name (next to the report) and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportFile {
    pub name: String,
    pub text: String,
}

/// The report's files: the report itself (named after `path`'s file name) first, then for
/// Markdown one SVG per variant named `{stem}-{n}-{variant}.svg`.
pub fn build(report: &Report, format: Format, path: &Path) -> anyhow::Result<Vec<ReportFile>> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("report")
        .to_owned();
    let stem = path
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or("report")
        .to_owned();
    let mut svgs = Vec::with_capacity(report.variants.len());
    for (n, variant) in report.variants.iter().enumerate() {
        svgs.push(ReportFile {
            name: format!("{stem}-{}-{}.svg", n + 1, file_safe(&variant.name)),
            text: svg(variant, report.slo_ms)?,
        });
    }
    let main = match format {
        Format::Markdown => markdown(report, &svgs),
        Format::Html => html(report, &svgs),
    };
    let mut files = vec![ReportFile {
        name: file_name,
        text: main,
    }];
    if format == Format::Markdown {
        files.extend(svgs);
    }
    Ok(files)
}

/// A variant name as a file-name part: letters, digits, `-`, `_` and `.` kept, the rest `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn number(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "–".to_owned(),
    }
}

fn gpu(value: Option<f64>) -> String {
    match value {
        Some(mb) => format!("{mb:.0} MiB"),
        None => UNMEASURED.to_owned(),
    }
}

fn rates(report: &Report) -> String {
    report
        .rates
        .iter()
        .map(|r| format!("{r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The cells of one table row, in the header's order.
fn row(p: &ReportPoint) -> [String; 8] {
    [
        p.batch.to_string(),
        p.instances.to_string(),
        p.cores.to_string(),
        p.throughput_rps
            .map_or_else(|| "none within the SLO".to_owned(), |t| format!("{t:.1}")),
        number(p.p50_ms, 1),
        number(p.p99_ms, 1),
        gpu(p.gpu_mem_mb),
        format!("{:.1}", p.ready_s),
    ]
}

const HEADER: [&str; 8] = [
    "batch",
    "instances",
    "cores",
    "capacity (rps)",
    "p50 (ms)",
    "p99 (ms)",
    "GPU memory",
    "ready after (s)",
];

fn markdown_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What the capacity, p50 and p99 columns mean, in both formats.
fn capacity_note(report: &Report) -> String {
    format!(
        "Capacity is the highest offered rate (of {} rps, {} s each) served with no failure and \
         p99 ≤ {} ms, for all instances together; p50 and p99 are at that rate.",
        rates(report),
        report.duration_s,
        report.slo_ms
    )
}

fn markdown(report: &Report, svgs: &[ReportFile]) -> String {
    let mut out = String::from("# Profile report\n\n");
    out.push_str(&format!("{}\n\n", capacity_note(report)));
    out.push_str(&format!(
        "GPU memory: {}\n\n",
        markdown_escape(&report.gpu_method)
    ));
    for (variant, svg) in report.variants.iter().zip(svgs) {
        out.push_str(&format!("## {}\n\n", markdown_escape(&variant.name)));
        out.push_str(&format!(
            "GPU memory per replica (catalog): {}\n\n",
            gpu(variant.gpu_mem_mb)
        ));
        out.push_str(&format!("| {} |\n", HEADER.join(" | ")));
        out.push_str(&format!("|{}\n", "---:|".repeat(HEADER.len())));
        for p in &variant.points {
            out.push_str(&format!("| {} |\n", row(p).join(" | ")));
        }
        out.push_str(&format!(
            "\n![{} capacity and p99 against batch size]({})\n\n",
            markdown_escape(&variant.name),
            svg.name
        ));
    }
    out
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn html(report: &Report, svgs: &[ReportFile]) -> String {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Profile report</title>\n<style>\n\
         body { font-family: sans-serif; margin: 2em; }\n\
         table { border-collapse: collapse; margin: 1em 0; }\n\
         th, td { border: 1px solid #999; padding: 0.2em 0.6em; text-align: right; }\n\
         .unmeasured { color: #a33; }\n\
         </style>\n</head>\n<body>\n<h1>Profile report</h1>\n",
    );
    out.push_str(&format!("<p>{}</p>\n", html_escape(&capacity_note(report))));
    out.push_str(&format!(
        "<p>GPU memory: {}</p>\n",
        html_escape(&report.gpu_method)
    ));
    for (variant, svg) in report.variants.iter().zip(svgs) {
        out.push_str(&format!(
            "<section>\n<h2>{}</h2>\n<p>GPU memory per replica (catalog): {}</p>\n<table>\n<tr>",
            html_escape(&variant.name),
            gpu(variant.gpu_mem_mb)
        ));
        for h in HEADER {
            out.push_str(&format!("<th>{}</th>", html_escape(h)));
        }
        out.push_str("</tr>\n");
        for p in &variant.points {
            out.push_str("<tr>");
            for cell in row(p) {
                if cell == UNMEASURED {
                    out.push_str(&format!("<td class=\"unmeasured\">{UNMEASURED}</td>"));
                } else {
                    out.push_str(&format!("<td>{}</td>", html_escape(&cell)));
                }
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</table>\n<figure>\n");
        out.push_str(&svg.text);
        out.push_str("\n</figure>\n</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Lines of one panel: per instance count, (batch, value) in batch order.
fn lines(
    variant: &VariantReport,
    value: impl Fn(&ReportPoint) -> Option<f64>,
) -> Vec<(u32, Vec<(f64, f64)>)> {
    let counts: BTreeSet<u32> = variant.points.iter().map(|p| p.instances).collect();
    counts
        .into_iter()
        .map(|n| {
            let mut points: Vec<(f64, f64)> = variant
                .points
                .iter()
                .filter(|p| p.instances == n)
                .filter_map(|p| {
                    value(p)
                        .filter(|v| v.is_finite())
                        .map(|v| (f64::from(p.batch), v))
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            (n, points)
        })
        .collect()
}

/// One variant's plot: capacity (top) and p99 with the SLO (bottom) against the batch size.
fn svg(variant: &VariantReport, slo_ms: f64) -> anyhow::Result<String> {
    let mut text = String::new();
    {
        let root =
            SVGBackend::with_string(&mut text, (WIDTH, 2 * PANEL_HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let areas = root.split_evenly((2, 1));
        let batch_max = variant
            .points
            .iter()
            .map(|p| f64::from(p.batch))
            .fold(1.0, f64::max)
            + 0.5;
        let capacity = lines(variant, |p| p.throughput_rps);
        let top = capacity
            .iter()
            .flat_map(|(_, l)| l.iter().map(|p| p.1))
            .fold(1.0, f64::max)
            * 1.1;
        draw_panel(
            &areas[0],
            format!("{}: capacity (requests/s) against batch size", variant.name),
            batch_max,
            top,
            &capacity,
            None,
        )?;
        let p99 = lines(variant, |p| p.p99_ms);
        let top = latency_axis_max(p99.iter().flat_map(|(_, l)| l.iter().map(|p| p.1)), slo_ms);
        draw_panel(
            &areas[1],
            format!(
                "{}: p99 latency (ms) at capacity against batch size",
                variant.name
            ),
            batch_max,
            top,
            &p99,
            Some(slo_ms),
        )?;
        root.present().map_err(draw_error)?;
    }
    Ok(text)
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    caption: String,
    x_max: f64,
    y_max: f64,
    lines: &[(u32, Vec<(f64, f64)>)],
    slo_ms: Option<f64>,
) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..x_max, 0.0..y_max)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("batch size")
        .draw()
        .map_err(draw_error)?;
    for (k, (instances, points)) in lines.iter().enumerate() {
        if points.is_empty() {
            continue;
        }
        let color = Palette99::pick(k).to_rgba();
        let label = if *instances == 1 {
            "1 instance".to_owned()
        } else {
            format!("{instances} instances")
        };
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(draw_error)?
            .label(label)
            .legend(legend_line(color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(draw_error)?;
    }
    if let Some(slo) = slo_ms {
        chart
            .draw_series(LineSeries::new(
                vec![(0.5, slo), (x_max, slo)],
                BLACK.stroke_width(1),
            ))
            .map_err(draw_error)?
            .label("SLO")
            .legend(legend_line(BLACK.stroke_width(1)));
    }
    draw_legend(&mut chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(batch: u32, instances: u32, throughput: Option<f64>, gpu: Option<f64>) -> ReportPoint {
        ReportPoint {
            batch,
            instances,
            cores: 1,
            ready_s: 1.5,
            throughput_rps: throughput,
            p50_ms: throughput.map(|t| 1000.0 / t),
            p99_ms: throughput.map(|t| 3000.0 / t),
            gpu_mem_mb: gpu,
        }
    }

    fn sample() -> Report {
        Report {
            slo_ms: 200.0,
            rates: vec![10.0, 40.0],
            duration_s: 2.0,
            gpu_method: "NVML unavailable <no driver> & so unmeasured".to_owned(),
            variants: vec![
                VariantReport {
                    name: "tiny".to_owned(),
                    gpu_mem_mb: Some(1234.0),
                    points: vec![
                        point(1, 1, Some(40.0), Some(1234.0)),
                        point(2, 1, Some(80.0), Some(1300.0)),
                        point(1, 2, Some(75.0), Some(2468.0)),
                        point(2, 2, None, Some(2500.0)),
                    ],
                },
                VariantReport {
                    name: "big|model".to_owned(),
                    gpu_mem_mb: None,
                    points: vec![point(1, 1, Some(10.0), None), point(4, 1, Some(20.0), None)],
                },
            ],
        }
    }

    /// Checks that `text` is well-formed XML as far as tags go: every element closed in
    /// order, attributes quoted, no stray `<` or `&`.
    fn assert_well_formed(text: &str) {
        let mut open: Vec<String> = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find(['<', '&']) {
            let (before, tail) = rest.split_at(start);
            assert!(
                !before.contains('>'),
                "stray `>` before {}",
                &tail[..tail.len().min(60)]
            );
            if tail.starts_with('&') {
                let end = tail.find(';').expect("an entity ends with `;`");
                let entity = &tail[1..end];
                assert!(
                    ["amp", "lt", "gt", "quot", "apos"].contains(&entity)
                        || entity.starts_with('#'),
                    "unknown entity &{entity};"
                );
                rest = &tail[end + 1..];
                continue;
            }
            let end = tail.find('>').expect("every tag ends");
            let tag = &tail[1..end];
            assert!(!tag.contains('<'), "`<` inside a tag: {tag}");
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in {tag}"
            );
            if tag.starts_with('?') || tag.starts_with('!') {
            } else if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(
                    open.pop().as_deref(),
                    Some(name.trim()),
                    "misnested </{name}>"
                );
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("a tag name");
                open.push(name.to_owned());
            }
            rest = &tail[end + 1..];
        }
        assert!(open.is_empty(), "unclosed elements: {open:?}");
    }

    #[test]
    fn the_format_comes_from_the_file_name() {
        assert_eq!(Format::of(Path::new("r.md")).unwrap(), Format::Markdown);
        assert_eq!(Format::of(Path::new("out/R.HTML")).unwrap(), Format::Html);
        let err = Format::of(Path::new("r.pdf")).unwrap_err().to_string();
        assert!(err.contains("r.pdf") && err.contains(".md"), "{err}");
    }

    #[test]
    fn markdown_lists_every_variant_and_point_with_an_svg_each() {
        let files = build(&sample(), Format::Markdown, Path::new("/tmp/x/prof.md")).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["prof.md", "prof-1-tiny.svg", "prof-2-big_model.svg"]
        );
        let md = &files[0].text;
        assert!(md.contains("## tiny\n"), "{md}");
        assert!(md.contains("## big\\|model\n"), "{md}");
        assert!(md.contains("![tiny capacity and p99 against batch size](prof-1-tiny.svg)"));
        assert!(md.contains("(prof-2-big_model.svg)"));
        // One row per point, in the header's column count.
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 2 + 6, "two headers and six points:\n{md}");
        for r in &rows {
            assert_eq!(r.matches(" | ").count(), HEADER.len() - 1, "{r}");
        }
        assert!(
            md.contains("| 1 | 1 | 1 | 40.0 | 25.0 | 75.0 | 1234 MiB | 1.5 |"),
            "{md}"
        );
        assert!(
            md.contains("| 2 | 2 | 1 | none within the SLO | – | – | 2500 MiB | 1.5 |"),
            "{md}"
        );
        assert!(
            md.contains("| 4 | 1 | 1 | 20.0 | 50.0 | 150.0 | unmeasured | 1.5 |"),
            "{md}"
        );
        assert!(md.contains("GPU memory per replica (catalog): 1234 MiB"));
        assert!(md.contains("GPU memory per replica (catalog): unmeasured"));
        assert!(
            md.contains("NVML unavailable \\<no driver\\> & so unmeasured"),
            "{md}"
        );
        for svg in &files[1..] {
            assert!(svg.text.starts_with("<svg"), "{}", &svg.text[..80]);
            assert_well_formed(&svg.text);
        }
        // One line per instance count in the first variant's plot, plus the SLO line.
        let svg = &files[1].text;
        assert!(svg.contains("1 instance") && svg.contains("2 instances") && svg.contains("SLO"));
        assert!(svg.contains("batch size"));
        assert!(!files[2].text.contains("2 instances"));
    }

    #[test]
    fn html_is_self_contained_with_the_plots_inline() {
        let files = build(&sample(), Format::Html, Path::new("prof.html")).unwrap();
        assert_eq!(files.len(), 1, "no side files");
        let html = &files[0].text;
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("<svg").count(), 2);
        assert_eq!(html.matches("<section>").count(), 2);
        assert!(html.contains("<h2>big|model</h2>"));
        assert!(html.contains("NVML unavailable &lt;no driver&gt; &amp; so unmeasured"));
        assert_eq!(html.matches("<tr>").count(), 2 + 6, "headers and points");
        assert_eq!(
            html.matches("<td class=\"unmeasured\">unmeasured</td>")
                .count(),
            2
        );
        assert!(html.contains("<td>1234 MiB</td>") && html.contains("<td>2468 MiB</td>"));
        assert!(html.contains("<td>none within the SLO</td>"));
        assert!(
            !html.contains("src=") && !html.contains("href="),
            "nothing outside the file"
        );
        let body = &html[html.find("<html").unwrap()..];
        assert_well_formed(&body.replace("<meta charset=\"utf-8\">", ""));
    }

    #[test]
    fn a_variant_without_any_capacity_still_gets_its_table_and_plot() {
        let report = Report {
            variants: vec![VariantReport {
                name: "slow".to_owned(),
                gpu_mem_mb: None,
                points: vec![point(1, 1, None, None)],
            }],
            ..sample()
        };
        let files = build(&report, Format::Markdown, Path::new("r.md")).unwrap();
        assert!(
            files[0]
                .text
                .contains("| 1 | 1 | 1 | none within the SLO |")
        );
        assert_well_formed(&files[1].text);
    }
}
