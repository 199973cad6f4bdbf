//! Triton's Prometheus metrics: the families the plugin reads, picked out of the support
//! crate's tolerant text reader (unknown lines and families are ignored, label sets may end
//! with a comma), and per-model counters turned into deltas that
//! survive the resets Triton does on every full model reload.

use std::collections::BTreeMap;

use infadapt_plugin_support::prometheus;

/// One model's values summed over its versions (and failure reasons).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelCounters {
    pub success: Option<f64>,
    pub failure: Option<f64>,
    pub request_us: Option<f64>,
    pub queue_us: Option<f64>,
    pub compute_us: Option<f64>,
    /// A gauge, not a counter.
    pub pending: Option<f64>,
}

/// What a scrape held: per-model counters, and how many lines were samples.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub models: BTreeMap<String, ModelCounters>,
    pub samples: usize,
    pub malformed: usize,
    /// Per model, the samples of the families read above whose value is no count (NaN,
    /// infinite or negative), as `name = value`; they are left out of `models`.
    pub invalid: BTreeMap<String, Vec<String>>,
}

/// The per-model families the plugin reads.
const FAMILIES: [&str; 6] = [
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_pending_request_count",
];

/// Parses Prometheus text exposition (the support crate's reader). Comment lines and unknown
/// families are skipped; malformed sample lines are counted, not fatal. Every value kept is
/// finite.
pub fn parse(text: &str) -> Scrape {
    let page = prometheus::parse(text);
    let mut scrape = Scrape {
        samples: page.samples.len(),
        malformed: page.bad_lines,
        ..Scrape::default()
    };
    for sample in &page.samples {
        let name = sample.name.as_str();
        let Some(model) = sample.label("model") else {
            continue;
        };
        if !FAMILIES.contains(&name) {
            continue;
        }
        if !prometheus::is_count(sample.value) {
            scrape
                .invalid
                .entry(model.to_owned())
                .or_default()
                .push(prometheus::describe_sample(name, sample.value));
            continue;
        }
        let entry = scrape.models.entry(model.to_owned()).or_default();
        let slot = match name {
            "nv_inference_request_success" => &mut entry.success,
            "nv_inference_request_failure" => &mut entry.failure,
            "nv_inference_request_duration_us" => &mut entry.request_us,
            "nv_inference_queue_duration_us" => &mut entry.queue_us,
            "nv_inference_compute_infer_duration_us" => &mut entry.compute_us,
            "nv_inference_pending_request_count" => &mut entry.pending,
            _ => continue,
        };
        // Versions add up; a sum past the largest f64 would be infinite, so such a
        // sample is left out and the total stays finite.
        *slot = Some(prometheus::finite_sum(slot.unwrap_or(0.0), sample.value));
    }
    scrape
}

/// Increments since the previous scrape, per model.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ModelDelta {
    pub success: f64,
    pub failure: f64,
    pub request_us: f64,
    pub queue_us: f64,
    pub compute_us: f64,
    pub pending: f64,
    /// Whether a counter went down (the model was reloaded) since the previous scrape.
    pub reset: bool,
}

/// Keeps the previous value of each counter and turns new scrapes into increments.
#[derive(Debug, Default)]
pub struct CounterTracker {
    previous: BTreeMap<String, ModelCounters>,
}

