//! TorchServe's Prometheus metrics: a tolerant reader of the text format (TorchServe ends
//! label sets with a trailing comma, `{a="x",}`) and per-model counters turned into
//! deltas that survive missing metrics and counters that go backwards.

use std::collections::HashMap;

/// Counter of requests per model (`model_name` label).
pub const REQUESTS_TOTAL: &str = "ts_inference_requests_total";
/// Cumulative inference time per model, microseconds.
pub const INFERENCE_LATENCY_US: &str = "ts_inference_latency_microseconds";
/// Cumulative queueing time per model, microseconds.
pub const QUEUE_LATENCY_US: &str = "ts_queue_latency_microseconds";
/// Host-wide count of answers with a 5xx status.
pub const REQUESTS_5XX: &str = "Requests5XX";

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A metrics page read leniently: good lines become samples, bad lines are counted with
/// the first problem kept for messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Page {
    pub samples: Vec<Sample>,
    pub bad_lines: usize,
    pub first_problem: Option<String>,
}

/// Reads Prometheus text. Comments and blank lines are skipped; a line that does not parse
/// is counted, not fatal (the caller decides whether a page with no samples is garbage).
pub fn parse(text: &str) -> Page {
    let mut page = Page::default();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(sample) => page.samples.push(sample),
            Err(problem) => {
                page.bad_lines += 1;
                if page.first_problem.is_none() {
                    page.first_problem = Some(format!("line {}: {problem}", number + 1));
                }
            }
        }
    }
    page
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let value_text = fields.next().ok_or("no value")?;
    let value =
        parse_value(value_text).ok_or_else(|| format!("value `{value_text}` is not a number"))?;
    // An optional timestamp may follow; anything more is wrong.
    if let Some(timestamp) = fields.next()
        && timestamp.parse::<i64>().is_err()
    {
        return Err(format!("unexpected `{timestamp}` after the value"));
    }
    if fields.next().is_some() {
        return Err("unexpected text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// Reads `key="value",key="value",}` (trailing comma allowed) and returns the labels and
/// the text after the closing brace.
/// Label pairs in the order written.
type Labels = Vec<(String, String)>;

fn parse_labels(mut text: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start();
        if let Some(after) = text.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = text.find('=').ok_or("label without `=`")?;
        let key = text[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad label name `{key}`"));
        }
        let after_eq = text[eq + 1..].trim_start();
        let mut chars = after_eq.char_indices();
        if chars.next().map(|(_, c)| c) != Some('"') {
            return Err(format!("label `{key}` has no quoted value"));
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, c) in chars {
            if escaped {
                value.push(match c {
                    'n' => '\n',
                    other => other,
                });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            } else {
                value.push(c);
            }
        }
        let end = end.ok_or_else(|| format!("label `{key}` value is not closed"))?;
        labels.push((key.to_owned(), value));
        text = after_eq[end + 1..].trim_start();
        if let Some(after_comma) = text.strip_prefix(',') {
            text = after_comma;
        } else if !text.starts_with('}') {
            return Err("labels not separated by `,`".into());
        }
    }
}

/// Cumulative counters of one model at one scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelCounters {
    pub requests: f64,
    pub inference_us: f64,
    pub queue_us: f64,
}

/// What one scrape holds for the plugin: counters per model name and host-wide 5xx.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    pub models: HashMap<String, ModelCounters>,
    pub requests_5xx: Option<f64>,
    /// Samples of the counters above whose value is no count (NaN, infinite, negative):
    /// the model (`None` for the host-wide 5xx counter) and `name = value`.
    pub invalid: Vec<(Option<String>, String)>,
}

