//! `infadaptd simulate` end to end: the embedded default runs every policy with sane
//! numbers, `--json` carries the fields, every policy of a seed serves the same requests,
//! `--seeds` summarises several seeds with paired differences, bad scenarios and bad seeds
//! exit 64, and the paper windows of the request trace replay with the comparison targets
//! checked.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{infadaptd, repo_root};
use crate::trace_windows::{TraceWindow, trace_window};

/// The policies `all` runs: the registry's, not a list of our own.
const POLICIES: [&str; 8] = infadapt_eval::NAMES;
const FIELDS: [&str; 10] = [
    "slo_violation_rate",
    "p99_latency_ms",
    "on_time_accuracy",
    "mean_accuracy",
    "cost_core_hours",
    "cost_gpu_gib_hours",
    "reconfigurations",
    "reversals",
    "requests",
    "dropped",
];

/// The ResNet scenario on InfAdapter's published measurements, as `cargo xtask evaluation`
/// runs it: the catalog imported from the data directory, and a copy of the scenario that
/// names it.
fn published_resnet_scenario() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("paper-windows-{}", std::process::id()));
    let catalogs = dir.join("catalogs");
    let scenarios = dir.join("scenarios");
    std::fs::create_dir_all(&catalogs).expect("catalog dir");
    std::fs::create_dir_all(&scenarios).expect("scenario dir");
    crate::profiles_import::import_published_resnet(&catalogs);
    let shipped = std::fs::read_to_string(repo_root().join("etc/scenarios/resnet-cpu.toml"))
        .expect("read the ResNet scenario");
    let synthetic = "catalog = \"../catalogs/resnet-synthetic.toml\"";
    assert!(
        shipped.contains(synthetic),
        "the scenario names {synthetic}"
    );
    let path = scenarios.join("resnet-cpu.toml");
    std::fs::write(
        &path,
        shipped.replace(synthetic, "catalog = \"../catalogs/resnet-cpu.toml\""),
    )
    .expect("write the scenario copy");
    path
}

fn simulate_json(args: &[&str]) -> Value {
    let mut all = vec!["simulate", "--json"];
    all.extend_from_slice(args);
    let out = infadaptd(&all);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
}

