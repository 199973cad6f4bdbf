//! The published evaluation windows of the request trace, read by key from the slice index
//! in the data directory (`INFADAPT_DATA`), so that no test restates their positions. Shared
//! by the daemon's integration tests and the simulator's trace tests, which include it with
//! `#[path]` beside `real_data.rs`.

use serde_json::Value;

/// The slice index inside the data directory: each window by key (`infadapter_eval_21min`,
/// `ipa_bursty`, …) with its trace lines `[start, end)` and the `damping_factor` its
/// published runs divided the rates by.
pub const TRACE_WINDOWS: &str = "twitter-trace/experiment_slices_index.json";

/// One window of the slice index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceWindow {
    /// The window's first line (second) of the trace.
    pub start: usize,
    /// The line after its last.
    pub end: usize,
    /// The rate scale of its published runs: 1 / `damping_factor`, 1 where it has none.
    pub scale: f64,
}

/// The window `key` of the slice index; panics naming `INFADAPT_DATA` and the index file
/// when either is missing, and naming the key and the file when the index lacks the window.
pub fn trace_window(key: &str) -> TraceWindow {
    let path = crate::real_data::real_data(TRACE_WINDOWS);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the slice index {} cannot be read: {e}", path.display()));
    let index: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the slice index {} is not JSON: {e}", path.display()));
    let window = index
        .get(key)
        .unwrap_or_else(|| panic!("the slice index {} has no window `{key}`", path.display()));
    let line = |field: &str| {
        window[field]
            .as_u64()
            .and_then(|line| usize::try_from(line).ok())
            .unwrap_or_else(|| {
                panic!(
                    "the slice index {}: `{key}.{field}` is not a line number",
                    path.display()
                )
            })
    };
    let (start, end) = (line("start"), line("end"));
    assert!(
        start < end,
        "the slice index {}: `{key}` is empty",
        path.display()
    );
    let scale = window["damping_factor"]
        .as_f64()
        .map_or(1.0, |damping| 1.0 / damping);
    TraceWindow { start, end, scale }
}
