//! `infadaptd profile` end to end on the process backend (the test worker as the model
//! server, no real serving stack): a batch × instances sweep of two variants writes the
//! catalog, with GPU memory measured through NVML or written as "unmeasured" (never 0),
//! and `--report` writes the Markdown report with one SVG per variant next to it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use infadapt_model::Catalog;

use crate::support::scratch;

fn backend_file(dir: &Path, worker: &Path) -> String {
    let variant = |name: &str, work: u32| {
        format!(
            "[backend.variants.{name}]\ncommand = [\"{}\", \"--port\", \"{{port}}\", \"--variant\", \"{{variant}}\", \"--work\", \"{work}\"]\nreadiness_timeout_s = 20\n",
            worker.display()
        )
    };
    format!(
        "[backend]\ntype = \"process\"\nstate_dir = \"{}\"\nport_range = [21450, 21499]\ndrain_s = 0\nstop_timeout_s = 3\n{}{}",
        dir.join("workers").display(),
        variant("fast", 20_000),
        variant("slow", 100_000),
    )
}

#[test]
fn profile_on_worker_processes_writes_the_catalog_and_a_markdown_report() {
    let built = crate::plugins::rust_plugins_dir();
    let dir = scratch("profile-report");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let installed = plugins.join("libinfadapt_plugin_process.so");
    std::fs::copy(built.join("libinfadapt_plugin_process.so"), &installed).expect("install");
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(
        dir.join("backend.toml"),
        backend_file(&dir, &built.join("infadapt-test-worker")),
    )
    .expect("backend file");
    std::fs::write(dir.join("request.json"), "{\"inputs\": []}").expect("request");
    let out = dir.join("catalog.toml");
    let report = dir.join("prof.md");
    let run = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .arg("profile")
        .arg("--backend")
        .arg(dir.join("backend.toml"))
        .arg("--plugin-dir")
        .arg(&plugins)
        .args(["--variant", "fast", "--variant", "slow"])
        .args(["--batch", "1,2", "--instances", "1,2"])
        .args(["--rates", "5,20", "--duration-s", "1", "--slo-ms", "500"])
        .arg("--request")
        .arg(dir.join("request.json"))
        .args(["--accuracy", "fast=0.6", "--accuracy", "slow=0.8", "--out"])
        .arg(&out)
        .arg("--report")
        .arg(&report)
        .output()
        .expect("run infadaptd profile");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "profile failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("prof.md: report of 8 configuration(s), 2 plot(s) next to it"),
        "{stdout}"
    );

    // The catalog: both variants, GPU memory measured or explicitly unmeasured.
    let text = std::fs::read_to_string(&out).expect("catalog written");
    let catalog = Catalog::from_toml_str(&text).expect("the catalog reads back");
    let nvml = infadaptd::commands::profile::gpu::NvmlMeter::open();
    for (name, accuracy) in [("fast", 0.6), ("slow", 0.8)] {
        let variant = catalog.get(name).expect("variant profiled");
        assert_eq!(variant.accuracy, accuracy);
        assert_eq!(
            variant.points.iter().map(|p| p.batch).collect::<Vec<_>>(),
            vec![1, 2],
            "{text}"
        );
        match variant.gpu_mem_mb {
            None => {}
            Some(mb) => {
                assert!(nvml.is_ok(), "a figure without NVML:\n{text}");
                assert!(mb > 0.0, "a measured 0 would read as free:\n{text}");
            }
        }
        if nvml.is_err() {
            assert_eq!(variant.gpu_mem_mb, None, "{text}");
        }
    }
    if nvml.is_err() {
        assert_eq!(
            text.lines()
                .filter(|l| *l == "gpu_mem_mb = \"unmeasured\"")
                .count(),
            2,
            "{text}"
        );
        assert!(text.contains("GPU memory: unmeasured: NVML"), "{text}");
    }

    // The report: every variant and configuration, with a plot each next to it.
    let md = std::fs::read_to_string(&report).expect("report written");
    assert!(md.contains("## fast\n") && md.contains("## slow\n"), "{md}");
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| batch"))
        .collect();
    assert_eq!(
        rows.len(),
        8,
        "two variants × two batches × two instance counts:\n{md}"
    );
    for (batch, instances) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
        let prefix = format!("| {batch} | {instances} | 1 | ");
        assert_eq!(
            rows.iter().filter(|r| r.starts_with(&prefix)).count(),
            2,
            "{prefix}\n{md}"
        );
    }
    for (name, variant) in [("fast", "fast"), ("slow", "slow")] {
        let gpu = match catalog.get(variant).and_then(|v| v.gpu_mem_mb) {
            Some(mb) => format!("{mb:.0} MiB"),
            None => "unmeasured".to_owned(),
        };
        assert!(
            md.contains(&format!(
                "## {name}\n\nGPU memory per replica (catalog): {gpu}\n"
            )),
            "{md}"
        );
    }
    for (n, name) in [(1, "fast"), (2, "slow")] {
        let svg_name = format!("prof-{n}-{name}.svg");
        assert!(md.contains(&format!("]({svg_name})")), "{md}");
        let svg = std::fs::read_to_string(dir.join(&svg_name)).expect("plot written");
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(100)]);
        assert!(svg.contains("1 instance") && svg.contains("2 instances"));
        assert!(svg.contains("batch size"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn profile_refuses_a_report_it_cannot_write() {
    let out = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args(["profile", "--backend", "x.toml", "--variant", "v"])
        .args(["--slo-ms", "100", "--request", "r.json", "--out", "o.toml"])
        .args(["--report", "report.pdf"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64), "a usage error");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--report report.pdf") && stderr.contains(".md"),
        "{stderr}"
    );
}
