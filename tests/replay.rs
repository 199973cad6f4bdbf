//! The workload the end-to-end tests replay: a generated bursty window (20 minutes of a
//! steady, noisy load with one burst to five times it from minute 12 to minute 16), compressed
//! and scaled to what two cores can serve. The same shape cut from the real trace, the IPA "bursty" window in the
//! data directory `INFADAPT_DATA`, is checked by a replay test (ignored by default).

use infadapt_sim::{DiurnalParams, synthetic_diurnal};

/// Seconds of the window (as long as the IPA bursty window).
const WINDOW_S: usize = 1200;

/// Requests per second of a generated bursty window: each replayed second is the mean of
/// `compression` generated seconds, scaled so that the busiest replayed second is `peak_rps`.
pub(crate) fn bursty_window(compression: usize, peak_rps: f64) -> Vec<f64> {
    let params = DiurnalParams {
        trough_rps: 10.0,
        peak_rps: 10.0,
        bursts_per_hour: 0.0,
        ..DiurnalParams::default()
    };
    let steady = synthetic_diurnal(WINDOW_S, 1, &params).expect("generated workload");
    let (burst_start, burst_s) = (720.0, 240.0);
    let window: Vec<f64> = steady
        .iter()
        .enumerate()
        .map(|(t, rate)| {
            let into = (t as f64 - burst_start) / burst_s;
            let burst = if (0.0..=1.0).contains(&into) {
                4.0 * (std::f64::consts::PI * into).sin()
            } else {
                0.0
            };
            rate * (1.0 + burst)
        })
        .collect();
    compress_and_scale(&window, compression, peak_rps)
}

/// The IPA bursty window of the real trace (`ipa_bursty` in the slice index), compressed and
/// scaled as [`bursty_window`].
fn real_bursty_window(compression: usize, peak_rps: f64) -> Vec<f64> {
    let crate::trace_windows::TraceWindow { start, end, .. } =
        crate::trace_windows::trace_window("ipa_bursty");
    let trace_path = crate::real_data::real_data("twitter-trace/rps-per-second-days00-16.txt");
    let text = std::fs::read_to_string(&trace_path)
        .unwrap_or_else(|e| panic!("the trace {}: {e}", trace_path.display()));
    let window: Vec<f64> = text
        .lines()
        .skip(start)
        .take(end - start)
        .map(|l| l.trim().parse::<f64>().expect("a rate per line"))
        .collect();
    assert_eq!(window.len(), end - start, "trace too short");
    compress_and_scale(&window, compression, peak_rps)
}

fn compress_and_scale(window: &[f64], compression: usize, peak_rps: f64) -> Vec<f64> {
    assert!(compression > 0, "compression must be at least 1");
    let compressed: Vec<f64> = window
        .chunks(compression)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    let peak = compressed.iter().copied().fold(0.0, f64::max);
    assert!(peak > 0.0, "the window carries no load");
    compressed.iter().map(|r| r * peak_rps / peak).collect()
}

fn check_compressed_and_scaled(rates: &[f64]) {
    assert_eq!(rates.len(), 40);
    let peak = rates.iter().copied().fold(0.0, f64::max);
    assert!((peak - 36.0).abs() < 1e-9, "{peak}");
    // A burst: the busiest second is well above the first.
    assert!(rates[0] < peak / 2.0, "{rates:?}");
}

#[test]
fn the_bursty_window_is_compressed_and_scaled_to_its_peak() {
    check_compressed_and_scaled(&bursty_window(30, 36.0));
}

#[test]
#[ignore = "replays real data: set INFADAPT_DATA (see README, 'Tests that replay real data')"]
fn the_real_bursty_window_is_compressed_and_scaled_to_its_peak() {
    check_compressed_and_scaled(&real_bursty_window(30, 36.0));
}
