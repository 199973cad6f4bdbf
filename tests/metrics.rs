//! What `/metrics` exports, checked against the text format and against what ships with
//! it: the exposition of a fully populated status (a pipeline with a router, a decision, a
//! degraded backend, and the process metrics) parses with `prometheus-parse` and follows the
//! format's rules that parser does not enforce; every metric the Grafana dashboard
//! (`etc/dashboards/infadaptd.json`) and the alert rules (`etc/alerts/infadaptd.rules.yml`)
//! query is a family the daemon exports; the rules have the structure Prometheus loads; and
//! `docs/metrics.md` documents every family. `check_exposition` is also run on the real
//! `/metrics` of a running daemon (`daemon.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use infadapt_control::Decision;
use infadapt_model::{Assignment, Plan, StagePlan};
use infadaptd::http_server::{ConnectionCounts, render_connections};
use infadaptd::router::RouterCounters;
use infadaptd::service::process::ProcessMetrics;
use infadaptd::service::status::{
    DecisionRecord, DegradedReason, PeriodCounts, PipelineStatus, PluginStatus, render_metrics,
};
use prometheus_parse::{LineInfo, Scrape, Value};

use crate::support::repo_root;

/// Series Prometheus makes itself for every scrape target; rules may use them.
const MADE_BY_PROMETHEUS: [&str; 1] = ["up"];

