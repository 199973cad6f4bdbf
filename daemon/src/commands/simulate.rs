//! `infadaptd simulate`: runs this project's policy and the policies it is compared with
//! against the serving simulator on one workload, and prints their SLO violations, latency,
//! on-time accuracy, accuracy, cost, reconfigurations and reversals (a table, or one JSON
//! object), optionally with one SVG plot per policy.
//!
//! The workload is a request-rate trace slice (`--trace`, `--start`, `--end`, `--scale`) or
//! the scenario's generated diurnal workload with bursts. With no `--config` the scenario
//! embedded in the binary runs, so the command works on a fresh machine without data files.
//!
//! With `--seeds` every policy runs on every seed (the simulator's arrivals and service
//! times, and a generated workload, follow the seed), and the output adds per-policy means
//! and standard deviations over seeds and paired differences against `infadapt`
//! ([`infadapt_eval::paired`]).

pub mod plot;
pub mod scenario_file;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use infadapt_eval::policies::IPA_LSTM;
use infadapt_eval::{
    Metric, NAMES, PolicyReport, PolicySummary, Scenario, SeedRun, evaluate, summarize,
};
use infadapt_forecast::lstm::LstmModel;
use infadapt_sim::{SimError, parse_rps_lines, slice, synthetic_diurnal};
use serde_json::json;

use crate::commands::stderr::{self, CommandFailure};
use scenario_file::{EMBEDDED_NAME, ScenarioFile, embedded, load_scenario};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Scenario file (TOML): pipeline, catalog, weights, limits, [simulation], [workload].
    /// Without it the embedded three-stage video scenario runs.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Request-rate trace, one requests-per-second value per line.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// First trace line replayed (0-based; the line index is the second).
    #[arg(long, value_name = "LINE", requires = "trace")]
    pub start: Option<usize>,
    /// Line after the last one replayed (exclusive).
    #[arg(long, value_name = "LINE", requires = "trace")]
    pub end: Option<usize>,
    /// Multiplies every trace rate (IPA replays the trace at 1/8: 0.125).
    #[arg(long, value_name = "X", requires = "trace")]
    pub scale: Option<f64>,
    /// Policy to run, or `all`.
    #[arg(long, value_name = "NAME", default_value = "all")]
    pub policy: String,
    /// Seed of the simulator and of the generated workload.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Run every policy on each of these seeds (an inclusive range `A..B` or a list
    /// `A,B,C`) and add mean ± standard deviation over seeds and paired differences against
    /// infadapt with 95 % confidence intervals.
    #[arg(long, value_name = "A..B|A,B,…", conflicts_with = "seed", value_parser = parse_seeds)]
    pub seeds: Option<Seeds>,
    /// Measured seconds of the generated workload (instead of the scenario's).
    #[arg(long, value_name = "N")]
    pub seconds: Option<usize>,
    /// Warm-up seconds before the measured part (instead of the scenario's); with a trace
    /// they are the lines before --start.
    #[arg(long, value_name = "N")]
    pub warmup: Option<usize>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write one SVG plot per policy into this directory (with --seeds: of the first seed).
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Trained LSTM model (`infadaptd forecast train --bucket 10 --window 12 --horizon 20`)
    /// for the `ipa-lstm` policy, IPA's predictor with its LSTM; with it, `all` includes
    /// `ipa-lstm`.
    #[arg(long, value_name = "FILE")]
    pub lstm_model: Option<PathBuf>,
    /// Multiplies the scenario's cost weights when `infadapt` plans (the baselines and the
    /// scoring keep the scenario's): one point of the accuracy–cost frontier.
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub cost_weight: f64,
}

/// Most seeds one `--seeds` may name.
const MAX_SEEDS: usize = 1000;

/// The seeds of `--seeds`, in the order given, each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeds(pub Vec<u64>);

