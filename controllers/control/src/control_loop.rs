//! [`ControlLoop`], this project's policy: forecast (calibrated upper bound) → headroom
//! feedback → exact planner with the change cost → stability layer.
//!
//! The same type expresses the published baselines where they fit (see
//! [`ControlConfig::ipa`] and [`ControlConfig::infadapter`]).

use std::collections::VecDeque;

use infadapt_damping::{
    Damper, DampingConfig, DampingInput, HeadroomConfig, HeadroomController, HeadroomSignal,
    change_cold_start_s, keep_shape_pipeline, lead_time_horizon_s, max_cold_start_s,
    plan_capacity_rps, plan_gpu_mem_mb, same_configurations,
};
use infadapt_forecast::conformal::{Calibrated, ConformalConfig};
use infadapt_forecast::lstm::LstmModel;
use infadapt_forecast::models::{self, AnyForecaster, ModelKind};
use infadapt_forecast::{Forecast, Forecaster};
use infadapt_model::Plan;
use infadapt_model::{Placement, describe_placement};
use infadapt_planner::{
    LatencyModel, NodeCapacity, PlanError, Problem, Solution, place_plan_near, solve,
};
use serde::Serialize;

use crate::fast_path::{FastPathConfig, Pulse, TriggerInput, trigger};
use crate::spare::{BurstHistory, SpareConfig};
use crate::{ControlError, Decision, Observation, Policy};

/// Which forecast figure the load is sized from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ForecastBasis {
    /// The point forecast of the horizon maximum.
    Point,
    /// The calibrated upper bound of the horizon maximum.
    #[default]
    Upper,
}

/// The least load a tick plans for, whatever the forecast says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoadFloor {
    /// The forecast alone (as the published baselines do).
    None,
    /// The mean arrival rate of the last period: a forecast that lags a rising load never
    /// plans below what is arriving now. The per-second peak is left to the forecast of
    /// the horizon maximum and the utilisation cap, so noise is not counted twice.
    #[default]
    ObservedMean,
    /// The largest per-second arrival rate of the last period.
    ObservedPeak,
}

/// How the loop forecasts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastSettings {
    pub model: ModelKind,
    /// Horizon of the forecast, seconds; `None` applies the lead-time rule
    /// ([`lead_time_horizon_s`]: the control period plus the longest cold start).
    pub horizon_s: Option<f64>,
    /// `Some(q)` calibrates the upper bound on the model's own recent errors at coverage
    /// `q` (conformal; default [`DEFAULT_UPPER_QUANTILE`]); `None` keeps the model's own
    /// upper bound (for the window maximum, the point forecast itself).
    pub upper_quantile: Option<f64>,
    pub basis: ForecastBasis,
    /// The forecaster sees the mean arrival rate of the trailing `smoothing_s` seconds
    /// rather than each second's count. The planner's queueing model already budgets for
    /// the Poisson scatter of arrivals around a rate; a forecast of per-second *counts*
    /// would count that scatter a second time (at 6 rps the largest second of a minute is
    /// about 13). A longer window also delays a real rise by half its length; 3 s is the
    /// measured compromise (docs/evaluation.md). 1 feeds the raw per-second counts (the
    /// published baselines). Default 3.
    pub smoothing_s: f64,
    /// A trained network, required by [`ModelKind::Lstm`] (joins `auto` when given).
    #[serde(skip)]
    pub lstm: Option<LstmModel>,
}

impl Default for ForecastSettings {
    fn default() -> Self {
        ForecastSettings {
            model: ModelKind::Max,
            horizon_s: None,
            upper_quantile: Some(DEFAULT_UPPER_QUANTILE),
            basis: ForecastBasis::Upper,
            smoothing_s: DEFAULT_SMOOTHING_S,
            lstm: None,
        }
    }
}

/// InfAdapter's stabilization rule (`Adapter.make_decision` in `auto_tuner/adapter/main.py`
/// of the InfAdapter repository, `STABILIZATION_INTERVAL` = 4): while the load to plan for
/// is at most the load last planned for, the whole decision is skipped (nothing is
/// re-planned or changed), up to `max_skips` ticks in a row; the next such tick re-plans for
/// the current forecast. A load above the last planned one re-plans at once. Either way a
/// re-plan resets the count and becomes the new last planned load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SkipRule {
    pub max_skips: u32,
}

/// Default coverage of the calibrated upper bound ([`ForecastSettings::upper_quantile`]).
pub const DEFAULT_UPPER_QUANTILE: f64 = forecast_keys::UPPER_QUANTILE.number_default();

/// Default of [`ForecastSettings::smoothing_s`].
pub const DEFAULT_SMOOTHING_S: f64 = forecast_keys::SMOOTHING_S.number_default();

/// The keys of the `[pipeline.forecast]` table, one definition each: its type, default,
/// range and meaning. [`ControlConfig::validate`] checks the forecast settings (and
/// [`ControlConfig::margin`]) against these ranges, the daemon reads the table and documents
/// it from them.
pub mod forecast_keys {
    use infadapt_forecast::models::ModelKind;
    use infadapt_model::settings::{Bounds, KeyDefault, KeySpec};

    /// `model`.
    pub const MODEL: KeySpec = KeySpec {
        name: "model",
        kind: ModelKind::CHOICES,
        integer: false,
        default: KeyDefault::Text("`max`"),
        bounds: None,
        doc: "Load forecaster (`lstm` and `ipa-lstm` need `lstm_model`).",
    };

    /// `lstm_model`.
    pub const LSTM_MODEL: KeySpec = KeySpec {
        name: "lstm_model",
        kind: "path",
        integer: false,
        default: KeyDefault::Text("none"),
        bounds: None,
        doc: "Trained LSTM model file from `infadaptd forecast train` (relative to the file).",
    };

    /// `horizon_s`.
    pub const HORIZON_S: KeySpec = KeySpec {
        name: "horizon_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Text("the lead time (period + longest cold start)"),
        bounds: Some(Bounds::PERIOD_S),
        doc: "How far ahead the forecast looks.",
    };

    /// `smoothing_s`.
    pub const SMOOTHING_S: KeySpec = KeySpec {
        name: "smoothing_s",
        kind: "number (s)",
        integer: false,
        default: KeyDefault::Number(3.0),
        bounds: Some(Bounds::AVERAGING_S),
        doc: "Seconds per load sample the forecaster sees.",
    };

    /// `upper_quantile`.
    pub const UPPER_QUANTILE: KeySpec = KeySpec {
        name: "upper_quantile",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(0.9),
        bounds: Some(Bounds::open(0.0, 1.0)),
        doc: "Quantile of the calibrated upper bound plans are sized for.",
    };

    /// `basis`.
    pub const BASIS: KeySpec = KeySpec {
        name: "basis",
        kind: "`upper` or `point`",
        integer: false,
        default: KeyDefault::Text("`upper`"),
        bounds: None,
        doc: "Plan for the upper bound or the point forecast.",
    };

    /// `margin` ([`crate::ControlConfig::margin`]).
    pub const MARGIN: KeySpec = KeySpec {
        name: "margin",
        kind: "number",
        integer: false,
        default: KeyDefault::Number(1.0),
        bounds: Some(Bounds::above(0.0, 100.0)),
        doc: "Factor applied to the forecast load.",
    };

    /// `floor` ([`crate::ControlConfig::floor`]).
    pub const FLOOR: KeySpec = KeySpec {
        name: "floor",
        kind: "`observed-mean`, `observed-peak` or `none`",
        integer: false,
        default: KeyDefault::Text("`observed-mean`"),
        bounds: None,
        doc: "Lower bound of the planned load from what was observed.",
    };

    /// Every key of the table, in the reference's order.
    pub const ALL: &[KeySpec] = &[
        MODEL,
        LSTM_MODEL,
        HORIZON_S,
        SMOOTHING_S,
        UPPER_QUANTILE,
        BASIS,
        MARGIN,
        FLOOR,
    ];
}