impl Scrape {
    /// Picks the plugin's counters out of a page. Missing metrics read as absent, not zero;
    /// non-finite or negative values are left out and listed in `invalid`; a value whose sum
    /// with the others would not be finite is ignored.
    pub fn from_page(page: &Page) -> Scrape {
        let mut scrape = Scrape::default();
        for sample in &page.samples {
            if !sample.value.is_finite() || sample.value < 0.0 {
                let model = sample.label("model_name").map(str::to_owned);
                let counted = match sample.name.as_str() {
                    REQUESTS_5XX => true,
                    REQUESTS_TOTAL | INFERENCE_LATENCY_US | QUEUE_LATENCY_US => model.is_some(),
                    _ => false,
                };
                if counted {
                    let model = model.filter(|_| sample.name != REQUESTS_5XX);
                    scrape
                        .invalid
                        .push((model, format!("{} = {}", sample.name, sample.value)));
                }
                continue;
            }
            if sample.name == REQUESTS_5XX {
                let total = scrape.requests_5xx.get_or_insert(0.0);
                *total = finite_sum(*total, sample.value);
                continue;
            }
            if !matches!(
                sample.name.as_str(),
                REQUESTS_TOTAL | INFERENCE_LATENCY_US | QUEUE_LATENCY_US
            ) {
                continue;
            }
            let Some(model) = sample.label("model_name") else {
                continue;
            };
            let counters = scrape.models.entry(model.to_owned()).or_default();
            // Several versions of one model add up.
            let total = match sample.name.as_str() {
                REQUESTS_TOTAL => &mut counters.requests,
                INFERENCE_LATENCY_US => &mut counters.inference_us,
                _ => &mut counters.queue_us,
            };
            *total = finite_sum(*total, sample.value);
        }
        scrape
    }
}

/// `total + value`, or `total` where the sum would pass the largest f64: counters stay
/// finite, so their deltas are numbers JSON can carry.
fn finite_sum(total: f64, value: f64) -> f64 {
    let sum = total + value;
    if sum.is_finite() { sum } else { total }
}

/// Change of a counter between two scrapes: a counter that went backwards was reset, so
/// its whole new value is the change.
pub fn counter_delta(previous: Option<f64>, current: f64) -> f64 {
    match previous {
        Some(p) if current >= p => current - p,
        _ if previous.is_none() => 0.0,
        _ => current,
    }
}

