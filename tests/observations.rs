//! A backend that reports nonsense (negative arrival rates) does not move the plan: the
//! daemon's pipeline task reads them as no load, logs and counts each bad report, and the
//! plan stays at the smallest one instead of scaling to anything.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use infadaptd::service::pipeline::{TaskOptions, run_pipeline};
use infadaptd::service::status::{DecisionRecord, Registry};
use tokio::sync::{mpsc, watch};

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
    let base = crate::daemon::repo_root().join("etc");
    let config = infadaptd::config::parse_config("bad.toml", &text, &base, &mut |r: &str| {
        infadaptd::problem_file::read_catalog(&base.join(r))
    })
    .unwrap_or_else(|d| panic!("{d}"));
    let config = config.pipelines.into_iter().next().expect("pipeline");

    let records = Arc::new(Mutex::new(Vec::<DecisionRecord>::new()));
    let sink = Arc::clone(&records);
    let registry = Registry::new(16);
    let options = TaskOptions {
        dry_run: false,
        state_dir: None,
        backend_timeout: Duration::from_secs(60),
        plugins: Arc::new(host_for(&plugins)),
        speed: 1000.0,
        on_decision: Some(Arc::new(move |r: &DecisionRecord| {
            sink.lock().expect("records").push(r.clone());
        })),
        max_ticks: Some(8),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let task_registry = registry.clone();
    runtime.block_on(async move {
        let (_stop, stopped) = watch::channel(false);
        let (_reconfigure, reconfigured) = mpsc::unbounded_channel();
        run_pipeline(config, options, task_registry, stopped, reconfigured).await;
    });
    let records = records.lock().expect("records").clone();
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
