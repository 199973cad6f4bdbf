//! `infadaptd plan`: solve one planning problem file and print the chosen configuration.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use infadapt_planner::{PlanError, Solution};
use serde_json::json;

use crate::commands::stderr::CommandFailure;
use crate::problem_file::load_problem;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Problem file (TOML): pipeline, catalog, load, current plan, weights, limits.
    #[arg(long, value_name = "FILE")]
    pub problem: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the model in CPLEX LP format, so an outside solver can check the optimum.
    #[arg(long, value_name = "OUT.lp")]
    pub export_lp: Option<PathBuf>,
    /// Plan for this load instead of the file's `load_rps` (requests per second).
    #[arg(long, value_name = "RPS")]
    pub load: Option<f64>,
}

/// Runs the command: an infeasible problem fails with exit 2, bad input with 64.
pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    let mut problem = match load_problem(&args.problem) {
        Ok(p) => p,
        Err(diagnostics) => bail!(
            CommandFailure::usage()
                .diagnostics(&diagnostics)
                .problem_count(&diagnostics)
        ),
    };
    if let Some(load) = args.load {
        if !(load.is_finite() && load >= 0.0) {
            bail!(CommandFailure::usage().error(format_args!(
                "--load must be a finite number >= 0, got {load}"
            )));
        }
        problem.load_rps = load;
    }
    if let Some(out) = &args.export_lp {
        match infadapt_planner::lp_export::export_lp(&problem) {
            Ok(text) => {
                std::fs::write(out, text)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
            }
            Err(PlanError::InvalidProblem(message)) => {
                bail!(CommandFailure::usage().error_in(args.problem.display(), message))
            }
            Err(e) => anyhow::bail!("cannot export the model: {e}"),
        }
    }
    let started = Instant::now();
    let outcome = infadapt_planner::solve(&problem);
    let solve_ms = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(solution) => {
            if args.json {
                crate::outln!(
                    "{}",
                    solution_json(
                        &solution,
                        solve_ms,
                        problem.load_rps,
                        problem.pipeline.slo_ms
                    )
                );
            } else {
                print_table(
                    &solution,
                    solve_ms,
                    problem.load_rps,
                    problem.pipeline.slo_ms,
                );
            }
            Ok(())
        }
        Err(PlanError::Infeasible(why)) => {
            if args.json {
                let value = json!({
                    "feasible": false,
                    "objective": null,
                    "solve_ms": solve_ms,
                    "stages": [],
                    "binding": why.binding,
                    "message": why.message,
                    "max_sustainable_load_rps": why.max_sustainable_load_rps,
                    "min_latency_ms": why.min_latency_ms,
                });
                crate::outln!("{value}");
            }
            let mut failure = CommandFailure::infeasible().error_in(
                args.problem.display(),
                format_args!("no feasible plan: {}", why.message),
            );
            if let Some(load) = why.max_sustainable_load_rps {
                failure = failure.hint(format_args!(
                    "closest feasible: the highest sustainable load is {load:.1} rps"
                ));
            }
            if let Some(latency) = why.min_latency_ms {
                failure = failure.hint(format_args!(
                    "closest feasible: the lowest reachable latency is {latency:.1} ms"
                ));
            }
            bail!(failure)
        }
        Err(PlanError::InvalidProblem(message)) => {
            bail!(CommandFailure::usage().error_in(args.problem.display(), message))
        }
        Err(e) => anyhow::bail!("{}: {e}", args.problem.display()),
    }
}

/// The `--json` answer: one object with the plan, the objective and its terms.
pub fn solution_json(
    solution: &Solution,
    solve_ms: f64,
    load_rps: f64,
    slo_ms: f64,
) -> serde_json::Value {
    let stages: Vec<_> = solution
        .plan
        .stages
        .iter()
        .zip(&solution.stages)
        .map(|(plan, report)| {
            let main = plan
                .assignments
                .iter()
                .max_by(|a, b| a.share.total_cmp(&b.share))
                .cloned()
                .unwrap_or_else(|| infadapt_model::Assignment {
                    variant: String::new(),
                    batch: 0,
                    cores: 0,
                    replicas: 0,
                    share: 0.0,
                });
            json!({
                "stage": plan.stage,
                "variant": main.variant,
                "batch": main.batch,
                "cores": main.cores,
                "replicas": main.replicas,
                "share": main.share,
                "assignments": plan.assignments,
                "latency_ms": report.latency_ms,
                "batch_fill_ms": report.batch_fill_ms,
                "service_ms": report.service_ms,
                "queueing_ms": report.queueing_ms,
                "utilisation": report.utilisation,
                "profile_sources": report.sources,
            })
        })
        .collect();
    json!({
        "feasible": true,
        "objective": solution.objective,
        "solve_ms": solve_ms,
        "solver": solution.solver,
        "load_rps": load_rps,
        "slo_ms": slo_ms,
        "latency_ms": solution.latency_ms,
        "terms": solution.terms,
        "binding": solution.binding,
        "warnings": solution.warnings,
        "stages": stages,
    })
}

fn print_table(solution: &Solution, solve_ms: f64, load_rps: f64, slo_ms: f64) {
    crate::outln!(
        "plan for {load_rps:.1} rps, SLO {slo_ms:.0} ms: objective {:.6} ({} in {solve_ms:.3} ms)",
        solution.objective,
        solution.solver
    );
    crate::outln!(
        "{:<16} {:<24} {:>5} {:>5} {:>8} {:>6} {:>10} {:>6}",
        "stage",
        "variant",
        "batch",
        "cores",
        "replicas",
        "share",
        "latency_ms",
        "util"
    );
    for (plan, report) in solution.plan.stages.iter().zip(&solution.stages) {
        for (i, a) in plan.assignments.iter().enumerate() {
            let (latency, util) = if i == 0 {
                (
                    format!("{:.1}", report.latency_ms),
                    format!("{:.2}", report.utilisation),
                )
            } else {
                (String::new(), String::new())
            };
            crate::outln!(
                "{:<16} {:<24} {:>5} {:>5} {:>8} {:>6.3} {:>10} {:>6}",
                if i == 0 { plan.stage.as_str() } else { "" },
                a.variant,
                a.batch,
                a.cores,
                a.replicas,
                a.share,
                latency,
                util
            );
        }
    }
    let t = &solution.terms;
    crate::outln!(
        "end-to-end latency {:.1} ms; accuracy {:.4}; cores {:.0}; gpu {:.2} GiB; cold start {:.1} s",
        solution.latency_ms,
        t.accuracy,
        t.cores,
        t.gpu_gib,
        t.cold_start_s
    );
    if !solution.binding.is_empty() {
        let names: Vec<String> = solution.binding.iter().map(ToString::to_string).collect();
        crate::outln!("binding: {}", names.join(", "));
    }
    for w in &solution.warnings {
        crate::outln!("warning: {w}");
    }
}
