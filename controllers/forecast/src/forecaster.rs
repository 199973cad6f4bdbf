//! The `Forecaster` trait, the forecast it returns, and the shared bookkeeping that
//! learns from forecasts once their targets are known.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::sanitize::HygieneReport;

/// The load expected over the next horizon.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Maximum per-second rate expected within the horizon (what capacity must cover).
    pub point: f64,
    /// Upper bound that the maximum should stay under with probability `quantile`.
    pub upper: f64,
    /// Nominal coverage of `upper`, in (0, 1).
    pub quantile: f64,
}

impl Forecast {
    /// A forecast with finite, non-negative values and `upper >= point`, whatever the input.
    pub fn sanitized(point: f64, upper: f64, quantile: f64) -> Self {
        let point = finite_non_negative(point);
        let upper = finite_non_negative(upper).max(point);
        let quantile = if quantile.is_finite() {
            quantile.clamp(0.0, 1.0)
        } else {
            0.9
        };
        Self {
            point,
            upper,
            quantile,
        }
    }
}

/// Maps NaN and negatives to 0 and infinities to the largest finite value.
pub fn finite_non_negative(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, f64::MAX)
    }
}

/// A load predictor fed with (time, requests per second) observations.
///
/// Observations are cheap; fitting happens only in [`Forecaster::refit`], which the
/// caller runs when [`Forecaster::refit_due`] says so (so it can time it or move it off
/// the hot path). Implementations never panic on data and never return non-finite values.
pub trait Forecaster {
    /// Short name of the model (e.g. `arima`).
    fn name(&self) -> &str;
    /// Records the rate observed at `t_s`.
    fn observe(&mut self, t_s: f64, rps: f64);
    /// Forecasts the maximum rate over `[now_s, now_s + horizon_s)`, having seen the
    /// observations before `now_s`.
    fn forecast(&mut self, now_s: f64, horizon_s: f64) -> Forecast;
    /// Whether the model wants to be (re)fitted now.
    fn refit_due(&self, _now_s: f64) -> bool {
        false
    }
    /// Fits the model on the data seen so far.
    fn refit(&mut self, _now_s: f64) -> Result<()> {
        Ok(())
    }
    /// Counters of the input problems seen.
    fn hygiene(&self) -> HygieneReport;
}

/// A forecast waiting for its target (the maximum over its horizon) to be observed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PendingTarget<P> {
    end_s: f64,
    max_seen: Option<f64>,
    payload: P,
}

/// Forecasts whose horizon has not ended yet; resolves them as observations arrive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingTargets<P> {
    entries: VecDeque<PendingTarget<P>>,
    capacity: usize,
}

impl<P> PendingTargets<P> {
    /// Keeps at most `capacity` open forecasts (the oldest are dropped).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Registers a forecast made at `now_s` for `horizon_s` seconds.
    pub fn push(&mut self, now_s: f64, horizon_s: f64, payload: P) {
        if !now_s.is_finite() || !horizon_s.is_finite() || horizon_s <= 0.0 {
            return;
        }
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(PendingTarget {
            end_s: now_s + horizon_s,
            max_seen: None,
            payload,
        });
    }

    /// Feeds a clean observation; calls `resolved(payload, actual_max)` for every forecast
    /// whose horizon ended at or before `t_s`. Horizons that saw no sample are dropped.
    pub fn observe(&mut self, t_s: f64, rps: f64, mut resolved: impl FnMut(P, f64)) {
        while self.entries.front().is_some_and(|e| e.end_s <= t_s) {
            if let Some(entry) = self.entries.pop_front()
                && let Some(actual) = entry.max_seen
            {
                resolved(entry.payload, actual);
            }
        }
        for entry in self.entries.iter_mut() {
            if t_s < entry.end_s {
                entry.max_seen = Some(entry.max_seen.map_or(rps, |m| m.max(rps)));
            }
        }
    }

    /// Number of open forecasts.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no forecast is open.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A bounded window of the most recent values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollingWindow {
    values: VecDeque<f64>,
    capacity: usize,
}

impl RollingWindow {
    /// A window holding at most `capacity` values.
    pub fn new(capacity: usize) -> Self {
        Self {
            values: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity: capacity.max(1),
        }
    }

    /// Adds a finite value (others are ignored), dropping the oldest when full.
    pub fn push(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    /// Number of values held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The empirical `q`-quantile with the finite-sample conformal correction
    /// (rank `ceil((n + 1) q)`), or `None` when empty.
    pub fn conformal_quantile(&self, q: f64) -> Option<f64> {
        let n = self.values.len();
        if n == 0 {
            return None;
        }
        let rank = ((n as f64 + 1.0) * q.clamp(0.0, 1.0)).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        let mut scratch: Vec<f64> = self.values.iter().copied().collect();
        let (_, value, _) = scratch.select_nth_unstable_by(index, f64::total_cmp);
        Some(*value)
    }

    /// The median, or `None` when empty.
    pub fn median(&self) -> Option<f64> {
        let n = self.values.len();
        if n == 0 {
            return None;
        }
        let mut scratch: Vec<f64> = self.values.iter().copied().collect();
        let (_, value, _) = scratch.select_nth_unstable_by(n / 2, f64::total_cmp);
        Some(*value)
    }

    /// Mean of the values, or `None` when empty.
    pub fn mean(&self) -> Option<f64> {
        if self.values.is_empty() {
            None
        } else {
            Some(self.values.iter().sum::<f64>() / self.values.len() as f64)
        }
    }
}

/// Scale used to normalise residuals: load noise grows roughly with the square root of
/// the rate, so errors are compared in units of `sqrt(max(level, 1))`.
pub fn noise_scale(level: f64) -> f64 {
    finite_non_negative(level).max(1.0).sqrt()
}

/// Learns the gap between a level forecast and the realised horizon maximum from recent
/// forecasts (median of normalised errors) and adds it to new forecasts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeakCalibrator {
    pending: PendingTargets<f64>,
    errors: RollingWindow,
    prior: f64,
    min_errors: usize,
}

