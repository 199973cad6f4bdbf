//! Fuzz target `rayserve_answers`: arbitrary text as what the Ray Serve plugin reads from a
//! cluster, split at NUL bytes into four parts: the Serve applications (`GET
//! /api/serve/applications/`), the node summary and the cluster status (JSON, through
//! `serve::parse_state`, `serve::pinned_node`, `nodes::parse_nodes` and `nodes::add_usage`),
//! and a metrics page read twice (two scrapes) through the support crate's Prometheus reader
//! and the plugin's per-application counters. Contract: no panic; replica counts never exceed the replicas
//! listed; node resources reported as free are finite and ≥ 0; metric deltas are finite
//! and ≥ 0, and a p99 is finite and ≥ 0.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use infadapt_plugin_rayserve::metrics::Counters;
use infadapt_plugin_rayserve::{nodes, serve};
use infadapt_plugin_support::prometheus::parse;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let (apps, summary, status, page) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    if let Ok(answer) = serde_json::from_str::<Value>(apps)
        && let Ok(state) = serve::parse_state(&answer)
    {
        for app in state.applications.values() {
            let _ = serve::pinned_node(app);
            for deployment in app.deployments.values() {
                let listed = deployment.replicas.len() as u32;
                assert!(deployment.count(serve::RUNNING) <= listed);
                assert!(deployment.placed().count() as u32 <= listed);
                let _ = deployment.autoscaling_problem();
            }
        }
    }
    if let Ok(answer) = serde_json::from_str::<Value>(summary)
        && let Ok(mut found) = nodes::parse_nodes(&answer)
    {
        if let Ok(usage) = serde_json::from_str::<Value>(status) {
            let _ = nodes::add_usage(&mut found, &usage);
        }
        let owned: BTreeMap<String, (f64, f64)> =
            found.iter().map(|n| (n.id.clone(), (1.0, 0.0))).collect();
        for node in nodes::node_messages(&found, &owned) {
            for free in [node.cpus_free, node.gpus_free] {
                assert!(
                    free >= 0.0 && !free.is_nan(),
                    "{free} free on `{}`",
                    node.id
                );
            }
            let _ = found
                .iter()
                .find(|n| n.id == node.id)
                .map(|n| n.metrics_url());
        }
    }
    let page = parse(page);
    let apps: BTreeSet<String> = page
        .samples
        .iter()
        .filter_map(|s| s.label("application").map(str::to_owned))
        .collect();
    let mut counters = Counters::default();
    for _ in 0..2 {
        let pages = vec![("http://node/metrics".to_owned(), page.clone())];
        let (traffic, _invalid) = counters.deltas(&pages, |a| apps.contains(a));
        for (app, t) in &traffic {
            for value in [t.requests, t.errors] {
                assert!(value.is_finite() && value >= 0.0, "{value} for `{app}`");
            }
            for (_, count) in &t.buckets {
                assert!(
                    count.is_finite() && *count >= 0.0,
                    "bucket {count} for `{app}`"
                );
            }
            if let Some(p99) = t.p99_ms() {
                assert!(p99.is_finite() && p99 >= 0.0, "p99 {p99} for `{app}`");
            }
        }
    }
});
