//! Baseline forecasters that every model must beat: last value, maximum of the last
//! window, EWMA of the window maximum, and additive Holt-Winters with a daily season.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::forecaster::{Forecast, Forecaster, finite_non_negative};
use crate::sanitize::{HygieneReport, Sanitizer};

/// Recent clean samples within a time window, with their running maximum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RecentSamples {
    window_s: f64,
    samples: VecDeque<(f64, f64)>,
}

impl RecentSamples {
    fn new(window_s: f64) -> Self {
        Self {
            window_s,
            samples: VecDeque::new(),
        }
    }

    fn push(&mut self, t_s: f64, rps: f64) {
        self.samples.push_back((t_s, rps));
        self.evict(t_s);
    }

    fn evict(&mut self, now_s: f64) {
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| t < now_s - self.window_s)
        {
            self.samples.pop_front();
        }
    }

    fn max(&self) -> Option<f64> {
        self.samples.iter().map(|&(_, v)| v).reduce(f64::max)
    }
}

/// Forecasts the last clean observation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LastValue {
    sanitizer: Sanitizer,
    last: Option<f64>,
}

impl Forecaster for LastValue {
    fn name(&self) -> &str {
        "naive"
    }
    fn observe(&mut self, t_s: f64, rps: f64) {
        if let Some((_, v)) = self.sanitizer.accept(t_s, rps) {
            self.last = Some(v);
        }
    }
    fn forecast(&mut self, _now_s: f64, _horizon_s: f64) -> Forecast {
        let point = self.last.unwrap_or(0.0);
        Forecast::sanitized(point, point, 0.9)
    }
    fn hygiene(&self) -> HygieneReport {
        self.sanitizer.hygiene()
    }
}

/// Forecasts the maximum of the clean observations in the last `window_s` seconds; when
/// the window is empty (a collection gap) it holds the last maximum it knew.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowMax {
    sanitizer: Sanitizer,
    recent: RecentSamples,
    held: f64,
}

impl WindowMax {
    /// Maximum over the last `window_s` seconds (60 for the standard baseline).
    pub fn new(window_s: f64) -> Self {
        Self {
            sanitizer: Sanitizer::default(),
            recent: RecentSamples::new(window_s.max(1.0)),
            held: 0.0,
        }
    }
}

impl Forecaster for WindowMax {
    fn name(&self) -> &str {
        "max"
    }
    fn observe(&mut self, t_s: f64, rps: f64) {
        if let Some((t, v)) = self.sanitizer.accept(t_s, rps) {
            self.recent.push(t, v);
        }
    }
    fn forecast(&mut self, now_s: f64, _horizon_s: f64) -> Forecast {
        if now_s.is_finite() {
            self.recent.evict(now_s);
        }
        if let Some(m) = self.recent.max() {
            self.held = m;
        }
        Forecast::sanitized(self.held, self.held, 0.9)
    }
    fn hygiene(&self) -> HygieneReport {
        self.sanitizer.hygiene()
    }
}

/// Exponentially weighted moving average of the rolling `window_s` maximum, with the
/// given half-life in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ewma {
    sanitizer: Sanitizer,
    recent: RecentSamples,
    half_life_s: f64,
    level: Option<f64>,
    last_t_s: f64,
}

impl Ewma {
    /// EWMA of the `window_s` maximum with a `half_life_s` memory.
    pub fn new(window_s: f64, half_life_s: f64) -> Self {
        Self {
            sanitizer: Sanitizer::default(),
            recent: RecentSamples::new(window_s.max(1.0)),
            half_life_s: half_life_s.max(1e-3),
            level: None,
            last_t_s: 0.0,
        }
    }
}

impl Forecaster for Ewma {
    fn name(&self) -> &str {
        "ewma"
    }
    fn observe(&mut self, t_s: f64, rps: f64) {
        let Some((t, v)) = self.sanitizer.accept(t_s, rps) else {
            return;
        };
        self.recent.push(t, v);
        let window_max = self.recent.max().unwrap_or(v);
        self.level = Some(match self.level {
            None => window_max,
            Some(level) => {
                let weight = 1.0 - (-(t - self.last_t_s) / self.half_life_s).exp2();
                level + weight * (window_max - level)
            }
        });
        self.last_t_s = t;
    }
    fn forecast(&mut self, _now_s: f64, _horizon_s: f64) -> Forecast {
        let point = self.level.unwrap_or(0.0);
        Forecast::sanitized(point, point, 0.9)
    }
    fn hygiene(&self) -> HygieneReport {
        self.sanitizer.hygiene()
    }
}

/// Smoothing parameters of [`HoltWinters`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HoltWintersConfig {
    /// Bucket length in seconds; the model runs on bucket maxima.
    pub bucket_s: f64,
    /// Buckets per season (1440 one-minute buckets = one day).
    pub season_buckets: usize,
    /// Level smoothing.
    pub alpha: f64,
    /// Trend smoothing.
    pub beta: f64,
    /// Season smoothing.
    pub gamma: f64,
}

impl Default for HoltWintersConfig {
    fn default() -> Self {
        Self {
            bucket_s: 60.0,
            season_buckets: 1440,
            alpha: 0.5,
            beta: 0.01,
            gamma: 0.2,
        }
    }
}

/// Additive Holt-Winters on bucket maxima with a daily season.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoltWinters {
    config: HoltWintersConfig,
    sanitizer: Sanitizer,
    level: Option<f64>,
    trend: f64,
    season: Vec<f64>,
    /// Index of the bucket being filled and its maximum so far.
    open_bucket: Option<(i64, f64)>,
    /// Index of the last bucket folded into the state.
    last_bucket: Option<i64>,
}

