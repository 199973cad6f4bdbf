//! Fuzz target `metrics_torchserve`: arbitrary text as TorchServe's Prometheus metrics page,
//! read by the plugins' shared Prometheus reader (`infadapt-plugin-support`) and the
//! TorchServe plugin's counter picking, then two scrapes (the text split at its first NUL
//! byte) turned into per-model deltas. Contract: no panic; every line is a sample or a bad
//! line, a bad line keeps a first problem; counters and deltas are finite and ≥ 0.
#![no_main]

use infadapt_plugin_support::prometheus::parse;
use infadapt_plugin_torchserve::metrics::{Scrape, model_delta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (first, second) = text.split_once('\0').unwrap_or((text, text));
    let mut previous: Option<Scrape> = None;
    for text in [first, second] {
        let page = parse(text);
        let lines = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(page.samples.len() + page.bad_lines, lines);
        assert_eq!(page.bad_lines > 0, page.first_problem.is_some());
        let scrape = Scrape::from_page(&page);
        if let Some(errors) = scrape.requests_5xx {
            assert!(errors.is_finite() && errors >= 0.0, "5xx {errors}");
        }
        for (model, counters) in &scrape.models {
            let before = previous.as_ref().and_then(|p| p.models.get(model));
            let delta = model_delta(before, counters, true);
            for value in [
                counters.requests,
                counters.inference_us,
                counters.queue_us,
                delta.requests,
                delta.inference_us,
                delta.queue_us,
            ] {
                assert!(value.is_finite() && value >= 0.0, "{value} for `{model}`");
            }
        }
        previous = Some(scrape);
    }
});
