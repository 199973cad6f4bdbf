//! Turns the JSON of `infadaptd simulate --seeds … --json` into the Markdown tables of
//! docs/evaluation.md: per run, each policy's mean ± standard deviation over the seeds, the
//! paired differences against ours, and one table of the control-quality targets.

use std::fmt::Write as _;

use serde::Deserialize;

/// Our policy, against which the others are paired.
pub const OURS: &str = "infadapt";

/// The adaptive baselines the targets compare ours with (the others are static).
pub const ADAPTIVE: [&str; 5] = ["ipa", "infadapter", "ms+", "hpa", "vpa"];

/// What `simulate --seeds … --json` prints (the fields the tables use).
#[derive(Debug, Clone, Deserialize)]
pub struct SeedsReport {
    pub scenario: String,
    pub workload: Workload,
    pub slo_ms: f64,
    pub seeds: Vec<u64>,
    pub summary: Vec<PolicySummary>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Workload {
    pub seconds: u64,
    pub warmup_s: u64,
    pub mean_rps: f64,
    pub peak_rps: f64,
}

/// One policy over every seed.
#[derive(Debug, Clone, Deserialize)]
pub struct PolicySummary {
    pub policy: String,
    #[serde(default)]
    pub oracle: bool,
    pub metrics: std::collections::BTreeMap<String, Spread>,
    #[serde(default)]
    pub paired: std::collections::BTreeMap<String, Paired>,
}

/// Mean and sample standard deviation of a metric over the seeds.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Spread {
    pub mean: f64,
    pub sd: f64,
}

/// Ours minus this policy, seed by seed.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Paired {
    pub mean_diff: f64,
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
    pub beyond_noise: bool,
}

/// One replayed run: where it comes from and what came out.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Short name used in the tables (`ipa_bursty`, `video day`).
    pub name: String,
    /// What was replayed, in words (scenario, trace lines, scale).
    pub description: String,
    /// The command line that produced it.
    pub command: String,
    /// The commit its binary was built from.
    pub commit: String,
    /// Wall time of the command, seconds.
    pub wall_s: f64,
    pub report: SeedsReport,
    /// Ours at the other cost weights of [`COST_WEIGHTS`] (`simulate --policy infadapt
    /// --cost-weight X`), same seeds; weights not run are absent.
    pub grid: Vec<(f64, SeedsReport)>,
}

/// The cost-weight grid of the accuracy–cost frontier (docs/evaluation.md, written before
/// it was run); 1 is the default.
pub const COST_WEIGHTS: [f64; 7] = [0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0];

/// Ours at one cost weight: the means over the seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrontierPoint {
    pub cost_weight: f64,
    pub slo_violation_rate: f64,
    pub on_time_accuracy: f64,
    pub cost_core_hours: f64,
    pub reconfigurations: f64,
}

impl FrontierPoint {
    fn of(report: &SeedsReport, cost_weight: f64) -> Option<FrontierPoint> {
        let get = |metric| mean_of(report, OURS, metric);
        Some(FrontierPoint {
            cost_weight,
            slo_violation_rate: get("slo_violation_rate")?,
            on_time_accuracy: get("on_time_accuracy")?,
            cost_core_hours: get("cost_core_hours")?,
            reconfigurations: get("reconfigurations")?,
        })
    }
}

/// Ours' points of a run in grid order: the default from the main report, the others from
/// the grid runs.
pub fn frontier_points(run: &RunResult) -> Vec<FrontierPoint> {
    let mut points: Vec<FrontierPoint> = run
        .grid
        .iter()
        .filter_map(|(x, report)| FrontierPoint::of(report, *x))
        .chain(FrontierPoint::of(&run.report, 1.0))
        .collect();
    points.sort_by(|a, b| a.cost_weight.total_cmp(&b.cost_weight));
    points.dedup_by(|a, b| a.cost_weight == b.cost_weight);
    points
}

