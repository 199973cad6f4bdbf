//! Model selection by name, a serialisable sum of every forecaster, and `auto`, which
//! follows whichever candidate had the lowest recent error.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::arima::{ArimaForecaster, ArimaForecasterConfig};
use crate::baselines::{Ewma, HoltWinters, HoltWintersConfig, LastValue, WindowMax};
use crate::error::{ForecastError, Result};
use crate::forecaster::{Forecast, Forecaster, PendingTargets, RollingWindow};
use crate::ipa::IpaPredictor;
use crate::lstm::{LstmForecaster, LstmModel};
use crate::sanitize::{HygieneReport, Sanitizer};

/// The models `infadaptd forecast` knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelKind {
    /// ARIMA on bucket means with a learned peak offset.
    Arima,
    /// LSTM on bucket maxima and means.
    Lstm,
    /// Last value.
    Naive,
    /// Maximum of the last window.
    Max,
    /// EWMA of the window maximum.
    Ewma,
    /// Holt-Winters with a daily season.
    HoltWinters,
    /// Best recent candidate.
    Auto,
    /// IPA's published predictor: ARIMA(1,0,0) refitted every call on 10-s maxima.
    IpaArima,
    /// IPA's published predictor with a trained LSTM on the same input.
    IpaLstm,
}

impl ModelKind {
    /// Every kind, in the order of the command-line help.
    pub const ALL: [Self; 9] = [
        Self::Arima,
        Self::Lstm,
        Self::Naive,
        Self::Max,
        Self::Ewma,
        Self::HoltWinters,
        Self::Auto,
        Self::IpaArima,
        Self::IpaLstm,
    ];

    /// Every name of [`Self::ALL`] for the docs and help texts, in that order: the
    /// configuration reference's allowed values (a test keeps it equal to [`Self::ALL`]).
    pub const CHOICES: &'static str = "`arima`, `lstm`, `naive`, `max`, `ewma`, \
        `holt-winters`, `auto`, `ipa-arima` or `ipa-lstm`";

    /// Name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Arima => "arima",
            Self::Lstm => "lstm",
            Self::Naive => "naive",
            Self::Max => "max",
            Self::Ewma => "ewma",
            Self::HoltWinters => "holt-winters",
            Self::Auto => "auto",
            Self::IpaArima => "ipa-arima",
            Self::IpaLstm => "ipa-lstm",
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ModelKind {
    type Err = ForecastError;
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ForecastError::InvalidConfig(format!("unknown model {s:?}")))
    }
}

/// Any single forecaster, as one serialisable type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum AnyForecaster {
    /// See [`ArimaForecaster`].
    Arima(ArimaForecaster),
    /// See [`LstmForecaster`].
    Lstm(LstmForecaster),
    /// See [`LastValue`].
    Naive(LastValue),
    /// See [`WindowMax`].
    Max(WindowMax),
    /// See [`Ewma`].
    Ewma(Ewma),
    /// See [`HoltWinters`].
    HoltWinters(HoltWinters),
    /// See [`AutoForecaster`].
    Auto(AutoForecaster),
    /// See [`IpaPredictor`].
    Ipa(IpaPredictor),
}

macro_rules! dispatch {
    ($self:expr, $f:ident => $body:expr) => {
        match $self {
            AnyForecaster::Arima($f) => $body,
            AnyForecaster::Lstm($f) => $body,
            AnyForecaster::Naive($f) => $body,
            AnyForecaster::Max($f) => $body,
            AnyForecaster::Ewma($f) => $body,
            AnyForecaster::HoltWinters($f) => $body,
            AnyForecaster::Auto($f) => $body,
            AnyForecaster::Ipa($f) => $body,
        }
    };
}

impl Forecaster for AnyForecaster {
    fn name(&self) -> &str {
        dispatch!(self, f => f.name())
    }
    fn observe(&mut self, t_s: f64, rps: f64) {
        dispatch!(self, f => f.observe(t_s, rps));
    }
    fn forecast(&mut self, now_s: f64, horizon_s: f64) -> Forecast {
        dispatch!(self, f => f.forecast(now_s, horizon_s))
    }
    fn refit_due(&self, now_s: f64) -> bool {
        dispatch!(self, f => f.refit_due(now_s))
    }
    fn refit(&mut self, now_s: f64) -> Result<()> {
        dispatch!(self, f => f.refit(now_s))
    }
    fn hygiene(&self) -> HygieneReport {
        dispatch!(self, f => f.hygiene())
    }
}

impl AnyForecaster {
    /// The name of the model whose forecast this one answers with: its own name, or for
    /// `auto` the name of the candidate it follows now.
    pub fn following(&self) -> &str {
        match self {
            AnyForecaster::Auto(auto) => auto.chosen(),
            other => other.name(),
        }
    }

