//! `infadaptd profiles import` end to end: malformed and unreadable inputs (default tests),
//! and the published profile tables in the data directory `INFADAPT_DATA` (replay tests,
//! ignored by default; they fail without it). The shipped catalogs in `etc/catalogs/` are
//! the project's synthetic ones: each parses, and each equals a fresh `profiles synth`.
//!
//! Set `INFADAPT_BLESS=1` to rewrite the shipped catalogs instead of comparing them.

use std::path::{Path, PathBuf};

use infadapt_model::{Catalog, ProfilePoint};

use crate::support::{infadaptd, repo_root};

/// A file of the data directory (`INFADAPT_DATA`); the tests that need it fail without it.
fn data(relative: &str) -> String {
    crate::real_data::real_data(relative).display().to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory for files a test writes.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("profiles-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Runs `profiles import`, expects success and returns the catalog text and stdout.
fn import_ok(out: &Path, args: &[&str]) -> (String, String) {
    let out_arg = out.display().to_string();
    let mut all = vec!["profiles", "import", "--out", out_arg.as_str()];
    all.extend_from_slice(args);
    let output = infadaptd(&all);
    assert_eq!(
        output.status.code(),
        Some(0),
        "import failed\nstdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
    let catalog = std::fs::read_to_string(out).expect("read the written catalog");
    (catalog, text(&output.stdout))
}

fn parse(catalog: &str) -> Catalog {
    Catalog::from_toml_str(catalog)
        .unwrap_or_else(|e| panic!("catalog does not parse: {e}\n{catalog}"))
}

fn point(catalog: &Catalog, variant: &str, batch: u32, cores: u32) -> ProfilePoint {
    let v = catalog
        .get(variant)
        .unwrap_or_else(|| panic!("no variant {variant}"));
    v.points
        .iter()
        .find(|p| p.batch == batch && p.cores == cores)
        .unwrap_or_else(|| panic!("{variant} has no point batch {batch} cores {cores}"))
        .clone()
}

fn resnet_import_args() -> Vec<String> {
    let mut args: Vec<String> = ["--format", "infadapter", "--slo-ms", "750", "--metadata"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.push(data("infadapter/variant_metadata.csv"));
    args.push(data("infadapter/capacity_result_Feb_21.csv"));
    args
}

/// Imports InfAdapter's published ResNet measurements from the data directory into
/// `dir/resnet-cpu.toml` (what `cargo xtask evaluation` does) and returns its path.
pub(crate) fn import_published_resnet(dir: &Path) -> PathBuf {
    let out = dir.join("resnet-cpu.toml");
    let args = resnet_import_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    import_ok(&out, &args);
    out
}

#[test]
#[ignore = "replays real data: set INFADAPT_DATA (see README, 'Tests that replay real data')"]
fn infadapter_import_gives_five_resnets_at_the_slo() {
    let dir = scratch("infadapter");
    let out = import_published_resnet(&dir);
    let written = std::fs::read_to_string(&out).expect("read the written catalog");
    let catalog = parse(&written);
    let names: Vec<&str> = catalog.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    );
    // Deeper variants are more accurate; every point is batch 1 within the SLO, and more
    // cores never serve less.
    for pair in catalog.variants.windows(2) {
        assert!(
            pair[0].accuracy < pair[1].accuracy,
            "{} {} vs {} {}",
            pair[0].name,
            pair[0].accuracy,
            pair[1].name,
            pair[1].accuracy
        );
    }
    for v in &catalog.variants {
        assert!((0.5..1.0).contains(&v.accuracy), "{}", v.name);
        assert!(v.load_time_s > 0.0, "{}", v.name);
        assert!(
            v.points.len() >= 15,
            "{}: {} points",
            v.name,
            v.points.len()
        );
        assert!(
            v.points.iter().all(|p| p.batch == 1
                && p.p99_ms.is_some_and(|l| l > 0.0 && l <= 750.0)
                && p.throughput_rps.is_some_and(|r| r > 0.0)),
            "{}",
            v.name
        );
        v.to_variant().unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert!(
            v.source.contains("capacity_result_Feb_21.csv")
                && v.source.contains("variant_metadata.csv"),
            "{}",
            v.source
        );
    }
    let again = parse(&catalog.to_toml_string());
    assert_eq!(catalog, again, "the import round-trips");
    // The header names the source files.
    assert!(
        written.starts_with("# "),
        "the catalog starts with a comment header"
    );
    let header: Vec<&str> = written.lines().take_while(|l| l.starts_with('#')).collect();
    for file in ["capacity_result_Feb_21.csv", "variant_metadata.csv"] {
        assert!(header.iter().any(|l| l.contains(file)), "{header:?}");
    }
}

#[test]
#[ignore = "replays real data: set INFADAPT_DATA (see README, 'Tests that replay real data')"]
fn infadapter_import_at_another_slo_takes_those_rows() {
    let dir = scratch("infadapter-slo");
    let (written, _) = import_ok(
        &dir.join("slo500.toml"),
        &[
            "--slo-ms",
            "500",
            &data("infadapter/capacity_result_Feb_21.csv"),
        ],
    );
    let catalog = parse(&written);
    let at_750 = parse(
        &std::fs::read_to_string(import_published_resnet(&dir)).expect("read the 750 ms import"),
    );
    // Rows at the tighter SLA: every p99 within it, and no capacity above the 750 ms one.
    for v in &catalog.variants {
        for p in &v.points {
            assert!(p.p99_ms.is_some_and(|l| l <= 500.0), "{} {p:?}", v.name);
            if let Some(q) = at_750
                .get(&v.name)
                .and_then(|w| w.points.iter().find(|q| q.cores == p.cores))
            {
                assert!(p.throughput_rps <= q.throughput_rps, "{} {p:?}", v.name);
            }
        }
    }
    // Without metadata the accuracy is unknown (0) and the import says so.
    assert_eq!(catalog.get("resnet18").map(|v| v.accuracy), Some(0.0));
}

#[test]
#[ignore = "replays real data: set INFADAPT_DATA (see README, 'Tests that replay real data')"]
fn every_ipa_table_imports_and_round_trips() {
    let dir = scratch("ipa");
    let accuracies = data("ipa/accuracies.yaml");
    let folder = PathBuf::from(data("ipa/profiles-partial"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .expect("list profiles-partial")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected the IPA tables in {}",
        folder.display()
    );
    for file in &files {
        let stem = file
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        let out = dir.join(format!("{stem}.toml"));
        let (written, stdout) = import_ok(
            &out,
            &["--accuracies", &accuracies, &file.display().to_string()],
        );
        let catalog = parse(&written);
        assert!(!catalog.variants.is_empty(), "{stem}");
        let again = parse(&catalog.to_toml_string());
        assert_eq!(catalog, again, "{stem} round-trips");
        for v in &catalog.variants {
            v.to_variant().unwrap_or_else(|e| panic!("{stem}: {e}"));
            assert!(stdout.contains(&format!("{}: ", v.name)), "{stdout}");
            assert!(!v.name.contains("..."), "{stem}: truncated name {}", v.name);
            assert!(v.accuracy.is_finite(), "{stem}: {}", v.name);
            for p in &v.points {
                // Seconds become milliseconds: no latency below a tenth of a millisecond.
                assert!(
                    p.p99_ms.is_none_or(|l| l >= 0.1),
                    "{stem}: {} {p:?}",
                    v.name
                );
                assert!(
                    p.mean_ms.is_none_or(|l| l >= 0.1),
                    "{stem}: {} {p:?}",
                    v.name
                );
            }
        }
        assert!(
            written
                .lines()
                .take_while(|l| l.starts_with('#'))
                .any(|l| l.contains(&format!("{stem}.csv"))),
            "{stem}: the header names its input"
        );
    }
}

#[test]
fn malformed_csv_exits_64_naming_file_line_and_column() {
    let dir = scratch("malformed");
    let capacity = dir.join("bad_capacity.csv");
    std::fs::write(
        &capacity,
        "REPLICA,HARDWARE,CPU,MEM,ARCH,BATCH,SLA,p99_latency,capacity,saturation_tp\n\
         1,cpu,1,1G,18,1,750,300.5,12,14\n\
         1,cpu,2,1G,18,1,750,310.0,twelve,30\n",
    )
    .expect("write");
    let profile = dir.join("bad_profile.csv");
    std::fs::write(
        &profile,
        ",model_variant,max_batch_size,cpu_request,load,model_latencies_p99,expected_max_throughput\r\n\
         0,small,1,1,10,0.05,20.0\r\n\
         1,small,1,x2,10,0.04,25.0\r\n",
    )
    .expect("write");
    for (file, column) in [(&capacity, "capacity"), (&profile, "cpu_request")] {
        let out = dir.join("never.toml");
        let output = infadaptd(&[
            "profiles",
            "import",
            "--out",
            &out.display().to_string(),
            &file.display().to_string(),
        ]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{stderr}");
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        assert!(stderr.contains(&format!("{name}:3")), "{stderr}");
        assert!(stderr.contains(column), "{stderr}");
        assert!(!out.exists(), "nothing is written for malformed input");
    }

    let missing = dir.join("missing_column.csv");
    std::fs::write(&missing, "CPU,ARCH,BATCH,SLA,capacity\n1,18,1,750,19\n").expect("write");
    let output = infadaptd(&[
        "profiles",
        "import",
        "--format",
        "infadapter",
        "--out",
        &dir.join("never.toml").display().to_string(),
        &missing.display().to_string(),
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("missing_column.csv:1") && stderr.contains("p99_latency"),
        "{stderr}"
    );
}

#[test]
fn unreadable_input_exits_1() {
    let dir = scratch("io");
    let output = infadaptd(&[
        "profiles",
        "import",
        "--out",
        &dir.join("never.toml").display().to_string(),
        &dir.join("no-such-file.csv").display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("no-such-file.csv"));
}

/// Compares a shipped catalog with a fresh regeneration, or rewrites it under INFADAPT_BLESS.
fn check_shipped(name: &str, fresh: &str, how: &str) {
    let shipped_path = repo_root().join("etc/catalogs").join(name);
    if std::env::var_os("INFADAPT_BLESS").is_some() {
        std::fs::write(&shipped_path, fresh).expect("bless");
        return;
    }
    let shipped = std::fs::read_to_string(&shipped_path).unwrap_or_default();
    assert!(
        shipped == fresh,
        "etc/catalogs/{name} differs from {how}; regenerate it with \
         `INFADAPT_BLESS=1 cargo test -p infadaptd --test integration profiles`"
    );
}

/// Runs `profiles synth --kind KIND` into a scratch file and returns the catalog text.
fn synth(kind: &str) -> String {
    let dir = scratch(&format!("synth-{kind}"));
    let out = dir.join(format!("{kind}.toml"));
    let output = infadaptd(&[
        "profiles",
        "synth",
        "--kind",
        kind,
        "--out",
        &out.display().to_string(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    std::fs::read_to_string(&out).expect("read")
}

/// Every point of a synthetic catalog follows its model: p99 a fixed factor over the mean,
/// throughput `b·1000/mean`.
fn check_synthetic_points(catalog: &Catalog, p99_factors: std::ops::RangeInclusive<f64>) {
    for v in &catalog.variants {
        assert!(
            (0.0..=1.0).contains(&v.accuracy) && (2.0..=12.0).contains(&v.load_time_s),
            "{}",
            v.name
        );
        assert!(v.source.starts_with("synthetic: "), "{}", v.source);
        for p in &v.points {
            let (p99, mean, rps) = (
                p.p99_ms.expect("p99"),
                p.mean_ms.expect("mean"),
                p.throughput_rps.expect("rps"),
            );
            assert!(p99_factors.contains(&(p99 / mean)), "{} {p:?}", v.name);
            assert!(
                (rps - f64::from(p.batch) * 1000.0 / mean).abs() / rps < 1e-3,
                "{} {p:?}",
                v.name
            );
        }
    }
}

#[test]
fn shipped_resnet_catalog_equals_the_generator() {
    let fresh = synth("resnet");
    check_shipped(
        "resnet-synthetic.toml",
        &fresh,
        "`infadaptd profiles synth --kind resnet`",
    );
    assert!(
        fresh.starts_with("# Synthetic profiles") && fresh.contains("not measurements"),
        "the header says what the numbers are"
    );
    let catalog = parse(&fresh);
    let names: Vec<&str> = catalog.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    );
    check_synthetic_points(&catalog, 1.24..=1.36);
    for v in &catalog.variants {
        assert_eq!(v.points.len(), 4 * 16, "{}", v.name);
    }
    // Deeper variants are slower and more accurate.
    for pair in names.windows(2) {
        let (a, b) = (
            catalog.get(pair[0]).expect("variant"),
            catalog.get(pair[1]).expect("variant"),
        );
        assert!(a.accuracy < b.accuracy, "{pair:?}");
        assert!(
            point(&catalog, pair[0], 1, 4).mean_ms < point(&catalog, pair[1], 1, 4).mean_ms,
            "{pair:?}"
        );
    }
}

#[test]
fn shipped_synthetic_catalog_equals_the_generator() {
    let fresh = synth("video");
    check_shipped("video-synthetic.toml", &fresh, "`infadaptd profiles synth`");

    let catalog = parse(&fresh);
    assert_eq!(catalog.variants.len(), 13);
    check_synthetic_points(&catalog, 1.19..=1.51);
    for v in &catalog.variants {
        assert_eq!(v.points.len(), 20, "{}", v.name);
    }
    // Within a stage, bigger variants are slower and more accurate.
    for family in [
        &["det-n", "det-s", "det-m", "det-l", "det-x"][..],
        &["cls-18", "cls-34", "cls-50", "cls-101", "cls-152"],
        &["embed-small", "embed-base", "embed-large"],
    ] {
        for pair in family.windows(2) {
            let (a, b) = (
                catalog.get(pair[0]).expect("variant"),
                catalog.get(pair[1]).expect("variant"),
            );
            assert!(a.accuracy < b.accuracy, "{pair:?}");
            assert!(
                point(&catalog, pair[0], 4, 2).mean_ms < point(&catalog, pair[1], 4, 2).mean_ms,
                "{pair:?}"
            );
        }
    }
}

#[test]
fn every_shipped_catalog_parses_and_builds_profiles() {
    let folder = repo_root().join("etc/catalogs");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&folder).expect("list etc/catalogs") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read catalog");
        let catalog =
            Catalog::from_toml_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!catalog.variants.is_empty(), "{}", path.display());
        for v in &catalog.variants {
            v.to_variant()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        names.push(
            path.file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    for expected in ["resnet-synthetic.toml", "video-synthetic.toml"] {
        assert!(
            names.iter().any(|n| n == expected),
            "etc/catalogs/{expected} is missing (found {names:?})"
        );
    }
}