impl PeakCalibrator {
    /// `prior` is the normalised offset used until `min_errors` errors are known;
    /// `window` is how many recent errors are kept.
    pub fn new(prior: f64, window: usize, min_errors: usize) -> Self {
        Self {
            pending: PendingTargets::new(4096),
            errors: RollingWindow::new(window),
            prior,
            min_errors,
        }
    }

    /// Current normalised offset.
    pub fn offset(&self) -> f64 {
        if self.errors.len() >= self.min_errors {
            self.errors.median().unwrap_or(self.prior)
        } else {
            self.prior
        }
    }

    /// The calibrated point for a raw level forecast.
    pub fn adjust(&self, raw: f64) -> f64 {
        raw + self.offset() * noise_scale(raw)
    }

    /// Registers a raw forecast so its error can be learned later.
    pub fn record(&mut self, now_s: f64, horizon_s: f64, raw: f64) {
        self.pending.push(now_s, horizon_s, raw);
    }

    /// Feeds a clean observation.
    pub fn observe(&mut self, t_s: f64, rps: f64) {
        let errors = &mut self.errors;
        self.pending.observe(t_s, rps, |raw, actual| {
            errors.push((actual - raw) / noise_scale(raw));
        });
    }
}

impl<F: Forecaster + ?Sized> Forecaster for Box<F> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn observe(&mut self, t_s: f64, rps: f64) {
        (**self).observe(t_s, rps);
    }
    fn forecast(&mut self, now_s: f64, horizon_s: f64) -> Forecast {
        (**self).forecast(now_s, horizon_s)
    }
    fn refit_due(&self, now_s: f64) -> bool {
        (**self).refit_due(now_s)
    }
    fn refit(&mut self, now_s: f64) -> Result<()> {
        (**self).refit(now_s)
    }
    fn hygiene(&self) -> HygieneReport {
        (**self).hygiene()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_target_resolves_with_horizon_max() {
        let mut p = PendingTargets::new(10);
        p.push(0.0, 3.0, "a");
        let mut got = Vec::new();
        for (t, v) in [(1.0, 5.0), (2.0, 9.0), (3.0, 4.0), (4.0, 100.0)] {
            p.observe(t, v, |payload, actual| got.push((payload, actual)));
        }
        assert_eq!(got, vec![("a", 9.0)]);
        assert!(p.is_empty());
    }

    #[test]
    fn conformal_quantile_uses_finite_sample_rank() {
        let mut w = RollingWindow::new(100);
        for i in 1..=9 {
            w.push(i as f64);
        }
        // n = 9, q = 0.9: rank ceil(10 * 0.9) = 9, the largest value.
        assert_eq!(w.conformal_quantile(0.9), Some(9.0));
        assert_eq!(w.conformal_quantile(0.5), Some(5.0));
        assert_eq!(w.median(), Some(5.0));
    }

    #[test]
    fn rolling_window_drops_oldest_and_ignores_nan() {
        let mut w = RollingWindow::new(2);
        w.push(1.0);
        w.push(f64::NAN);
        w.push(2.0);
        w.push(3.0);
        assert_eq!(w.len(), 2);
        assert_eq!(w.mean(), Some(2.5));
    }

    #[test]
    fn sanitized_forecast_is_finite_and_ordered() {
        let f = Forecast::sanitized(f64::NAN, -1.0, f64::INFINITY);
        assert_eq!((f.point, f.upper), (0.0, 0.0));
        let f = Forecast::sanitized(5.0, 3.0, 0.9);
        assert_eq!(f.upper, 5.0);
        let f = Forecast::sanitized(f64::INFINITY, 1.0, 0.9);
        assert!(f.point.is_finite() && f.upper >= f.point);
    }

    #[test]
    fn peak_calibrator_learns_offset() {
        let mut c = PeakCalibrator::new(0.0, 100, 5);
        let mut t = 0.0;
        for _ in 0..20 {
            c.record(t, 2.0, 16.0);
            c.observe(t + 1.0, 24.0);
            c.observe(t + 2.0, 20.0);
            t += 3.0;
            c.observe(t, 18.0);
        }
        // Actual max 24 against raw 16: offset (24 - 16) / 4 = 2.
        assert!((c.offset() - 2.0).abs() < 1e-9, "offset {}", c.offset());
        assert!((c.adjust(16.0) - 24.0).abs() < 1e-9);
    }
}