/// What is wrong with a `--seeds` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedsError {
    #[error("no seed given (expected A..B or A,B,C)")]
    Empty,
    #[error("`{0}` is not a seed (a whole number ≥ 0)")]
    NotASeed(String),
    #[error("the range {from}..{to} is empty (the first seed must not exceed the last)")]
    EmptyRange { from: u64, to: u64 },
    #[error("at most {MAX_SEEDS} seeds")]
    TooMany,
    #[error("seed {0} is listed twice")]
    Twice(u64),
}

/// Parses `--seeds`: an inclusive range `A..B` (`A ≤ B`) or a comma list of distinct seeds.
///
/// # Errors
///
/// [`SeedsError`] says what is wrong with `text`.
pub fn parse_seeds(text: &str) -> Result<Seeds, SeedsError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(SeedsError::Empty);
    }
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| SeedsError::NotASeed(s.trim().to_owned()))
    };
    let seeds: Vec<u64> = if let Some((from, to)) = text.split_once("..") {
        let to = to.strip_prefix('=').unwrap_or(to);
        let (from, to) = (number(from)?, number(to)?);
        if from > to {
            return Err(SeedsError::EmptyRange { from, to });
        }
        if to - from >= MAX_SEEDS as u64 {
            return Err(SeedsError::TooMany);
        }
        (from..=to).collect()
    } else {
        let seeds = text.split(',').map(number).collect::<Result<Vec<_>, _>>()?;
        if let Some(twice) = seeds
            .iter()
            .enumerate()
            .find_map(|(i, s)| seeds[..i].contains(s).then_some(*s))
        {
            return Err(SeedsError::Twice(twice));
        }
        if seeds.len() > MAX_SEEDS {
            return Err(SeedsError::TooMany);
        }
        seeds
    };
    Ok(Seeds(seeds))
}

/// The workload to replay and where it comes from.
struct Workload {
    rates: Vec<f64>,
    warmup_s: usize,
    source: String,
}

impl Workload {
    fn stats(&self) -> infadapt_eval::WorkloadStats {
        infadapt_eval::WorkloadStats::of(&self.rates[self.warmup_s..])
    }

    fn measured(&self) -> usize {
        self.rates.len() - self.warmup_s
    }
}

/// One seed to run: its scenario (seeded) and workload.
struct SeedTask {
    seed: u64,
    scenario: Scenario,
    workload: Workload,
}

/// What the policies of one seed did.
struct SeedOutcome {
    reports: Vec<PolicyReport>,
    skipped: Vec<serde_json::Value>,
}

/// How a run shows progress on stderr (indicatif draws nothing when stderr is no terminal).
enum Bars<'a> {
    Quiet,
    /// One bar per policy, as a single seed runs.
    PerPolicy,
    /// One bar for the seed, over every policy.
    Seed(&'a ProgressBar),
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>11} [{bar:40}] {pos}/{len} s ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Runs every policy of `names` on one seed; plots into `plot` when given. A policy that
/// fails is skipped with a warning when every policy runs (`all`), else the run fails.
fn run_seed(
    task: &SeedTask,
    names: &[&str],
    all: bool,
    plot: Option<&Path>,
    bars: &Bars<'_>,
) -> anyhow::Result<SeedOutcome> {
    let measured = task.workload.measured() as u64;
    let mut reports = Vec::new();
    let mut skipped = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let own_bar = matches!(bars, Bars::PerPolicy).then(|| {
            let bar = ProgressBar::new(measured);
            bar.set_style(bar_style());
            bar.set_prefix((*name).to_owned());
            bar
        });
        let offset = index as u64 * measured;
        let mut tick = |done: u64, _total: u64| match (bars, &own_bar) {
            (_, Some(bar)) => bar.set_position(done),
            (Bars::Seed(bar), None) => bar.set_position(offset + done),
            _ => {}
        };
        let progress: Option<infadapt_eval::Progress<'_>> = match bars {
            Bars::Quiet => None,
            _ => Some(&mut tick),
        };
        let outcome = evaluate(
            name,
            &task.scenario,
            &task.workload.rates,
            plot.is_some(),
            progress,
        );
        if let Some(bar) = &own_bar {
            bar.finish_and_clear();
        }
        match outcome {
            Ok(report) => {
                if let Some(dir) = plot {
                    let stem = name.replace('+', "-plus");
                    let path = dir.join(format!("{stem}.svg"));
                    plot::write_svg(&path, &report, &task.scenario.problem.pipeline)?;
                    let path = dir.join(format!("{stem}.json"));
                    std::fs::write(&path, serde_json::to_vec(&report.timeline)?)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                }
                reports.push(report);
            }
            Err(error) if all => {
                stderr::warning(format_args!("seed {}: {error}; skipped", task.seed));
                skipped.push(json!({ "policy": name, "reason": error.to_string() }));
            }
            Err(error) => anyhow::bail!("{error}"),
        }
    }
    Ok(SeedOutcome { reports, skipped })
}