/// The grid point that covers `policy` (core-hours ≤ and on-time accuracy ≥ its means):
/// the cheapest such point, if any.
fn covering(points: &[FrontierPoint], report: &SeedsReport, policy: &str) -> Check {
    let (Some(cost), Some(accuracy)) = (
        mean_of(report, policy, "cost_core_hours"),
        mean_of(report, policy, "on_time_accuracy"),
    ) else {
        return Check::missing();
    };
    let best = points
        .iter()
        .filter(|p| p.cost_core_hours <= cost && p.on_time_accuracy >= accuracy)
        .min_by(|a, b| a.cost_core_hours.total_cmp(&b.cost_core_hours));
    match best {
        Some(p) => Check {
            text: format!("X = {}", p.cost_weight),
            holds: Some(true),
        },
        None => Check {
            text: "none".to_owned(),
            holds: Some(false),
        },
    }
}

/// Whether the default (X = 1) is on ours' own frontier: no grid point is cheaper and at
/// least as accurate on time.
fn default_on_frontier(points: &[FrontierPoint]) -> Check {
    let Some(default) = points.iter().find(|p| p.cost_weight == 1.0) else {
        return Check::missing();
    };
    let beating = points.iter().find(|p| {
        p.cost_weight != 1.0
            && p.cost_core_hours < default.cost_core_hours
            && p.on_time_accuracy >= default.on_time_accuracy
    });
    match beating {
        None => Check {
            text: "yes".to_owned(),
            holds: Some(true),
        },
        Some(p) => Check {
            text: format!(
                "no: X = {} costs {} core-h at {} on-time acc",
                p.cost_weight,
                signed(
                    p.cost_core_hours - default.cost_core_hours,
                    Unit::Decimals(2)
                ),
                signed(
                    p.on_time_accuracy - default.on_time_accuracy,
                    Unit::Decimals(4)
                )
            ),
            holds: Some(false),
        },
    }
}

/// The frontier section: the check table over every run, then ours' grid per run.
pub fn render_frontier(runs: &[RunResult]) -> String {
    let mut out = String::from(
        "A cell names the cheapest cost weight X of ours with core-hours ≤ and on-time \
         accuracy ≥ that baseline's (means over the seeds); `none` where no grid point does.\n\n\
         | run | `ipa` | `infadapter` | `ms+` | `hpa` | `vpa` | default (X = 1) on ours' frontier |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut held = 0;
    let mut checked = 0;
    for run in runs {
        let points = frontier_points(run);
        let mut checks: Vec<Check> = ADAPTIVE
            .iter()
            .map(|p| covering(&points, &run.report, p))
            .collect();
        checks.push(default_on_frontier(&points));
        check_row(&mut out, &run.name, &checks, &mut held, &mut checked);
    }
    let _ = writeln!(
        out,
        "\n{held} of {checked} frontier checks hold on the means.\n"
    );
    out.push_str(
        "Ours over the grid (means over the seeds):\n\n\
         | run | X | SLO viol | on-time acc | core-h | reconfig |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for run in runs {
        for p in frontier_points(run) {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                run.name,
                p.cost_weight,
                with_unit_suffix(number(p.slo_violation_rate, Unit::Percent), Unit::Percent),
                number(p.on_time_accuracy, Unit::Decimals(4)),
                number(p.cost_core_hours, Unit::Decimals(2)),
                number(p.reconfigurations, Unit::Decimals(1)),
            );
        }
    }
    out
}

/// How a metric is printed.
#[derive(Debug, Clone, Copy)]
enum Unit {
    /// A fraction shown as a percentage.
    Percent,
    /// Shown with a fixed number of decimals.
    Decimals(usize),
}

