//! The workload the end-to-end tests replay: the IPA "bursty" window of the Twitter trace
//! in `../shared/data`, compressed and scaled to what two cores can serve.

use std::path::PathBuf;

use serde_json::Value;

fn trace_dir() -> PathBuf {
    crate::daemon::repo_root().join("../shared/data/twitter-trace")
}

/// Requests per second of the IPA bursty window (`experiment_slices_index.json`): each
/// replayed second is the mean of `compression` trace seconds, scaled so that the busiest
/// replayed second is `peak_rps`.
pub(crate) fn bursty_window(compression: usize, peak_rps: f64) -> Vec<f64> {
    assert!(compression > 0, "compression must be at least 1");
    let index_path = trace_dir().join("experiment_slices_index.json");
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(&index_path)
            .unwrap_or_else(|e| panic!("the trace slice index {}: {e}", index_path.display())),
    )
    .expect("slice index is JSON");
    let slice = &index["ipa_bursty"];
    let (start, end) = (
        slice["start"].as_u64().expect("start") as usize,
        slice["end"].as_u64().expect("end") as usize,
    );
    let trace_path = trace_dir().join("rps-per-second-days00-16.txt");
    let text = std::fs::read_to_string(&trace_path)
        .unwrap_or_else(|e| panic!("the trace {}: {e}", trace_path.display()));
    let window: Vec<f64> = text
        .lines()
        .skip(start)
        .take(end - start)
        .map(|l| l.trim().parse::<f64>().expect("a rate per line"))
        .collect();
    assert_eq!(window.len(), end - start, "trace too short");
    let compressed: Vec<f64> = window
        .chunks(compression)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    let peak = compressed.iter().copied().fold(0.0, f64::max);
    assert!(peak > 0.0, "the window carries no load");
    compressed.iter().map(|r| r * peak_rps / peak).collect()
}

#[test]
fn the_bursty_window_is_compressed_and_scaled_to_its_peak() {
    let rates = bursty_window(30, 36.0);
    assert_eq!(rates.len(), 40);
    let peak = rates.iter().copied().fold(0.0, f64::max);
    assert!((peak - 36.0).abs() < 1e-9, "{peak}");
    // A burst: the busiest second is well above the first.
    assert!(rates[0] < peak / 2.0, "{rates:?}");
}