/// Runs every seed, two at a time where the machine has two cores; outcomes in seed order.
/// With progress, one line per seed on stderr.
fn run_seeds(
    tasks: &[SeedTask],
    names: &[&str],
    all: bool,
    plot: Option<&Path>,
    show_progress: bool,
) -> anyhow::Result<Vec<SeedOutcome>> {
    let lines = MultiProgress::new();
    let bars: Vec<Option<ProgressBar>> = tasks
        .iter()
        .map(|task| {
            show_progress.then(|| {
                let bar = lines.add(ProgressBar::new(
                    task.workload.measured() as u64 * names.len() as u64,
                ));
                bar.set_style(bar_style());
                bar.set_prefix(format!("seed {}", task.seed));
                bar
            })
        })
        .collect();
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<Option<anyhow::Result<SeedOutcome>>>> =
        Mutex::new(tasks.iter().map(|_| None).collect());
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 2)
        .min(tasks.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(task) = tasks.get(index) else {
                        break;
                    };
                    let bar = bars[index].as_ref();
                    let shown = bar.map_or(Bars::Quiet, Bars::Seed);
                    // Only the first seed is plotted.
                    let plot = if index == 0 { plot } else { None };
                    let outcome = run_seed(task, names, all, plot, &shown);
                    if let Some(bar) = bar {
                        bar.finish();
                    }
                    let failed = outcome.is_err();
                    if let Ok(mut slots) = outcomes.lock() {
                        slots[index] = Some(outcome);
                    }
                    if failed {
                        // The others stop at their next seed.
                        next.store(tasks.len(), Ordering::Relaxed);
                        break;
                    }
                }
            });
        }
    });
    let _ = lines.clear();
    let slots = outcomes
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a seed's run panicked"))?;
    let mut done = Vec::with_capacity(tasks.len());
    for (task, slot) in tasks.iter().zip(slots) {
        match slot {
            Some(outcome) => done.push(outcome?),
            None => anyhow::bail!("seed {} did not run", task.seed),
        }
    }
    Ok(done)
}

