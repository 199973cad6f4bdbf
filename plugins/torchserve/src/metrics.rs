//! TorchServe's Prometheus metrics: the counters the plugin reads, picked out of the support
//! crate's tolerant text reader (TorchServe ends label sets with a trailing comma,
//! `{a="x",}`), and per-model counters turned into
//! deltas that survive missing metrics and counters that go backwards.

use std::collections::HashMap;

use infadapt_plugin_support::prometheus::{self, finite_sum};

/// Counter of requests per model (`model_name` label).
pub const REQUESTS_TOTAL: &str = "ts_inference_requests_total";
/// Cumulative inference time per model, microseconds.
pub const INFERENCE_LATENCY_US: &str = "ts_inference_latency_microseconds";
/// Cumulative queueing time per model, microseconds.
pub const QUEUE_LATENCY_US: &str = "ts_queue_latency_microseconds";
/// Host-wide count of answers with a 5xx status.
pub const REQUESTS_5XX: &str = "Requests5XX";

pub use infadapt_plugin_support::prometheus::{Page, Sample, counter_delta, parse};

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
            if !prometheus::is_count(sample.value) {
                let model = sample.label("model_name").map(str::to_owned);
                let counted = match sample.name.as_str() {
                    REQUESTS_5XX => true,
                    REQUESTS_TOTAL | INFERENCE_LATENCY_US | QUEUE_LATENCY_US => model.is_some(),
                    _ => false,
                };
                if counted {
                    let model = model.filter(|_| sample.name != REQUESTS_5XX);
                    scrape.invalid.push((
                        model,
                        prometheus::describe_sample(&sample.name, sample.value),
                    ));
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
