//! IPA's load predictor as published (`Predictor.predict` in `optimizer/adapter.py` of the
//! IPA repository): the per-second rates of the last two minutes, cut into 10-s buckets
//! whose maxima feed an ARIMA(1,0,0) refitted at every call (or a trained LSTM), the
//! forecast being the largest of the next steps covering the horizon; with fewer than
//! two minutes of buckets, the maximum seen (`backup_predictor_type: max`).
//!
//! Published rule, step by step (`predictor_type`, `monitoring_duration: 2`,
//! `backup_predictor_type: max`, `backup_predictor_duration: 2`, `predictor_margin: 0` in
//! IPA's experiment configurations):
//! 1. the series is the per-second rate of the last `monitoring_duration` minutes
//!    (`Monitoring.rps_monitor`), cut from its start into chunks of 10 samples, each
//!    replaced by its maximum (`series[i:i+10]`);
//! 2. fewer than `backup_predictor_duration · 60 / 10` = 12 chunks: the backup predictor,
//!    the largest chunk maximum;
//! 3. ARIMA: `ARIMA(chunks, order=(1, 0, 0)).fit()` (exact Gaussian likelihood with a
//!    constant) on every call, then `int(max(forecast(steps=2)))`: the larger of the next
//!    two 10-s steps, truncated to an integer;
//! 4. LSTM: the last `LSTM_INPUT_SIZE` = 12 chunk maxima into the trained network;
//! 5. `round(output · (1 + predictor_margin / 100))`, the margin being 0.
//!
//! Here the steps are `ceil(horizon / 10 s)` (2 for IPA's 20 s) and the ARIMA(1,0,0) is
//! fitted by exact maximum likelihood (the mean and the innovation variance concentrated
//! out, the AR coefficient found by a grid and golden-section search), which is what
//! statsmodels maximises for a stationary AR(1). This project's LSTM reads the maximum
//! and the mean of each bucket (IPA's reads the maximum only), so the LSTM variant feeds
//! it both, over the model's own bucket length and window.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::{ForecastError, Result};
use crate::forecaster::{Forecast, Forecaster, finite_non_negative};
use crate::lstm::LstmModel;
use crate::sanitize::{HygieneReport, Sanitizer, SanitizerConfig};

/// Seconds of history IPA reads (`monitoring_duration: 2` minutes).
pub const IPA_HISTORY_S: usize = 120;
/// Samples per bucket (`step = 10` in `Predictor.predict`).
pub const IPA_BUCKET_S: usize = 10;
/// Buckets needed before the model is used (`backup_predictor_duration: 2` minutes).
pub const IPA_MIN_BUCKETS: usize = IPA_HISTORY_S / IPA_BUCKET_S;

/// Which model turns the bucket maxima into a forecast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum IpaModel {
    /// ARIMA(1,0,0) refitted on every call.
    Arima,
    /// A trained network.
    Lstm(LstmModel),
}

/// An AR(1) with a mean, fitted by exact maximum likelihood.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ar1Fit {
    /// Mean of the process.
    pub mean: f64,
    /// AR coefficient, in (−1, 1).
    pub phi: f64,
    /// Innovation variance.
    pub sigma2: f64,
}

impl Ar1Fit {
    /// Fits `x` (at least two values, all finite); `None` otherwise. A constant series fits
    /// a constant (φ = 0, σ² = 0).
    pub fn fit(x: &[f64]) -> Option<Ar1Fit> {
        if x.len() < 2 || x.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let first = x[0];
        if x.iter().all(|&v| v == first) {
            return Some(Ar1Fit {
                mean: first,
                phi: 0.0,
                sigma2: 0.0,
            });
        }
        // Concentrated −2·log-likelihood; a lower value is a better fit.
        let cost = |phi: f64| -> f64 {
            let (_, s) = concentrated(x, phi);
            let n = x.len() as f64;
            let s = s.max(f64::MIN_POSITIVE);
            n * (s / n).ln() - (1.0 - phi * phi).ln()
        };
        const BOUND: f64 = 0.999;
        const GRID: usize = 200;
        let step = 2.0 * BOUND / GRID as f64;
        let mut best = (0.0, cost(0.0));
        for i in 0..=GRID {
            let phi = -BOUND + step * i as f64;
            let c = cost(phi);
            if c < best.1 {
                best = (phi, c);
            }
        }
        let (mut a, mut b) = ((best.0 - step).max(-BOUND), (best.0 + step).min(BOUND));
        let ratio = (5.0f64.sqrt() - 1.0) / 2.0;
        for _ in 0..60 {
            let m1 = b - ratio * (b - a);
            let m2 = a + ratio * (b - a);
            if cost(m1) <= cost(m2) {
                b = m2;
            } else {
                a = m1;
            }
        }
        let phi = 0.5 * (a + b);
        let phi = if cost(phi) <= best.1 { phi } else { best.0 };
        let (mean, s) = concentrated(x, phi);
        let fit = Ar1Fit {
            mean,
            phi,
            sigma2: s / x.len() as f64,
        };
        (fit.mean.is_finite() && fit.phi.is_finite() && fit.sigma2.is_finite()).then_some(fit)
    }