/// Everything a [`ControlLoop`] needs. Build with [`ControlConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlConfig {
    /// Policy name reported by [`Policy::name`]. Default `infadapt`.
    pub name: String,
    /// The planning problem template: pipeline, weights, limits, solver settings. Its
    /// `load_rps` is the load the initial plan is sized for (when `initial_plan` is
    /// `None`); `load_rps` and `current` are filled in every tick.
    pub problem: Problem,
    /// Seconds between decisions. Default 10.
    pub interval_s: f64,
    pub forecast: ForecastSettings,
    /// Fixed multiplicative margin on the forecast (InfAdapter's +10 % is 1.1). Default 1.
    pub margin: f64,
    pub floor: LoadFloor,
    pub damping: DampingConfig,
    pub headroom: HeadroomConfig,
    /// The plan to start from; `None` plans for `problem.load_rps`.
    pub initial_plan: Option<Plan>,
    /// InfAdapter's skip rule; `None` (the default) decides every tick.
    pub skip: Option<SkipRule>,
    /// Re-planning between ticks when arrivals or queues outrun the plan in force (see
    /// [`crate::fast_path`]). On by default; off for the published baselines.
    pub fast_path: FastPathConfig,
    /// Warm spare capacity for bursts where it pays (see [`crate::spare`]). On by
    /// default; off for the published baselines.
    pub spare: SpareConfig,
}

impl ControlConfig {
    /// This project's defaults: 10-s period, the maximum of the last lead-time window as
    /// the forecast of the next one, planned on its conformal upper bound at 90 % coverage
    /// ([`DEFAULT_UPPER_QUANTILE`]) with the observed mean as floor, damping, the headroom
    /// feedback and the fast path on.
    ///
    /// The calibrated bound keeps headroom in proportion to how wrong the window maximum
    /// has recently been, so the upper bound is not the point forecast. After a level
    /// shift its quantile is dominated by the few residuals of the shift for a while; the
    /// scale-down window and the switch-gain rule keep that from turning into churn, and
    /// the fast path covers the step itself (measured in docs/evaluation.md).
    pub fn new(problem: Problem) -> Self {
        ControlConfig {
            name: "infadapt".to_owned(),
            problem,
            interval_s: 10.0,
            forecast: ForecastSettings::default(),
            margin: forecast_keys::MARGIN.number_default(),
            floor: LoadFloor::ObservedMean,
            damping: DampingConfig::default(),
            headroom: HeadroomConfig::default(),
            initial_plan: None,
            skip: None,
            fast_path: FastPathConfig::default(),
            spare: SpareConfig::default(),
        }
    }

    /// IPA as published (the IPA repository, `optimizer/adapter.py` `Adapter` and
    /// `Predictor`, `optimizer/optimizer.py` `Optimizer.gurobi_optmizer`): a decision every
    /// 10 s (`adaptation_interval: 10`); the load is IPA's predictor on the raw per-second
    /// rates (`model`: [`ModelKind::IpaArima`], ARIMA(1,0,0) refitted every decision on the
    /// 10-s maxima of the last 2 minutes, or [`ModelKind::IpaLstm`] with a trained model)
    /// for the next 20 s, with no margin (`predictor_margin: 0`); one variant per stage; the
    /// latency constraint is batch fill plus batch p99 without a queueing wait
    /// ([`LatencyModel::BatchWaitOnly`]); no damping, no feedback, no change cost.
    ///
    /// The caller sets what depends on the pipeline's profiles: replicas at the profiled
    /// maximum throughput (`utilisation_cap` 1, `reference_throughput: max`) and the fixed
    /// cores per variant of `allocation_mode: base` (`problem.pinned_cores`).
    pub fn ipa(mut problem: Problem, model: ModelKind) -> Self {
        problem.allow_mix = false;
        problem.weights.gamma_per_cold_start_s = 0.0;
        problem.latency_model = LatencyModel::BatchWaitOnly;
        ControlConfig {
            name: "ipa".to_owned(),
            forecast: ForecastSettings {
                model,
                horizon_s: Some(20.0),
                upper_quantile: None,
                basis: ForecastBasis::Point,
                smoothing_s: 1.0,
                lstm: None,
            },
            floor: LoadFloor::None,
            damping: DampingConfig::disabled(),
            headroom: HeadroomConfig::disabled(),
            fast_path: FastPathConfig::disabled(),
            spare: SpareConfig::disabled(),
            ..ControlConfig::new(problem)
        }
    }

    /// InfAdapter as published (the InfAdapter repository, `auto_tuner/adapter/main.py`
    /// `Adapter.make_decision`, `auto_tuner/adapter/reconfig.py` `Reconfiguration.reconfig`;
    /// settings in `adapter_settings.json`): a decision every 30 s, variant mix (single-stage
    /// pipelines only, as InfAdapter serves one model; a chain gets one variant per stage),
    /// point forecast of the next-60-s maximum (`model`) with a +10 % margin, and the
    /// stabilization rule ([`SkipRule`] with 4 skips): the whole decision is skipped while
    /// the forecast is at most the load last planned for, up to 4 ticks in a row; no
    /// damping, no feedback. The capacity factor (× 0.8) is the caller's `utilisation_cap`.
    pub fn infadapter(mut problem: Problem, model: ModelKind) -> Self {
        problem.allow_mix = problem.pipeline.stages.len() == 1;
        ControlConfig {
            name: "infadapter".to_owned(),
            interval_s: 30.0,
            forecast: ForecastSettings {
                model,
                horizon_s: Some(60.0),
                upper_quantile: None,
                basis: ForecastBasis::Point,
                smoothing_s: 1.0,
                lstm: None,
            },
            margin: 1.1,
            floor: LoadFloor::None,
            damping: DampingConfig::disabled(),
            headroom: HeadroomConfig::disabled(),
            skip: Some(SkipRule { max_skips: 4 }),
            fast_path: FastPathConfig::disabled(),
            spare: SpareConfig::disabled(),
            ..ControlConfig::new(problem)
        }
    }

    /// The forecast horizon in use: the configured one, or the lead-time rule.
    pub fn horizon_s(&self) -> f64 {
        self.forecast
            .horizon_s
            .unwrap_or_else(|| lead_time_horizon_s(&self.problem.pipeline, self.interval_s))
    }

    /// Checks the settings that are this crate's own; the forecast table's numbers against
    /// their keys' ranges ([`forecast_keys`]), with the message the configuration reader
    /// gives.
    pub fn validate(&self) -> Result<(), ControlError> {
        let bad = |field: &str, value: f64| {
            ControlError::InvalidConfig(format!("{field} must be a positive number, got {value}"))
        };
        if !(self.interval_s.is_finite() && self.interval_s > 0.0) {
            return Err(bad("interval_s", self.interval_s));
        }
        let numbers = [
            (&forecast_keys::HORIZON_S, self.forecast.horizon_s),
            (&forecast_keys::SMOOTHING_S, Some(self.forecast.smoothing_s)),
            (&forecast_keys::UPPER_QUANTILE, self.forecast.upper_quantile),
            (&forecast_keys::MARGIN, Some(self.margin)),
        ];
        for (key, value) in numbers {
            if let Some(value) = value {
                key.check(value).map_err(|problem| {
                    ControlError::InvalidConfig(format!("forecast.{} {problem}", key.name))
                })?;
            }
        }
        // Without a configured horizon, the lead-time rule's (from the period and the
        // profiles' cold starts).
        let horizon = self.horizon_s();
        if !(horizon.is_finite() && horizon > 0.0) {
            return Err(bad("forecast.horizon_s", horizon));
        }
        self.problem
            .pipeline
            .validate()
            .map_err(|e| ControlError::InvalidConfig(e.to_string()))?;
        self.damping.validate()?;
        self.headroom.validate()?;
        self.fast_path.validate()?;
        self.spare.validate()?;
        Ok(())
    }
}

/// The forecaster of the loop, with or without conformal calibration.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
enum LoopForecaster {
    Plain(Box<AnyForecaster>),
    Calibrated(Box<Calibrated<AnyForecaster>>),
}

impl LoopForecaster {
    fn as_dyn(&mut self) -> &mut dyn Forecaster {
        match self {
            LoopForecaster::Plain(f) => f.as_mut(),
            LoopForecaster::Calibrated(f) => f.as_mut(),
        }
    }

    fn model(&self) -> &AnyForecaster {
        match self {
            LoopForecaster::Plain(f) => f,
            LoopForecaster::Calibrated(f) => f.inner(),
        }
    }
}