impl HoltWinters {
    /// A model with the given parameters (clamped to sane ranges).
    pub fn new(config: HoltWintersConfig) -> Self {
        let config = HoltWintersConfig {
            bucket_s: config.bucket_s.max(1.0),
            season_buckets: config.season_buckets.clamp(1, 1 << 20),
            alpha: config.alpha.clamp(0.0, 1.0),
            beta: config.beta.clamp(0.0, 1.0),
            gamma: config.gamma.clamp(0.0, 1.0),
        };
        Self {
            season: vec![0.0; config.season_buckets],
            config,
            sanitizer: Sanitizer::default(),
            level: None,
            trend: 0.0,
            open_bucket: None,
            last_bucket: None,
        }
    }

    fn season_slot(&self, bucket: i64) -> usize {
        bucket.rem_euclid(self.config.season_buckets as i64) as usize
    }

    fn close_bucket(&mut self, bucket: i64, value: f64) {
        let c = self.config;
        // Missing buckets since the last one only advance the trend.
        let skipped = self.last_bucket.map_or(0, |last| {
            bucket
                .saturating_sub(last)
                .saturating_sub(1)
                .clamp(0, c.season_buckets as i64)
        });
        let slot = self.season_slot(bucket);
        match self.level {
            None => self.level = Some(value),
            Some(level) => {
                let level = level + self.trend * skipped as f64;
                let seasonal = self.season[slot];
                let new_level =
                    c.alpha * (value - seasonal) + (1.0 - c.alpha) * (level + self.trend);
                self.trend = c.beta * (new_level - level) + (1.0 - c.beta) * self.trend;
                self.season[slot] = c.gamma * (value - new_level) + (1.0 - c.gamma) * seasonal;
                self.level = Some(new_level);
            }
        }
        self.last_bucket = Some(bucket);
    }
}

impl Forecaster for HoltWinters {
    fn name(&self) -> &str {
        "holt-winters"
    }
    fn observe(&mut self, t_s: f64, rps: f64) {
        let Some((t, v)) = self.sanitizer.accept(t_s, rps) else {
            return;
        };
        let bucket = (t / self.config.bucket_s).floor() as i64;
        match self.open_bucket {
            Some((open, max)) if open == bucket => self.open_bucket = Some((open, max.max(v))),
            Some((open, max)) => {
                self.close_bucket(open, max);
                self.open_bucket = Some((bucket, v));
            }
            None => self.open_bucket = Some((bucket, v)),
        }
    }
    fn forecast(&mut self, now_s: f64, horizon_s: f64) -> Forecast {
        let Some(level) = self.level else {
            let point = self.open_bucket.map_or(0.0, |(_, m)| m);
            return Forecast::sanitized(point, point, 0.9);
        };
        let last = self.last_bucket.unwrap_or(0);
        let now_bucket = if now_s.is_finite() {
            (now_s / self.config.bucket_s).floor() as i64
        } else {
            last.saturating_add(1)
        };
        let steps = (finite_non_negative(horizon_s) / self.config.bucket_s)
            .ceil()
            .clamp(1.0, 1e4) as i64;
        let mut point = f64::NEG_INFINITY;
        for bucket in now_bucket..now_bucket.saturating_add(steps) {
            let ahead = bucket.saturating_sub(last).clamp(1, 1 << 20) as f64;
            let value = level + self.trend * ahead + self.season[self.season_slot(bucket)];
            point = point.max(value);
        }
        Forecast::sanitized(point, point, 0.9)
    }
    fn hygiene(&self) -> HygieneReport {
        self.sanitizer.hygiene()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_max_forgets_old_samples_and_holds_through_gaps() {
        let mut m = WindowMax::new(60.0);
        m.observe(0.0, 100.0);
        for t in 1..70 {
            m.observe(t as f64, 10.0);
        }
        assert_eq!(m.forecast(70.0, 60.0).point, 10.0);
        assert_eq!(m.forecast(500.0, 60.0).point, 10.0);
    }

    #[test]
    fn last_value_skips_gaps() {
        let mut m = LastValue::default();
        m.observe(0.0, 7.0);
        m.observe(1.0, 0.0);
        m.observe(2.0, f64::NAN);
        assert_eq!(m.forecast(3.0, 60.0).point, 7.0);
        assert_eq!(m.hygiene().zeros_as_gaps, 1);
    }

    #[test]
    fn ewma_moves_towards_new_level() {
        let mut m = Ewma::new(10.0, 5.0);
        for t in 0..100 {
            m.observe(t as f64, 10.0);
        }
        for t in 100..105 {
            m.observe(t as f64, 20.0);
        }
        let p = m.forecast(105.0, 60.0).point;
        assert!(
            p > 14.0 && p < 16.0,
            "half-life of 5 s gives about 15, got {p}"
        );
    }

    #[test]
    fn holt_winters_learns_a_daily_pattern() {
        let config = HoltWintersConfig {
            bucket_s: 60.0,
            season_buckets: 24,
            alpha: 0.3,
            beta: 0.0,
            gamma: 0.5,
        };
        let mut m = HoltWinters::new(config);
        // Season of 24 one-minute buckets: high in the first half, low in the second.
        let rate = |t: i64| if (t / 60) % 24 < 12 { 100.0 } else { 20.0 };
        for t in 0..(60 * 24 * 20) {
            m.observe(t as f64, rate(t));
        }
        let now = (60 * 24 * 20) as f64;
        let high = m.forecast(now, 60.0).point;
        let low = m.forecast(now + 60.0 * 14.0, 60.0).point;
        assert!((high - 100.0).abs() < 10.0, "high {high}");
        assert!((low - 20.0).abs() < 10.0, "low {low}");
    }
}