    /// The forecast `steps` ahead of the last value `last`: `μ + φ^h (last − μ)`.
    pub fn forecast(&self, last: f64, steps: usize) -> Vec<f64> {
        let mut out = Vec::with_capacity(steps);
        let mut deviation = last - self.mean;
        for _ in 0..steps {
            deviation *= self.phi;
            out.push(self.mean + deviation);
        }
        out
    }
}

/// For a given φ, the exact-likelihood (GLS) mean and the weighted sum of squares
/// `(1−φ²)(x₁−μ)² + Σ_{t≥2} ((x_t−μ) − φ(x_{t−1}−μ))²` at that mean.
fn concentrated(x: &[f64], phi: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let w1 = 1.0 - phi * phi;
    let numerator = w1 * x[0] + (1.0 - phi) * x.windows(2).map(|p| p[1] - phi * p[0]).sum::<f64>();
    let denominator = w1 + (n - 1.0) * (1.0 - phi) * (1.0 - phi);
    let mean = numerator / denominator;
    let first = x[0] - mean;
    let rest: f64 = x
        .windows(2)
        .map(|p| {
            let e = (p[1] - mean) - phi * (p[0] - mean);
            e * e
        })
        .sum();
    (mean, w1 * first * first + rest)
}

/// IPA's predictor (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpaPredictor {
    model: IpaModel,
    /// Clean per-second rates, oldest first, within the history window.
    recent: VecDeque<(f64, f64)>,
    sanitizer: Sanitizer,
    /// The fit of the last ARIMA forecast.
    last_fit: Option<Ar1Fit>,
    /// Whether the last forecast came from the backup predictor.
    last_was_backup: bool,
}

impl IpaPredictor {
    /// The ARIMA(1,0,0) variant.
    pub fn arima() -> Self {
        Self::with_model(IpaModel::Arima)
    }

    /// The LSTM variant with a trained network; refused when the network's buckets are not
    /// whole seconds.
    pub fn lstm(model: LstmModel) -> Result<Self> {
        let bucket = model.config.bucket_s;
        if !(bucket.is_finite() && bucket >= 1.0 && bucket.fract() == 0.0) {
            return Err(ForecastError::InvalidConfig(format!(
                "the ipa lstm needs whole-second buckets, the model has {bucket} s"
            )));
        }
        Ok(Self::with_model(IpaModel::Lstm(model)))
    }

    fn with_model(model: IpaModel) -> Self {
        Self {
            model,
            recent: VecDeque::new(),
            // IPA reads the raw rate series: a second without requests is a zero, not a gap.
            sanitizer: Sanitizer::new(SanitizerConfig {
                zero_is_gap: false,
                step_s: 1.0,
            }),
            last_fit: None,
            last_was_backup: false,
        }
    }

    /// The trained network of the LSTM variant (`None` for the ARIMA one).
    pub fn lstm_model(&self) -> Option<&LstmModel> {
        match &self.model {
            IpaModel::Lstm(model) => Some(model),
            IpaModel::Arima => None,
        }
    }

    /// The ARIMA fit of the last forecast (`None` after a backup or LSTM forecast).
    pub fn last_fit(&self) -> Option<Ar1Fit> {
        self.last_fit
    }

    /// Whether the last forecast came from the backup predictor (too little history).
    pub fn last_was_backup(&self) -> bool {
        self.last_was_backup
    }

    /// Seconds of history kept: IPA's two minutes, or the LSTM's window if longer.
    fn history_s(&self) -> f64 {
        let lstm_span = match &self.model {
            IpaModel::Arima => 0.0,
            IpaModel::Lstm(m) => m.config.bucket_s * m.config.window as f64,
        };
        (IPA_HISTORY_S as f64).max(lstm_span)
    }

    /// The values observed in `[start_s, end_s)`, oldest first.
    fn values_in(&self, start_s: f64, end_s: f64) -> Vec<f64> {
        self.recent
            .iter()
            .filter(|&&(t, _)| t >= start_s && t < end_s)
            .map(|&(_, v)| v)
            .collect()
    }