fn read(relative: &str) -> String {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Two pipelines with every field that feeds a metric set: one routed, degraded, with a
/// decision and a two-stage plan with a variant mix; one plain.
fn full_statuses() -> Vec<PipelineStatus> {
    let assignment = |variant: &str, replicas, share| Assignment {
        variant: variant.to_owned(),
        batch: 4,
        cores: 2,
        replicas,
        share,
    };
    let plan = Plan {
        stages: vec![
            StagePlan {
                stage: "detect".to_owned(),
                assignments: vec![assignment("yolo-s", 2, 0.7), assignment("yolo-m", 1, 0.3)],
            },
            StagePlan {
                stage: "classify".to_owned(),
                assignments: vec![assignment("resnet18", 3, 1.0)],
            },
        ],
    };
    let decision = Decision {
        plan: plan.clone(),
        forecast_rps: Some(40.0),
        upper_rps: Some(55.0),
        provisioned_rps: 60.0,
        headroom: 1.1,
        objective: Some(2.5),
        fast_path: Some("arrivals outran the plan".to_owned()),
        ..Decision::default()
    };
    let record = DecisionRecord {
        pipeline: "video".to_owned(),
        tick: 7,
        unix_s: 1_700_000_000,
        applied: true,
        apply_actions: vec!["scale".to_owned()],
        observed_rps: 38.0,
        latency_p99_ms: Some(420.0),
        decide_ms: 12.0,
        fast_path: true,
        forecaster: "arima".to_owned(),
        not_applied: None,
        decision,
    };
    let mut routed = PipelineStatus {
        name: "video".to_owned(),
        backend: "misbehave".to_owned(),
        state: "running".to_owned(),
        period_s: 10.0,
        slo_ms: 750.0,
        plan: Some(plan),
        last_decision: Some(record.clone()),
        decisions: [record].into(),
        ticks: 7,
        fast_path: "on (router)".to_owned(),
        fast_path_decisions: 1,
        reconfigurations: 2,
        plugin_errors: 1,
        plugin: PluginStatus {
            origin: "plugin /x/libmisbehave.so".to_owned(),
            calls: 20,
            errors: 1,
            panics: 1,
            timeouts: 1,
            refused: 3,
            restarts: 1,
            create_failures: 0,
            hung: true,
            degraded: Some(DegradedReason {
                kind: "timeout".to_owned(),
                message: "observe timed out after 1 s".to_owned(),
            }),
            retry_in_s: Some(2.0),
        },
        planner_errors: 1,
        degraded: true,
        router: Some(RouterCounters {
            requests: 100,
            succeeded: 97,
            failed: 3,
            retries: 2,
            slo_misses: 5,
            ready_endpoints: 3,
            connections: ConnectionCounts {
                accepted: 9,
                open: 4,
                refused: 2,
            },
        }),
        ..PipelineStatus::default()
    };
    for ms in [20.0, 80.0, 300.0, 900.0, 12_000.0] {
        routed.request_latency.observe(ms / 1000.0);
    }
    for seconds in [0.004, 0.2] {
        routed.tick_times.record(seconds);
    }
    routed.record_period(
        PeriodCounts {
            at: Instant::now()
                .checked_sub(Duration::from_secs(30))
                .unwrap_or_else(Instant::now),
            completed: 97,
            dropped: 3,
            slo_misses: 5,
        },
        100.0,
    );
    let mut plain = PipelineStatus {
        name: "resnet \"cpu\"".to_owned(),
        backend: "sim".to_owned(),
        state: "running".to_owned(),
        period_s: 1.0,
        slo_ms: 200.0,
        ..PipelineStatus::default()
    };
    plain.tick_times.record(0.01);
    vec![routed, plain]
}

/// The whole `/metrics` text for [`full_statuses`], with every process metric read.
fn full_exposition() -> String {
    let process = ProcessMetrics {
        cpu_seconds: Some(1.5),
        resident_memory_bytes: Some(10 << 20),
        virtual_memory_bytes: Some(200 << 20),
        open_fds: Some(12),
        max_fds: Some(1024),
        start_time_seconds: Some(1.7e9),
    };
    let api = ConnectionCounts {
        accepted: 20,
        open: 1,
        refused: 7,
    };
    let statuses = full_statuses();
    // As `/metrics` does: the routers' connections from the pipelines' status.
    let routers: Vec<(String, ConnectionCounts)> = statuses
        .iter()
        .filter_map(|s| s.router.map(|r| (s.name.clone(), r.connections)))
        .collect();
    render_metrics(&statuses) + &render_connections(Some(api), &routers) + &process.render()
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// One sample line, split.
struct SampleLine {
    name: String,
    /// Label pairs, escapes resolved.
    labels: Vec<(String, String)>,
    value: String,
}

/// `name{labels} value` split; `None` when the line is not a well-formed sample.
fn split_sample(line: &str) -> Option<SampleLine> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = inner.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        _ => return None,
                    },
                    '"' => break i,
                    c => value.push(c),
                }
            };
            labels.push((label.to_owned(), value));
            inner = &after[end + 1..];
            if let Some(next) = inner.strip_prefix(',') {
                inner = next;
            } else if !inner.starts_with('}') {
                return None;
            }
        }
    }
    let value = rest.strip_prefix(' ')?;
    (!value.is_empty() && !value.contains(' ')).then(|| SampleLine {
        name,
        labels,
        value: value.to_owned(),
    })
}

/// What a histogram series showed: (`le`, count) in order, `_sum` and `_count`.
#[derive(Debug, Default)]
struct HistogramSeen {
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
}