/// Runs the command; bad input fails with exit 64.
pub fn run(args: &SimulateArgs) -> anyhow::Result<()> {
    let loaded = match &args.config {
        Some(path) => load_scenario(path),
        None => embedded(),
    };
    let mut file = match loaded {
        Ok(file) => file,
        Err(diagnostics) => anyhow::bail!(
            CommandFailure::usage()
                .diagnostics(&diagnostics)
                .problem_count(&diagnostics)
        ),
    };
    if let Some(path) = &args.lstm_model {
        let model = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| LstmModel::from_json(&text).map_err(|e| e.to_string()));
        match model {
            Ok(model) => file.scenario.loop_settings.forecast.lstm = Some(model),
            Err(error) => anyhow::bail!(
                CommandFailure::usage()
                    .error(format_args!("--lstm-model {}: {error}", path.display()))
            ),
        }
    }
    if !(args.cost_weight.is_finite() && args.cost_weight > 0.0 && args.cost_weight <= 1e6) {
        anyhow::bail!(CommandFailure::usage().error(format_args!(
            "--cost-weight must be a positive number up to 1e6, got {}",
            args.cost_weight
        )));
    }
    file.scenario.loop_settings.cost_weight = args.cost_weight;
    let mut known: Vec<&str> = NAMES.to_vec();
    known.push(IPA_LSTM);
    let names: Vec<&str> = if args.policy == "all" {
        let mut all = NAMES.to_vec();
        if args.lstm_model.is_some() {
            all.push(IPA_LSTM);
        }
        all
    } else if let Some(name) = known.iter().find(|n| **n == args.policy) {
        vec![*name]
    } else {
        anyhow::bail!(CommandFailure::usage().error(format_args!(
            "unknown policy `{}` (known: all, {})",
            args.policy,
            known.join(", ")
        )));
    };
    if names.contains(&IPA_LSTM) && args.lstm_model.is_none() {
        anyhow::bail!(CommandFailure::usage().error(format_args!(
            "policy `{IPA_LSTM}` needs a trained model: --lstm-model FILE \
             (`infadaptd forecast train --bucket 10 --window 12 --horizon 20 ...`)"
        )));
    }
    if let Some(seed) = args.seed {
        file.scenario.sim.seed = seed;
    }
    let seeds = match &args.seeds {
        Some(Seeds(seeds)) => seeds.clone(),
        None => vec![file.scenario.sim.seed],
    };
    let mut tasks = Vec::with_capacity(seeds.len());
    for &seed in &seeds {
        let workload = match workload(args, &file, seed) {
            Ok(w) => w,
            Err(message) => anyhow::bail!(CommandFailure::usage().error(message)),
        };
        let mut scenario = file.scenario.clone();
        scenario.sim.seed = seed;
        scenario.warmup_s = workload.warmup_s;
        tasks.push(SeedTask {
            seed,
            scenario,
            workload,
        });
    }
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let all = args.policy == "all";
    let measured = tasks[0].workload.measured();
    let show_progress = !args.json && measured * names.len() * tasks.len() >= 3600;
    let started = Instant::now();
    if args.seeds.is_none() {
        let task = &tasks[0];
        let bars = if show_progress {
            Bars::PerPolicy
        } else {
            Bars::Quiet
        };
        let outcome = run_seed(task, &names, all, args.plot.as_deref(), &bars)?;
        print_single(args, &file, task, &outcome, started.elapsed().as_secs_f64());
        return Ok(());
    }
    let outcomes = run_seeds(&tasks, &names, all, args.plot.as_deref(), show_progress)?;
    let wall_s = started.elapsed().as_secs_f64();
    let runs: Vec<SeedRun> = tasks
        .iter()
        .zip(&outcomes)
        .map(|(task, outcome)| SeedRun {
            seed: task.seed,
            policies: outcome.reports.clone(),
        })
        .collect();
    let summary = summarize(&runs);
    if args.json {
        print_seeds_json(args, &file, &tasks, &outcomes, &summary, wall_s)?;
    } else {
        print_seeds_tables(&file, &tasks, &summary, wall_s);
        if let Some(dir) = &args.plot {
            crate::outln!("plots (seed {}): {}", tasks[0].seed, dir.display());
        }
    }
    Ok(())
}

fn config_name(args: &SimulateArgs) -> String {
    args.config
        .as_ref()
        .map_or_else(|| EMBEDDED_NAME.to_owned(), |p| p.display().to_string())
}

