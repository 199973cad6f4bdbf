//! Load forecasting for infadapt: predict the maximum request rate over the next horizon
//! and a calibrated upper bound for provisioning.
//!
//! Models, all behind the [`Forecaster`] trait (observations in, forecasts out, time
//! always passed in):
//! - **ARIMA(p,d,q)** ([`arima`]) on 10-s bucket means. Orders in a small grid are screened
//!   by a Hannan-Rissanen regression; the best by AICc are fitted by conditional sum of
//!   squares with L-BFGS, over `tanh`-mapped partial autocorrelations so every candidate
//!   is stationary and invertible. Refitted on a schedule. The level path becomes a horizon
//!   maximum through a peak offset learned from recent errors (median of
//!   `(actual - level) / sqrt(level)`).
//! - **LSTM** ([`lstm`]) on nalgebra: stacked layers over the maxima and means of recent
//!   buckets, a linear head for the maximum of the next horizon, BPTT with Adam, saved as
//!   versioned JSON with its normalisation.
//! - **Baselines** ([`baselines`]): last value, maximum of the last window, EWMA of the
//!   window maximum, Holt-Winters with a daily season.
//! - **IPA's predictor** ([`ipa`]): ARIMA(1,0,0) refitted at every call on the 10-s
//!   maxima of the last two minutes, or a trained LSTM on them, as IPA published it.
//! - **auto** ([`models::AutoForecaster`]): follows the candidate with the lowest mean
//!   absolute error over its recent forecasts.
//!
//! Calibration ([`conformal`]): each forecast is kept until its horizon has been observed;
//! the upper bound is the point plus the conformal quantile of recent errors, normalised by
//! `sqrt(point)` because the noise of a request rate grows with its square root.
//!
//! Hygiene ([`sanitize`]): NaN/inf, negatives, zeros (collection gaps), out-of-order samples
//! and counter resets are dropped or repaired and counted; no forecast is ever non-finite.

pub mod arima;
pub mod backtest;
pub mod baselines;
pub mod conformal;
pub mod error;
pub mod forecaster;
pub mod ipa;
pub mod lstm;
pub mod models;
pub mod sanitize;
pub mod trace;

pub use error::ForecastError;
pub use forecaster::{Forecast, Forecaster};
pub use sanitize::{HygieneReport, Sanitizer};