/// The columns of the per-run table: JSON metric, heading, unit.
const COLUMNS: [(&str, &str, Unit); 8] = [
    ("slo_violation_rate", "SLO viol", Unit::Percent),
    ("on_time_accuracy", "on-time acc", Unit::Decimals(4)),
    ("mean_accuracy", "acc (served)", Unit::Decimals(4)),
    ("cost_core_hours", "core-h", Unit::Decimals(2)),
    ("reconfigurations", "reconfig", Unit::Decimals(1)),
    ("reversals", "reversals", Unit::Decimals(1)),
    ("dropped", "dropped", Unit::Decimals(0)),
    ("p99_latency_ms", "p99 ms", Unit::Decimals(0)),
];

/// The columns of the paired table.
const PAIRED_COLUMNS: [(&str, &str, Unit); 4] = [
    ("slo_violation_rate", "Δ SLO viol (points)", Unit::Percent),
    ("on_time_accuracy", "Δ on-time acc", Unit::Decimals(4)),
    ("cost_core_hours", "Δ core-h", Unit::Decimals(2)),
    ("reconfigurations", "Δ reconfig", Unit::Decimals(1)),
];

fn number(value: f64, unit: Unit) -> String {
    if !value.is_finite() {
        return "—".to_owned();
    }
    match unit {
        Unit::Percent => format!("{:.2}", value * 100.0),
        Unit::Decimals(d) => format!("{value:.d$}"),
    }
}

fn signed(value: f64, unit: Unit) -> String {
    let text = number(value, unit);
    if value > 0.0 && value.is_finite() {
        format!("+{text}")
    } else {
        text.replace('-', "−")
    }
}

fn with_unit_suffix(text: String, unit: Unit) -> String {
    match unit {
        Unit::Percent if text != "—" => format!("{text} %"),
        _ => text,
    }
}

/// `mean ± sd` of one metric, or `—` when the policy did not report it.
fn spread_cell(summary: &PolicySummary, metric: &str, unit: Unit) -> String {
    match summary.metrics.get(metric) {
        Some(s) => with_unit_suffix(
            format!("{} ± {}", number(s.mean, unit), number(s.sd, unit)),
            unit,
        ),
        None => "—".to_owned(),
    }
}

/// `mean [low, high]` of a paired difference, bold when beyond seed noise.
fn paired_cell(summary: &PolicySummary, metric: &str, unit: Unit) -> String {
    let Some(p) = summary.paired.get(metric) else {
        return "—".to_owned();
    };
    let interval = match (p.ci95_low, p.ci95_high) {
        (Some(low), Some(high)) => format!(" [{}, {}]", signed(low, unit), signed(high, unit)),
        _ => String::new(),
    };
    let text = format!("{}{interval}", signed(p.mean_diff, unit));
    if p.beyond_noise {
        format!("**{text}**")
    } else {
        text
    }
}

/// How a policy is named in the tables.
pub fn label(summary: &PolicySummary) -> String {
    if summary.oracle {
        format!("{} (oracle)", summary.policy)
    } else {
        summary.policy.clone()
    }
}