/// Checks `text` against the exposition format and returns its families and their types:
/// HELP and TYPE once per family and before its samples, a family's samples together,
/// valid names and labels, no series twice, counters named `_total` and not negative,
/// histograms with increasing `le` bounds, cumulative counts, `+Inf` equal to `_count`,
/// and `_sum`. Every sample also parses with `prometheus-parse`.
pub(crate) fn check_exposition(text: &str) -> BTreeMap<String, String> {
    let mut helps = BTreeSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut closed = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut series = BTreeSet::new();
    // Histogram series by family and labels without `le`.
    let mut histograms: BTreeMap<(String, String), HistogramSeen> = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let at = format!("line {}: {line}", number + 1);
        assert!(!line.trim().is_empty(), "{at}: blank line");
        if let Some(help) = line.strip_prefix("# HELP ") {
            let (name, doc) = help.split_once(' ').expect(&at);
            assert!(valid_name(name) && !doc.trim().is_empty(), "{at}");
            assert!(!closed.contains(name), "{at}: family split");
            assert!(helps.insert(name.to_owned()), "{at}: second HELP");
            continue;
        }
        if let Some(kind) = line.strip_prefix("# TYPE ") {
            let (name, kind) = kind.split_once(' ').expect(&at);
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{at}"
            );
            assert!(helps.contains(name), "{at}: TYPE before HELP");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{at}: second TYPE"
            );
            if let Some(previous) = current.replace(name.to_owned()) {
                closed.insert(previous);
            }
            continue;
        }
        assert!(!line.starts_with('#'), "{at}: unknown comment");
        assert!(
            matches!(LineInfo::parse(line), LineInfo::Sample { .. }),
            "{at}: prometheus-parse does not read it as a sample"
        );
        let SampleLine {
            name,
            labels,
            value,
        } = split_sample(line).unwrap_or_else(|| panic!("{at}"));
        assert!(valid_name(&name), "{at}");
        let family = current.clone().unwrap_or_else(|| panic!("{at}: no TYPE"));
        let kind = types[&family].as_str();
        let suffix = name.strip_prefix(family.as_str()).unwrap_or("-");
        let allowed: &[&str] = if kind == "histogram" {
            &["_bucket", "_sum", "_count"]
        } else {
            &[""]
        };
        assert!(allowed.contains(&suffix), "{at}: not of family {family}");
        let mut names = BTreeSet::new();
        for (label, _) in &labels {
            assert!(valid_name(label) && !label.starts_with("__"), "{at}");
            assert!(names.insert(label.clone()), "{at}: label twice");
        }
        let key = format!("{name}{labels:?}");
        assert!(series.insert(key), "{at}: series twice");
        let number: f64 = match value.as_str() {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("{at}: value")),
        };
        if kind == "counter" {
            assert!(family.ends_with("_total"), "{at}: counter without _total");
            assert!(number >= 0.0, "{at}: negative counter");
        }
        if kind == "histogram" {
            let le = labels
                .iter()
                .find(|(l, _)| l == "le")
                .map(|(_, v)| v.clone());
            let rest: Vec<_> = labels.iter().filter(|(l, _)| l != "le").collect();
            let entry = histograms
                .entry((family.clone(), format!("{rest:?}")))
                .or_default();
            match suffix {
                "_bucket" => {
                    let le = le.unwrap_or_else(|| panic!("{at}: bucket without le"));
                    let bound = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or_else(|_| panic!("{at}: le"))
                    };
                    if let Some((last_bound, last_count)) = entry.buckets.last() {
                        assert!(bound > *last_bound, "{at}: le not increasing");
                        assert!(number >= *last_count, "{at}: buckets not cumulative");
                    }
                    entry.buckets.push((bound, number));
                }
                "_sum" => entry.sum = Some(number),
                _ => entry.count = Some(number),
            }
        }
    }
    for name in &helps {
        assert!(types.contains_key(name), "{name}: HELP without TYPE");
    }
    for ((family, labels), seen) in &histograms {
        let at = format!("{family}{labels}");
        let last = seen
            .buckets
            .last()
            .unwrap_or_else(|| panic!("{at}: no buckets"));
        assert_eq!(last.0, f64::INFINITY, "{at}: no +Inf bucket");
        assert_eq!(Some(last.1), seen.count, "{at}: +Inf bucket is not _count");
        assert!(seen.sum.is_some(), "{at}: no _sum");
    }
    // The parser agrees on what each sample is.
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parses");
    for sample in &scrape.samples {
        let family = types
            .keys()
            .find(|f| {
                sample.metric == **f
                    || ["_sum", "_count"]
                        .iter()
                        .any(|s| sample.metric == format!("{f}{s}"))
            })
            .unwrap_or_else(|| panic!("{}: no family", sample.metric));
        if sample.metric == *family {
            let expected = types[family].as_str();
            let parsed = match &sample.value {
                Value::Counter(_) => "counter",
                Value::Gauge(_) => "gauge",
                Value::Histogram(_) => "histogram",
                Value::Summary(_) => "summary",
                Value::Untyped(_) => "untyped",
            };
            assert_eq!(parsed, expected, "{}", sample.metric);
        }
    }
    types
}

