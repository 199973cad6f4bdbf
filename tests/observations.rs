//! A backend that reports nonsense (negative arrival rates) does not move the plan: the
//! daemon's pipeline task reads them as no load, logs and counts each bad report, and the
//! plan stays at the smallest one instead of scaling to anything.

use crate::one_loop::run_task;
use crate::plugins::{TempDir, host_for, install_rust_plugin};

#[test]
fn negative_arrival_rates_are_read_as_no_load_and_counted() {
    let plugins = TempDir::new("bad-observations");
    install_rust_plugin(
        &plugins,
        "libinfadapt_plugin_misbehave.so",
        "libinfadapt_plugin_misbehave.so",
    );
    let text = format!(
        "[daemon]\nperiod_s = 1\nplugin_dirs = [\"{}\"]\n{}",
        plugins.path().display(),
        crate::dry_run::PIPELINE_WITHOUT_BACKEND,
    ) + "[pipeline.backend]\ntype = \"misbehave\"\nload_rps = [-5000.0, -1e9]\n";
    let base = crate::support::repo_root().join("etc");
    let config = infadaptd::config::parse_config("bad.toml", &text, &base, &mut |r: &str| {
        infadaptd::problem_file::read_catalog(&base.join(r))
    })
    .unwrap_or_else(|d| panic!("{d}"));
    let config = config.pipelines.into_iter().next().expect("pipeline");

    let (records, registry) = run_task(config, host_for(&plugins), false, 8);
    assert_eq!(records.len(), 8);
    for r in &records {
        assert!(r.observed_rps >= 0.0, "{} acted on", r.observed_rps);
        let replicas: u32 = r.decision.plan.stages[0]
            .assignments
            .iter()
            .map(|a| a.replicas)
            .sum();
        assert!(replicas <= 1, "scaled to {replicas} replicas on nonsense");
    }
    let status = registry
        .snapshot()
        .into_iter()
        .find(|s| s.name == "resnet")
        .expect("status");
    assert!(status.bad_observations >= 8, "{}", status.bad_observations);
}
