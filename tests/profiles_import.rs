//! `infadaptd profiles import` end to end on the research data in `../shared/data`, and the
//! shipped catalogs in `etc/catalogs/`: each parses, and each equals a fresh regeneration.
//!
//! Set `INFADAPT_BLESS=1` to rewrite the shipped catalogs instead of comparing them.

use std::path::{Path, PathBuf};

use infadapt_model::{Catalog, ProfilePoint};

use crate::support::{infadaptd, repo_root};

/// The notes that head `etc/catalogs/resnet-cpu.toml` (passed as `--note`).
const RESNET_NOTES: &[&str] = &[
    "ResNet-18/34/50/101/152 on CPU, batch 1, 1-20 cores: the public measurements published",
    "with the InfAdapter paper (EuroMLSys '23), with the ImageNet top-1 accuracies and model",
    "load times from the same publication. throughput_rps is the measured capacity (the",
    "largest Poisson rate with p99 <= 750 ms), p99_ms the p99 latency at that rate.",
    "Produced from the repository root by (plus the --note lines of this header):",
    "  infadaptd profiles import --format infadapter --slo-ms 750",
    "    --metadata ../shared/data/infadapter/variant_metadata.csv",
    "    --out etc/catalogs/resnet-cpu.toml ../shared/data/infadapter/capacity_result_Feb_21.csv",
    "tests/profiles_import.rs reruns it and fails when this file differs.",
];

/// The shared research data; the tests that need it fail (not skip) without it.
fn data(relative: &str) -> String {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data"));
    assert!(
        root.is_dir(),
        "the shared data directory {} is missing",
        root.display()
    );
    let path = root.join(relative);
    assert!(path.exists(), "{} is missing", path.display());
    path.display().to_string()
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
    for note in RESNET_NOTES {
        args.push("--note".into());
        args.push((*note).to_owned());
    }
    args.push(data("infadapter/capacity_result_Feb_21.csv"));
    args
}

#[test]
fn infadapter_import_gives_five_resnets_at_the_slo() {
    let dir = scratch("infadapter");
    let args = resnet_import_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (written, stdout) = import_ok(&dir.join("resnet.toml"), &args);
    let catalog = parse(&written);
    let names: Vec<&str> = catalog.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
    );

    // Rows at SLA 750 ms: p99_latency and capacity (the max rate with p99 <= SLA).
    let p = point(&catalog, "resnet18", 1, 1);
    assert_eq!(
        (p.p99_ms, p.throughput_rps, p.mean_ms),
        (Some(389.09), Some(19.0), None)
    );
    let p = point(&catalog, "resnet18", 1, 20);
    assert_eq!((p.p99_ms, p.throughput_rps), (Some(363.37), Some(473.0)));
    let p = point(&catalog, "resnet152", 1, 2);
    assert_eq!((p.p99_ms, p.throughput_rps), (Some(391.72), Some(5.0)));
    let p = point(&catalog, "resnet50", 1, 5);
    assert_eq!((p.p99_ms, p.throughput_rps), (Some(692.18), Some(48.0)));

    // ResNet-101 and -152 on one core have no p99 at SLA 750: skipped and reported.
    for (name, points) in [
        ("resnet18", 20),
        ("resnet34", 20),
        ("resnet50", 20),
        ("resnet101", 19),
        ("resnet152", 19),
    ] {
        let v = catalog.get(name).expect("variant");
        assert_eq!(v.points.len(), points, "{name}");
        assert!(
            v.points
                .iter()
                .all(|p| p.batch == 1 && p.p99_ms.is_some_and(|l| l <= 750.0))
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("{name}: {points} points, batch 1, cores "))),
            "{stdout}"
        );
    }
    assert!(stdout.contains("skipped 2 measurements"), "{stdout}");

    let resnet152 = catalog.get("resnet152").expect("resnet152");
    assert_eq!((resnet152.accuracy, resnet152.load_time_s), (0.78312, 8.52));
    assert!(
        resnet152.source.contains("capacity_result_Feb_21.csv"),
        "{}",
        resnet152.source
    );
    assert!(
        written.starts_with("# "),
        "the catalog starts with a comment header"
    );
    assert!(
        written
            .lines()
            .take(20)
            .any(|l| l.contains("capacity_result_Feb_21.csv")),
        "{written}"
    );
}

