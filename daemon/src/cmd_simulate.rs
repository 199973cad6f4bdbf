//! `infadaptd simulate`: runs this project's policy and the policies it is compared with
//! against the serving simulator on one workload, and prints their SLO violations, latency,
//! accuracy, cost, reconfigurations and reversals (a table, or one JSON object), optionally
//! with one SVG plot per policy.
//!
//! The workload is a request-rate trace slice (`--trace`, `--start`, `--end`, `--scale`) or
//! the scenario's generated diurnal workload with bursts. With no `--config` the scenario
//! embedded in the binary runs, so the command works on a fresh machine without data files.

pub mod plot;
pub mod scenario_file;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use infadapt_eval::{NAMES, PolicyReport, evaluate};
use infadapt_sim::{parse_rps_lines, slice, synthetic_diurnal};
use serde_json::json;

use crate::exit;
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
    /// Write one SVG plot per policy into this directory.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
}

/// The workload to replay and where it comes from.
struct Workload {
    rates: Vec<f64>,
    warmup_s: usize,
    source: String,
}

/// Runs the command and returns the exit code: 0 done, 64 bad input.
pub fn run(args: &SimulateArgs) -> anyhow::Result<u8> {
    let loaded = match &args.config {
        Some(path) => load_scenario(path),
        None => embedded(),
    };
    let mut file = match loaded {
        Ok(file) => file,
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            eprintln!(
                "error: {} problem(s) in {}",
                diagnostics.items.len(),
                diagnostics.file
            );
            return Ok(exit::USAGE);
        }
    };
    let names: Vec<&str> = if args.policy == "all" {
        NAMES.to_vec()
    } else if let Some(name) = NAMES.iter().find(|n| **n == args.policy) {
        vec![*name]
    } else {
        eprintln!(
            "error: unknown policy `{}` (known: all, {})",
            args.policy,
            NAMES.join(", ")
        );
        return Ok(exit::USAGE);
    };
    if let Some(seed) = args.seed {
        file.scenario.sim.seed = seed;
    }
    let workload = match workload(args, &file) {
        Ok(w) => w,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(exit::USAGE);
        }
    };
    file.scenario.warmup_s = workload.warmup_s;
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }

    let measured = workload.rates.len() - workload.warmup_s;
    let show_progress = !args.json && measured * names.len() >= 3600;
    let mut reports = Vec::new();
    let mut skipped = Vec::new();
    let started = Instant::now();
    for name in &names {
        let bar = show_progress.then(|| {
            let bar = ProgressBar::new(measured as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>11} [{bar:40}] {pos}/{len} s ({eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix((*name).to_owned());
            bar
        });
        let mut tick = |done: u64, _total: u64| {
            if let Some(bar) = &bar {
                bar.set_position(done);
            }
        };
        let progress: Option<infadapt_eval::Progress<'_>> =
            if bar.is_some() { Some(&mut tick) } else { None };
        let outcome = evaluate(
            name,
            &file.scenario,
            &workload.rates,
            args.plot.is_some(),
            progress,
        );
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        match outcome {
            Ok(report) => {
                if let Some(dir) = &args.plot {
                    let stem = name.replace('+', "-plus");
                    let path = dir.join(format!("{stem}.svg"));
                    plot::write_svg(&path, &report, &file.scenario.problem.pipeline)?;
                    let path = dir.join(format!("{stem}.json"));
                    std::fs::write(&path, serde_json::to_vec(&report.timeline)?)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                }
                reports.push(report);
            }
            Err(error) if args.policy == "all" => {
                eprintln!("warning: {error}; skipped");
                skipped.push(json!({ "policy": name, "reason": error.to_string() }));
            }
            Err(error) => anyhow::bail!("{error}"),
        }
    }
    let wall_s = started.elapsed().as_secs_f64();

    let stats = infadapt_eval::WorkloadStats::of(&workload.rates[workload.warmup_s..]);
    if args.json {
        let policies: Vec<serde_json::Value> = reports.iter().map(report_json).collect();
        let value = json!({
            "scenario": file.scenario.name,
            "config": args.config.as_ref().map_or_else(|| EMBEDDED_NAME.to_owned(), |p| p.display().to_string()),
            "workload": {
                "source": workload.source,
                "seconds": measured,
                "warmup_s": workload.warmup_s,
                "mean_rps": stats.mean_rps,
                "peak_rps": stats.peak_rps,
            },
            "seed": file.scenario.sim.seed,
            "slo_ms": file.scenario.problem.pipeline.slo_ms,
            "policies": policies,
            "skipped": skipped,
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
            file.scenario.sim.seed
        );
        crate::outln!();
        print_table(&reports);
        crate::outln!();
        crate::outln!("ran in {wall_s:.1} s");
        if let Some(dir) = &args.plot {
            crate::outln!("plots: {}", dir.display());
        }
    }
    Ok(exit::OK)
}

/// The workload from the command line or the scenario, with its warm-up prefix.
fn workload(args: &SimulateArgs, file: &ScenarioFile) -> Result<Workload, String> {
    let warmup = args.warmup.unwrap_or(file.scenario.warmup_s);
    match &args.trace {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read trace {}: {e}", path.display()))?;
            let all = parse_rps_lines(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let start = args.start.unwrap_or(0);
            let end = args.end.unwrap_or(all.len());
            let scale = args.scale.unwrap_or(1.0);
            if start >= end {
                return Err(format!("--start ({start}) must be below --end ({end})"));
            }
            let from = start.saturating_sub(warmup);
            let rates =
                slice(&all, from, end, scale).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(Workload {
                rates,
                warmup_s: start - from,
                source: format!("{} lines {start}..{end} × {scale}", path.display()),
            })
        }
        None => {
            let seconds = args.seconds.unwrap_or(file.seconds);
            if seconds == 0 {
                return Err("--seconds must be at least 1".to_owned());
            }
            let seed = args.seed.unwrap_or(file.scenario.sim.seed);
            let mut params = file.diurnal.clone();
            // One simulated day over the measured part, whatever the warm-up.
            let warm = warmup;
            params.day_s = params.day_s.or(Some(seconds as f64));
            params.peak_at = (params.peak_at + warm as f64 / params.day_s.unwrap_or(1.0)).fract();
            let rates =
                synthetic_diurnal(warm + seconds, seed, &params).map_err(|e| e.to_string())?;
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
        "{:<11} {:>9} {:>9} {:>9} {:>11} {:>9} {:>9} {:>10} {:>9}",
        "policy",
        "SLO viol",
        "p99 ms",
        "accuracy",
        "core-hours",
        "reconfig",
        "reversal",
        "requests",
        "dropped"
    );
    for r in reports {
        crate::outln!(
            "{:<11} {:>8.3}% {:>9.0} {:>9.4} {:>11.2} {:>9} {:>9} {:>10} {:>9}",
            r.policy,
            r.slo_violation_rate * 100.0,
            r.p99_latency_ms,
            r.mean_accuracy,
            r.cost_core_hours,
            r.reconfigurations,
            r.reversals,
            r.requests,
            r.dropped
        );
    }
}
