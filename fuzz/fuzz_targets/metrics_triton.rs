//! Fuzz target `metrics_triton`: arbitrary text as Triton's Prometheus metrics page, read
//! by the Triton plugin's parser (the plugins' shared Prometheus reader, then the families
//! Triton reports), then two scrapes (the text split at its first NUL byte)
//! turned into per-model deltas. Contract: no panic; every line is a sample or counted as
//! malformed; every delta is finite and ≥ 0 (they become the observation's numbers).
#![no_main]

use infadapt_plugin_triton::metrics::{CounterTracker, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, second) = text.split_once('\0').unwrap_or((text, text));
    let mut tracker = CounterTracker::default();
    for page in [first, second] {
        let scrape = parse(page);
        let lines = page
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(scrape.samples + scrape.malformed, lines);
        for (model, counters) in &scrape.models {
            if let Some(delta) = tracker.delta(model, counters) {
                for value in [
                    delta.success,
                    delta.failure,
                    delta.request_us,
                    delta.queue_us,
                    delta.compute_us,
                    delta.pending,
                ] {
                    assert!(
                        value.is_finite() && value >= 0.0,
                        "delta {value} for `{model}`"
                    );
                }
            }
        }
    }
});