#[test]
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
    let p = point(&catalog, "resnet18", 1, 1);
    assert_eq!((p.p99_ms, p.throughput_rps), (Some(361.99), Some(15.0)));
    // Without metadata the accuracy is unknown (0) and the import says so.
    assert_eq!(catalog.get("resnet18").map(|v| v.accuracy), Some(0.0));
}

#[test]
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
        }
    }

    // Spot checks: seconds become ms, the most loaded run wins, truncated names resolve.
    let detector =
        parse(&std::fs::read_to_string(dir.join("series70_yolov5n_cpu1.toml")).expect("read"));
    let p = point(&detector, "yolov5n", 1, 1);
    assert_eq!(
        (p.p99_ms, p.mean_ms),
        (Some(117.705), Some(77.17)),
        "load 20 row"
    );
    assert_eq!(detector.get("yolov5n").map(|v| v.accuracy), Some(45.7));

    let lang = parse(
        &std::fs::read_to_string(
            dir.join("series98_nlp-li_xlmroberta_lang-id_batch_x_cpu_load20.toml"),
        )
        .expect("read"),
    );
    let v = lang
        .get("dinalzein-xlm-roberta-base-finetuned-language-identification")
        .expect("resolved full name");
    assert_eq!((v.accuracy, v.points.len()), (99.59, 42));
    let p = point(&lang, &v.name, 64, 32);
    assert_eq!(
        (p.mean_ms, p.throughput_rps),
        (Some(79.985), Some(800.149326))
    );

    let resnet =
        parse(&std::fs::read_to_string(dir.join("series201_resnet_subset.toml")).expect("read"));
    let p = point(&resnet, "resnet18", 1, 2);
    assert_eq!(
        (p.p99_ms, p.mean_ms, p.throughput_rps),
        (Some(86.855), Some(52.89), Some(18.907328))
    );
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

#[test]
fn shipped_resnet_catalog_equals_a_fresh_import() {
    let dir = scratch("shipped-resnet");
    let out = dir.join("resnet-cpu.toml");
    let args = resnet_import_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (fresh, _) = import_ok(&out, &args);
    check_shipped(
        "resnet-cpu.toml",
        &fresh,
        "a fresh import of the InfAdapter data",
    );
}

#[test]
fn shipped_synthetic_catalog_equals_the_generator() {
    let dir = scratch("shipped-synthetic");
    let out = dir.join("video-synthetic.toml");
    let output = infadaptd(&["profiles", "synth", "--out", &out.display().to_string()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let fresh = std::fs::read_to_string(&out).expect("read");
    check_shipped("video-synthetic.toml", &fresh, "`infadaptd profiles synth`");

    let catalog = parse(&fresh);
    assert_eq!(catalog.variants.len(), 13);
    for v in &catalog.variants {
        assert_eq!(v.points.len(), 20, "{}", v.name);
        assert!(
            (0.0..=1.0).contains(&v.accuracy) && (2.0..=12.0).contains(&v.load_time_s),
            "{}",
            v.name
        );
        for p in &v.points {
            let (p99, mean, rps) = (
                p.p99_ms.expect("p99"),
                p.mean_ms.expect("mean"),
                p.throughput_rps.expect("rps"),
            );
            assert!((1.19..=1.51).contains(&(p99 / mean)), "{} {p:?}", v.name);
            assert!(
                (rps - f64::from(p.batch) * 1000.0 / mean).abs() / rps < 1e-3,
                "{} {p:?}",
                v.name
            );
        }
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
    for expected in ["resnet-cpu.toml", "video-synthetic.toml"] {
        assert!(
            names.iter().any(|n| n == expected),
            "etc/catalogs/{expected} is missing (found {names:?})"
        );
    }
}