/// Per-model deltas between two scrapes. A model seen for the first time contributes its
/// whole count only if `new_models_count` (a replica registered since the last scrape
/// started from zero); otherwise the first sight only sets the baseline.
pub fn model_delta(
    previous: Option<&ModelCounters>,
    current: &ModelCounters,
    new_models_count: bool,
) -> ModelCounters {
    let base = match previous {
        Some(p) => Some(*p),
        None if new_models_count => Some(ModelCounters::default()),
        None => None,
    };
    ModelCounters {
        requests: counter_delta(base.map(|b| b.requests), current.requests),
        inference_us: counter_delta(base.map(|b| b.inference_us), current.inference_us),
        queue_us: counter_delta(base.map(|b| b.queue_us), current.queue_us),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TORCHSERVE_PAGE: &str = r#"# HELP ts_inference_requests_total Torchserve prometheus counter metric with unit: Count
# TYPE ts_inference_requests_total counter
ts_inference_requests_total{model_name="small--r1",model_version="default",hostname="vm",} 5.0
ts_inference_requests_total{model_name="small--r0",model_version="default",hostname="vm",} 1.0
Requests2XX{Level="Host",Hostname="vm",} 14.0
Requests5XX{Level="Host",Hostname="vm",} 2.0
ts_inference_latency_microseconds{model_name="small--r1",model_version="default",hostname="vm",} 226490.99199999997
ts_queue_latency_microseconds{model_name="small--r1",model_version="default",hostname="vm",} 58195.44
# TYPE GPUUtilization gauge
MemoryUsed{Level="Host",Hostname="vm",} 1653.921875
"#;

    #[test]
    fn reads_torchserve_text_with_trailing_commas() {
        let page = parse(TORCHSERVE_PAGE);
        assert_eq!(page.bad_lines, 0, "{:?}", page.first_problem);
        assert_eq!(page.samples.len(), 7);
        assert_eq!(page.samples[0].label("model_name"), Some("small--r1"));
        assert_eq!(page.samples[0].labels.len(), 3);
        let scrape = Scrape::from_page(&page);
        let r1 = scrape.models["small--r1"];
        assert_eq!(r1.requests, 5.0);
        assert!((r1.inference_us - 226490.992).abs() < 1e-3);
        assert!((r1.queue_us - 58195.44).abs() < 1e-6);
        assert_eq!(scrape.models["small--r0"].inference_us, 0.0);
        assert_eq!(scrape.requests_5xx, Some(2.0));
    }

    #[test]
    fn strict_prometheus_forms_and_escapes_are_read_too() {
        let page = parse(
            "a_total 3\nb{x=\"1\"} 2.5 1700000000000\nc{q=\"say \\\"hi\\\"\\n\", r = \"}\"} +Inf\n",
        );
        assert_eq!(page.bad_lines, 0, "{:?}", page.first_problem);
        assert_eq!(page.samples[0].value, 3.0);
        assert_eq!(page.samples[1].value, 2.5);
        assert_eq!(page.samples[2].label("q"), Some("say \"hi\"\n"));
        assert_eq!(page.samples[2].label("r"), Some("}"));
        assert!(page.samples[2].value.is_infinite());
    }

    #[test]
    fn garbage_lines_are_counted_with_the_first_problem() {
        let page = parse("ok 1\n{nope} 3\nx{a=1} 2\ny{a=\"1\" 4\nz notanumber\nw 1 2 3\n");
        assert_eq!(page.samples.len(), 1);
        assert_eq!(page.bad_lines, 5);
        assert_eq!(
            page.first_problem.as_deref(),
            Some("line 2: no metric name")
        );
        let html = parse("<html><body>502 Bad Gateway</body></html>");
        assert!(html.samples.is_empty() && html.bad_lines == 1);
    }

    #[test]
    fn bad_values_are_listed_and_unlabelled_counters_ignored() {
        let page = parse(
            "ts_inference_requests_total{model_name=\"m\",} NaN\n\
             ts_inference_requests_total{model_name=\"n\",} -4\n\
             ts_inference_requests_total 7\n\
             ts_queue_latency_microseconds{model_name=\"m\",} 10\n\
             Requests5XX{Level=\"Host\",} +Inf\n\
             MemoryUsed{Level=\"Host\",} -1\n",
        );
        let scrape = Scrape::from_page(&page);
        assert_eq!(scrape.models.len(), 1);
        assert_eq!(scrape.models["m"].requests, 0.0);
        assert_eq!(scrape.models["m"].queue_us, 10.0);
        assert_eq!(scrape.requests_5xx, None);
        assert_eq!(
            scrape.invalid,
            [
                (
                    Some("m".to_owned()),
                    "ts_inference_requests_total = NaN".to_owned()
                ),
                (
                    Some("n".to_owned()),
                    "ts_inference_requests_total = -4".to_owned()
                ),
                (None, "Requests5XX = inf".to_owned()),
            ]
        );
    }

    #[test]
    fn counters_that_go_backwards_count_as_reset() {
        assert_eq!(counter_delta(Some(10.0), 15.0), 5.0);
        assert_eq!(counter_delta(Some(10.0), 3.0), 3.0);
        assert_eq!(counter_delta(None, 42.0), 0.0);
        let current = ModelCounters {
            requests: 4.0,
            inference_us: 100.0,
            queue_us: 5.0,
        };
        assert_eq!(model_delta(None, &current, true), current);
        assert_eq!(model_delta(None, &current, false), ModelCounters::default());
        let before = ModelCounters {
            requests: 1.0,
            inference_us: 150.0,
            queue_us: 1.0,
        };
        let delta = model_delta(Some(&before), &current, false);
        assert_eq!(
            (delta.requests, delta.inference_us, delta.queue_us),
            (3.0, 100.0, 4.0)
        );
    }

    /// Found with the fuzz target `metrics_torchserve`: two versions near the largest f64
    /// summed to infinity, and the next delta was infinite or NaN (`inf - inf`).
    #[test]
    fn fuzz_regression_sums_past_the_largest_float_stay_finite() {
        let page = parse(
            "ts_inference_requests_total{model_name=\"m\",} 1e308\n\
             ts_inference_requests_total{model_name=\"m\",} 1e308\n\
             Requests5XX{Level=\"Host\",} 1.5e308\n\
             Requests5XX{Level=\"Host\",} 1.5e308\n",
        );
        let scrape = Scrape::from_page(&page);
        let m = scrape.models["m"];
        assert_eq!(m.requests, 1e308);
        assert_eq!(scrape.requests_5xx, Some(1.5e308));
        let delta = model_delta(Some(&m), &m, false);
        assert_eq!(delta.requests, 0.0);
        let first = model_delta(None, &m, true);
        assert_eq!(first.requests, 1e308);
    }
}