    /// The trained network this forecaster runs, if any (for `auto`, its LSTM candidate's).
    pub fn lstm_model(&self) -> Option<&LstmModel> {
        match self {
            AnyForecaster::Lstm(f) => Some(f.model()),
            AnyForecaster::Ipa(f) => f.lstm_model(),
            AnyForecaster::Auto(auto) => auto.candidates.iter().find_map(Self::lstm_model),
            _ => None,
        }
    }
}

/// Builds a forecaster by kind with default settings. `lstm` is required for
/// [`ModelKind::Lstm`] and [`ModelKind::IpaLstm`] and joins the `auto` candidates when
/// given.
pub fn build(kind: ModelKind, horizon_s: f64, lstm: Option<&LstmModel>) -> Result<AnyForecaster> {
    Ok(match kind {
        ModelKind::Arima => {
            AnyForecaster::Arima(ArimaForecaster::new(ArimaForecasterConfig::default()))
        }
        ModelKind::Lstm => {
            let model = lstm.ok_or_else(|| {
                ForecastError::InvalidConfig("the lstm model needs a trained model file".into())
            })?;
            AnyForecaster::Lstm(LstmForecaster::new(model.clone()))
        }
        ModelKind::IpaArima => AnyForecaster::Ipa(IpaPredictor::arima()),
        ModelKind::IpaLstm => {
            let model = lstm.ok_or_else(|| {
                ForecastError::InvalidConfig(
                    "the ipa-lstm model needs a trained model file (ipa-arima needs none)".into(),
                )
            })?;
            AnyForecaster::Ipa(IpaPredictor::lstm(model.clone())?)
        }
        ModelKind::Naive => AnyForecaster::Naive(LastValue::default()),
        ModelKind::Max => AnyForecaster::Max(WindowMax::new(horizon_s)),
        ModelKind::Ewma => AnyForecaster::Ewma(Ewma::new(horizon_s, 30.0)),
        ModelKind::HoltWinters => {
            AnyForecaster::HoltWinters(HoltWinters::new(HoltWintersConfig::default()))
        }
        ModelKind::Auto => {
            let mut candidates = vec![
                build(ModelKind::Max, horizon_s, None)?,
                build(ModelKind::Ewma, horizon_s, None)?,
                build(ModelKind::HoltWinters, horizon_s, None)?,
                build(ModelKind::Arima, horizon_s, None)?,
            ];
            if lstm.is_some() {
                candidates.push(build(ModelKind::Lstm, horizon_s, lstm)?);
            }
            AnyForecaster::Auto(AutoForecaster::new(candidates, 360))
        }
    })
}

/// Runs every candidate and answers with the one whose recent point forecasts had the
/// lowest mean absolute error (a rolling backtest over the last `window` forecasts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoForecaster {
    candidates: Vec<AnyForecaster>,
    errors: Vec<RollingWindow>,
    pending: PendingTargets<Vec<f64>>,
    sanitizer: Sanitizer,
    chosen: usize,
}

impl AutoForecaster {
    /// Chooses among `candidates` (the first is used until errors are known).
    pub fn new(candidates: Vec<AnyForecaster>, window: usize) -> Self {
        let errors = candidates
            .iter()
            .map(|_| RollingWindow::new(window))
            .collect();
        Self {
            candidates,
            errors,
            pending: PendingTargets::new(100_000),
            sanitizer: Sanitizer::default(),
            chosen: 0,
        }
    }

    /// Name of the candidate currently followed.
    pub fn chosen(&self) -> &str {
        self.candidates
            .get(self.chosen)
            .map_or("none", |c| c.name())
    }

    /// Recent mean absolute error of each candidate.
    pub fn recent_errors(&self) -> Vec<(String, Option<f64>)> {
        self.candidates
            .iter()
            .zip(&self.errors)
            .map(|(c, e)| (c.name().to_string(), e.mean()))
            .collect()
    }
}

impl Forecaster for AutoForecaster {
    fn name(&self) -> &str {
        "auto"
    }

    fn observe(&mut self, t_s: f64, rps: f64) {
        for candidate in &mut self.candidates {
            candidate.observe(t_s, rps);
        }
        if let Some((t, v)) = self.sanitizer.accept(t_s, rps) {
            let errors = &mut self.errors;
            self.pending.observe(t, v, |points, actual| {
                for (window, point) in errors.iter_mut().zip(points) {
                    window.push((point - actual).abs());
                }
            });
        }
    }