/// Aggregations, operators and modifiers: words of PromQL that are not metric names.
const KEYWORDS: [&str; 27] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
];

/// Words followed by a list of label names in parentheses.
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression (or a Grafana `label_values(SELECTOR, LABEL)`
/// query) selects: identifiers outside strings, label matchers and ranges that are not
/// functions, keywords, label lists, numbers, durations or Grafana variables.
fn metric_names(expr: &str) -> Vec<String> {
    let expr = match expr.trim().strip_prefix("label_values(") {
        Some(inner) => {
            let inner = inner.trim_end().trim_end_matches(')');
            // The selector is what comes before the last comma (none: a bare label).
            match inner.rfind(',') {
                Some(comma) => inner[..comma].to_owned(),
                None => String::new(),
            }
        }
        None => expr.to_owned(),
    };
    // Blank out strings, `{…}` matchers and `[…]` ranges.
    let mut cleaned = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut depth = 0usize;
    for c in expr.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                quote = Some(c);
                cleaned.push(' ');
            }
            '{' | '[' => {
                depth += 1;
                cleaned.push(' ');
            }
            '}' | ']' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            _ => cleaned.push(c),
        }
    }
    let chars: Vec<char> = cleaned.chars().collect();
    let next_non_space = |from: usize| chars[from..].iter().find(|c| !c.is_whitespace()).copied();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
        if c.is_ascii_digit() || c == '.' || c == '$' {
            // A number, a duration (`5m`) or a Grafana variable: skip the whole word.
            i += 1;
            while i < chars.len() && (word_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && word_char(chars[i]) {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let lower = word.to_ascii_lowercase();
        if LABEL_LISTS.contains(&lower.as_str()) && next_non_space(i) == Some('(') {
            // Skip the label list.
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            continue;
        }
        if KEYWORDS.contains(&lower.as_str()) || next_non_space(i) == Some('(') {
            continue;
        }
        names.push(word);
    }
    names
}

/// The family a name in a query belongs to: a histogram's `_bucket`, `_sum` and `_count`
/// are its family's.
fn family_of(name: &str, families: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.get(base).is_some_and(|k| k == "histogram")
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

/// Every query of a dashboard: `expr` of each target and each query variable's query.
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    ("query", serde_json::Value::String(q)) if q.starts_with("label_values(") => {
                        out.push(q.clone())
                    }
                    _ => dashboard_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_queries(item, out);
            }
        }
        _ => {}
    }
}

/// Asserts every metric `expr` names is exported (or made by Prometheus); `what` says
/// where the query is.
fn assert_exported(what: &str, expr: &str, families: &BTreeMap<String, String>) {
    let names = metric_names(expr);
    assert!(!names.is_empty(), "{what}: no metric in `{expr}`");
    for name in names {
        let family = family_of(&name, families);
        assert!(
            families.contains_key(&family) || MADE_BY_PROMETHEUS.contains(&family.as_str()),
            "{what}: `{name}` in `{expr}` is not a metric infadaptd exports"
        );
    }
}

#[test]
fn promql_names_are_found_and_nothing_else() {
    for (expr, wanted) in [
        (
            "sum by (pipeline, le) (rate(a_bucket{x=\"y\",pipeline=~\"$p\"}[$__rate_interval]))",
            vec!["a_bucket"],
        ),
        (
            "histogram_quantile(0.99, sum by (instance, le) (rate(b_bucket[5m]))) \
             > on (instance, pipeline) (0.5 * c)",
            vec!["b_bucket", "c"],
        ),
        ("time() - d{i=\"a{b}\"}", vec!["d"]),
        ("absent(up{job=\"x\"})", vec!["up"]),
        ("x offset 1h and ignoring(le) y", vec!["x", "y"]),
        ("sum(z) without (a, b) / 1e3", vec!["z"]),
        (
            "label_replace(z, \"dst\", \"$1\", \"src\", \"(.*)\")",
            vec!["z"],
        ),
        ("label_values(m{i=~\"$instance\"}, pipeline)", vec!["m"]),
        ("label_values(pipeline)", vec![]),
        ("e > $threshold", vec!["e"]),
    ] {
        assert_eq!(metric_names(expr), wanted, "{expr}");
    }
    let families: BTreeMap<String, String> = [("h".to_owned(), "histogram".to_owned())].into();
    assert_eq!(family_of("h_bucket", &families), "h");
    assert_eq!(family_of("g_count", &families), "g_count");
}