/// This project's policy: observe → forecast → plan → damp, every `interval_s` seconds.
#[derive(Debug, Clone)]
pub struct ControlLoop {
    config: ControlConfig,
    horizon_s: f64,
    forecaster: LoopForecaster,
    /// The last `smoothing_s` clean per-second arrival rates.
    recent_arrivals: VecDeque<f64>,
    damper: Damper,
    headroom: HeadroomController,
    initial_plan: Plan,
    last_plan: Plan,
    last_time_s: Option<f64>,
    last_forecast_error: Option<String>,
    /// When the capacity the last change started is ready (headroom feedback ignores the
    /// windows before it).
    capacity_ready_at_s: Option<f64>,
    /// The load the last re-plan was for (the skip rule compares against it).
    last_planned_rps: Option<f64>,
    /// Decisions skipped in a row by the skip rule.
    skips_in_a_row: u32,
    /// The last `fast_path.window_s` per-second arrival counts seen by pulses and ticks.
    pulse_arrivals: VecDeque<f64>,
    /// When the fast path last re-planned.
    last_fast_s: Option<f64>,
    /// The fast path re-planned and could add nothing: it waits for the next tick.
    fast_exhausted: bool,
    /// The load the last plan was sized for (tick or fast path).
    last_provisioned_rps: f64,
    /// Objective gains of switches kept back at consecutive ticks (the switch-gain rule).
    forgone_gain: f64,
    /// Per-second arrivals and the peaks that sized capacity (the spare rule).
    bursts: BurstHistory,
    /// Accuracy of the last plan the planner proposed (values a request on time).
    last_accuracy: Option<f64>,
    /// The nodes of the last observation (empty for one host): plans place within them.
    nodes: Vec<NodeCapacity>,
    /// Where the replicas ran at the last observation: plans are placed near it.
    running: Vec<Placement>,
}

