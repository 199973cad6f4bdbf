//! Tests of the profile table import.

use infadapt_model::ProfilePoint;

use super::*;

const CAPACITY_HEADER: &str =
    "REPLICA,HARDWARE,CPU,MEM,ARCH,BATCH,SLA,p99_latency,capacity,saturation_tp";
const IPA_HEADER: &str = ",model_variant,max_batch_size,cpu_request,load,model_latencies_p99,model_latencies_avg,expected_max_throughput";

fn table(header: &str, rows: &[&str]) -> String {
    let mut text = format!("{header}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    text
}

fn import_one(
    format: Format,
    text: &str,
    options: &ImportOptions,
) -> Result<Imported, ImportError> {
    import(format, &[InputText::new("dir/t.csv", text)], options)
}

fn only_point(imported: &Imported, variant: &str, batch: u32, cores: u32) -> ProfilePoint {
    let v = imported
        .catalog
        .get(variant)
        .unwrap_or_else(|| panic!("no {variant}"));
    v.points
        .iter()
        .find(|p| p.batch == batch && p.cores == cores)
        .cloned()
        .expect("point")
}

#[test]
fn detects_both_formats_and_rejects_others() {
    assert_eq!(
        detect_format(InputText::new("a", &table(CAPACITY_HEADER, &[]))),
        Ok(Format::InfAdapter)
    );
    assert_eq!(
        detect_format(InputText::new("b", &table(IPA_HEADER, &[]))),
        Ok(Format::Ipa)
    );
    let err = detect_format(InputText::new("c.csv", "x,y\n1,2\n")).expect_err("unknown");
    assert!(err.to_string().starts_with("c.csv:1: cannot tell"), "{err}");
}

#[test]
fn infadapter_takes_the_row_at_the_slo_and_skips_unusable_points() {
    let text = table(
        CAPACITY_HEADER,
        &[
            "1,cpu,1,1G,18,1,500,350.5,14,21",
            "1,cpu,1,1G,18,1,750,402.25,18,21",
            "1,cpu,2,1G,18,1,750,640.75,41,47",
            "1,cpu,3,1G,18,1,750,,40,49",
            "1,cpu,4,1G,18,1,750,380.0,0,49",
            "1,cpu,1,1G,152,1,750,701.0,1,5",
        ],
    );
    let imported =
        import_one(Format::InfAdapter, &text, &ImportOptions::new(750.0)).expect("import");
    let names: Vec<&str> = imported
        .catalog
        .variants
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(names, ["resnet18", "resnet152"]);
    let p = only_point(&imported, "resnet18", 1, 1);
    assert_eq!(
        (p.p99_ms, p.mean_ms, p.throughput_rps),
        (Some(402.25), None, Some(18.0))
    );
    assert_eq!(
        imported.catalog.get("resnet18").map(|v| v.points.len()),
        Some(2)
    );
    let reasons: Vec<(u64, &str)> = imported
        .skipped
        .iter()
        .map(|s| (s.line, s.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        [
            (5, "batch 1, cores 3: no p99_latency"),
            (6, "batch 1, cores 4: capacity 0")
        ]
    );
    assert!(
        imported
            .warnings
            .iter()
            .any(|w| w.contains("accuracy unknown")),
        "{:?}",
        imported.warnings
    );
    assert!(
        imported.catalog.variants[0]
            .source
            .contains("t.csv (SLA 750 ms)")
    );
}

#[test]
fn infadapter_falls_back_to_the_largest_sla_below_the_slo() {
    let text = table(
        CAPACITY_HEADER,
        &[
            "1,cpu,1,1G,18,1,500,350.5,14,21",
            "1,cpu,1,1G,18,1,1000,402.25,18,21",
        ],
    );
    let imported =
        import_one(Format::InfAdapter, &text, &ImportOptions::new(800.0)).expect("import");
    assert_eq!(
        only_point(&imported, "resnet18", 1, 1).throughput_rps,
        Some(14.0)
    );
    assert!(
        imported
            .warnings
            .iter()
            .any(|w| w.contains("largest measured SLA below it (500 ms)"))
    );
    let none = import_one(Format::InfAdapter, &text, &ImportOptions::new(400.0))
        .expect_err("nothing usable");
    assert!(
        none.to_string().contains("no usable measurements"),
        "{none}"
    );
}

#[test]
fn every_problem_is_reported_with_file_line_and_column() {
    let text = table(
        CAPACITY_HEADER,
        &[
            "1,cpu,1,1G,18,1,750,402.25,18,21",
            "1,cpu,two,1G,18,1,750,402.25,abc,21",
            "1,cpu,1,1G,34,1,750,-3,19",
        ],
    );
    let err =
        import_one(Format::InfAdapter, &text, &ImportOptions::new(750.0)).expect_err("malformed");
    let lines: Vec<String> = err.problems.iter().map(Problem::to_string).collect();
    assert_eq!(
        lines,
        [
            "dir/t.csv:3: column `CPU`: `two` is not a number",
            "dir/t.csv:3: column `capacity`: `abc` is not a number",
            "dir/t.csv:4: the row has 9 fields, the header has 10",
        ]
    );
    let missing = import_one(
        Format::InfAdapter,
        "CPU,ARCH,SLA\n1,18,750\n",
        &ImportOptions::new(750.0),
    )
    .expect_err("missing columns");
    let columns: Vec<Option<&str>> = missing
        .problems
        .iter()
        .map(|p| p.column.as_deref())
        .collect();
    assert_eq!(
        columns,
        [Some("BATCH"), Some("p99_latency"), Some("capacity")]
    );
}

#[test]
fn line_numbers_hold_with_crlf_line_ends() {
    let text = format!(
        "{CAPACITY_HEADER}\r\n1,cpu,1,1G,18,1,750,402.25,18,21\r\n1,cpu,2,1G,18,1,750,x,18,21\r\n"
    );
    let err =
        import_one(Format::InfAdapter, &text, &ImportOptions::new(750.0)).expect_err("malformed");
    assert_eq!(err.problems[0].line, Some(3), "{err}");
}

#[test]
fn ipa_keeps_the_most_loaded_run_and_converts_seconds() {
    let text = table(
        IPA_HEADER,
        &[
            "0,small,1,1,1,0.050,0.040,25.0",
            "1,small,1,1,20,0.090,0.060,16.5",
            "2,small,1,1,40,NaN,0.070,14.0",
            "3,small,4,2,10,0.120,0.100,40.0",
        ],
    );
    let imported = import_one(Format::Ipa, &text, &ImportOptions::new(750.0)).expect("import");
    let p = only_point(&imported, "small", 1, 1);
    assert_eq!(
        (p.p99_ms, p.mean_ms, p.throughput_rps),
        (Some(90.0), Some(60.0), Some(16.5))
    );
    assert_eq!(imported.superseded, 1);
    assert_eq!(imported.skipped.len(), 1);
    assert!(
        imported.skipped[0].reason.contains("model_latencies_p99"),
        "{}",
        imported.skipped[0]
    );
    assert_eq!(imported.skipped[0].line, 4);
}

#[test]
fn ipa_uses_observed_throughput_only_when_saturated() {
    let header =
        ",model_variant,max_batch_size,cpu_request,load,model_latencies_avg,throughput_max";
    let text = table(header, &["0,m,1,1,20,0.100,19.5", "1,m,1,2,20,0.060,12.0"]);
    let imported = import_one(Format::Ipa, &text, &ImportOptions::new(750.0)).expect("import");
    assert_eq!(
        only_point(&imported, "m", 1, 1).throughput_rps,
        None,
        "offered load, not capacity"
    );
    assert_eq!(only_point(&imported, "m", 1, 2).throughput_rps, Some(12.0));
    assert!(
        imported.warnings.iter().any(|w| w.contains("lines 2")),
        "{:?}",
        imported.warnings
    );
}

const ACCURACIES: &str = "
video:
  detect:
    det-small: 41.2
    det-large: 63.4
  classify:
    cls-18: 70.25
text:
  lang:
    lang-id-base-finetuned-identification: 97.25
    unknown-yet: null
other:
  classify:
    cls-18: 70.25
";

#[test]
fn truncated_names_resolve_by_unique_prefix() {
    let accuracies = parse_accuracies(InputText::new("acc.yaml", ACCURACIES)).expect("yaml");
    let options = ImportOptions {
        accuracies: Some(accuracies),
        ..ImportOptions::new(750.0)
    };
    let text = table(
        IPA_HEADER,
        &[
            "0,lang-id-base-...,1,1,20,0.01,0.008,100.0",
            "1,cls-18,1,1,20,0.02,0.01,90.0",
        ],
    );
    let imported = import_one(Format::Ipa, &text, &options).expect("import");
    let lang = imported
        .catalog
        .get("lang-id-base-finetuned-identification")
        .expect("full name");
    assert_eq!(lang.accuracy, 97.25);
    assert!(
        lang.source.contains("acc.yaml (text.lang)"),
        "{}",
        lang.source
    );
    let cls = imported.catalog.get("cls-18").expect("cls-18");
    assert!(
        cls.source.contains("(other.classify, video.classify)"),
        "{}",
        cls.source
    );

    let ambiguous = table(IPA_HEADER, &["0,det-...,1,1,20,0.01,0.008,100.0"]);
    let err = import_one(Format::Ipa, &ambiguous, &options).expect_err("ambiguous");
    let message = err.to_string();
    assert!(
        message.contains("dir/t.csv:2: column `model_variant`: variant `det-...`"),
        "{message}"
    );
    assert!(message.contains("det-large, det-small"), "{message}");
}

#[test]
fn unresolved_truncation_keeps_the_prefix_and_warns() {
    let text = table(IPA_HEADER, &["0,some-model-...,1,1,20,0.01,0.008,100.0"]);
    let imported = import_one(Format::Ipa, &text, &ImportOptions::new(750.0)).expect("import");
    assert_eq!(imported.catalog.variants[0].name, "some-model");
    assert!(imported.warnings.iter().any(|w| w.contains("truncated")));
}

#[test]
fn conflicting_accuracies_are_an_error() {
    let yaml = "a:\n  s:\n    v: 1.0\nb:\n  s:\n    v: 2.0\n";
    let accuracies = parse_accuracies(InputText::new("acc.yaml", yaml)).expect("yaml");
    let options = ImportOptions {
        accuracies: Some(accuracies),
        ..ImportOptions::new(750.0)
    };
    let text = table(IPA_HEADER, &["0,v,1,1,20,0.01,0.008,100.0"]);
    let err = import_one(Format::Ipa, &text, &options).expect_err("ambiguous accuracy");
    assert!(
        err.to_string()
            .contains("accuracy of variant `v` is ambiguous"),
        "{err}"
    );
    let bad = parse_accuracies(InputText::new("bad.yaml", "a:\n  s:\n    v: high\n"))
        .expect_err("not a number");
    assert!(
        bad.to_string()
            .contains("`a.s.v`: accuracy must be a number, got the text `high`"),
        "{bad}"
    );
    let broken =
        parse_accuracies(InputText::new("broken.yaml", "a:\n  - [\n")).expect_err("syntax");
    assert!(broken.to_string().starts_with("broken.yaml:"), "{broken}");
}

#[test]
fn metadata_takes_precedence_and_supplies_load_time() {
    let metadata = parse_metadata(InputText::new(
        "meta.csv",
        "model,resnet_depth,top1_accuracy,load_time_s\nresnet18,18,0.712,3.5\n",
    ))
    .expect("metadata");
    let accuracies = parse_accuracies(InputText::new("acc.yaml", "p:\n  s:\n    resnet18: 70.5\n"))
        .expect("yaml");
    let options = ImportOptions {
        metadata: Some(metadata),
        accuracies: Some(accuracies),
        ..ImportOptions::new(750.0)
    };
    let text = table(CAPACITY_HEADER, &["1,cpu,1,1G,18,1,750,402.25,18,21"]);
    let imported = import_one(Format::InfAdapter, &text, &options).expect("import");
    let v = &imported.catalog.variants[0];
    assert_eq!((v.accuracy, v.load_time_s), (0.712, 3.5));
    assert!(imported.warnings.is_empty(), "{:?}", imported.warnings);
    let dup = parse_metadata(InputText::new("m.csv", "model,load_time_s\na,1\na,2\n"))
        .expect_err("duplicate");
    assert_eq!(dup.problems[0].line, Some(3));
}

#[test]
fn rendered_catalog_round_trips_with_its_header() {
    let text = table(
        IPA_HEADER,
        &[
            "0,a \"quoted\" name,1,1,20,0.0123456789,0.01,81.0",
            "1,b,2,4,20,1e-4,5e-5,2e4",
        ],
    );
    let options = ImportOptions {
        notes: vec!["first note".into(), "two\nlines".into()],
        ..ImportOptions::new(1.0)
    };
    let imported = import_one(Format::Ipa, &text, &options).expect("import");
    let rendered = imported.render();
    assert!(
        rendered.starts_with("# Profile catalog (schema 1)"),
        "{rendered}"
    );
    assert!(
        rendered.contains("#\n# first note\n# two\n# lines\n"),
        "{rendered}"
    );
    let parsed = Catalog::from_toml_str(&rendered).expect("parses");
    assert_eq!(parsed, imported.catalog);
    assert_eq!(
        only_point(&imported, "a \"quoted\" name", 1, 1).p99_ms,
        Some(12.345679)
    );
    assert!(
        summary_line(&imported.catalog.variants[1])
            .starts_with("b: 1 point, batch 2, cores 4, p99 fit")
    );
}