impl CounterTracker {
    /// The increments of `model` since its previous scrape (nothing on its first one). A
    /// counter lower than before was reset by a reload: its whole new value counts as
    /// the increment. A missing counter adds nothing and keeps its previous value.
    pub fn delta(&mut self, model: &str, now: &ModelCounters) -> Option<ModelDelta> {
        let before = self.previous.get(model).copied();
        let mut merged = before.unwrap_or_default();
        let mut delta = ModelDelta {
            pending: now.pending.unwrap_or(0.0).max(0.0),
            ..ModelDelta::default()
        };
        let pairs: [(Option<f64>, &mut Option<f64>, &mut f64); 5] = [
            (now.success, &mut merged.success, &mut delta.success),
            (now.failure, &mut merged.failure, &mut delta.failure),
            (
                now.request_us,
                &mut merged.request_us,
                &mut delta.request_us,
            ),
            (now.queue_us, &mut merged.queue_us, &mut delta.queue_us),
            (
                now.compute_us,
                &mut merged.compute_us,
                &mut delta.compute_us,
            ),
        ];
        for (current, previous, increment) in pairs {
            let Some(current) = current.filter(|v| prometheus::is_count(*v)) else {
                continue;
            };
            match *previous {
                Some(p) if current >= p => *increment = current - p,
                Some(_) => {
                    *increment = current;
                    delta.reset = true;
                }
                None => *increment = 0.0,
            }
            *previous = Some(current);
        }
        merged.pending = now.pending;
        self.previous.insert(model.to_owned(), merged);
        before.map(|_| delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"# HELP nv_inference_request_success Number of successful inference requests
# TYPE nv_inference_request_success counter
nv_inference_request_success{model="tiny",version="1"} 10
nv_inference_request_success{model="tiny",version="2"} 5
nv_inference_request_failure{model="tiny",reason="BACKEND",version="1"} 2
nv_inference_request_failure{model="tiny",reason="OTHER",version="1"} 1
nv_inference_compute_infer_duration_us{model="tiny",version="1",} 1500
nv_inference_pending_request_count{model="tiny",version="1"} 3
nv_cpu_utilization 0.5
this line is garbage
nv_inference_request_success{model="big\"q",version="1"} 7 1712345678
"#;

    #[test]
    fn sums_versions_and_reasons_and_counts_garbage() {
        let scrape = parse(PAGE);
        let tiny = scrape.models["tiny"];
        assert_eq!(tiny.success, Some(15.0));
        assert_eq!(tiny.failure, Some(3.0));
        assert_eq!(tiny.compute_us, Some(1500.0));
        assert_eq!(tiny.pending, Some(3.0));
        assert_eq!(tiny.queue_us, None);
        assert_eq!(scrape.models["big\"q"].success, Some(7.0));
        assert_eq!(scrape.malformed, 1);
        assert_eq!(scrape.samples, 8);
        assert_eq!(parse("<html>oops</html>").samples, 0);
    }

    #[test]
    fn values_that_are_no_counts_are_set_apart_per_model() {
        let scrape = parse(
            "nv_inference_request_success{model=\"tiny\",version=\"1\"} NaN\n\
             nv_inference_compute_infer_duration_us{model=\"tiny\",version=\"1\"} -3\n\
             nv_inference_request_failure{model=\"tiny\",version=\"1\"} 2\n\
             nv_inference_request_success{model=\"other\",version=\"1\"} +Inf\n\
             nv_gpu_power_usage{model=\"tiny\"} -1\n",
        );
        assert_eq!(
            scrape.invalid["tiny"],
            [
                "nv_inference_request_success = NaN",
                "nv_inference_compute_infer_duration_us = -3"
            ]
        );
        assert_eq!(
            scrape.invalid["other"],
            ["nv_inference_request_success = inf"]
        );
        let tiny = scrape.models["tiny"];
        assert_eq!((tiny.success, tiny.failure), (None, Some(2.0)));
        assert_eq!(scrape.samples, 5);
    }

    #[test]
    fn deltas_survive_resets_and_missing_counters() {
        let mut tracker = CounterTracker::default();
        let at = |success: f64, compute: Option<f64>| ModelCounters {
            success: Some(success),
            compute_us: compute,
            ..ModelCounters::default()
        };
        assert_eq!(tracker.delta("m", &at(100.0, Some(10.0))), None);
        let d = tracker.delta("m", &at(130.0, Some(25.0))).unwrap();
        assert_eq!((d.success, d.compute_us, d.reset), (30.0, 15.0, false));
        // A reload reset the counters: the new value is all new.
        let d = tracker.delta("m", &at(4.0, Some(2.0))).unwrap();
        assert_eq!((d.success, d.compute_us, d.reset), (4.0, 2.0, true));
        // The compute counter vanished: no increment, the previous value is kept.
        let d = tracker.delta("m", &at(10.0, None)).unwrap();
        assert_eq!((d.success, d.compute_us), (6.0, 0.0));
        let d = tracker.delta("m", &at(11.0, Some(5.0))).unwrap();
        assert_eq!(d.compute_us, 3.0);
        // Garbage values are ignored.
        let d = tracker.delta("m", &at(f64::NAN, Some(-1.0))).unwrap();
        assert_eq!((d.success, d.compute_us), (0.0, 0.0));
    }

    /// Found with the fuzz target `metrics_triton`: two versions near the largest f64
    /// summed to infinity, and the pending gauge passed it on as an infinite queue length
    /// (which JSON cannot carry).
    #[test]
    fn fuzz_regression_sums_past_the_largest_float_stay_finite() {
        let page = "nv_inference_pending_request_count{model=\"a\",version=\"1\"} 1e308\n\
                    nv_inference_pending_request_count{model=\"a\",version=\"2\"} 1e308\n\
                    nv_inference_request_success{model=\"a\",version=\"1\"} 1.5e308\n\
                    nv_inference_request_success{model=\"a\",version=\"2\"} 1.5e308\n";
        let scrape = parse(page);
        let a = scrape.models["a"];
        assert_eq!(a.pending, Some(1e308));
        assert_eq!(a.success, Some(1.5e308));
        let mut tracker = CounterTracker::default();
        assert_eq!(tracker.delta("a", &a), None);
        let d = tracker.delta("a", &a).expect("second scrape");
        assert_eq!((d.pending, d.success, d.reset), (1e308, 0.0, false));
    }
}