/// One seed's output: the table or the JSON object of a plain run.
fn print_single(
    args: &SimulateArgs,
    file: &ScenarioFile,
    task: &SeedTask,
    outcome: &SeedOutcome,
    wall_s: f64,
) {
    let workload = &task.workload;
    let stats = workload.stats();
    let measured = workload.measured();
    if args.json {
        let policies: Vec<serde_json::Value> = outcome.reports.iter().map(report_json).collect();
        let value = json!({
            "scenario": file.scenario.name,
            "config": config_name(args),
            "cost_weight": args.cost_weight,
            "workload": {
                "source": workload.source,
                "seconds": measured,
                "warmup_s": workload.warmup_s,
                "mean_rps": stats.mean_rps,
                "peak_rps": stats.peak_rps,
            },
            "seed": task.seed,
            "slo_ms": file.scenario.problem.pipeline.slo_ms,
            "policies": policies,
            "skipped": outcome.skipped,
            "wall_s": wall_s,
        });
        crate::outln!("{value}");
    } else {
        crate::outln!(
            "scenario {} ({} stage(s), SLO {} ms); workload {}: {} s measured after {} s warm-up, mean {:.1} rps, peak {:.1} rps; seed {}",
            file.scenario.name,
            file.scenario.problem.pipeline.stages.len(),
            file.scenario.problem.pipeline.slo_ms,
            workload.source,
            measured,
            workload.warmup_s,
            stats.mean_rps,
            stats.peak_rps,
            task.seed
        );
        crate::outln!();
        print_table(&outcome.reports);
        crate::outln!();
        crate::outln!("ran in {wall_s:.1} s");
        if let Some(dir) = &args.plot {
            crate::outln!("plots: {}", dir.display());
        }
    }
}

/// The JSON object of a run over several seeds.
fn print_seeds_json(
    args: &SimulateArgs,
    file: &ScenarioFile,
    tasks: &[SeedTask],
    outcomes: &[SeedOutcome],
    summary: &[PolicySummary],
    wall_s: f64,
) -> anyhow::Result<()> {
    let first = &tasks[0].workload;
    let stats: Vec<_> = tasks.iter().map(|t| t.workload.stats()).collect();
    let runs: Vec<serde_json::Value> = tasks
        .iter()
        .zip(outcomes)
        .zip(&stats)
        .map(|((task, outcome), stats)| {
            json!({
                "seed": task.seed,
                "workload": { "mean_rps": stats.mean_rps, "peak_rps": stats.peak_rps },
                "policies": outcome.reports.iter().map(report_json).collect::<Vec<_>>(),
                "skipped": outcome.skipped,
            })
        })
        .collect();
    let value = json!({
        "scenario": file.scenario.name,
        "config": config_name(args),
        "cost_weight": args.cost_weight,
        "workload": {
            "source": first.source,
            "seconds": first.measured(),
            "warmup_s": first.warmup_s,
            "mean_rps": stats.iter().map(|s| s.mean_rps).sum::<f64>() / stats.len() as f64,
            "peak_rps": stats.iter().map(|s| s.peak_rps).fold(0.0, f64::max),
        },
        "slo_ms": file.scenario.problem.pipeline.slo_ms,
        "seeds": tasks.iter().map(|t| t.seed).collect::<Vec<_>>(),
        "runs": runs,
        "summary": serde_json::to_value(summary)?,
        "wall_s": wall_s,
    });
    crate::outln!("{value}");
    Ok(())
}