fn policy<'v>(v: &'v Value, name: &str) -> &'v Value {
    v["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["policy"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

fn num(p: &Value, key: &str) -> f64 {
    p[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {p}"))
}

#[test]
fn embedded_default_runs_every_policy_with_sane_numbers() {
    let out = infadaptd(&["simulate", "--seconds", "900", "--warmup", "300"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in POLICIES {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{name} "))),
            "no row for {name}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("SLO viol") && stdout.contains("reversal"),
        "{stdout}"
    );
}

#[test]
fn json_has_every_field_for_every_policy() {
    let v = simulate_json(&["--seconds", "600", "--warmup", "0", "--seed", "3"]);
    assert_eq!(v["seed"], 3);
    let policies = v["policies"].as_array().expect("policies");
    assert_eq!(policies.len(), POLICIES.len(), "{v}");
    for p in policies {
        for key in FIELDS {
            assert!(p[key].is_number(), "{key} in {p}");
        }
        let rate = num(p, "slo_violation_rate");
        assert!((0.0..=1.0).contains(&rate), "{p}");
        assert!(num(p, "requests") > 5000.0, "{p}");
        assert!(num(p, "dropped") <= num(p, "requests"));
        assert!(num(p, "cost_core_hours") > 0.0);
        assert!(
            num(p, "mean_accuracy") > 0.0 && num(p, "mean_accuracy") <= 1.0,
            "{p}"
        );
        assert!(
            num(p, "reversals") <= num(p, "reconfigurations") * 3.0,
            "{p}"
        );
        // On-time accuracy counts on-time completions over every arrival.
        let served = num(p, "mean_accuracy") * num(p, "completed") / num(p, "requests");
        assert!(num(p, "on_time_accuracy") <= served + 1e-12, "{p}");
        assert!(p["oracle"].is_boolean(), "{p}");
        // Common random numbers: every policy served the same arrivals.
        assert_eq!(p["requests"], policies[0]["requests"], "{p}");
    }
    // Static policies never reconfigure; every run saw the same workload.
    for name in ["static-max", "static-min"] {
        assert_eq!(num(policy(&v, name), "reconfigurations"), 0.0);
    }
    // The most accurate variants beat the cheapest ones on accuracy.
    assert!(
        num(policy(&v, "static-max"), "mean_accuracy")
            > num(policy(&v, "static-min"), "mean_accuracy")
    );
}

/// Runs `policy` for `seconds` of the embedded workload (no warm-up) with `--plot` into a
/// fresh directory named after `tag`; returns the directory and the timeline it wrote.
fn plotted_timeline(tag: &str, policy: &str, seconds: &str) -> (PathBuf, Value) {
    let dir = std::env::temp_dir().join(format!("infadapt-sim-{tag}-{}", std::process::id()));
    let out = infadaptd(&[
        "simulate",
        "--policy",
        policy,
        "--seconds",
        seconds,
        "--warmup",
        "0",
        "--plot",
        dir.to_str().expect("utf8"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(format!("{policy}.json"));
    let timeline = serde_json::from_slice(
        &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("timeline is JSON");
    (dir, timeline)
}

#[test]
fn one_policy_and_plots() {
    let (dir, timeline) = plotted_timeline("plots", "hpa", "300");
    let svg = std::fs::read_to_string(dir.join("hpa.svg")).expect("hpa.svg written");
    assert!(
        svg.starts_with("<svg") && svg.contains("latency"),
        "not a plot"
    );
    assert!(
        timeline.as_array().is_some_and(|points| !points.is_empty()),
        "timeline points"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn infadapt_timeline_explains_what_damping_held_back() {
    let (dir, timeline) = plotted_timeline("why", "infadapt", "1200");
    let points = timeline.as_array().expect("points");
    assert!(
        points.iter().all(|p| p["proposed_variants"]
            .as_array()
            .is_some_and(|v| !v.is_empty())),
        "every decision names the planner's proposal"
    );
    let reasons: Vec<&str> = points
        .iter()
        .filter_map(|p| p["held_back"].as_array())
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("stabilization window")),
        "a falling load is held by the stabilization window: {reasons:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_shipped_scenario_parses() {
    let dir = repo_root().join("etc/scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("etc/scenarios") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        seen += 1;
        let v = simulate_json(&[
            "--config",
            path.to_str().expect("utf8"),
            "--policy",
            "static-min",
            "--seconds",
            "120",
            "--warmup",
            "0",
        ]);
        assert_eq!(
            v["policies"].as_array().map(Vec::len),
            Some(1),
            "{}",
            path.display()
        );
    }
    assert!(seen >= 2, "expected the ResNet and video scenarios");
}

#[test]
fn gpu_memory_is_costed_in_gib_hours() {
    // One stage, one variant holding 2 GiB per replica on 1 core: every replica-hour costs
    // one core-hour and 2 GiB-hours.
    let dir = std::env::temp_dir().join(format!("infadapt-sim-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("gpu.toml"),
        "schema = 1\n[[variant]]\nname = \"g\"\naccuracy = 0.8\nload_time_s = 2\n\
         gpu_mem_mb = 2048\npoints = [{ batch = 1, cores = 1, p99_ms = 20, throughput_rps = 50 }]\n",
    )
    .expect("catalog");
    let scenario = dir.join("scenario.toml");
    std::fs::write(
        &scenario,
        "catalog = \"gpu.toml\"\n[pipeline]\nname = \"g\"\nslo_ms = 500\n\
         [[pipeline.stage]]\nname = \"s\"\nvariants = [\"g\"]\nmax_replicas = 4\n\
         [workload]\nseconds = 600\ntrough_rps = 5\npeak_rps = 10\n",
    )
    .expect("scenario");
    let v = simulate_json(&[
        "--config",
        scenario.to_str().expect("utf8"),
        "--policy",
        "static-max",
        "--warmup",
        "0",
    ]);
    let run = policy(&v, "static-max");
    let (gib_hours, core_hours) = (num(run, "cost_gpu_gib_hours"), num(run, "cost_core_hours"));
    assert!(core_hours >= 600.0 / 3600.0 - 1e-9, "{v}");
    assert!((gib_hours - 2.0 * core_hours).abs() < 1e-9, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_scenarios_list_every_problem_with_exit_64() {
    let dir = std::env::temp_dir().join(format!("infadapt-sim-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.toml");
    let catalog = repo_root().join("etc/catalogs/video-synthetic.toml");
    std::fs::write(
        &file,
        format!(
            "catalog = {:?}\n[pipeline]\nname = \"v\"\nslo_ms = -5\n[[pipeline.stage]]\nname = \"d\"\nvariants = [\"nope\"]\n\
             [simulation]\nnoise_scale = -1\n[workload]\npeak_at = 3\n",
            catalog.display().to_string()
        ),
    )
    .expect("write");
    let out = infadaptd(&["simulate", "--config", file.to_str().expect("utf8")]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "bad.toml:4:10: pipeline.slo_ms",
        "bad.toml:7:",
        "simulation.noise_scale",
        "workload.peak_at",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
    let out = infadaptd(&["simulate", "--policy", "nope"]);
    assert_eq!(out.status.code(), Some(64));
    let _ = std::fs::remove_dir_all(&dir);
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

fn sample_sd(values: &[f64]) -> f64 {
    let m = mean(values);
    (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (values.len() - 1) as f64).sqrt()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn seeds_summarise_every_policy_with_paired_differences() {
    let v = simulate_json(&["--seeds", "1..3", "--seconds", "120", "--warmup", "0"]);
    assert_eq!(v["seeds"], serde_json::json!([1, 2, 3]), "{v}");
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 3);
    let per_run = |run: &Value, name: &str, key: &str| -> f64 {
        let p = run["policies"]
            .as_array()
            .expect("policies")
            .iter()
            .find(|p| p["policy"] == name)
            .unwrap_or_else(|| panic!("no {name} in {run}"));
        num(p, key)
    };
    let mut totals = Vec::new();
    for (run, seed) in runs.iter().zip(1..) {
        assert_eq!(run["seed"], seed);
        let policies = run["policies"].as_array().expect("policies");
        assert_eq!(policies.len(), POLICIES.len(), "{run}");
        for p in policies {
            assert!(p.get("timeline").is_none(), "no timeline in runs");
            // Common random numbers: the same requests for every policy of a seed.
            assert_eq!(p["requests"], policies[0]["requests"], "seed {seed}: {p}");
        }
        totals.push(num(&policies[0], "requests"));
    }
    assert!(
        totals[0] != totals[1] || totals[1] != totals[2],
        "the seed drives the arrivals: {totals:?}"
    );
    let summary = v["summary"].as_array().expect("summary");
    assert_eq!(summary.len(), POLICIES.len());
    let metrics = [
        "slo_violation_rate",
        "on_time_accuracy",
        "mean_accuracy",
        "cost_core_hours",
        "cost_gpu_gib_hours",
        "reconfigurations",
        "reversals",
        "p99_latency_ms",
        "dropped",
    ];
    for s in summary {
        let name = s["policy"].as_str().expect("policy");
        assert!(s["oracle"].is_boolean(), "{s}");
        for metric in metrics {
            let values: Vec<f64> = runs.iter().map(|r| per_run(r, name, metric)).collect();
            let spread = &s["metrics"][metric];
            assert!(
                close(num(spread, "mean"), mean(&values)),
                "{name} {metric}: {spread}"
            );
            assert!(
                close(num(spread, "sd"), sample_sd(&values)),
                "{name} {metric}: {spread}"
            );
        }
        if name == "infadapt" {
            assert!(s.get("paired").is_none(), "{s}");
            continue;
        }
        for metric in metrics {
            let diffs: Vec<f64> = runs
                .iter()
                .map(|r| per_run(r, "infadapt", metric) - per_run(r, name, metric))
                .collect();
            let d = &s["paired"][metric];
            assert!(
                close(num(d, "mean_diff"), mean(&diffs)),
                "{name} {metric}: {d}"
            );
            assert!(
                close(num(d, "sd_diff"), sample_sd(&diffs)),
                "{name} {metric}: {d}"
            );
            // t(2) = 4.302653: half width 4.302653 · sd / √3.
            let half = 4.302_653 * sample_sd(&diffs) / 3f64.sqrt();
            let (low, high) = (num(d, "ci95_low"), num(d, "ci95_high"));
            assert!(
                (low - (mean(&diffs) - half)).abs() < 1e-5 * (1.0 + half),
                "{d}"
            );
            assert!(
                (high - (mean(&diffs) + half)).abs() < 1e-5 * (1.0 + half),
                "{d}"
            );
            assert_eq!(d["beyond_noise"], low > 0.0 || high < 0.0, "{d}");
        }
    }
}

#[test]
fn seeds_print_the_spread_and_paired_tables() {
    let out = simulate_text(&[
        "simulate",
        "--seeds",
        "4,9",
        "--seconds",
        "60",
        "--warmup",
        "0",
    ]);
    for needle in [
        "seeds 4,9",
        "mean ± sample standard deviation",
        "on-time acc",
        "acc (served)",
        "paired differences infadapt − policy",
        "95 % interval",
    ] {
        assert!(out.contains(needle), "no {needle:?} in:\n{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("ipa ") && l.contains("on_time_accuracy")),
        "a paired row for ipa: {out}"
    );
}

fn simulate_text(args: &[&str]) -> String {
    let out = infadaptd(args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn bad_seeds_exit_64_with_a_reason() {
    for (seeds, reason) in [
        ("5..1", "is empty"),
        ("x", "`x` is not a seed"),
        ("", "no seed given"),
        ("1,2,1", "listed twice"),
    ] {
        let out = infadaptd(&["simulate", "--seeds", seeds, "--seconds", "10"]);
        assert_eq!(out.status.code(), Some(64), "--seeds {seeds:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(reason), "--seeds {seeds:?}: {stderr}");
    }
    let out = infadaptd(&["simulate", "--seeds", "1..2", "--seed", "3"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

/// The paper windows (keys of the data directory's slice index, which gives their trace
/// lines and rate scale) and the scenario each replays.
const WINDOWS: [(&str, &str); 4] = [
    ("infadapter_eval_21min", "resnet-cpu.toml"),
    ("ipa_bursty", "video-pipeline.toml"),
    ("ipa_steady_low", "video-pipeline.toml"),
    ("ipa_fluctuating", "video-pipeline.toml"),
];

/// Windows where the SLO target (ours ≤ 0.5 × ipa's violations) is not met: none since
/// the fast path (ipa_bursty, seed 1: 0.44 × ipa's; 0.32 × over seeds 1..5).
const SLO_TARGET_MISSED: [&str; 0] = [];

#[test]
fn every_scenario_replays_its_generated_workload_through_every_policy() {
    for scenario in ["resnet-cpu.toml", "video-pipeline.toml"] {
        let config = repo_root().join("etc/scenarios").join(scenario);
        let v = simulate_json(&[
            "--config",
            config.to_str().expect("utf8"),
            "--seconds",
            "180",
            "--warmup",
            "60",
            "--policy",
            "all",
        ]);
        assert_eq!(
            v["policies"].as_array().map(Vec::len),
            Some(POLICIES.len()),
            "{scenario}: {v}"
        );
        let ours = policy(&v, "infadapt");
        let ipa = policy(&v, "ipa");
        assert!(num(ours, "requests") > 0.0, "{scenario}");
        // Both served the same requests (common random numbers).
        assert_eq!(ours["requests"], ipa["requests"], "{scenario}");
    }
}

#[test]
#[ignore = "replays real data: set INFADAPT_DATA (see README, 'Tests that replay real data')"]
fn paper_windows_replay_and_meet_the_targets_that_hold() {
    let trace = crate::real_data::real_data("twitter-trace/rps-per-second-days00-16.txt");
    let published_resnet = published_resnet_scenario();
    for (name, scenario) in WINDOWS {
        let TraceWindow { start, end, scale } = trace_window(name);
        // The video windows replay whole after the hour of warm-up that docs/evaluation.md
        // uses (a shorter one leaves the baselines' forecasters unfitted for the window).
        // Debug build: the full-rate ResNet window, whose mixes the MILP plans slowly,
        // replays its first 5 minutes after 10 minutes.
        let (end, warmup) = if scale == 1.0 {
            (start + 300, "600")
        } else {
            (end, "3600")
        };
        let config = if scenario == "resnet-cpu.toml" {
            published_resnet.clone()
        } else {
            repo_root().join("etc/scenarios").join(scenario)
        };
        let v = simulate_json(&[
            "--config",
            config.to_str().expect("utf8"),
            "--trace",
            trace.to_str().expect("utf8"),
            "--start",
            &start.to_string(),
            "--end",
            &end.to_string(),
            "--scale",
            &scale.to_string(),
            "--warmup",
            warmup,
            "--policy",
            "all",
        ]);
        assert_eq!(
            v["policies"].as_array().map(Vec::len),
            Some(POLICIES.len()),
            "{name}: {v}"
        );
        let ours = policy(&v, "infadapt");
        let ipa = policy(&v, "ipa");
        assert!(num(ours, "requests") > 0.0, "{name}");
        // Both served the same requests (common random numbers).
        assert_eq!(ours["requests"], ipa["requests"], "{name}");
        // Target: SLO violations ≤ 0.5 × ipa's (or both negligible, ≤ 0.1 %); a window
        // listed in SLO_TARGET_MISSED only has to stay below ipa's.
        let (ours_slo, ipa_slo) = (
            num(ours, "slo_violation_rate"),
            num(ipa, "slo_violation_rate"),
        );
        let factor = if SLO_TARGET_MISSED.contains(&name) {
            1.0
        } else {
            0.5
        };
        assert!(
            ours_slo <= factor * ipa_slo || ours_slo <= 0.001,
            "{name}: SLO violations ours {ours_slo:.4} vs ipa {ipa_slo:.4}"
        );
        // The accuracy (≥ ipa's), reconfiguration (≤ 0.2 × ipa's) and cost (≤ infadapter's)
        // targets do not hold on every window yet: see docs/evaluation.md for the figures.
    }
}

/// A generated rate trace (a slow wave with a step), one rate per line, for training.
fn write_wave_trace(path: &Path, seconds: usize) {
    let text: String = (0..seconds)
        .map(|t| {
            let wave = 20.0 + 10.0 * (t as f64 / 300.0).sin();
            let step = if (t / 900) % 2 == 1 { 8.0 } else { 0.0 };
            format!("{:.0}\n", wave + step)
        })
        .collect();
    std::fs::write(path, text).expect("write the trace");
}

#[test]
fn ipa_lstm_runs_with_a_trained_model_and_is_refused_without_one() {
    let dir = crate::support::scratch("simulate-ipa-lstm");
    let trace = dir.join("wave.txt");
    write_wave_trace(&trace, 6000);
    let model = dir.join("ipa-lstm.json");
    let out = infadaptd(&[
        "forecast",
        "train",
        "--trace",
        trace.to_str().unwrap(),
        "--bucket",
        "10",
        "--window",
        "12",
        "--horizon",
        "20",
        "--units",
        "4",
        "--epochs",
        "1",
        "--out",
        model.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "train: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without a model the policy is refused with the option to give.
    let out = infadaptd(&["simulate", "--policy", "ipa-lstm", "--seconds", "300"]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--lstm-model"), "{stderr}");

    // A file that is not a model is refused, naming the file.
    let garbage = dir.join("garbage.json");
    std::fs::write(&garbage, "{\"not\": \"a model\"}").unwrap();
    let out = infadaptd(&[
        "simulate",
        "--policy",
        "ipa-lstm",
        "--lstm-model",
        garbage.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("garbage.json"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // With the model it runs, on the same requests as ipa (common random numbers).
    let run = |name: &str| {
        let v = simulate_json(&[
            "--policy",
            name,
            "--seconds",
            "300",
            "--warmup",
            "200",
            "--lstm-model",
            model.to_str().unwrap(),
        ]);
        policy(&v, name).clone()
    };
    let lstm = run("ipa-lstm");
    let ipa = run("ipa");
    assert!(num(&lstm, "requests") > 0.0);
    assert_eq!(num(&lstm, "requests"), num(&ipa, "requests"));
    assert!(num(&lstm, "decisions") > 0.0);
}