    /// `(max, mean)` of consecutive chunks of `size` samples of the values observed in
    /// `[now − history, now)`, cut from the oldest (the last chunk may be shorter).
    fn chunks(&self, now_s: f64, size: usize) -> Vec<(f64, f64)> {
        self.values_in(now_s - self.history_s(), now_s)
            .chunks(size.max(1))
            .map(|c| {
                let max = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (max, c.iter().sum::<f64>() / c.len() as f64)
            })
            .collect()
    }

    /// The bucket maxima IPA's model reads at `now_s` (10-s buckets of the last 2 minutes).
    pub fn bucket_maxima(&self, now_s: f64) -> Vec<f64> {
        self.values_in(now_s - IPA_HISTORY_S as f64, now_s)
            .chunks(IPA_BUCKET_S)
            .map(|c| c.iter().copied().fold(f64::NEG_INFINITY, f64::max))
            .collect()
    }

    fn predict(&mut self, now_s: f64, horizon_s: f64) -> f64 {
        self.last_fit = None;
        let maxima = self.bucket_maxima(now_s);
        if maxima.len() < IPA_MIN_BUCKETS {
            self.last_was_backup = true;
            return maxima.iter().copied().fold(0.0, f64::max).round();
        }
        self.last_was_backup = false;
        let steps = if horizon_s.is_finite() && horizon_s > 0.0 {
            ((horizon_s / IPA_BUCKET_S as f64).ceil() as usize).clamp(1, 1000)
        } else {
            1
        };
        match &self.model {
            IpaModel::Arima => {
                let last = maxima[maxima.len() - 1];
                let Some(fit) = Ar1Fit::fit(&maxima) else {
                    return last.round();
                };
                self.last_fit = Some(fit);
                let peak = fit
                    .forecast(last, steps)
                    .into_iter()
                    .fold(f64::NEG_INFINITY, f64::max);
                // `int(max(model_fit.forecast(steps=2)))`.
                peak.trunc()
            }
            IpaModel::Lstm(model) => {
                let size = model.config.bucket_s.round().max(1.0) as usize;
                let window = model.config.window.max(1);
                let chunks = self.chunks(now_s, size);
                let from = chunks.len().saturating_sub(window);
                model.predict(&chunks[from..]).round()
            }
        }
    }
}

impl Forecaster for IpaPredictor {
    fn name(&self) -> &str {
        match self.model {
            IpaModel::Arima => "ipa-arima",
            IpaModel::Lstm(_) => "ipa-lstm",
        }
    }

    fn observe(&mut self, t_s: f64, rps: f64) {
        let Some(sample) = self.sanitizer.accept(t_s, rps) else {
            return;
        };
        self.recent.push_back(sample);
        let keep_from = sample.0 - self.history_s() - 1.0;
        while self.recent.front().is_some_and(|&(t, _)| t < keep_from) {
            self.recent.pop_front();
        }
    }

    fn forecast(&mut self, now_s: f64, horizon_s: f64) -> Forecast {
        let now = if now_s.is_finite() {
            now_s
        } else {
            self.recent.back().map_or(0.0, |&(t, _)| t + 1.0)
        };
        let point = finite_non_negative(self.predict(now, horizon_s));
        Forecast::sanitized(point, point, 0.9)
    }