/// The tables of a run over several seeds: mean ± sd per policy, then the paired
/// differences against infadapt.
fn print_seeds_tables(
    file: &ScenarioFile,
    tasks: &[SeedTask],
    summary: &[PolicySummary],
    wall_s: f64,
) {
    let first = &tasks[0].workload;
    let seeds: Vec<String> = tasks.iter().map(|t| t.seed.to_string()).collect();
    crate::outln!(
        "scenario {} ({} stage(s), SLO {} ms); workload {}: {} s measured after {} s warm-up; seeds {} ({} runs per policy)",
        file.scenario.name,
        file.scenario.problem.pipeline.stages.len(),
        file.scenario.problem.pipeline.slo_ms,
        first.source,
        first.measured(),
        first.warmup_s,
        seeds.join(","),
        tasks.len()
    );
    crate::outln!();
    crate::outln!("mean ± sample standard deviation over seeds");
    crate::outln!(
        "{:<20} {:>17} {:>17} {:>17} {:>15} {:>13} {:>13} {:>13} {:>15}",
        "policy",
        "SLO viol %",
        "on-time acc",
        "acc (served)",
        "core-hours",
        "reconfig",
        "reversal",
        "p99 ms",
        "dropped"
    );
    for s in summary {
        let cell = |metric: Metric, scale: f64, digits: usize| {
            let spread = s
                .metrics
                .get(metric.name())
                .copied()
                .unwrap_or(infadapt_eval::Spread { mean: 0.0, sd: 0.0 });
            format!(
                "{:.digits$}±{:.digits$}",
                spread.mean * scale,
                spread.sd * scale
            )
        };
        crate::outln!(
            "{:<20} {:>17} {:>17} {:>17} {:>15} {:>13} {:>13} {:>13} {:>15}",
            display_name(&s.policy, s.oracle),
            cell(Metric::SloViolationRate, 100.0, 3),
            cell(Metric::OnTimeAccuracy, 1.0, 4),
            cell(Metric::MeanAccuracy, 1.0, 4),
            cell(Metric::CostCoreHours, 1.0, 2),
            cell(Metric::Reconfigurations, 1.0, 1),
            cell(Metric::Reversals, 1.0, 1),
            cell(Metric::P99LatencyMs, 1.0, 0),
            cell(Metric::Dropped, 1.0, 0),
        );
    }
    crate::outln!();
    if summary.iter().all(|s| s.paired.is_none()) {
        crate::outln!("(no paired differences: infadapt did not run)");
    } else {
        crate::outln!(
            "paired differences infadapt − policy, seed by seed: mean, 95 % Student-t interval; * = the interval excludes 0 (beyond seed noise)"
        );
        crate::outln!(
            "{:<20} {:<20} {:>12} {:>27} {:>9}",
            "policy",
            "metric",
            "mean diff",
            "95 % interval",
            "ours/theirs"
        );
        for s in summary {
            let Some(paired) = &s.paired else {
                continue;
            };
            for metric in Metric::ALL {
                let Some(d) = paired.get(metric.name()) else {
                    continue;
                };
                let interval = match (d.ci95_low, d.ci95_high) {
                    (Some(low), Some(high)) => format!(
                        "[{}, {}]{}",
                        number(low),
                        number(high),
                        if d.beyond_noise { " *" } else { "  " }
                    ),
                    _ => "(one seed)  ".to_owned(),
                };
                let ratio = d
                    .ratio_of_means
                    .map_or_else(String::new, |r| format!("{r:.2}"));
                crate::outln!(
                    "{:<20} {:<20} {:>12} {:>27} {:>9}",
                    display_name(&s.policy, s.oracle),
                    metric.name(),
                    number(d.mean_diff),
                    interval,
                    ratio
                );
            }
        }
    }
    crate::outln!();
    crate::outln!("ran in {wall_s:.1} s");
}

/// A difference with 4 significant figures, whatever its scale.
fn number(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return format!("{value}");
    }
    let digits = (3 - value.abs().log10().floor() as i32).clamp(0, 8) as usize;
    format!("{value:.digits$}")
}

/// A policy's name in tables: `NAME (oracle)` for an oracle.
fn display_name(policy: &str, oracle: bool) -> String {
    if oracle {
        format!("{policy} (oracle)")
    } else {
        policy.to_owned()
    }
}

/// Why the workload of `--trace` or of the generator cannot be had (a usage error).
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot read trace {}: {source}", path.display())]
    TraceUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The trace does not parse, or the window does not fit it.
    #[error("{}: {source}", path.display())]
    Trace { path: PathBuf, source: SimError },
    #[error("--start ({start}) must be below --end ({end})")]
    StartNotBelowEnd { start: usize, end: usize },
    #[error("--seconds must be at least 1")]
    NoSeconds,
    /// The generator refuses the scenario's workload settings.
    #[error("{0}")]
    Generate(SimError),
}

