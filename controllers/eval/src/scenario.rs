//! Scenarios: the host and pipeline a comparison runs on, and what describes its workload.

use infadapt_control::{
    ControlConfig, DampingConfig, FastPathConfig, ForecastSettings, LoadFloor, SpareConfig,
};
use infadapt_model::Plan;
use infadapt_planner::Problem;
use infadapt_sim::SimConfig;

/// What the policies are compared on: the planning problem (pipeline, weights, host limits,
/// solver settings; its load is ignored), the simulator settings and the warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    /// Template of every planning problem; `load_rps` and `current` are set per decision.
    pub problem: Problem,
    /// Plan deployed at the start (taken from the problem's `current` when present);
    /// `None` lets each policy start from its own plan for the mean load.
    pub initial: Option<Plan>,
    pub sim: SimConfig,
    /// Leading workload seconds used only to warm the policies up.
    pub warmup_s: usize,
    /// The settings of this project's loop (`infadapt`), so an operator can evaluate the
    /// settings they are about to deploy; the defaults are the daemon's.
    pub loop_settings: LoopSettings,
}

/// The daemon's per-pipeline control settings that the `infadapt` policy takes from a
/// scenario (period, forecast, margin, floor, damping). The baselines keep their own rules.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopSettings {
    pub interval_s: f64,
    pub forecast: ForecastSettings,
    pub margin: f64,
    pub floor: LoadFloor,
    pub damping: DampingConfig,
    pub fast_path: FastPathConfig,
    pub spare: SpareConfig,
    /// Multiplies the scenario's cost weights (per core, per GPU GiB) when this project's
    /// loop plans, leaving the objective the run is scored on and the baselines' planning
    /// as they are: the knob the accuracy–cost frontier of `docs/evaluation.md` moves
    /// along. Default 1.
    pub cost_weight: f64,
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings::from(&LoopSettings::base_config())
    }
}

impl From<&ControlConfig> for LoopSettings {
    fn from(config: &ControlConfig) -> Self {
        LoopSettings {
            interval_s: config.interval_s,
            forecast: config.forecast.clone(),
            margin: config.margin,
            floor: config.floor,
            damping: config.damping.clone(),
            fast_path: config.fast_path.clone(),
            spare: config.spare.clone(),
            cost_weight: 1.0,
        }
    }
}

impl LoopSettings {
    /// A control configuration with the loop's defaults around an empty problem: the base
    /// that settings are read into before [`LoopSettings::from`] takes them out.
    pub fn base_config() -> ControlConfig {
        ControlConfig::new(Problem::new(
            infadapt_model::Pipeline {
                name: String::new(),
                slo_ms: 1.0,
                stages: Vec::new(),
            },
            0.0,
        ))
    }

    /// Writes these settings into `config`.
    pub fn apply_to(&self, config: &mut ControlConfig) {
        config.interval_s = self.interval_s;
        config.forecast = self.forecast.clone();
        config.margin = self.margin;
        config.floor = self.floor;
        config.damping = self.damping.clone();
        config.fast_path = self.fast_path.clone();
        config.spare = self.spare.clone();
        let weights = &mut config.problem.weights;
        weights.beta_per_core *= self.cost_weight;
        weights.beta_per_gpu_gib *= self.cost_weight;
    }
}

/// Peak and mean of the measured part of a workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkloadStats {
    pub peak_rps: f64,
    pub mean_rps: f64,
}

impl WorkloadStats {
    /// Statistics of `rates` (non-finite values ignored; zeros when empty).
    pub fn of(rates: &[f64]) -> WorkloadStats {
        let finite = rates.iter().copied().filter(|r| r.is_finite() && *r >= 0.0);
        let (mut peak, mut sum, mut n) = (0.0f64, 0.0, 0usize);
        for r in finite {
            peak = peak.max(r);
            sum += r;
            n += 1;
        }
        WorkloadStats {
            peak_rps: peak,
            mean_rps: if n > 0 { sum / n as f64 } else { 0.0 },
        }
    }
}