    fn hygiene(&self) -> HygieneReport {
        self.sanitizer.hygiene()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lstm::{LstmConfig, Normalisation};

    fn fed(values: &[f64]) -> IpaPredictor {
        let mut p = IpaPredictor::arima();
        for (i, &v) in values.iter().enumerate() {
            p.observe(i as f64, v);
        }
        p
    }

    #[test]
    fn bucket_maxima_are_the_maxima_of_ten_second_chunks_of_the_last_two_minutes() {
        // 150 s: the first 30 fall outside the window; second i carries i.
        let values: Vec<f64> = (0..150).map(f64::from).collect();
        let p = fed(&values);
        let maxima = p.bucket_maxima(150.0);
        let expected: Vec<f64> = (0..12).map(|k| f64::from(30 + 10 * k + 9)).collect();
        assert_eq!(maxima, expected);
        // A spike inside one chunk shows as that chunk's maximum.
        let mut spiky = vec![5.0; 120];
        spiky[47] = 80.0;
        let maxima = fed(&spiky).bucket_maxima(120.0);
        assert_eq!(maxima.len(), 12);
        assert_eq!(maxima[4], 80.0);
        assert!(maxima.iter().enumerate().all(|(k, &m)| k == 4 || m == 5.0));
    }

    #[test]
    fn too_short_a_history_falls_back_to_the_maximum() {
        // 110 s give 11 buckets: the backup predictor answers with the largest.
        let mut values = vec![10.0; 110];
        values[3] = 42.0;
        let mut p = fed(&values);
        let f = p.forecast(110.0, 20.0);
        assert!(p.last_was_backup());
        assert_eq!(f.point, 42.0);
        assert!(p.last_fit().is_none());
        // Nothing seen at all: zero.
        let mut empty = IpaPredictor::arima();
        assert_eq!(empty.forecast(0.0, 20.0).point, 0.0);
    }

    #[test]
    fn the_arima_is_refitted_on_every_call() {
        // An AR(1) path around 50, then the same around 100: the second fit sees the
        // new level, a model fitted once would not.
        let mut x = 0.0f64;
        let mut values = Vec::new();
        for i in 0..240u32 {
            // A deterministic pseudo-noise.
            let e = (f64::from(i) * 12.9898).sin() * 43_758.545;
            let e = (e - e.floor() - 0.5) * 8.0;
            x = 0.6 * x + e;
            values.push(if i < 120 { 50.0 + x } else { 100.0 + x });
        }
        let mut p = IpaPredictor::arima();
        for (i, &v) in values.iter().take(120).enumerate() {
            p.observe(i as f64, v);
        }
        p.forecast(120.0, 20.0);
        let first = p.last_fit().expect("fitted");
        for (i, &v) in values.iter().enumerate().skip(120) {
            p.observe(i as f64, v);
        }
        let f = p.forecast(240.0, 20.0);
        let second = p.last_fit().expect("fitted");
        assert!(
            first.mean < 70.0 && second.mean > 80.0,
            "{first:?} {second:?}"
        );
        assert!(f.point > 80.0, "{f:?}");
    }

    #[test]
    fn the_forecast_is_the_truncated_maximum_of_the_steps_covering_the_horizon() {
        let values: Vec<f64> = (0..120).map(|i| if i < 60 { 20.0 } else { 60.0 }).collect();
        let mut p = fed(&values);
        let f = p.forecast(120.0, 20.0);
        let fit = p.last_fit().expect("fitted");
        let maxima = p.bucket_maxima(120.0);
        let steps = fit.forecast(*maxima.last().unwrap(), 2);
        let expected = steps[0].max(steps[1]).trunc();
        assert_eq!(f.point, expected);
        assert_eq!(f.upper, f.point);
    }

    #[test]
    fn ar1_fit_recovers_a_known_process() {
        // x_t = 30 + 0.7 (x_{t−1} − 30) + e_t with a fixed pseudo-noise.
        let mut x = vec![30.0];
        for t in 1..2000u32 {
            let e = (f64::from(t) * 78.233).sin() * 43_758.545;
            let e = (e - e.floor() - 0.5) * 2.0;
            let last = x[x.len() - 1];
            x.push(30.0 + 0.7 * (last - 30.0) + e);
        }
        let fit = Ar1Fit::fit(&x).expect("fits");
        assert!((fit.phi - 0.7).abs() < 0.05, "{fit:?}");
        assert!((fit.mean - 30.0).abs() < 0.5, "{fit:?}");
        assert_eq!(
            Ar1Fit::fit(&[4.0, 4.0, 4.0]).map(|f| (f.mean, f.phi)),
            Some((4.0, 0.0))
        );
        assert!(Ar1Fit::fit(&[1.0]).is_none());
        assert!(Ar1Fit::fit(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn garbage_input_gives_a_finite_forecast() {
        let mut p = IpaPredictor::arima();
        for i in 0..300 {
            let v = match i % 5 {
                0 => f64::NAN,
                1 => -4.0,
                2 => f64::INFINITY,
                3 => 1e300,
                _ => 7.0,
            };
            p.observe(f64::from(i), v);
        }
        for now in [f64::NAN, 300.0, -5.0] {
            for horizon in [f64::NAN, 0.0, 20.0, 1e9] {
                let f = p.forecast(now, horizon);
                assert!(f.point.is_finite() && f.upper >= f.point, "{f:?}");
            }
        }
        assert!(p.hygiene().non_finite > 0);
    }

    #[test]
    fn the_lstm_variant_reads_its_window_of_buckets() {
        let config = LstmConfig {
            window: 12,
            units: 4,
            ..LstmConfig::default()
        };
        let model = LstmModel::new(
            config,
            Normalisation {
                offset: 60.0,
                scale: 20.0,
            },
        )
        .expect("model");
        let mut p = IpaPredictor::lstm(model.clone()).expect("whole-second buckets");
        assert_eq!(p.name(), "ipa-lstm");
        for i in 0..120 {
            p.observe(f64::from(i), 30.0 + f64::from(i % 7));
        }
        let f = p.forecast(120.0, 20.0);
        let chunks = p.chunks(120.0, 10);
        assert_eq!(chunks.len(), 12);
        assert_eq!(f.point, model.predict(&chunks).round());
        let mut odd = model;
        odd.config.bucket_s = 2.5;
        assert!(IpaPredictor::lstm(odd).is_err());
    }
}