fn seeds_text(seeds: &[u64]) -> String {
    let contiguous = seeds.windows(2).all(|w| w[1] == w[0] + 1);
    match (seeds.first(), seeds.last()) {
        (Some(first), Some(last)) if contiguous && seeds.len() > 2 => format!("{first}–{last}"),
        _ => seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The Markdown of one run: a heading, what was replayed, the two tables.
pub fn render_run(run: &RunResult) -> String {
    let r = &run.report;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {}\n\n{}: {} s measured after {} s of warm-up, mean {:.1} rps, peak {:.1} rps, \
         SLO {} ms; seeds {} ({:.0} s wall for all of them).\n",
        run.name,
        run.description,
        r.workload.seconds,
        r.workload.warmup_s,
        r.workload.mean_rps,
        r.workload.peak_rps,
        r.slo_ms,
        seeds_text(&r.seeds),
        run.wall_s,
    );
    let _ = writeln!(out, "```\n{}\n```\n", run.command);
    let _ = write!(out, "| policy |");
    for (_, heading, _) in COLUMNS {
        let _ = write!(out, " {heading} |");
    }
    let _ = write!(out, "\n|---|");
    for _ in COLUMNS {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for summary in &r.summary {
        let _ = write!(out, "| {} |", label(summary));
        for (metric, _, unit) in COLUMNS {
            let _ = write!(out, " {} |", spread_cell(summary, metric, unit));
        }
        out.push('\n');
    }
    let paired: Vec<&PolicySummary> = r.summary.iter().filter(|s| !s.paired.is_empty()).collect();
    if !paired.is_empty() {
        let _ = write!(
            out,
            "\nPaired differences, ours − theirs, seed by seed: mean [95 % interval]; \
             **bold** where the interval excludes 0 (larger than seed noise).\n\n| against |"
        );
        for (_, heading, _) in PAIRED_COLUMNS {
            let _ = write!(out, " {heading} |");
        }
        let _ = write!(out, "\n|---|");
        for _ in PAIRED_COLUMNS {
            let _ = write!(out, "---:|");
        }
        out.push('\n');
        for summary in paired {
            let _ = write!(out, "| {} |", label(summary));
            for (metric, _, unit) in PAIRED_COLUMNS {
                let _ = write!(out, " {} |", paired_cell(summary, metric, unit));
            }
            out.push('\n');
        }
    }
    out
}

fn mean_of(report: &SeedsReport, policy: &str, metric: &str) -> Option<f64> {
    report
        .summary
        .iter()
        .find(|s| s.policy == policy)
        .and_then(|s| s.metrics.get(metric))
        .map(|s| s.mean)
        .filter(|m| m.is_finite())
}

/// One target check: text for the cell and whether it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub text: String,
    pub holds: Option<bool>,
}

impl Check {
    fn missing() -> Check {
        Check {
            text: "—".to_owned(),
            holds: None,
        }
    }

    fn cell(&self) -> String {
        match self.holds {
            Some(true) => format!("{} ✓", self.text),
            Some(false) => format!("{} ✗", self.text),
            None => self.text.clone(),
        }
    }
}

/// Writes one table row of `checks` for run `name`, counting those that hold and those
/// that could be checked.
fn check_row(
    out: &mut String,
    name: &str,
    checks: &[Check],
    held: &mut usize,
    checked: &mut usize,
) {
    let _ = write!(out, "| {name} |");
    for check in checks {
        let _ = write!(out, " {} |", check.cell());
        if let Some(holds) = check.holds {
            *checked += 1;
            *held += usize::from(holds);
        }
    }
    out.push('\n');
}

/// Ours / theirs for `metric`, holding when at most `bound`.
fn ratio_check(report: &SeedsReport, theirs: &str, metric: &str, bound: f64) -> Check {
    let (Some(ours), Some(base)) = (
        mean_of(report, OURS, metric),
        mean_of(report, theirs, metric),
    ) else {
        return Check::missing();
    };
    if base <= 0.0 {
        return Check {
            text: if ours <= 0.0 {
                "both 0".to_owned()
            } else {
                "theirs 0".to_owned()
            },
            holds: Some(ours <= 0.0),
        };
    }
    let ratio = ours / base;
    Check {
        text: format!("{ratio:.2}×"),
        holds: Some(ratio <= bound),
    }
}

/// Ours' on-time accuracy minus the best adaptive baseline's, holding when ≥ 0.
fn accuracy_check(report: &SeedsReport) -> Check {
    let Some(ours) = mean_of(report, OURS, "on_time_accuracy") else {
        return Check::missing();
    };
    let best = ADAPTIVE
        .iter()
        .filter_map(|&p| mean_of(report, p, "on_time_accuracy").map(|m| (p, m)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    let Some((best_name, best)) = best else {
        return Check::missing();
    };
    Check {
        text: format!("{} vs {best_name}", signed(ours - best, Unit::Decimals(4))),
        holds: Some(ours >= best),
    }
}

/// Ours' cost relative to `infadapter`'s, holding when not above it.
fn cost_check(report: &SeedsReport) -> Check {
    let (Some(ours), Some(theirs)) = (
        mean_of(report, OURS, "cost_core_hours"),
        mean_of(report, "infadapter", "cost_core_hours"),
    ) else {
        return Check::missing();
    };
    if theirs <= 0.0 {
        return Check::missing();
    }
    let change = (ours / theirs - 1.0) * 100.0;
    Check {
        text: format!("{} %", signed(change, Unit::Decimals(1))),
        holds: Some(ours <= theirs),
    }
}

/// The control-quality targets of every run, on the means over the seeds.
pub fn targets(report: &SeedsReport) -> [Check; 5] {
    [
        ratio_check(report, "ipa", "slo_violation_rate", 0.5),
        ratio_check(report, "infadapter", "slo_violation_rate", 0.5),
        ratio_check(report, "ipa", "reconfigurations", 0.2),
        accuracy_check(report),
        cost_check(report),
    ]
}

/// The targets table over every run, with a count of the checks that hold.
pub fn render_targets(runs: &[RunResult]) -> String {
    let mut out = String::from(
        "| run | SLO viol ≤ 0.5× `ipa` | SLO viol ≤ 0.5× `infadapter` | reconfig ≤ 0.2× `ipa` | \
         on-time acc ≥ every adaptive baseline (ours − best) | core-h ≤ `infadapter` |\n\
         |---|---|---|---|---|---|\n",
    );
    let mut held = 0;
    let mut checked = 0;
    for run in runs {
        check_row(
            &mut out,
            &run.name,
            &targets(&run.report),
            &mut held,
            &mut checked,
        );
    }
    let _ = writeln!(out, "\n{held} of {checked} checks hold on the means.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(policies: &[(&str, f64, f64, f64, f64)]) -> SeedsReport {
        // (policy, slo rate, on-time acc, core-h, reconfig)
        let summary = policies
            .iter()
            .map(|&(policy, slo, acc, cost, reconfig)| {
                let spread = |mean| Spread { mean, sd: 0.1 };
                let metrics = [
                    ("slo_violation_rate", spread(slo)),
                    ("on_time_accuracy", spread(acc)),
                    ("cost_core_hours", spread(cost)),
                    ("reconfigurations", spread(reconfig)),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
                let paired = if policy == OURS {
                    Default::default()
                } else {
                    [(
                        "on_time_accuracy".to_owned(),
                        Paired {
                            mean_diff: -0.012,
                            ci95_low: Some(-0.02),
                            ci95_high: Some(-0.004),
                            beyond_noise: true,
                        },
                    )]
                    .into_iter()
                    .collect()
                };
                PolicySummary {
                    policy: policy.to_owned(),
                    oracle: policy.starts_with("static"),
                    metrics,
                    paired,
                }
            })
            .collect();
        SeedsReport {
            scenario: "s".to_owned(),
            workload: Workload {
                seconds: 600,
                warmup_s: 3600,
                mean_rps: 10.0,
                peak_rps: 30.0,
            },
            slo_ms: 1000.0,
            seeds: vec![1, 2, 3, 4, 5],
            summary,
        }
    }

    fn run(report: SeedsReport) -> RunResult {
        RunResult {
            name: "w".to_owned(),
            description: "d".to_owned(),
            command: "infadaptd simulate".to_owned(),
            commit: "abc1234".to_owned(),
            wall_s: 12.0,
            report,
            grid: Vec::new(),
        }
    }

    #[test]
    fn targets_compare_the_means() {
        let r = report(&[
            (OURS, 0.01, 0.30, 5.0, 2.0),
            ("ipa", 0.04, 0.29, 4.0, 20.0),
            ("infadapter", 0.015, 0.31, 6.0, 5.0),
            ("ms+", 0.03, 0.20, 7.0, 5.0),
        ]);
        let [slo_ipa, slo_infadapter, reconfig, accuracy, cost] = targets(&r);
        assert_eq!(slo_ipa.text, "0.25×");
        assert_eq!(slo_ipa.holds, Some(true));
        assert_eq!(slo_infadapter.text, "0.67×");
        assert_eq!(slo_infadapter.holds, Some(false));
        assert_eq!(reconfig.holds, Some(true));
        // infadapter has the best on-time accuracy of the adaptive baselines.
        assert_eq!(accuracy.text, "−0.0100 vs infadapter");
        assert_eq!(accuracy.holds, Some(false));
        assert_eq!(cost.text, "−16.7 %");
        assert_eq!(cost.holds, Some(true));
    }

    #[test]
    fn missing_policies_and_zero_baselines_are_not_counted_as_failures() {
        let r = report(&[(OURS, 0.0, 0.30, 5.0, 2.0), ("ipa", 0.0, 0.29, 4.0, 20.0)]);
        let checks = targets(&r);
        assert_eq!(checks[0].text, "both 0");
        assert_eq!(checks[0].holds, Some(true));
        assert_eq!(checks[1].holds, None, "no infadapter run");
        assert_eq!(checks[4].holds, None);
        let table = render_targets(&[run(r)]);
        assert!(table.contains("3 of 3 checks hold"), "{table}");
    }

    #[test]
    fn run_tables_show_spread_labels_and_paired_differences() {
        let r = report(&[
            (OURS, 0.0123, 0.30, 5.0, 2.0),
            ("static-max", 0.0, 0.35, 9.0, 0.0),
        ]);
        let text = render_run(&run(r));
        assert!(text.contains("| infadapt | 1.23 ± 10.00 % |"), "{text}");
        assert!(text.contains("| static-max (oracle) |"), "{text}");
        assert!(text.contains("**−0.0120 [−0.0200, −0.0040]**"), "{text}");
        assert!(text.contains("seeds 1–5"), "{text}");
        // One header line, one separator, two policies in the first table.
        let first_table = text.split("\nPaired").next().unwrap_or_default();
        assert_eq!(
            first_table.lines().filter(|l| l.starts_with('|')).count(),
            4
        );
    }

    #[test]
    fn non_finite_numbers_print_as_a_dash() {
        assert_eq!(number(f64::NAN, Unit::Percent), "—");
        assert_eq!(signed(f64::INFINITY, Unit::Decimals(2)), "—");
        assert_eq!(signed(-0.5, Unit::Decimals(2)), "−0.50");
    }

    #[test]
    fn the_frontier_names_the_cheapest_covering_weight_and_judges_the_default() {
        let main = report(&[
            (OURS, 0.01, 0.70, 6.0, 5.0),
            ("ipa", 0.05, 0.69, 5.0, 40.0),
            ("infadapter", 0.03, 0.72, 7.0, 9.0),
        ]);
        let mut result = run(main);
        result.grid = vec![
            (2.0, report(&[(OURS, 0.01, 0.70, 4.5, 5.0)])),
            (0.5, report(&[(OURS, 0.01, 0.73, 6.9, 5.0)])),
        ];
        let points = frontier_points(&result);
        let weights: Vec<f64> = points.iter().map(|p| p.cost_weight).collect();
        assert_eq!(weights, [0.5, 1.0, 2.0]);
        assert_eq!(covering(&points, &result.report, "ipa").text, "X = 2");
        assert_eq!(
            covering(&points, &result.report, "infadapter").text,
            "X = 0.5"
        );
        // X = 2 is cheaper at the same on-time accuracy: the default is off the frontier.
        let default = default_on_frontier(&points);
        assert_eq!(default.holds, Some(false));
        assert!(default.text.contains("X = 2"), "{}", default.text);
        let text = render_frontier(&[result]);
        assert!(
            text.contains("| w | 0.5 | 1.00 % | 0.7300 | 6.90 | 5.0 |"),
            "{text}"
        );
    }
}
