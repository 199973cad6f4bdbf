//! Conformal upper bounds: wraps any forecaster and sets the upper bound to the point
//! forecast plus the empirical quantile of its recent errors, measured once each
//! forecast's horizon has been observed.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::forecaster::{
    Forecast, Forecaster, PendingTargets, RollingWindow, finite_non_negative, noise_scale,
};
use crate::sanitize::{HygieneReport, Sanitizer};

/// How residuals are normalised before taking their quantile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResidualScale {
    /// Raw errors in requests per second.
    Absolute,
    /// Errors divided by `sqrt(max(point, 1))`, matching noise that grows with the rate.
    SqrtPoint,
}

impl ResidualScale {
    fn factor(self, point: f64) -> f64 {
        match self {
            Self::Absolute => 1.0,
            Self::SqrtPoint => noise_scale(point),
        }
    }
}

/// Options of [`Calibrated`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConformalConfig {
    /// Target coverage of the upper bound.
    pub quantile: f64,
    /// Number of recent residuals kept.
    pub window: usize,
    /// Residuals needed before the bound is used; until then the inner model's own
    /// upper bound is passed through.
    pub min_residuals: usize,
    /// Residual normalisation.
    pub scale: ResidualScale,
}

impl Default for ConformalConfig {
    fn default() -> Self {
        Self {
            quantile: 0.9,
            window: 1440,
            min_residuals: 30,
            scale: ResidualScale::SqrtPoint,
        }
    }
}

/// A forecaster whose upper bound is calibrated on its own recent errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibrated<F> {
    inner: F,
    config: ConformalConfig,
    sanitizer: Sanitizer,
    pending: PendingTargets<f64>,
    residuals: RollingWindow,
    horizon_s: Option<f64>,
}

impl<F: Forecaster> Calibrated<F> {
    /// Wraps `inner`.
    pub fn new(inner: F, config: ConformalConfig) -> Self {
        let config = ConformalConfig {
            quantile: if config.quantile.is_finite() {
                config.quantile.clamp(0.01, 0.999)
            } else {
                0.9
            },
            window: config.window.max(1),
            ..config
        };
        Self {
            inner,
            config,
            sanitizer: Sanitizer::default(),
            pending: PendingTargets::new(100_000),
            residuals: RollingWindow::new(config.window),
            horizon_s: None,
        }
    }

    /// The wrapped forecaster.
    pub fn inner(&self) -> &F {
        &self.inner
    }

    /// Mutable access to the wrapped forecaster.
    pub fn inner_mut(&mut self) -> &mut F {
        &mut self.inner
    }

    /// Residuals currently held.
    pub fn residual_count(&self) -> usize {
        self.residuals.len()
    }
}

impl<F: Forecaster> Forecaster for Calibrated<F> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn observe(&mut self, t_s: f64, rps: f64) {
        self.inner.observe(t_s, rps);
        if let Some((t, v)) = self.sanitizer.accept(t_s, rps) {
            let residuals = &mut self.residuals;
            let scale = self.config.scale;
            self.pending.observe(t, v, |point, actual| {
                residuals.push((actual - point) / scale.factor(point));
            });
        }
    }

    fn forecast(&mut self, now_s: f64, horizon_s: f64) -> Forecast {
        if self.horizon_s.is_some_and(|h| h != horizon_s) {
            // Errors of another horizon do not calibrate this one.
            self.residuals = RollingWindow::new(self.config.window);
            self.pending = PendingTargets::new(100_000);
        }
        self.horizon_s = Some(horizon_s);
        let inner = self.inner.forecast(now_s, horizon_s);
        let point = finite_non_negative(inner.point);
        self.pending.push(now_s, horizon_s, point);
        let upper = if self.residuals.len() >= self.config.min_residuals {
            let q = self
                .residuals
                .conformal_quantile(self.config.quantile)
                .unwrap_or(0.0);
            point + q.max(0.0) * self.config.scale.factor(point)
        } else {
            inner.upper
        };
        Forecast::sanitized(point, upper, self.config.quantile)
    }

    fn refit_due(&self, now_s: f64) -> bool {
        self.inner.refit_due(now_s)
    }

    fn refit(&mut self, now_s: f64) -> Result<()> {
        self.inner.refit(now_s)
    }

    fn hygiene(&self) -> HygieneReport {
        self.inner.hygiene()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baselines::LastValue;

    #[test]
    fn bound_covers_the_stated_share_of_a_noisy_series() {
        let mut f = Calibrated::new(LastValue::default(), ConformalConfig::default());
        let values: Vec<f64> = (0..40_000u64)
            .map(|i| 50.0 + (i.wrapping_mul(2_654_435_761) % 1000) as f64 / 50.0)
            .collect();
        let (mut covered, mut total) = (0, 0);
        for t in 0..values.len() - 5 {
            if t % 5 == 0 && t > 5000 {
                let fc = f.forecast(t as f64, 5.0);
                let actual = values[t..t + 5].iter().copied().fold(f64::MIN, f64::max);
                total += 1;
                covered += usize::from(fc.upper >= actual);
            }
            f.observe(t as f64, values[t]);
        }
        let coverage = covered as f64 / total as f64;
        assert!(
            (0.87..0.95).contains(&coverage),
            "coverage {coverage} over {total} origins"
        );
    }

    #[test]
    fn bound_falls_back_to_inner_until_enough_residuals() {
        let mut f = Calibrated::new(LastValue::default(), ConformalConfig::default());
        f.observe(0.0, 10.0);
        let fc = f.forecast(1.0, 5.0);
        assert_eq!(fc.upper, 10.0);
        assert_eq!(f.residual_count(), 0);
    }
}