impl ControlLoop {
    /// Builds the loop and its initial plan.
    ///
    /// # Errors
    ///
    /// [`ControlError::InvalidConfig`] / [`ControlError::Damping`] for settings out of
    /// range, [`ControlError::Forecast`] when the forecaster cannot be built (an LSTM
    /// without a model), [`ControlError::Plan`] when no initial plan can be found.
    pub fn new(config: ControlConfig) -> Result<ControlLoop, ControlError> {
        config.validate()?;
        let horizon_s = config.horizon_s();
        let inner = models::build(
            config.forecast.model,
            horizon_s,
            config.forecast.lstm.as_ref(),
        )?;
        let forecaster = match config.forecast.upper_quantile {
            Some(quantile) => LoopForecaster::Calibrated(Box::new(Calibrated::new(
                inner,
                ConformalConfig {
                    quantile,
                    ..ConformalConfig::default()
                },
            ))),
            None => LoopForecaster::Plain(Box::new(inner)),
        };
        let damper = Damper::new(config.damping.clone())?;
        let headroom = HeadroomController::new(config.headroom.clone())?;
        let initial_plan = match &config.initial_plan {
            Some(plan) => plan.clone(),
            None => {
                let mut problem = config.problem.clone();
                problem.current = None;
                plan_closest(&problem)?.0.plan
            }
        };
        // InfAdapter starts from what its initial configuration carries
        // (`Adapter.initialize`: the summed capacity of the deployed variants).
        let last_planned_rps = plan_capacity_rps(&config.problem.pipeline, &initial_plan)
            .ok()
            .map(|c| c * config.problem.utilisation_cap)
            .filter(|c| c.is_finite());
        Ok(ControlLoop {
            last_provisioned_rps: last_planned_rps.unwrap_or(config.problem.load_rps),
            last_planned_rps,
            skips_in_a_row: 0,
            pulse_arrivals: VecDeque::new(),
            last_fast_s: None,
            fast_exhausted: false,
            forgone_gain: 0.0,
            bursts: BurstHistory::new(
                config.spare.history_s,
                spare_lead_s(&config),
                config.interval_s,
            ),
            last_accuracy: None,
            nodes: Vec::new(),
            running: Vec::new(),
            horizon_s,
            forecaster,
            recent_arrivals: VecDeque::new(),
            damper,
            headroom,
            last_plan: initial_plan.clone(),
            initial_plan,
            last_time_s: None,
            last_forecast_error: None,
            capacity_ready_at_s: None,
            config,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &ControlConfig {
        &self.config
    }

    /// The forecast horizon in use, seconds.
    pub fn horizon_s(&self) -> f64 {
        self.horizon_s
    }

    /// Plans from now on within `available_mb` of GPU memory as well as any configured limit
    /// (the smaller of the two applies), for a backend that reports what its GPUs hold.
    /// A value that is not a positive number is ignored. Returns the limit in force.
    pub fn limit_gpu_memory(&mut self, available_mb: f64) -> Option<f64> {
        let limits = &mut self.config.problem.limits;
        if available_mb.is_finite() && available_mb > 0.0 {
            limits.gpu_mem_mb = Some(match limits.gpu_mem_mb {
                Some(configured) => configured.min(available_mb),
                None => available_mb,
            });
        }
        limits.gpu_mem_mb
    }

    /// The current multiplicative headroom of the feedback loop.
    pub fn headroom(&self) -> f64 {
        self.headroom.headroom()
    }

    /// The forecaster's learned state (history, fitted parameters, calibration residuals)
    /// as JSON, so that a restarted daemon does not start forecasting from nothing.
    pub fn forecaster_state(&self) -> Result<serde_json::Value, ControlError> {
        serde_json::to_value(&self.forecaster).map_err(|e| {
            ControlError::InvalidConfig(format!("cannot encode forecaster state: {e}"))
        })
    }

    /// Restores a state saved by [`ControlLoop::forecaster_state`]. Refused (and nothing
    /// changed) when it was saved by another kind of forecaster than the configured one.
    pub fn restore_forecaster_state(
        &mut self,
        state: serde_json::Value,
    ) -> Result<(), ControlError> {
        let mut restored: LoopForecaster = serde_json::from_value(state).map_err(|e| {
            ControlError::InvalidConfig(format!("saved forecaster state is unreadable: {e}"))
        })?;
        let same_kind = matches!(
            (&self.forecaster, &restored),
            (LoopForecaster::Plain(_), LoopForecaster::Plain(_))
                | (LoopForecaster::Calibrated(_), LoopForecaster::Calibrated(_))
        );
        let (configured, saved) = (
            self.forecaster.as_dyn().name().to_owned(),
            restored.as_dyn().name().to_owned(),
        );
        if !same_kind || configured != saved {
            return Err(ControlError::InvalidConfig(format!(
                "saved forecaster state is for `{saved}`, the pipeline now uses `{configured}`"
            )));
        }
        // The state carries the network it ran; a new trained model replaces it.
        if restored.model().lstm_model() != self.forecaster.model().lstm_model() {
            return Err(ControlError::InvalidConfig(
                "saved forecaster state ran another trained LSTM model than the configured one"
                    .to_owned(),
            ));
        }
        self.forecaster = restored;
        Ok(())
    }

    /// The model whose forecast the last decision used: the configured one's name, or for
    /// `auto` the candidate it follows (e.g. `lstm`).
    pub fn forecaster_following(&self) -> &str {
        self.forecaster.model().following()
    }

    /// The last forecaster refit error, if the last refit failed.
    pub fn last_forecast_error(&self) -> Option<&str> {
        self.last_forecast_error.as_deref()
    }

    fn observe_arrivals(&mut self, now_s: f64, observation: &Observation) {
        let n = observation.arrivals_per_second.len();
        let start = now_s - n as f64;
        // Whole seconds; at least one.
        let keep = self.config.forecast.smoothing_s.max(1.0).round() as usize;
        let forecaster = self.forecaster.as_dyn();
        for (i, &rps) in observation.arrivals_per_second.iter().enumerate() {
            let t = start + i as f64;
            if !(rps.is_finite() && rps >= 0.0) || keep == 1 {
                // Garbage goes to the forecaster as it came, so that its hygiene counts it.
                forecaster.observe(t, rps);
                continue;
            }
            if self.recent_arrivals.len() == keep {
                self.recent_arrivals.pop_front();
            }
            self.recent_arrivals.push_back(rps);
            let mean = self.recent_arrivals.iter().sum::<f64>() / self.recent_arrivals.len() as f64;
            forecaster.observe(t, mean);
        }
        if forecaster.refit_due(now_s) {
            self.last_forecast_error = forecaster.refit(now_s).err().map(|e| e.to_string());
        }
    }

    fn update_headroom(
        &mut self,
        now_s: f64,
        observation: &Observation,
        deployed: &Plan,
        demand_rps: f64,
    ) -> f64 {
        let window_start_s = now_s - observation.window_s.max(0.0);
        let starting = observation.stages.iter().any(|s| s.starting_replicas > 0)
            || self
                .capacity_ready_at_s
                .is_some_and(|ready| ready > window_start_s);
        let carried_rps = plan_capacity_rps(&self.config.problem.pipeline, deployed).unwrap_or(0.0)
            * self.config.problem.utilisation_cap;
        let arrivals: f64 = observation
            .arrivals_per_second
            .iter()
            .filter(|v| v.is_finite() && **v > 0.0)
            .sum();
        let queued: f64 = observation
            .stages
            .iter()
            .map(|s| s.queue_len)
            .filter(|q| q.is_finite() && *q > 0.0)
            .sum();
        self.headroom.update(&HeadroomSignal {
            now_s,
            finished: observation.completed.saturating_add(observation.dropped),
            misses: observation.slo_misses,
            arrivals,
            queued,
            capacity_starting: starting,
            demand_above_capacity: demand_rps > carried_rps,
        })
    }
}

/// Solves `problem`; when it is infeasible, solves for the highest sustainable load
/// instead and says so. Returns the solution, the load it was sized for and a note.
fn plan_closest(problem: &Problem) -> Result<(Solution, f64, Option<String>), PlanError> {
    match solve(problem) {
        Ok(solution) => Ok((solution, problem.load_rps, None)),
        Err(PlanError::Infeasible(diagnosis)) => {
            let Some(max_load) = diagnosis
                .max_sustainable_load_rps
                .filter(|l| l.is_finite() && *l >= 0.0 && *l < problem.load_rps)
            else {
                return Err(PlanError::Infeasible(diagnosis));
            };
            let mut closest = problem.clone();
            closest.load_rps = max_load * (1.0 - 1e-9);
            let solution = solve(&closest)?;
            let note = format!(
                "infeasible at {:.1} rps ({}); planned for the highest sustainable load \
                 {:.1} rps",
                problem.load_rps, diagnosis.message, closest.load_rps
            );
            Ok((solution, closest.load_rps, Some(note)))
        }
        Err(other) => Err(other),
    }
}

impl ControlLoop {
    /// The skip rule ([`SkipRule`]): `Some(reason)` when this decision is skipped; otherwise
    /// the count restarts and `load_rps` becomes the last planned load.
    fn apply_skip_rule(&mut self, load_rps: f64) -> Option<String> {
        let rule = self.config.skip?;
        if let Some(last) = self.last_planned_rps
            && load_rps <= last
            && self.skips_in_a_row < rule.max_skips
        {
            self.skips_in_a_row += 1;
            return Some(format!(
                "skipped: {load_rps:.1} rps is not above the {last:.1} rps last planned for \
                 ({} of {} skips in a row)",
                self.skips_in_a_row, rule.max_skips
            ));
        }
        self.skips_in_a_row = 0;
        self.last_planned_rps = Some(load_rps);
        None
    }

    /// A scale-up plans the deadband's headroom above the load: when the deployed plan
    /// cannot carry `load_rps` within the cap, the plan is sized for
    /// `load_rps × (1 + deadband_fraction)`. The damper keeps that headroom on the way
    /// down (hysteresis); keeping it on the way up stops a rising load from needing one
    /// scale-up per tick. Off when damping or the deadband is.
    fn with_scale_up_headroom(&self, load_rps: f64, deployed: &Plan) -> f64 {
        let damping = &self.config.damping;
        if !damping.enabled || damping.deadband_fraction <= 0.0 || deployed.stages.is_empty() {
            return load_rps;
        }
        let Ok(capacity) = plan_capacity_rps(&self.config.problem.pipeline, deployed) else {
            return load_rps;
        };
        if capacity * self.config.problem.utilisation_cap < load_rps {
            load_rps * (1.0 + damping.deadband_fraction)
        } else {
            load_rps
        }
    }

    /// The switch-gain rule ([`DampingConfig::min_switch_gain`]): a proposal that changes
    /// variants, cores or batch sizes (anything that restarts replicas) is weighed against
    /// the deployed configurations re-sized by the planner for the same load. When that
    /// fits and the switch gains less than the threshold, it replaces the proposal (the
    /// damper then treats it as a same-shape change) and a line says so.
    ///
    /// The objective is a rate (per tick of running a plan), the threshold a one-off
    /// price for the restart, so the gains forgone at consecutive ticks (`at_tick`) add
    /// up: a small gain that persists, as under a steady load where a cheaper chain fits,
    /// is taken once its sum reaches the threshold; a gain that comes and goes with noise
    /// restarts the sum whenever the planner stops proposing a switch.
    fn weigh_switch(
        &mut self,
        problem: &Problem,
        load_rps: f64,
        deployed: &Plan,
        proposal: Solution,
        at_tick: bool,
    ) -> (Solution, Option<String>) {
        let damping = &self.config.damping;
        let threshold = damping.min_switch_gain;
        if !damping.enabled
            || threshold <= 0.0
            || deployed.stages.is_empty()
            || same_configurations(&proposal.plan, deployed)
        {
            if at_tick {
                self.forgone_gain = 0.0;
            }
            return (proposal, None);
        }
        let Some(pipeline) = keep_shape_pipeline(&problem.pipeline, deployed) else {
            return (proposal, None);
        };
        let mut keep_problem = problem.clone();
        keep_problem.pipeline = pipeline;
        keep_problem.load_rps = load_rps;
        let Ok(keep) = solve(&keep_problem) else {
            // The deployed variants cannot carry the load within the SLO: switch.
            self.forgone_gain = 0.0;
            return (proposal, None);
        };
        let gain = proposal.objective - keep.objective;
        if !same_configurations(&keep.plan, deployed) || !gain.is_finite() || gain >= threshold {
            self.forgone_gain = 0.0;
            return (proposal, None);
        }
        if at_tick && gain > 0.0 {
            self.forgone_gain += gain;
        }
        if self.forgone_gain >= threshold {
            let line = format!(
                "switch to {} gains {gain:.4} in the objective per tick; {:.4} forgone over                  consecutive ticks reached {threshold}: switched",
                describe_variants(&proposal.plan),
                self.forgone_gain
            );
            self.forgone_gain = 0.0;
            return (proposal, Some(line));
        }
        let line = format!(
            "switch to {} gains {gain:.4} in the objective (below {threshold}; {:.4} forgone \
             so far); kept the deployed configuration, re-sized for {load_rps:.1} rps",
            describe_variants(&proposal.plan),
            self.forgone_gain
        );
        (keep, Some(line))
    }
}

impl ControlLoop {
    /// With nodes, places the plan the decision applies (damping may have changed the
    /// planner's) near where the replicas run now: its placement goes into the decision,
    /// or, when it does not place, the planned plan (which places) applies instead and
    /// `held_back` says why.
    fn place_applied(&self, problem: &Problem, planned: Solution, decision: &mut Decision) {
        if problem.nodes.is_empty() {
            return;
        }
        let near =
            |plan: &Plan| place_plan_near(&problem.pipeline, plan, &problem.nodes, &self.running);
        match near(&decision.plan) {
            Ok(placement) => decision.placement = placement,
            Err(error) => {
                let why = match error {
                    PlanError::Unplaceable(why) => why,
                    other => other.to_string(),
                };
                let placement = near(&planned.plan).unwrap_or(planned.placement);
                decision.held_back.push(format!(
                    "damped plan {} does not place ({why}); the planned plan {} applies, \
                     placed {}",
                    decision.plan,
                    planned.plan,
                    describe_placement(&placement)
                ));
                decision.placement = placement;
                decision.plan = planned.plan;
            }
        }
    }
}

/// The variants of each stage of `plan`, `stage: a+b` joined by `, `.
fn describe_variants(plan: &Plan) -> String {
    plan.stages
        .iter()
        .map(|s| {
            let names: Vec<&str> = s.assignments.iter().map(|a| a.variant.as_str()).collect();
            format!("{}: {}", s.stage, names.join("+"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Policy for ControlLoop {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn interval_s(&self) -> f64 {
        self.config.interval_s
    }

    fn initial_plan(&self) -> Plan {
        self.initial_plan.clone()
    }

    fn decide(&mut self, observation: &Observation) -> Decision {
        let now_s = if observation.time_s.is_finite() {
            observation.time_s
        } else {
            self.last_time_s.map_or(0.0, |t| t + self.config.interval_s)
        };
        self.last_time_s = Some(now_s);
        self.nodes.clone_from(&observation.nodes);
        self.running.clone_from(&observation.placement);
        let deployed = if observation.deployed.stages.is_empty() {
            self.last_plan.clone()
        } else {
            observation.deployed.clone()
        };
        self.observe_arrivals(now_s, observation);
        self.remember_pulse_arrivals(&observation.arrivals_per_second);
        if self.config.spare.enabled {
            for &a in &observation.arrivals_per_second {
                self.bursts.push(a);
            }
        }
        self.fast_exhausted = false;
        let forecast: Forecast = self.forecaster.as_dyn().forecast(now_s, self.horizon_s);
        let mean = observation.mean_rps();
        let demand_rps = if mean.is_finite() { mean.max(0.0) } else { 0.0 };
        let headroom = self.update_headroom(now_s, observation, &deployed, demand_rps);

        let basis = match self.config.forecast.basis {
            ForecastBasis::Point => forecast.point,
            ForecastBasis::Upper => forecast.upper,
        };
        let floor = match self.config.floor {
            LoadFloor::None => 0.0,
            LoadFloor::ObservedMean => demand_rps,
            LoadFloor::ObservedPeak => {
                let peak = observation.peak_rps();
                if peak.is_finite() { peak.max(0.0) } else { 0.0 }
            }
        };
        let mut load_rps = (basis * self.config.margin * headroom).max(floor);
        if !load_rps.is_finite() {
            load_rps = floor;
        }
        load_rps = self.with_scale_up_headroom(load_rps, &deployed);
        let spare = self.warm_spare(load_rps, &deployed);
        if let Some((spare_rps, _)) = &spare {
            load_rps = *spare_rps;
        }
        let skipped = self.apply_skip_rule(load_rps);

        let mut decision = Decision {
            time_s: now_s,
            plan: deployed.clone(),
            forecast_rps: Some(forecast.point),
            upper_rps: Some(forecast.upper),
            provisioned_rps: load_rps,
            headroom,
            warm_spare: spare.map(|(_, line)| line),
            ..Decision::default()
        };
        if let Some(line) = skipped {
            decision.provisioned_rps = self.last_planned_rps.unwrap_or(load_rps);
            decision.held_back.push(line);
            self.last_plan = deployed;
            return decision;
        }
        self.plan_and_damp(true, now_s, load_rps, demand_rps, &deployed, &mut decision);
        decision
    }

    fn react(&mut self, pulse: &Pulse) -> Option<Decision> {
        if !self.config.fast_path.enabled || !pulse.time_s.is_finite() {
            return None;
        }
        self.remember_pulse_arrivals(&pulse.arrivals_per_second);
        let now_s = pulse.time_s;
        if self.fast_exhausted
            || self
                .last_fast_s
                .is_some_and(|t| now_s - t < self.config.fast_path.min_gap_s)
            || self.pulse_arrivals.is_empty()
        {
            return None;
        }
        let deployed = if pulse.deployed.stages.is_empty() {
            self.last_plan.clone()
        } else {
            pulse.deployed.clone()
        };
        let pipeline = &self.config.problem.pipeline;
        let capacity_rps = plan_capacity_rps(pipeline, &deployed).ok()?;
        let window_s = self.pulse_arrivals.len() as f64;
        let rate_rps = self.pulse_arrivals.iter().sum::<f64>() / window_s;
        let queue_len = if pulse.queue_len.is_finite() {
            pulse.queue_len.max(0.0)
        } else {
            0.0
        };
        let fired = trigger(
            &self.config.fast_path,
            &TriggerInput {
                rate_rps,
                window_s,
                capacity_rps,
                utilisation_cap: self.config.problem.utilisation_cap,
                queue_len,
                slo_ms: pipeline.slo_ms,
                capacity_starting: self.capacity_ready_at_s.is_some_and(|t| t > now_s),
            },
        )?;
        self.last_fast_s = Some(now_s);
        // Plan for what arrives now (the window's mean or its last second, the larger: a
        // step inside the window shows in full in its last second) with the deadband's
        // headroom, never below the load the plan in force was sized for, plus what it
        // takes to drain the queue over the horizon.
        let deadband = if self.config.damping.enabled {
            self.config.damping.deadband_fraction.max(0.0)
        } else {
            0.0
        };
        let latest_rps = self.pulse_arrivals.back().copied().unwrap_or(0.0);
        let load_rps = rate_rps.max(latest_rps).max(self.last_provisioned_rps) * (1.0 + deadband)
            + queue_len / self.horizon_s.max(1.0);
        let mut decision = Decision {
            time_s: now_s,
            plan: deployed.clone(),
            provisioned_rps: load_rps,
            headroom: self.headroom.headroom(),
            fast_path: Some(fired.describe(self.pulse_arrivals.len())),
            ..Decision::default()
        };
        self.plan_and_damp(false, now_s, load_rps, rate_rps, &deployed, &mut decision);
        let after = plan_capacity_rps(&self.config.problem.pipeline, &decision.plan).unwrap_or(0.0);
        if decision.plan == deployed || after <= capacity_rps {
            // Nothing more to start: the next tick decides.
            self.fast_exhausted = true;
            self.last_plan = deployed;
            return None;
        }
        Some(decision)
    }
}

/// Seconds from a burst to the capacity started for it serving: the fast path's window
/// (or a whole period without it) plus the longest load time.
fn spare_lead_s(config: &ControlConfig) -> f64 {
    let detection = if config.fast_path.enabled {
        config.fast_path.window_s
    } else {
        config.interval_s
    };
    detection + max_cold_start_s(&config.problem.pipeline)
}

impl ControlLoop {
    /// The spare rule ([`crate::spare`]): the load to plan for instead of `load_rps` and a
    /// line saying why, when keeping warm capacity for bursts pays.
    fn warm_spare(&self, load_rps: f64, deployed: &Plan) -> Option<(f64, String)> {
        if !self.config.spare.enabled {
            return None;
        }
        let problem = &self.config.problem;
        let accuracy = self.last_accuracy?;
        let carried =
            plan_capacity_rps(&problem.pipeline, deployed).ok()? * problem.utilisation_cap;
        if carried.is_nan() || carried <= 0.0 {
            return None;
        }
        let weights = &problem.weights;
        // GPU memory is priced only where β_gpu is set; a deployed plan whose GPU memory is
        // unmeasured has no price then, and no spare is planned on a guess.
        let gpu_gib = if weights.beta_per_gpu_gib == 0.0 {
            0.0
        } else {
            plan_gpu_mem_mb(&problem.pipeline, deployed)
                .ok()
                .flatten()?
                / 1024.0
        };
        let price_per_rps = (weights.beta_per_core * deployed.cores() as f64
            + weights.beta_per_gpu_gib * gpu_gib)
            / carried;
        let choice = self.bursts.choose(
            load_rps,
            weights.alpha * accuracy,
            price_per_rps,
            problem.utilisation_cap,
        )?;
        let line = format!(
            "warm spare: planned for {:.1} rps instead of {load_rps:.1}: over the last {} s, \
             {:.2} % of requests arrived above the forecast's capacity before new replicas \
             could serve them ({:.2} % above this one); saving them is worth {:.4} against \
             {:.4} for the cores",
            choice.load_rps,
            self.bursts.len(),
            100.0 * choice.share_without,
            100.0 * choice.share_with,
            choice.worth,
            choice.cost
        );
        Some((choice.load_rps, line))
    }

    /// Keeps the last `fast_path.window_s` clean per-second arrival counts.
    fn remember_pulse_arrivals(&mut self, arrivals: &[f64]) {
        let keep = self.config.fast_path.window_seconds();
        for &rps in arrivals {
            if !(rps.is_finite() && rps >= 0.0) {
                continue;
            }
            if self.pulse_arrivals.len() == keep {
                self.pulse_arrivals.pop_front();
            }
            self.pulse_arrivals.push_back(rps);
        }
    }

    /// Plans for `load_rps` from `deployed` (closest feasible load when infeasible), weighs
    /// a switch, damps, and fills `decision`; the plan in force is kept on a planner error.
    fn plan_and_damp(
        &mut self,
        at_tick: bool,
        now_s: f64,
        load_rps: f64,
        demand_rps: f64,
        deployed: &Plan,
        decision: &mut Decision,
    ) {
        let mut problem = self.config.problem.clone();
        problem.load_rps = load_rps;
        problem.current = (!deployed.stages.is_empty()).then(|| deployed.clone());
        problem.nodes.clone_from(&self.nodes);
        let (solution, planned_rps, note) = match plan_closest(&problem) {
            Ok(found) => found,
            Err(error) => {
                decision.error = Some(error.to_string());
                self.last_plan = deployed.clone();
                return;
            }
        };
        decision.provisioned_rps = planned_rps;
        self.last_provisioned_rps = planned_rps;
        if solution.terms.accuracy.is_finite() {
            self.last_accuracy = Some(solution.terms.accuracy);
        }
        decision.objective = Some(solution.objective);
        decision.binding = solution.binding.iter().map(ToString::to_string).collect();
        decision.binding.extend(note);
        decision.proposed = Some(solution.plan.clone());
        let (solution, kept) =
            self.weigh_switch(&problem, planned_rps, deployed, solution, at_tick);
        decision.held_back.extend(kept);

        let damped = self.damper.damp(&DampingInput {
            now_s,
            pipeline: &self.config.problem.pipeline,
            proposed: &solution.plan,
            deployed,
            demand_rps,
            planned_load_rps: planned_rps,
            utilisation_cap: problem.utilisation_cap,
            limits: problem.limits,
        });
        match damped {
            Ok(damped) => {
                decision.plan = damped.plan;
                decision.held_back.extend(damped.held_back);
            }
            Err(error) => {
                decision.plan = solution.plan.clone();
                decision
                    .held_back
                    .push(format!("damping skipped ({error}); the proposal applies"));
            }
        }
        self.place_applied(&problem, solution, decision);
        let cold_start_s =
            change_cold_start_s(&self.config.problem.pipeline, deployed, &decision.plan);
        if cold_start_s > 0.0 {
            self.capacity_ready_at_s = Some(now_s + cold_start_s);
        }
        self.last_plan = decision.plan.clone();
    }
}

#[cfg(test)]
mod tests {
    use infadapt_damping::DEFAULT_MIN_SWITCH_GAIN;
    use infadapt_model::{Pipeline, Variant};
    use infadapt_testkit::{pipeline as pipeline_of, point, single_plan, stage};

    use super::*;

    /// A variant serving `rps` per replica (batch 1, 1 core, 20 ms p99, 5 s to load).
    fn variant(name: &str, accuracy: f64, rps: f64) -> Variant {
        infadapt_testkit::variant(
            name,
            accuracy,
            5.0,
            vec![point(1, 1, Some(20.0), Some(15.0), Some(rps))],
        )
    }

    fn pipeline(slo_ms: f64) -> Pipeline {
        pipeline_of(
            "p",
            slo_ms,
            vec![stage(
                "s",
                vec![variant("fast", 0.7, 50.0), variant("accurate", 0.9, 20.0)],
                &[1],
                &[1],
                8,
            )],
        )
    }

    fn plan(replicas: u32) -> Plan {
        single_plan("s", "fast", 1, 1, replicas)
    }

    fn observation(time_s: f64, rps: f64, deployed: Plan) -> Observation {
        Observation {
            time_s,
            window_s: 10.0,
            arrivals_per_second: vec![rps; 10],
            completed: (rps * 10.0) as u64,
            deployed,
            ..Observation::default()
        }
    }

    #[test]
    fn presets_express_the_baselines() {
        let ipa = ControlConfig::ipa(Problem::new(pipeline(500.0), 10.0), ModelKind::Max);
        assert_eq!((ipa.name.as_str(), ipa.interval_s), ("ipa", 10.0));
        assert_eq!(ipa.horizon_s(), 20.0);
        assert!(!ipa.damping.enabled && !ipa.headroom.enabled && !ipa.problem.allow_mix);
        assert_eq!(ipa.problem.weights.gamma_per_cold_start_s, 0.0);
        let infadapter =
            ControlConfig::infadapter(Problem::new(pipeline(500.0), 10.0), ModelKind::Max);
        assert_eq!((infadapter.interval_s, infadapter.margin), (30.0, 1.1));
        assert!(infadapter.problem.allow_mix);
        assert!(!infadapter.damping.enabled);
        assert_eq!(infadapter.skip, Some(SkipRule { max_skips: 4 }));
        assert_eq!(ipa.problem.latency_model, LatencyModel::BatchWaitOnly);
        assert_eq!(ipa.skip, None);
        let ours = ControlConfig::new(Problem::new(pipeline(500.0), 10.0));
        // Lead time: one period plus the longest cold start.
        assert_eq!(ours.horizon_s(), 15.0);
        for config in [ipa, infadapter, ours] {
            let policy = ControlLoop::new(config).expect("builds");
            assert!(!policy.initial_plan().stages.is_empty());
        }
    }

    /// InfAdapter's loop on the naive forecast, from one replica of `fast` (40 rps at the
    /// 0.8 cap); returns whether each tick at the given rates re-planned.
    fn infadapter_replans(rates: &[f64]) -> Vec<bool> {
        let mut config =
            ControlConfig::infadapter(Problem::new(pipeline(500.0), 10.0), ModelKind::Naive);
        config.initial_plan = Some(plan(1));
        let mut policy = ControlLoop::new(config).expect("builds");
        let mut deployed = plan(1);
        rates
            .iter()
            .enumerate()
            .map(|(tick, &rps)| {
                let d = policy.decide(&observation(
                    30.0 * (tick + 1) as f64,
                    rps,
                    deployed.clone(),
                ));
                assert!(d.error.is_none(), "{:?}", d.error);
                let skipped = d.held_back.iter().any(|l| l.starts_with("skipped"));
                assert_eq!(skipped, d.proposed.is_none(), "{d:?}");
                if skipped {
                    assert_eq!(d.plan, deployed, "a skipped tick changes nothing");
                }
                deployed = d.plan;
                !skipped
            })
            .collect()
    }

    #[test]
    fn infadapter_skips_four_decisions_then_replans_for_the_current_forecast() {
        // 20 rps × 1.1 = 22 is below the 40 the initial plan carries: four skips, then the
        // fifth tick re-plans for 22 (and scales down), then skips resume against 22.
        let replans = infadapter_replans(&[20.0; 7]);
        assert_eq!(replans, [false, false, false, false, true, false, false]);
    }

    #[test]
    fn infadapter_replans_at_once_above_the_last_planned_load_and_resets_the_count() {
        // Two skips, then 60 × 1.1 = 66 > 40 re-plans at once; 66 again is not above 66, so
        // the count restarts from zero: four skips before the next re-plan.
        let rates = [20.0, 20.0, 60.0, 60.0, 60.0, 60.0, 60.0, 60.0];
        let replans = infadapter_replans(&rates);
        assert_eq!(
            replans,
            [false, false, true, false, false, false, false, true]
        );
        // A rising load re-plans every tick.
        assert_eq!(infadapter_replans(&[50.0, 60.0, 70.0]), [true, true, true]);
    }

    #[test]
    fn infeasible_load_plans_for_the_highest_sustainable_load() {
        let mut policy =
            ControlLoop::new(ControlConfig::new(Problem::new(pipeline(500.0), 10.0))).unwrap();
        let decision = policy.decide(&observation(10.0, 10_000.0, plan(1)));
        assert!(decision.error.is_none(), "{:?}", decision.error);
        assert!(decision.provisioned_rps < 10_000.0);
        assert!(
            decision
                .binding
                .iter()
                .any(|b| b.contains("highest sustainable")),
            "{:?}",
            decision.binding
        );
        assert_eq!(decision.plan.stages[0].assignments[0].replicas, 8);
    }

    #[test]
    fn planner_error_keeps_the_deployed_plan() {
        // A 1 ms SLO no variant meets at any load.
        let mut config = ControlConfig::new(Problem::new(pipeline(1.0), 10.0));
        config.initial_plan = Some(plan(2));
        let mut policy = ControlLoop::new(config).unwrap();
        let decision = policy.decide(&observation(10.0, 10.0, plan(2)));
        assert!(decision.error.is_some());
        assert_eq!(decision.plan, plan(2));
    }

    /// The forecast after `ticks` periods of alternating 2 and 10 rps seconds (mean 6),
    /// then one period at `then_rps`.
    fn forecast_of_scatter(smoothing_s: f64, ticks: usize, then_rps: f64) -> (f64, f64) {
        let mut config = ControlConfig::new(Problem::new(pipeline(500.0), 6.0));
        config.forecast.smoothing_s = smoothing_s;
        let mut policy = ControlLoop::new(config).expect("builds");
        let mut last = 0.0;
        for tick in 1..=ticks {
            let mut o = observation(tick as f64 * 10.0, 6.0, plan(1));
            o.arrivals_per_second = (0..10)
                .map(|i| if i % 2 == 0 { 2.0 } else { 10.0 })
                .collect();
            last = policy.decide(&o).forecast_rps.expect("forecast");
        }
        let o = observation((ticks + 1) as f64 * 10.0, then_rps, plan(1));
        let after = policy.decide(&o).forecast_rps.expect("forecast");
        (last, after)
    }

    #[test]
    fn smoothing_plans_for_the_rate_not_the_scatter_of_single_seconds() {
        // Raw seconds: the window maximum is the largest second, 10.
        let (raw, _) = forecast_of_scatter(1.0, 3, 6.0);
        assert_eq!(raw, 10.0);
        // Over 4 s the mean of alternating seconds is 6 (a 5-s window sees 2 or 3 tens).
        let (smoothed, _) = forecast_of_scatter(4.0, 3, 6.0);
        assert!((smoothed - 6.0).abs() < 1e-9, "{smoothed}");
        // A real level shift still comes through within one period.
        let (_, shifted) = forecast_of_scatter(4.0, 3, 30.0);
        assert!((shifted - 30.0).abs() < 1e-9, "{shifted}");
    }

    /// One stage whose variants `a` (accuracy 0.800, 20 rps per replica) and `b` (0.803,
    /// 25 rps): `b` scores higher by 0.003 less the change cost of starting it.
    fn near_tie() -> (Pipeline, Plan) {
        let mut pipeline = pipeline(500.0);
        pipeline.stages[0].variants = vec![variant("a", 0.800, 20.0), variant("b", 0.803, 25.0)];
        let mut deployed = plan(1);
        deployed.stages[0].assignments[0].variant = "a".to_owned();
        (pipeline, deployed)
    }

    fn variant_after_one_tick(min_switch_gain: f64, b_accuracy: f64) -> (String, Vec<String>) {
        let (mut pipeline, deployed) = near_tie();
        pipeline.stages[0].variants[1].accuracy = b_accuracy;
        let mut config = ControlConfig::new(Problem::new(pipeline, 10.0));
        config.initial_plan = Some(deployed.clone());
        config.damping.min_switch_gain = min_switch_gain;
        let mut policy = ControlLoop::new(config).expect("builds");
        let decision = policy.decide(&observation(10.0, 10.0, deployed));
        assert!(decision.error.is_none(), "{:?}", decision.error);
        let proposed = decision.proposed.expect("a proposal");
        assert_eq!(proposed.stages[0].assignments[0].variant, "b");
        (
            decision.plan.stages[0].assignments[0].variant.clone(),
            decision.held_back,
        )
    }

    #[test]
    fn a_small_gain_that_persists_is_taken_once_its_sum_reaches_the_threshold() {
        // b gains 0.0025 per tick: kept at the first tick, taken at the second (0.005).
        let (pipeline, deployed) = near_tie();
        let mut config = ControlConfig::new(Problem::new(pipeline, 10.0));
        config.initial_plan = Some(deployed.clone());
        let mut policy = ControlLoop::new(config).expect("builds");
        let first = policy.decide(&observation(10.0, 10.0, deployed.clone()));
        assert_eq!(first.plan.stages[0].assignments[0].variant, "a");
        let second = policy.decide(&observation(20.0, 10.0, first.plan.clone()));
        assert_eq!(
            second.plan.stages[0].assignments[0].variant, "b",
            "{:?}",
            second.held_back
        );
        assert!(
            second.held_back.iter().any(|l| l.contains("switched")),
            "{:?}",
            second.held_back
        );
    }

    #[test]
    fn a_switch_that_gains_less_than_the_threshold_keeps_the_deployed_variant() {
        // b gains 0.003 − γ·5 s = 0.0025 < 0.005: a stays, re-sized, and the line says why.
        let (variant, held_back) = variant_after_one_tick(DEFAULT_MIN_SWITCH_GAIN, 0.803);
        assert_eq!(variant, "a", "{held_back:?}");
        assert!(
            held_back
                .iter()
                .any(|l| l.contains("gains 0.0025") && l.contains("kept the deployed")),
            "{held_back:?}"
        );
        // Without the rule, or with a real gain (0.02), the switch goes ahead.
        assert_eq!(variant_after_one_tick(0.0, 0.803).0, "b");
        assert_eq!(variant_after_one_tick(DEFAULT_MIN_SWITCH_GAIN, 0.82).0, "b");
    }

    #[test]
    fn a_needed_scale_up_plans_the_deadband_above_the_load() {
        let run = |deadband: f64| {
            let mut config = ControlConfig::new(Problem::new(pipeline(500.0), 10.0));
            config.initial_plan = Some(plan(1));
            config.damping.deadband_fraction = deadband;
            let mut policy = ControlLoop::new(config).expect("builds");
            // fast × 1 carries 40 rps at the cap: 90 rps needs a scale-up.
            let first = policy.decide(&observation(10.0, 90.0, plan(1)));
            let second = policy.decide(&observation(20.0, 90.0, first.plan.clone()));
            (first.provisioned_rps, second.provisioned_rps)
        };
        let (up, after) = run(0.1);
        assert!((up - 99.0).abs() < 1e-9, "{up}");
        // Once the deployed plan carries the load, the load is planned as it is.
        assert!((after - 90.0).abs() < 1e-9, "{after}");
        let (up, _) = run(0.0);
        assert!((up - 90.0).abs() < 1e-9, "{up}");
    }

    #[test]
    fn a_smoothing_below_one_second_is_refused() {
        let mut config = ControlConfig::new(Problem::new(pipeline(500.0), 6.0));
        config.forecast.smoothing_s = 0.5;
        let error = ControlLoop::new(config).expect_err("refused");
        assert!(error.to_string().contains("smoothing_s"), "{error}");
    }

    fn nodes(cpus: &[f64]) -> Vec<NodeCapacity> {
        cpus.iter()
            .enumerate()
            .map(|(i, &cpus)| NodeCapacity {
                id: format!("n{i}"),
                cpus,
                gpus: 0.0,
                held_cpus: 0.0,
                held_gpus: 0.0,
            })
            .collect()
    }

    #[test]
    fn the_applied_plan_is_placed_on_the_observed_nodes() {
        let mut policy =
            ControlLoop::new(ControlConfig::new(Problem::new(pipeline(500.0), 10.0))).unwrap();
        let placed = |policy: &ControlLoop, decision: &Decision, nodes: &[NodeCapacity]| {
            infadapt_planner::placement::placement_fits(
                &policy.config().problem.pipeline,
                &decision.plan,
                &decision.placement,
                nodes,
            )
        };
        // A busy tick on a roomy cluster plans several replicas, placed.
        let mut seen = observation(10.0, 200.0, plan(1));
        seen.nodes = nodes(&[8.0, 8.0]);
        let busy = policy.decide(&seen);
        assert!(placed(&policy, &busy, &seen.nodes), "{busy:?}");
        assert!(busy.plan.cores() > 4, "{}", busy.plan);
        // The load falls and the cluster shrinks to four CPUs on two nodes: the scale-down
        // window holds the replicas, which no longer place, so the planned plan applies.
        let mut quiet = observation(20.0, 10.0, busy.plan.clone());
        quiet.nodes = nodes(&[2.0, 2.0]);
        let decision = policy.decide(&quiet);
        assert!(placed(&policy, &decision, &quiet.nodes), "{decision:?}");
        assert!(decision.plan.cores() <= 4, "{}", decision.plan);
        assert!(
            decision
                .held_back
                .iter()
                .any(|h| h.contains("does not place")),
            "{:?}",
            decision.held_back
        );
        // Without nodes, no placement.
        quiet.nodes.clear();
        assert!(policy.decide(&quiet).placement.is_empty());
    }

    #[test]
    fn replicas_are_placed_where_they_run() {
        let mut policy =
            ControlLoop::new(ControlConfig::new(Problem::new(pipeline(500.0), 10.0))).unwrap();
        let mut seen = observation(10.0, 60.0, plan(2));
        seen.nodes = nodes(&[4.0, 4.0]);
        // First fit would start on n0; two replicas of each variant run on n1.
        seen.placement = ["fast", "accurate"]
            .iter()
            .map(|variant| infadapt_model::Placement {
                stage: "s".into(),
                variant: (*variant).into(),
                node: "n1".into(),
                replicas: 2,
            })
            .collect();
        let decision = policy.decide(&seen);
        let assignment = &decision.plan.stages[0].assignments[0];
        let on_n1: u32 = decision
            .placement
            .iter()
            .filter(|p| p.node == "n1" && p.variant == assignment.variant)
            .map(|p| p.replicas)
            .sum();
        assert_eq!(
            on_n1,
            assignment.replicas.min(2),
            "{} placed {:?}",
            decision.plan,
            decision.placement
        );
    }

    #[test]
    fn garbage_observations_do_not_panic() {
        let mut policy =
            ControlLoop::new(ControlConfig::new(Problem::new(pipeline(500.0), 10.0))).unwrap();
        let mut o = observation(f64::NAN, 10.0, Plan::default());
        o.arrivals_per_second = vec![f64::NAN, -3.0, f64::INFINITY, 5.0];
        o.window_s = f64::NAN;
        let decision = policy.decide(&o);
        assert!(decision.provisioned_rps.is_finite());
        assert!(!decision.plan.stages.is_empty());
    }

    #[test]
    fn a_reported_gpu_memory_limit_bounds_the_plans() {
        // Each replica needs 1000 MB of GPU memory; 2500 MB hold two.
        let mut gpu_pipeline = pipeline(500.0);
        for variant in &mut gpu_pipeline.stages[0].variants {
            variant.gpu_mem_mb = Some(1000.0);
        }
        let mut policy =
            ControlLoop::new(ControlConfig::new(Problem::new(gpu_pipeline, 10.0))).expect("builds");
        assert_eq!(
            policy.limit_gpu_memory(f64::NAN),
            None,
            "garbage is ignored"
        );
        assert_eq!(policy.limit_gpu_memory(2500.0), Some(2500.0));
        assert_eq!(
            policy.limit_gpu_memory(4000.0),
            Some(2500.0),
            "the smaller applies"
        );
        let decision = policy.decide(&observation(10.0, 400.0, plan(1)));
        let replicas: u32 = decision.plan.stages[0]
            .assignments
            .iter()
            .map(|a| a.replicas)
            .sum();
        assert!(replicas <= 2, "{:?}", decision.plan);
        // Sized for what two replicas of the fast variant carry at the cap, not for 400 rps.
        assert!(decision.provisioned_rps <= 2.0 * 50.0, "{decision:?}");
    }

    #[test]
    fn an_lstm_loop_names_its_forecaster_and_keeps_a_new_model_over_saved_state() {
        use infadapt_forecast::lstm::{LstmConfig, Normalisation};
        let model = |seed: u64| {
            LstmModel::new(
                LstmConfig {
                    window: 3,
                    units: 2,
                    seed,
                    ..LstmConfig::default()
                },
                Normalisation {
                    offset: 10.0,
                    scale: 5.0,
                },
            )
            .unwrap()
        };
        let config_with = |m: LstmModel| {
            let mut config = ControlConfig::new(Problem::new(pipeline(500.0), 10.0));
            config.forecast.model = ModelKind::Lstm;
            config.forecast.lstm = Some(m);
            config
        };
        let mut first = ControlLoop::new(config_with(model(1))).unwrap();
        first.decide(&observation(10.0, 12.0, plan(1)));
        assert_eq!(first.forecaster_following(), "lstm");
        let saved = first.forecaster_state().unwrap();
        let mut same = ControlLoop::new(config_with(model(1))).unwrap();
        assert!(same.restore_forecaster_state(saved.clone()).is_ok());
        let mut retrained = ControlLoop::new(config_with(model(2))).unwrap();
        let refused = retrained
            .restore_forecaster_state(saved)
            .expect_err("another network");
        assert!(
            refused.to_string().contains("another trained LSTM model"),
            "{refused}"
        );
        let state = retrained.forecaster_state().unwrap();
        let kept: LoopForecaster = serde_json::from_value(state).unwrap();
        assert_eq!(kept.model().lstm_model(), Some(&model(2)));

        let mut auto = ControlConfig::new(Problem::new(pipeline(500.0), 10.0));
        auto.forecast.model = ModelKind::Auto;
        let auto = ControlLoop::new(auto).unwrap();
        assert_eq!(auto.forecaster_following(), "max");
    }

    #[test]
    fn the_fast_path_adds_what_the_load_needs_whatever_the_scale_up_knobs_say() {
        // The strictest scale-up settings: a 10-minute window, one replica or 10 % per
        // tick, the stricter of the two. A burst to 150 rps outruns the plan in force; the
        // fast path's re-plan is a needed increase (and the observed demand is above what
        // the plan in force carries) and goes at once, whole.
        let mut config = ControlConfig::new(Problem::new(pipeline(500.0), 10.0));
        config.damping.scale_up_stabilization_window_s = 600.0;
        config.damping.max_replicas_added_per_tick = Some(1);
        config.damping.max_scale_up_percent = Some(10.0);
        config.damping.scale_up_select_policy = infadapt_damping::SelectPolicy::Min;
        config.initial_plan = Some(plan(1));
        let mut policy = ControlLoop::new(config).expect("builds");
        let tick = policy.decide(&observation(10.0, 20.0, plan(1)));
        let deployed = tick.plan;
        let p = pipeline(500.0);
        let carried =
            |plan: &Plan| infadapt_damping::plan_capacity_rps(&p, plan).expect("capacity") * 0.8;
        assert!(carried(&deployed) < 150.0);
        let fired = (11..=20).find_map(|second| {
            policy.react(&Pulse {
                time_s: f64::from(second),
                arrivals_per_second: vec![150.0],
                queue_len: 0.0,
                deployed: deployed.clone(),
            })
        });
        let decision = fired.expect("the fast path fires");
        assert!(decision.fast_path.is_some(), "{decision:?}");
        assert!(
            carried(&decision.plan) >= 150.0,
            "{:?} carries {}: {:?}",
            decision.plan,
            carried(&decision.plan),
            decision.held_back
        );
        // Let through as needed: neither held by the knobs nor rescued by a guard.
        for line in &decision.held_back {
            for rescued in [
                "scale-up stabilization",
                "per tick",
                "would not carry the observed demand",
                "damping overridden",
            ] {
                assert!(!line.contains(rescued), "{:?}", decision.held_back);
            }
        }
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let mut config = ControlConfig::new(Problem::new(pipeline(500.0), 10.0));
        config.interval_s = 0.0;
        assert!(matches!(
            ControlLoop::new(config),
            Err(ControlError::InvalidConfig(_))
        ));
        let mut config = ControlConfig::new(Problem::new(pipeline(500.0), 10.0));
        config.forecast.model = ModelKind::Lstm;
        assert!(matches!(
            ControlLoop::new(config),
            Err(ControlError::Forecast(_))
        ));
    }

    #[test]
    fn forecast_settings_out_of_their_keys_ranges_get_the_reader_s_message() {
        let refused = |change: &dyn Fn(&mut ControlConfig)| {
            let mut config = ControlConfig::new(Problem::new(pipeline(500.0), 10.0));
            change(&mut config);
            config.validate().unwrap_err().to_string()
        };
        let message = |text: &str| ControlError::InvalidConfig(text.to_owned()).to_string();
        assert_eq!(
            refused(&|c| c.forecast.smoothing_s = 0.5),
            message("forecast.smoothing_s must be in [1, 3600], got 0.5")
        );
        assert_eq!(
            refused(&|c| c.forecast.upper_quantile = Some(1.0)),
            message("forecast.upper_quantile must be in (0, 1), got 1")
        );
        assert_eq!(
            refused(&|c| c.forecast.horizon_s = Some(-1.0)),
            message("forecast.horizon_s must be in (0, 86400], got -1")
        );
        assert_eq!(
            refused(&|c| c.margin = f64::NAN),
            message("forecast.margin must be in (0, 100], got NaN")
        );
        let defaults = ControlConfig::new(Problem::new(pipeline(500.0), 10.0));
        assert_eq!(defaults.validate(), Ok(()));
        // The defaults in words name what the settings hold.
        let shown = [
            (
                &forecast_keys::MODEL,
                format!("`{}`", defaults.forecast.model),
            ),
            (&forecast_keys::BASIS, "`upper`".to_owned()),
            (&forecast_keys::FLOOR, "`observed-mean`".to_owned()),
        ];
        assert_eq!(defaults.forecast.basis, ForecastBasis::Upper);
        assert_eq!(defaults.floor, LoadFloor::ObservedMean);
        for (key, held) in shown {
            assert_eq!(
                key.default.to_string(),
                held,
                "the default of `{}`",
                key.name
            );
        }
    }
}
