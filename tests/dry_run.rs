//! A dry run decides as a live run would from the same observations: the daemon's pipeline
//! task runs live on a backend that scripts the load and reports what was applied, recording
//! every observation; then in a dry run (nothing applied) on a backend that replays those
//! observations. The decisions are the same, tick for tick, switches and damping included,
//! although the dry run applied none of them.

use infadaptd::config::{PipelineConfig, parse_config};
use infadaptd::problem_file::read_catalog;
use infadaptd::service::status::DecisionRecord;

use crate::one_loop::run_task;
use crate::plugins::{TempDir, host_for, install_rust_plugin};
use crate::support::{repo_root, scratch};

const TICKS: u64 = 40;

/// A load that rises from 10 to 140 rps and falls again, one rate per observation.
fn load() -> Vec<f64> {
    (0..=TICKS + 2)
        .map(|k| {
            let phase = k as f64 / TICKS as f64 * std::f64::consts::PI;
            10.0 + 130.0 * phase.sin().max(0.0)
        })
        .collect()
}

/// The pipeline of these tests, up to its `[pipeline.backend]` table.
pub(crate) const PIPELINE_WITHOUT_BACKEND: &str = r#"
[[pipeline]]
name = "resnet"
catalog = "catalogs/resnet-synthetic.toml"
slo_ms = 750
initial_load_rps = 10
[[pipeline.stage]]
name = "classify"
variants = ["resnet18", "resnet50", "resnet101"]
core_options = [1, 2, 4]
max_replicas = 12
[pipeline.limits]
total_cores = 24
[pipeline.solver]
time_limit_ms = 60000
[pipeline.forecast]
model = "max"
smoothing_s = 1
[pipeline.damping]
stabilization_window_s = 5
min_dwell_s = 5
"#;

fn pipeline(plugins: &std::path::Path, backend: &str) -> PipelineConfig {
    let text = format!(
        "[daemon]\nperiod_s = 1\nplugin_dirs = [\"{}\"]\n{PIPELINE_WITHOUT_BACKEND}\
         [pipeline.backend]\ntype = \"misbehave\"\n{backend}\n",
        plugins.display()
    );
    let base = repo_root().join("etc");
    let config = parse_config("dry-run.toml", &text, &base, &mut |r: &str| {
        read_catalog(&base.join(r))
    })
    .unwrap_or_else(|d| panic!("{d}"));
    config.pipelines.into_iter().next().expect("one pipeline")
}

fn decisions(config: PipelineConfig, plugins: &TempDir, dry_run: bool) -> Vec<DecisionRecord> {
    run_task(config, host_for(plugins), dry_run, TICKS).0
}

#[test]
fn a_dry_run_decides_as_a_live_run_from_the_same_observations() {
    let plugins = TempDir::new("dry-run");
    install_rust_plugin(
        &plugins,
        "libinfadapt_plugin_misbehave.so",
        "libinfadapt_plugin_misbehave.so",
    );
    let dir = scratch("dry-run");
    let recorded = dir.join("observations.jsonl");
    let rates = load()
        .iter()
        .map(|r| format!("{r:.3}"))
        .collect::<Vec<_>>()
        .join(", ");

    let live = decisions(
        pipeline(
            plugins.path(),
            &format!("load_rps = [{rates}]\nrecord = \"{}\"", recorded.display()),
        ),
        &plugins,
        false,
    );
    let dry = decisions(
        pipeline(
            plugins.path(),
            &format!("replay = \"{}\"", recorded.display()),
        ),
        &plugins,
        true,
    );
    assert_eq!(live.len(), TICKS as usize, "live ticks");
    assert_eq!(dry.len(), live.len(), "dry-run ticks");
    let switches = live
        .windows(2)
        .filter(|w| {
            let variants = |r: &DecisionRecord| {
                r.decision.plan.stages[0]
                    .assignments
                    .iter()
                    .filter(|a| a.replicas > 0)
                    .map(|a| a.variant.clone())
                    .collect::<Vec<_>>()
            };
            variants(&w[0]) != variants(&w[1])
        })
        .count();
    assert!(switches >= 1, "the live run never switched variants");
    assert!(
        live.iter().filter(|r| r.applied).count() >= 3,
        "the live run applied little"
    );
    assert!(
        dry.iter().all(|r| !r.applied),
        "a dry run applied something"
    );
    assert!(
        live.iter().any(|r| !r.decision.held_back.is_empty()),
        "damping never held anything back, so its state was not compared"
    );
    for (l, d) in live.iter().zip(&dry) {
        assert_eq!(l.tick, d.tick);
        assert_eq!(
            l.observed_rps, d.observed_rps,
            "tick {}: not the same observations",
            l.tick
        );
        assert_eq!(l.decision.plan, d.decision.plan, "tick {}", l.tick);
        assert_eq!(
            l.decision.held_back, d.decision.held_back,
            "tick {}",
            l.tick
        );
        assert_eq!(
            l.decision.provisioned_rps, d.decision.provisioned_rps,
            "tick {}",
            l.tick
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