    fn forecast(&mut self, now_s: f64, horizon_s: f64) -> Forecast {
        let forecasts: Vec<Forecast> = self
            .candidates
            .iter_mut()
            .map(|c| c.forecast(now_s, horizon_s))
            .collect();
        self.pending.push(
            now_s,
            horizon_s,
            forecasts.iter().map(|f| f.point).collect(),
        );
        let best = self
            .errors
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.mean().map(|m| (i, m)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((index, _)) = best {
            self.chosen = index;
        }
        forecasts
            .get(self.chosen)
            .copied()
            .unwrap_or(Forecast::sanitized(0.0, 0.0, 0.9))
    }

    fn refit_due(&self, now_s: f64) -> bool {
        self.candidates.iter().any(|c| c.refit_due(now_s))
    }

    fn refit(&mut self, now_s: f64) -> Result<()> {
        let mut outcome = Ok(());
        for candidate in &mut self.candidates {
            if candidate.refit_due(now_s)
                && let Err(e) = candidate.refit(now_s)
            {
                outcome = Err(e);
            }
        }
        outcome
    }

    fn hygiene(&self) -> HygieneReport {
        self.sanitizer.hygiene()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in ModelKind::ALL {
            assert_eq!(kind.as_str().parse::<ModelKind>().unwrap(), kind);
        }
        assert!("oracle".parse::<ModelKind>().is_err());
    }

    #[test]
    fn choices_list_every_kind_in_order() {
        let names: Vec<String> = ModelKind::ALL
            .iter()
            .map(|k| format!("`{}`", k.as_str()))
            .collect();
        let (last, rest) = names.split_last().expect("kinds");
        assert_eq!(ModelKind::CHOICES, format!("{} or {last}", rest.join(", ")));
    }

    #[test]
    fn lstm_needs_a_model() {
        assert!(build(ModelKind::Lstm, 60.0, None).is_err());
        let error = build(ModelKind::IpaLstm, 20.0, None).expect_err("needs a model");
        assert!(error.to_string().contains("trained model file"), "{error}");
        assert_eq!(
            build(ModelKind::IpaArima, 20.0, None).unwrap().name(),
            "ipa-arima"
        );
        let f = build(ModelKind::Max, 60.0, None).unwrap();
        assert_eq!(f.name(), "max");
    }

    #[test]
    fn auto_follows_the_candidate_with_lower_error() {
        // On a falling ramp the window maximum lags high; the last value is closer.
        let candidates = vec![
            AnyForecaster::Max(WindowMax::new(60.0)),
            AnyForecaster::Naive(LastValue::default()),
        ];
        let mut auto = AutoForecaster::new(candidates, 50);
        for t in 0..3000 {
            if t % 10 == 0 {
                auto.forecast(t as f64, 5.0);
            }
            auto.observe(t as f64, 5000.0 - t as f64);
        }
        assert_eq!(auto.chosen(), "naive");
        let errors = auto.recent_errors();
        assert!(errors[1].1.unwrap() < errors[0].1.unwrap());
    }

    #[test]
    fn auto_names_the_candidate_it_follows_and_its_lstm() {
        use crate::lstm::{LstmConfig, Normalisation};
        let model = LstmModel::new(
            LstmConfig {
                window: 3,
                units: 2,
                ..LstmConfig::default()
            },
            Normalisation {
                offset: 0.0,
                scale: 1.0,
            },
        )
        .unwrap();
        let lstm = build(ModelKind::Lstm, 60.0, Some(&model)).unwrap();
        assert_eq!(lstm.following(), "lstm");
        assert_eq!(lstm.lstm_model(), Some(&model));
        let auto = build(ModelKind::Auto, 60.0, Some(&model)).unwrap();
        assert_eq!(auto.following(), "max");
        assert_eq!(auto.lstm_model(), Some(&model));
        assert_eq!(
            build(ModelKind::Auto, 60.0, None).unwrap().lstm_model(),
            None
        );
        let ipa = build(ModelKind::IpaLstm, 20.0, Some(&model)).unwrap();
        assert_eq!(ipa.lstm_model(), Some(&model));
        assert_eq!(
            build(ModelKind::Max, 60.0, None).unwrap().lstm_model(),
            None
        );
    }

    #[test]
    fn auto_follows_the_lstm_when_its_errors_are_lowest() {
        use crate::lstm::{LstmConfig, Normalisation};
        // A network whose head is zero answers its normalisation offset: a steady 40 rps.
        let mut model = LstmModel::new(
            LstmConfig {
                window: 3,
                units: 2,
                ..LstmConfig::default()
            },
            Normalisation {
                offset: 40.0,
                scale: 5.0,
            },
        )
        .unwrap();
        model.head_w.fill(0.0);
        model.head_b = 0.0;
        let mut auto = build(ModelKind::Auto, 60.0, Some(&model)).unwrap();
        // A steady load with one spike: the window maximum stays high for a minute after
        // it, the steady network does not.
        for t in 0..2000 {
            if t % 10 == 0 {
                auto.forecast(t as f64, 60.0);
            }
            auto.observe(t as f64, if t == 600 { 400.0 } else { 40.0 });
        }
        auto.forecast(2000.0, 60.0);
        assert_eq!(auto.following(), "lstm");
    }

    #[test]
    fn auto_state_serialises() {
        let mut auto = build(ModelKind::Auto, 60.0, None).unwrap();
        for t in 0..100 {
            auto.observe(t as f64, 10.0 + (t % 3) as f64);
        }
        let text = serde_json::to_string(&auto).unwrap();
        let back: AnyForecaster = serde_json::from_str(&text).unwrap();
        assert_eq!(back.name(), "auto");
    }
}