#[test]
#[should_panic(expected = "buckets not cumulative")]
fn the_format_check_refuses_buckets_that_are_not_cumulative() {
    check_exposition(
        "# HELP h A histogram.\n# TYPE h histogram\n\
         h_bucket{le=\"0.1\"} 3\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 3\n\
         h_sum 1\nh_count 3\n",
    );
}

#[test]
#[should_panic(expected = "+Inf bucket is not _count")]
fn the_format_check_refuses_a_count_other_than_the_inf_bucket() {
    check_exposition(
        "# HELP h A histogram.\n# TYPE h histogram\n\
         h_bucket{le=\"+Inf\"} 3\nh_sum 1\nh_count 4\n",
    );
}

#[test]
#[should_panic(expected = "family split")]
fn the_format_check_refuses_a_family_written_twice() {
    check_exposition(
        "# HELP a One.\n# TYPE a gauge\na 1\n# HELP b Two.\n# TYPE b gauge\nb 1\n\
         # HELP a One.\n# TYPE a gauge\na{x=\"y\"} 1\n",
    );
}

#[test]
fn exposition_of_a_full_status_follows_the_text_format() {
    let text = full_exposition();
    let families = check_exposition(&text);
    for (family, kind) in [
        ("infadapt_build_info", "gauge"),
        ("infadapt_request_duration_seconds", "histogram"),
        ("infadapt_tick_seconds", "histogram"),
        ("infadapt_requests_arrived_total", "counter"),
        ("infadapt_requests_completed_total", "counter"),
        ("infadapt_requests_dropped_total", "counter"),
        ("infadapt_requests_slo_misses_total", "counter"),
        ("infadapt_slo_attainment_ratio", "gauge"),
        ("infadapt_slo_attainment", "gauge"),
        ("infadapt_slo_seconds", "gauge"),
        ("infadapt_period_seconds", "gauge"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
    ] {
        assert_eq!(
            families.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    for line in [
        "infadapt_request_duration_seconds_bucket{pipeline=\"video\",le=\"0.1\"} 2",
        "infadapt_request_duration_seconds_bucket{pipeline=\"video\",le=\"+Inf\"} 5",
        "infadapt_slo_attainment_ratio{pipeline=\"video\",window=\"5m\"} 0.95",
        "infadapt_slo_attainment_ratio{pipeline=\"video\",window=\"1h\"} 0.95",
        "infadapt_requests_arrived_total{pipeline=\"video\"} 100",
        "infadapt_slo_seconds{pipeline=\"video\"} 0.75",
        "infadapt_tick_seconds_count{pipeline=\"resnet \\\"cpu\\\"\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    // The plain pipeline has no router: no request durations and no window value (nothing
    // finished), rather than made-up ones.
    assert!(!text.contains("infadapt_request_duration_seconds_count{pipeline=\"resnet"));
    assert!(!text.contains("infadapt_slo_attainment_ratio{pipeline=\"resnet"));
}

#[test]
fn every_exported_family_is_documented() {
    let docs = read("docs/metrics.md");
    for family in check_exposition(&full_exposition()).keys() {
        assert!(
            docs.contains(&format!("`{family}`")),
            "docs/metrics.md does not document `{family}`"
        );
    }
}

#[test]
fn dashboard_queries_name_only_exported_metrics() {
    let families = check_exposition(&full_exposition());
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("etc/dashboards/infadaptd.json")).expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "infadaptd");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for wanted in ["datasource", "instance", "pipeline"] {
        assert!(variables.contains(&wanted), "variable {wanted}");
    }
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().expect("title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "{title}: id twice"
        );
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("expr");
            assert!(target["refId"].is_string(), "{title}: refId");
            assert_exported(&format!("panel `{title}`"), expr, &families);
            used.extend(metric_names(expr).iter().map(|n| family_of(n, &families)));
        }
    }
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.iter().any(|q| q.starts_with("label_values(")));
    for query in &queries {
        assert_exported("dashboard", query, &families);
    }
    // What the dashboard promises to show.
    for family in [
        "infadapt_observed_rps",
        "infadapt_forecast_rps",
        "infadapt_provisioned_rps",
        "infadapt_plan_cores",
        "infadapt_plan_replicas",
        "infadapt_request_duration_seconds",
        "infadapt_slo_seconds",
        "infadapt_slo_attainment_ratio",
        "infadapt_reconfigurations_total",
        "infadapt_fast_path_decisions_total",
        "infadapt_degraded",
        "infadapt_plugin_errors_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            used.contains(family),
            "the dashboard does not show {family}"
        );
    }
}