/// The workload from the command line or the scenario, with its warm-up prefix.
/// A generated workload follows `seed`; a trace does not.
fn workload(
    args: &SimulateArgs,
    file: &ScenarioFile,
    seed: u64,
) -> Result<Workload, WorkloadError> {
    let warmup = args.warmup.unwrap_or(file.scenario.warmup_s);
    match &args.trace {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| WorkloadError::TraceUnreadable {
                    path: path.clone(),
                    source,
                })?;
            let in_trace = |source| WorkloadError::Trace {
                path: path.clone(),
                source,
            };
            let all = parse_rps_lines(&text).map_err(in_trace)?;
            let start = args.start.unwrap_or(0);
            let end = args.end.unwrap_or(all.len());
            let scale = args.scale.unwrap_or(1.0);
            if start >= end {
                return Err(WorkloadError::StartNotBelowEnd { start, end });
            }
            let from = start.saturating_sub(warmup);
            let rates = slice(&all, from, end, scale).map_err(in_trace)?;
            Ok(Workload {
                rates,
                warmup_s: start - from,
                source: format!("{} lines {start}..{end} × {scale}", path.display()),
            })
        }
        None => {
            let seconds = args.seconds.unwrap_or(file.seconds);
            if seconds == 0 {
                return Err(WorkloadError::NoSeconds);
            }
            let mut params = file.diurnal.clone();
            // One simulated day over the measured part, whatever the warm-up.
            let warm = warmup;
            params.day_s = params.day_s.or(Some(seconds as f64));
            params.peak_at = (params.peak_at + warm as f64 / params.day_s.unwrap_or(1.0)).fract();
            let rates = synthetic_diurnal(warm + seconds, seed, &params)
                .map_err(WorkloadError::Generate)?;
            Ok(Workload {
                rates,
                warmup_s: warm,
                source: "generated diurnal with bursts".to_owned(),
            })
        }
    }
}

fn report_json(r: &PolicyReport) -> serde_json::Value {
    json!({
        "policy": r.policy,
        "oracle": r.oracle,
        "on_time_accuracy": r.on_time_accuracy,
        "slo_violation_rate": r.slo_violation_rate,
        "p99_latency_ms": r.p99_latency_ms,
        "p50_latency_ms": r.p50_latency_ms,
        "mean_accuracy": r.mean_accuracy,
        "cost_core_hours": r.cost_core_hours,
        "cost_gpu_gib_hours": r.cost_gpu_gib_hours,
        "reconfigurations": r.reconfigurations,
        "reversals": r.reversals,
        "requests": r.requests,
        "completed": r.completed,
        "dropped": r.dropped,
        "slo_violations": r.slo_violations,
        "variant_switches": r.variant_switches,
        "replicas_started": r.replicas_started,
        "decisions": r.decisions,
        "decision_errors": r.decision_errors,
        "apply_errors": r.apply_errors,
        "seconds": r.seconds,
    })
}

fn print_table(reports: &[PolicyReport]) {
    crate::outln!(
        "{:<20} {:>9} {:>9} {:>11} {:>12} {:>11} {:>9} {:>9} {:>10} {:>9}",
        "policy",
        "SLO viol",
        "p99 ms",
        "on-time acc",
        "acc (served)",
        "core-hours",
        "reconfig",
        "reversal",
        "requests",
        "dropped"
    );
    for r in reports {
        crate::outln!(
            "{:<20} {:>8.3}% {:>9.0} {:>11.4} {:>12.4} {:>11.2} {:>9} {:>9} {:>10} {:>9}",
            display_name(&r.policy, r.oracle),
            r.slo_violation_rate * 100.0,
            r.p99_latency_ms,
            r.on_time_accuracy,
            r.mean_accuracy,
            r.cost_core_hours,
            r.reconfigurations,
            r.reversals,
            r.requests,
            r.dropped
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_as_ranges_and_lists() {
        for (text, seeds) in [
            ("1..5", vec![1, 2, 3, 4, 5]),
            ("1..=3", vec![1, 2, 3]),
            ("7..7", vec![7]),
            ("1,3,7", vec![1, 3, 7]),
            (" 9 , 2 ", vec![9, 2]),
            ("4", vec![4]),
        ] {
            assert_eq!(parse_seeds(text), Ok(Seeds(seeds)), "{text:?}");
        }
        for text in [
            "5..1", "x", "", " ", "1,,2", "1..", "..3", "1,1", "0..5000", "-1..2",
        ] {
            assert!(parse_seeds(text).is_err(), "{text:?}");
        }
    }
}
