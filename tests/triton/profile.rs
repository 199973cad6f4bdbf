//! `infadaptd profile` against a real Triton: a tiny batch × instances sweep through the
//! Triton plugin (loaded through the C ABI) with the open-loop load generator, writing a
//! catalog the planner reads; and its refusals of bad arguments.

use std::process::Command;
use std::time::Instant;

use infadapt_model::Catalog;

use super::plugin::triton_plugin_dir;
use super::{TritonServer, VARIANTS, infer_body, instances_of, serial};

#[test]
fn profile_sweeps_batch_and_instances_on_triton_and_writes_a_catalog() {
    let _one = serial();
    let server = TritonServer::start(&VARIANTS[..1], &[]);
    let plugins = triton_plugin_dir();
    let dir = plugins.path().join("work");
    std::fs::create_dir_all(&dir).expect("work dir");
    std::fs::write(
        dir.join("backend.toml"),
        format!(
            "[backend]\ntype = \"triton\"\nurl = \"{}\"\nmetrics_url = \"{}\"\ndrain_s = 0\n",
            server.url(),
            server.metrics_url()
        ),
    )
    .expect("backend file");
    std::fs::write(dir.join("request.json"), infer_body(1.0).to_string()).expect("request");
    let out = dir.join("tiny.toml");
    let started = Instant::now();
    let run = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .arg("profile")
        .arg("--backend")
        .arg(dir.join("backend.toml"))
        .arg("--plugin-dir")
        .arg(plugins.path())
        .args(["--variant", "tiny", "--batch", "1,2", "--instances", "1,2"])
        .args(["--rates", "10,40", "--duration-s", "2", "--slo-ms", "200"])
        .arg("--request")
        .arg(dir.join("request.json"))
        .args(["--accuracy", "tiny=0.6", "--out"])
        .arg(&out)
        .output()
        .expect("run infadaptd profile");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!(
        "profile took {:.1} s\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        run.status.success(),
        "profile failed:\n{stdout}\n{stderr}\n{}",
        server.log_tail()
    );
    let text = std::fs::read_to_string(&out).expect("catalog written");
    let catalog = Catalog::from_toml_str(&text).expect("the catalog reads back");
    let tiny = catalog.get("tiny").expect("tiny profiled");
    assert_eq!(tiny.accuracy, 0.6);
    assert!(tiny.load_time_s > 0.0);
    let batches: Vec<u32> = tiny.points.iter().map(|p| p.batch).collect();
    assert_eq!(batches, vec![1, 2], "{text}");
    for point in &tiny.points {
        assert!(point.throughput_rps.is_some_and(|t| t >= 10.0), "{text}");
        assert!(
            point.p99_ms.is_some_and(|p| p > 0.0 && p <= 200.0),
            "{text}"
        );
    }
    // Every cell of the sweep was measured and listed.
    for cell in [
        "tiny batch 1 × 1",
        "tiny batch 1 × 2",
        "tiny batch 2 × 1",
        "tiny batch 2 × 2",
    ] {
        assert!(text.contains(cell), "{cell} missing:\n{text}");
    }
    // The last configuration of the sweep is what the server runs now.
    let config = server.config("tiny");
    assert_eq!(instances_of(&config), 2);
    assert_eq!(config["max_batch_size"], 2);

    // Bad arguments: usage error (64) naming the argument; a missing table names the file.
    let bad = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .args([
            "profile",
            "--backend",
            "x.toml",
            "--variant",
            "v",
            "--slo-ms",
            "-1",
        ])
        .args(["--request", "r.json", "--out", "o.toml"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--slo-ms"));
    std::fs::write(dir.join("empty.toml"), "[daemon]\n").expect("file");
    let missing = Command::new(env!("CARGO_BIN_EXE_infadaptd"))
        .arg("profile")
        .arg("--backend")
        .arg(dir.join("empty.toml"))
        .args([
            "--variant",
            "v",
            "--slo-ms",
            "100",
            "--out",
            "o.toml",
            "--request",
        ])
        .arg(dir.join("request.json"))
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(1));
    let message = String::from_utf8_lossy(&missing.stderr);
    assert!(
        message.contains("empty.toml: no [backend] table"),
        "{message}"
    );
}
