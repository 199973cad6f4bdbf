//! The simulated backend linked into the daemon: the `plugins/sim` backend (the same code
//! the cdylib exports) driven through [`BackendInstance`] on a [`ManualClock`] that the
//! pipeline task moves one control period per tick (so the host simulates the synthetic
//! load of the loop's clock, whatever the wall clock does), configured from the daemon's
//! `[pipeline.backend]` keys.
//!
//! It starts running the plan the daemon starts from (as a real backend keeps running
//! across a daemon restart), so a restarted daemon finds it already matching.

use infadapt_model::{CatalogVariant, Pipeline, Plan};
use infadapt_plugin_abi::{
    ApplyReport, Backend, BackendError, BackendInstance, Description, HealthReport, PlanMessage,
    PluginObservation,
};
use infadapt_plugin_abi::{ConfigProblem, ConfigProblems};
use infadapt_plugin_sim::{
    DEFAULT_MAX_CATCH_UP_S, ManualClock, PipelineSpec, SimBackend as LinkedSim, SimPluginConfig,
    StageSpec, VariantSpec, WorkloadSpec,
};
use infadapt_sim::{DiurnalParams, SimConfig, synthetic_diurnal};
use serde::Deserialize;

use infadapt_bridge::plan_to_message;

use super::ServiceError;

/// The `[pipeline.backend]` keys of `type = "sim"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimSettings {
    /// Seed of the workload and of the simulated service times.
    pub seed: u64,
    /// A constant load, requests/s; when unset the load is a synthetic diurnal curve.
    pub rps: Option<f64>,
    pub trough_rps: f64,
    pub peak_rps: f64,
    /// Length of the simulated day, seconds (the curve repeats).
    pub day_s: u32,
    pub bursts_per_hour: f64,
    pub noise: f64,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            seed: 1,
            rps: None,
            trough_rps: 20.0,
            peak_rps: 120.0,
            day_s: 600,
            bursts_per_hour: 6.0,
            noise: 0.05,
        }
    }
}

impl SimSettings {
    /// Reads and checks the settings from the backend table (as JSON).
    pub fn from_json(value: &serde_json::Value) -> Result<SimSettings, ServiceError> {
        let settings: SimSettings =
            serde_json::from_value(value.clone()).map_err(ServiceError::SimSettings)?;
        settings.workload(1).map(|_| settings)
    }

    /// Every problem with the settings, each naming its key (the linked backend's config
    /// check, reported by `validate` at the key's position).
    pub fn check(value: &serde_json::Value) -> Vec<ConfigProblem> {
        const KEYS: &[&str] = &[
            "seed",
            "rps",
            "trough_rps",
            "peak_rps",
            "day_s",
            "bursts_per_hour",
            "noise",
        ];
        let mut problems = ConfigProblems::new();
        if !value.is_object() {
            problems.invalid("", "the backend settings must be a table");
            return problems.into_problems();
        }
        problems.unknown_keys("", value, KEYS);
        // Unknown keys are reported above; the rest is read without them.
        let known: serde_json::Map<String, serde_json::Value> = value
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Some(settings) =
            problems.deserialize::<SimSettings>(&serde_json::Value::Object(known))
        {
            if let Some(rps) = settings.rps
                && !(rps.is_finite() && rps >= 0.0)
            {
                problems.invalid("rps", format!("must be >= 0, got {rps}"));
            } else if settings.day_s == 0 {
                problems.invalid("day_s", "must be at least 1");
            } else if let Err(e) = settings.workload(1) {
                problems.invalid("", e.to_string());
            }
        }
        problems.into_problems()
    }

    /// The load of the first `seconds` (at least one) seconds, requests/s, one per second:
    /// the constant `rps`, else the diurnal curve of `seed`. The backend repeats the
    /// `day_s` seconds of it.
    ///
    /// # Errors
    ///
    /// The setting out of range.
    pub fn workload(&self, seconds: usize) -> Result<Vec<f64>, ServiceError> {
        if let Some(rps) = self.rps {
            if !(rps.is_finite() && rps >= 0.0) {
                return Err(ServiceError::SimNegativeRps(rps));
            }
            return Ok(vec![rps; seconds.max(1)]);
        }
        if self.day_s == 0 {
            return Err(ServiceError::SimNoDay);
        }
        let params = DiurnalParams {
            trough_rps: self.trough_rps,
            peak_rps: self.peak_rps,
            day_s: Some(f64::from(self.day_s)),
            bursts_per_hour: self.bursts_per_hour,
            noise: self.noise,
            ..DiurnalParams::default()
        };
        synthetic_diurnal(seconds.max(1), self.seed, &params).map_err(ServiceError::SimWorkload)
    }
}

/// A simulated host serving one pipeline: the `plugins/sim` backend linked in, on a clock
/// its owner moves.
#[derive(Debug)]
pub struct SimBackend {
    inner: LinkedSim,
}

impl SimBackend {
    /// A host serving `pipeline` with `start` deployed; every call first simulates the
    /// seconds `clock` moved since the previous one (from now on: the host starts at the
    /// clock's present time).
    pub fn new(
        pipeline: &Pipeline,
        start: &Plan,
        settings: &serde_json::Value,
        clock: ManualClock,
    ) -> Result<SimBackend, BackendError> {
        let invalid = |problem: ServiceError| BackendError::invalid(problem.to_string());
        let settings = SimSettings::from_json(settings).map_err(invalid)?;
        let rates = settings
            .workload(settings.day_s.max(1) as usize)
            .map_err(invalid)?;
        let config = SimPluginConfig {
            pipeline: pipeline_spec(pipeline),
            catalog: None,
            initial: Some(plan_to_message(start)),
            workload: WorkloadSpec::Rates(rates),
            speed: 1.0,
            seed: settings.seed,
            max_catch_up_s: DEFAULT_MAX_CATCH_UP_S,
            sim: Some(SimConfig::with_seed(settings.seed)),
        };
        let inner = LinkedSim::from_config(config, Box::new(clock))?;
        Ok(SimBackend { inner })
    }
}

/// The pipeline as the sim plugin's config spells it, variants written out inline.
fn pipeline_spec(pipeline: &Pipeline) -> PipelineSpec {
    PipelineSpec {
        name: pipeline.name.clone(),
        slo_ms: pipeline.slo_ms,
        stages: pipeline
            .stages
            .iter()
            .map(|stage| StageSpec {
                name: stage.name.clone(),
                variants: stage
                    .variants
                    .iter()
                    .map(|v| {
                        VariantSpec::Inline(CatalogVariant {
                            name: v.name.clone(),
                            accuracy: v.accuracy,
                            load_time_s: v.load_time_s,
                            gpu_mem_mb: v.gpu_mem_mb,
                            source: String::new(),
                            points: v.profile.points().to_vec(),
                        })
                    })
                    .collect(),
                batch_sizes: stage.batch_sizes.clone(),
                core_options: stage.core_options.clone(),
                max_replicas: stage.max_replicas,
            })
            .collect(),
    }
}

impl BackendInstance for SimBackend {
    fn describe(&self) -> Description {
        Backend::describe(&self.inner)
    }

    fn observe(&mut self) -> Result<PluginObservation, BackendError> {
        Backend::observe(&mut self.inner)
    }

    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
        Backend::apply(&mut self.inner, plan)
    }

    fn health(&mut self) -> Result<HealthReport, BackendError> {
        Backend::health(&mut self.inner)
    }
}