/// A Prometheus duration: one or more `<number><unit>` parts.
fn is_duration(text: &str) -> bool {
    let mut digits = false;
    let mut parts = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits = true;
        } else if digits && "smhdwy".contains(c) {
            digits = false;
            parts += 1;
        } else {
            return false;
        }
    }
    parts > 0 && !digits
}

#[test]
fn alert_rules_are_well_formed_and_name_only_exported_metrics() {
    let families = check_exposition(&full_exposition());
    let text = read("etc/alerts/infadaptd.rules.yml");
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("rules YAML");
    let groups = rules["groups"].as_sequence().expect("groups");
    assert!(!groups.is_empty());
    let mut alerts = BTreeSet::new();
    let mut used = BTreeSet::new();
    for group in groups {
        let group_name = group["name"].as_str().expect("group name");
        let rules = group["rules"].as_sequence().expect("rules");
        assert!(!rules.is_empty(), "{group_name}: no rules");
        for rule in rules {
            let alert = rule["alert"].as_str().expect("alert");
            assert!(
                alert.starts_with(|c: char| c.is_ascii_uppercase())
                    && alert.chars().all(|c| c.is_ascii_alphanumeric()),
                "{alert}: not a CamelCase name"
            );
            assert!(alerts.insert(alert.to_owned()), "{alert} twice");
            let expr = rule["expr"].as_str().expect("expr");
            let depth = expr.chars().try_fold(0i32, |d, c| {
                let d = match c {
                    '(' | '{' | '[' => d + 1,
                    ')' | '}' | ']' => d - 1,
                    _ => d,
                };
                (d >= 0).then_some(d)
            });
            assert_eq!(depth, Some(0), "{alert}: unbalanced `{expr}`");
            assert_exported(&format!("alert {alert}"), expr, &families);
            used.extend(metric_names(expr).iter().map(|n| family_of(n, &families)));
            let wait = rule["for"].as_str().expect("for");
            assert!(is_duration(wait), "{alert}: for: {wait}");
            let severity = rule["labels"]["severity"].as_str().expect("severity");
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{alert}: severity {severity}"
            );
            let summary = rule["annotations"]["summary"].as_str().expect("summary");
            assert!(!summary.trim().is_empty(), "{alert}: summary");
            assert!(
                rule["annotations"]["description"].as_str().is_some(),
                "{alert}: description"
            );
        }
    }
    // The situations the rules promise to cover.
    for alert in [
        "InfadaptdDown",
        "InfadaptdAbsent",
        "InfadaptPipelineDegraded",
        "InfadaptSloAttainmentLow",
        "InfadaptPluginErrorsRising",
        "InfadaptPlannerErrors",
        "InfadaptTicksSlow",
        "InfadaptReconfigurationsFlapping",
    ] {
        assert!(alerts.contains(alert), "no rule {alert}");
    }
    assert!(used.contains("infadapt_slo_attainment_ratio"));
    assert!(is_duration("1h30m") && !is_duration("5") && !is_duration("m") && !is_duration(""));
}
