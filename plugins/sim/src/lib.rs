//! The simulated backend as a plugin: one [`HostSim`] pipeline driven by a workload on a
//! virtual clock that runs `speed` times faster than the wall clock.
//!
//! Built twice from the same code: as a `cdylib` exporting the C entry point (loaded by the
//! daemon's plugin host through the real ABI), and as an `rlib` whose [`create_linked`] the
//! daemon links in for its embedded default backend.
//!
//! On every `observe` and `apply` the plugin first advances its simulation by the virtual
//! seconds that elapsed since the previous call (wall time × `speed`, at most
//! `max_catch_up_s` per call; longer gaps are skipped, not simulated). The clock is a
//! [`Clock`] so tests drive it by hand ([`ManualClock`]).
//!
//! What `observe` reports, and how plans are read, is [`infadapt_bridge`]'s conversion,
//! the one the daemon and the evaluation harness read observations with.
//!
//! # Config (JSON object)
//!
//! ```json
//! {
//!   "pipeline": {
//!     "name": "video", "slo_ms": 1000.0,
//!     "stages": [
//!       { "name": "detect", "variants": ["det-n", { "name": "det-x", "accuracy": 0.5,
//!         "load_time_s": 3.0, "points": [{ "batch": 1, "cores": 1, "p99_ms": 90.0 }] }],
//!         "batch_sizes": [1, 2, 4], "core_options": [1, 2], "max_replicas": 16 }
//!     ]
//!   },
//!   "catalog": "schema = 1\n[[variant]]\nname = \"det-n\"\n...",
//!   "initial": { "schema": 1, "stages": [{ "stage": "detect", "assignments": [
//!     { "variant": "det-n", "batch": 1, "cores": 1, "replicas": 2 }] }] },
//!   "workload": { "diurnal": { "seconds": 3600, "trough_rps": 8.0, "peak_rps": 40.0 } },
//!   "speed": 60.0,
//!   "seed": 1,
//!   "max_catch_up_s": 3600,
//!   "sim": { "max_queue_delay_ms": 100.0 }
//! }
//! ```
//!
//! - `pipeline.stages[].variants`: each entry is either a catalog entry written inline (the
//!   fields of a `[[variant]]` of a catalog file) or the name of a variant in `catalog`, the
//!   text of a catalog TOML file. `batch_sizes` (default `[1, 2, 4, 8]`), `core_options`
//!   (default `[1, 2, 4]`) and `max_replicas` (default 16) are optional.
//! - `initial`: the plan deployed (ready) at start; default: each stage's first variant with
//!   its smallest batch and cores and one replica.
//! - `workload`: `{"diurnal": {"seconds": N, ...DiurnalParams}}` (default: one 3600 s day
//!   with default parameters) or `{"rates": [r0, r1, ...]}`, requests per second; both repeat
//!   once their end is reached.
//! - `speed`: virtual seconds per wall second (default 1). `seed` (default 1) seeds the
//!   workload and the simulation. `sim`: further simulator settings (`SimConfig` fields).
//! - Unknown top-level keys are ignored (the daemon may pass more of its table).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use infadapt_bridge::{plan_from_message, sim_observation_message};
use infadapt_model::{Assignment, Catalog, CatalogVariant, Pipeline, Plan, Stage, StagePlan};
use infadapt_plugin_abi::{
    ApplyReport, Backend, BackendError, BackendInstance, Capabilities, Description, HealthReport,
    PlanMessage, PluginObservation, SCHEMA_VERSION,
};
use infadapt_sim::{DiurnalParams, HostSim, SimConfig, StageChange};
use serde::Deserialize;

/// Name the backend reports in `describe`.
pub const BACKEND_NAME: &str = "sim";

/// A source of wall-clock time for the virtual clock.
pub trait Clock: Send {
    /// Seconds elapsed since an arbitrary fixed origin; never decreases.
    fn elapsed_s(&self) -> f64;
}

/// The monotonic system clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn elapsed_s(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }
}

/// A clock moved by hand (tests); clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now_s: Arc<Mutex<f64>>,
}

impl ManualClock {
    /// A clock at 0 s.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `seconds` (negative values are ignored).
    pub fn advance(&self, seconds: f64) {
        let mut now = self.now_s.lock().unwrap_or_else(|e| e.into_inner());
        *now += seconds.max(0.0);
    }
}

impl Clock for ManualClock {
    fn elapsed_s(&self) -> f64 {
        *self.now_s.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The plugin's config, as documented in the module docs.
#[derive(Debug, Clone, Deserialize)]
pub struct SimPluginConfig {
    pub pipeline: PipelineSpec,
    /// Text of a catalog TOML file resolving variants given by name.
    #[serde(default)]
    pub catalog: Option<String>,
    #[serde(default)]
    pub initial: Option<PlanMessage>,
    #[serde(default)]
    pub workload: WorkloadSpec,
    #[serde(default = "default_speed")]
    pub speed: f64,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_max_catch_up_s")]
    pub max_catch_up_s: u64,
    #[serde(default)]
    pub sim: Option<SimConfig>,
}

fn default_speed() -> f64 {
    1.0
}
fn default_seed() -> u64 {
    1
}
fn default_max_catch_up_s() -> u64 {
    DEFAULT_MAX_CATCH_UP_S
}

/// Default of `max_catch_up_s`: virtual seconds one call simulates at most.
pub const DEFAULT_MAX_CATCH_UP_S: u64 = 3600;

/// A pipeline with its variants inline or by catalog name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    pub name: String,
    pub slo_ms: f64,
    pub stages: Vec<StageSpec>,
}

/// One stage of [`PipelineSpec`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub name: String,
    pub variants: Vec<VariantSpec>,
    #[serde(default = "default_batch_sizes")]
    pub batch_sizes: Vec<u32>,
    #[serde(default = "default_core_options")]
    pub core_options: Vec<u32>,
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u32,
}

fn default_batch_sizes() -> Vec<u32> {
    vec![1, 2, 4, 8]
}
fn default_core_options() -> Vec<u32> {
    vec![1, 2, 4]
}
fn default_max_replicas() -> u32 {
    16
}

/// A variant written inline or named in the config's `catalog`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum VariantSpec {
    Named(String),
    Inline(CatalogVariant),
}

/// Where the request rates come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadSpec {
    /// A generated diurnal workload: `seconds` (default 3600) plus [`DiurnalParams`] fields.
    Diurnal(serde_json::Map<String, serde_json::Value>),
    /// Requests per second, one per virtual second.
    Rates(Vec<f64>),
}

impl Default for WorkloadSpec {
    fn default() -> WorkloadSpec {
        WorkloadSpec::Diurnal(serde_json::Map::new())
    }
}

impl WorkloadSpec {
    /// The rates, one per virtual second, repeated cyclically by the backend.
    pub fn rates(&self, seed: u64) -> Result<Vec<f64>, BackendError> {
        let rates = match self {
            WorkloadSpec::Rates(rates) => rates.clone(),
            WorkloadSpec::Diurnal(fields) => {
                let mut fields = fields.clone();
                let seconds = match fields.remove("seconds") {
                    None => 3600,
                    Some(v) => v.as_u64().ok_or_else(|| {
                        BackendError::invalid(format!(
                            "workload.diurnal.seconds must be a positive integer, got {v}"
                        ))
                    })? as usize,
                };
                let params: DiurnalParams =
                    serde_json::from_value(serde_json::Value::Object(fields))
                        .map_err(|e| BackendError::invalid(format!("workload.diurnal: {e}")))?;
                infadapt_sim::synthetic_diurnal(seconds, seed, &params)
                    .map_err(|e| BackendError::invalid(format!("workload.diurnal: {e}")))?
            }
        };
        if rates.is_empty() {
            return Err(BackendError::invalid("workload has no rates"));
        }
        if let Some(bad) = rates.iter().find(|r| !(r.is_finite() && **r >= 0.0)) {
            return Err(BackendError::invalid(format!(
                "workload rates must be finite and >= 0, got {bad}"
            )));
        }
        Ok(rates)
    }
}

impl PipelineSpec {
    /// The domain pipeline, resolving named variants in `catalog`.
    pub fn to_pipeline(&self, catalog: Option<&str>) -> Result<Pipeline, BackendError> {
        let catalog = catalog
            .map(Catalog::from_toml_str)
            .transpose()
            .map_err(|e| BackendError::invalid(format!("catalog: {e}")))?;
        let mut stages = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            let mut variants = Vec::with_capacity(stage.variants.len());
            for spec in &stage.variants {
                let entry = match spec {
                    VariantSpec::Inline(entry) => entry,
                    VariantSpec::Named(name) => {
                        catalog.as_ref().and_then(|c| c.get(name)).ok_or_else(|| {
                            BackendError::invalid(format!(
                                "stage `{}`: variant `{name}` is not in the config's `catalog`",
                                stage.name
                            ))
                        })?
                    }
                };
                variants.push(
                    entry.to_variant().map_err(|e| {
                        BackendError::invalid(format!("stage `{}`: {e}", stage.name))
                    })?,
                );
            }
            stages.push(Stage {
                name: stage.name.clone(),
                variants,
                batch_sizes: stage.batch_sizes.clone(),
                core_options: stage.core_options.clone(),
                max_replicas: stage.max_replicas,
                // The simulator does not plan: the lower bound is the daemon's business.
                min_replicas: 1,
            });
        }
        let pipeline = Pipeline {
            name: self.name.clone(),
            slo_ms: self.slo_ms,
            stages,
        };
        pipeline
            .validate()
            .map_err(|e| BackendError::invalid(format!("pipeline: {e}")))?;
        Ok(pipeline)
    }
}

fn default_initial(pipeline: &Pipeline) -> Plan {
    Plan {
        stages: pipeline
            .stages
            .iter()
            .map(|stage| StagePlan {
                stage: stage.name.clone(),
                assignments: vec![Assignment {
                    variant: stage.variants[0].name.clone(),
                    batch: stage.batch_sizes.iter().copied().min().unwrap_or(1),
                    cores: stage.core_options.iter().copied().min().unwrap_or(1),
                    replicas: 1,
                    share: 1.0,
                }],
            })
            .collect(),
    }
}

/// The simulated backend of one pipeline.
pub struct SimBackend {
    sim: HostSim,
    rates: Vec<f64>,
    clock: Box<dyn Clock>,
    clock_origin_s: f64,
    speed: f64,
    max_catch_up_s: u64,
    /// Virtual seconds simulated so far.
    stepped_s: u64,
    /// Virtual seconds skipped because a call came too late to catch up with them.
    skipped_s: u64,
}

impl std::fmt::Debug for SimBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimBackend")
            .field("pipeline", &self.sim.pipeline().name)
            .field("speed", &self.speed)
            .field("stepped_s", &self.stepped_s)
            .field("skipped_s", &self.skipped_s)
            .finish_non_exhaustive()
    }
}

impl SimBackend {
    /// Builds the backend from a parsed config and a clock.
    ///
    /// # Errors
    ///
    /// An invalid-input [`BackendError`] naming the problem.
    pub fn from_config(
        config: SimPluginConfig,
        clock: Box<dyn Clock>,
    ) -> Result<SimBackend, BackendError> {
        if !(config.speed.is_finite() && config.speed > 0.0) {
            return Err(BackendError::invalid(format!(
                "speed must be a positive number, got {}",
                config.speed
            )));
        }
        let pipeline = config.pipeline.to_pipeline(config.catalog.as_deref())?;
        let initial = match &config.initial {
            Some(message) => plan_from_message(message),
            None => default_initial(&pipeline),
        };
        let rates = config.workload.rates(config.seed)?;
        let mut sim_config = config.sim.clone().unwrap_or_default();
        sim_config.seed = config.seed;
        let sim = HostSim::new(&pipeline, &initial, sim_config)
            .map_err(|e| BackendError::invalid(e.to_string()))?;
        let clock_origin_s = clock.elapsed_s();
        Ok(SimBackend {
            sim,
            rates,
            clock,
            clock_origin_s,
            speed: config.speed,
            max_catch_up_s: config.max_catch_up_s.max(1),
            stepped_s: 0,
            skipped_s: 0,
        })
    }

    /// Parses a JSON config and builds the backend on the given clock.
    ///
    /// # Errors
    ///
    /// An invalid-input [`BackendError`] naming the problem.
    pub fn from_json(
        config: serde_json::Value,
        clock: Box<dyn Clock>,
    ) -> Result<SimBackend, BackendError> {
        let config: SimPluginConfig = serde_json::from_value(config)
            .map_err(|e| BackendError::invalid(format!("sim backend config: {e}")))?;
        SimBackend::from_config(config, clock)
    }

    /// Virtual seconds simulated so far.
    pub fn virtual_time_s(&self) -> u64 {
        self.stepped_s
    }

    /// Virtual seconds skipped because calls came too rarely to catch up.
    pub fn skipped_s(&self) -> u64 {
        self.skipped_s
    }

    /// Simulates the virtual seconds due since the previous call.
    fn catch_up(&mut self) {
        let wall = (self.clock.elapsed_s() - self.clock_origin_s).max(0.0);
        let due = (wall * self.speed).floor() as u64;
        let done = self.stepped_s + self.skipped_s;
        let mut behind = due.saturating_sub(done);
        if behind > self.max_catch_up_s {
            self.skipped_s += behind - self.max_catch_up_s;
            behind = self.max_catch_up_s;
        }
        for _ in 0..behind {
            let t = (self.stepped_s + self.skipped_s) as usize % self.rates.len();
            self.sim.step_second(self.rates[t]);
            self.stepped_s += 1;
        }
    }
}

fn describe_change(change: &StageChange) -> String {
    let mut parts = Vec::new();
    if change.replicas_started > 0 {
        parts.push(format!("started {} replicas", change.replicas_started));
    }
    if change.replicas_stopped > 0 {
        parts.push(format!("stopped {} replicas", change.replicas_stopped));
    }
    if !change.variants_added.is_empty() {
        parts.push(format!("added {}", change.variants_added.join(", ")));
    }
    if !change.variants_removed.is_empty() {
        parts.push(format!("removed {}", change.variants_removed.join(", ")));
    }
    if change.batch_changes > 0 {
        parts.push(format!("{} batch changes", change.batch_changes));
    }
    if change.cores_changes > 0 {
        parts.push(format!("{} cores changes", change.cores_changes));
    }
    if change.shares_changed {
        parts.push("shares changed".to_owned());
    }
    format!("{}: {}", change.stage, parts.join("; "))
}

impl Backend for SimBackend {
    fn create(config: serde_json::Value) -> Result<SimBackend, BackendError> {
        SimBackend::from_json(config, Box::new(SystemClock::new()))
    }

    fn check_config(config: &serde_json::Value) -> Vec<infadapt_plugin_abi::ConfigProblem> {
        let mut problems = infadapt_plugin_abi::ConfigProblems::new();
        let _ = problems.deserialize::<SimPluginConfig>(config);
        problems.into_problems()
    }

    fn describe(&self) -> Description {
        Description {
            schema: SCHEMA_VERSION,
            name: BACKEND_NAME.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: Capabilities {
                variant_mix: true,
                batching: true,
                cores: true,
                gpu: false,
            },
            gpu_mem_mb: None,
        }
    }

    fn observe(&mut self) -> Result<PluginObservation, BackendError> {
        self.catch_up();
        Ok(sim_observation_message(&self.sim.observe()))
    }

    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
        if plan.schema != SCHEMA_VERSION {
            return Err(BackendError::invalid(format!(
                "plan schema {} is not supported (this plugin reads schema {SCHEMA_VERSION})",
                plan.schema
            )));
        }
        self.catch_up();
        let report = self
            .sim
            .apply(&plan_from_message(plan))
            .map_err(|e| BackendError::invalid(e.to_string()))?;
        Ok(ApplyReport {
            schema: SCHEMA_VERSION,
            changed: report.changed(),
            actions: report
                .stages
                .iter()
                .filter(|c| c.changed())
                .map(describe_change)
                .collect(),
        })
    }

    fn health(&mut self) -> Result<HealthReport, BackendError> {
        Ok(HealthReport {
            schema: SCHEMA_VERSION,
            healthy: true,
            detail: format!(
                "virtual time {} s ({} s skipped), {} requests in flight, speed {}x",
                self.stepped_s,
                self.skipped_s,
                self.sim.in_flight(),
                self.speed
            ),
        })
    }
}

/// The linked-in constructor for the daemon's embedded default: the same backend the
/// cdylib exports, behind the object-safe [`BackendInstance`].
///
/// # Errors
///
/// An invalid-input [`BackendError`] naming the problem in `config`.
pub fn create_linked(config: serde_json::Value) -> Result<Box<dyn BackendInstance>, BackendError> {
    Ok(Box::new(<SimBackend as Backend>::create(config)?))
}

infadapt_plugin_abi::export_plugin!(SimBackend);

#[cfg(test)]
mod tests {
    use super::*;

    fn config(speed: f64) -> serde_json::Value {
        serde_json::json!({
            "pipeline": {
                "name": "demo", "slo_ms": 500.0,
                "stages": [{ "name": "only", "variants": ["small", {
                    "name": "big", "accuracy": 0.9, "load_time_s": 5.0,
                    "points": [{ "batch": 1, "cores": 1, "p99_ms": 60.0 }]
                }] }]
            },
            "catalog": "schema = 1\n[[variant]]\nname = \"small\"\naccuracy = 0.7\nload_time_s = 2.0\npoints = [ { batch = 1, cores = 1, p99_ms = 20.0 } ]\n",
            "initial": { "stages": [{ "stage": "only", "assignments": [
                { "variant": "small", "batch": 1, "cores": 1, "replicas": 2 }] }] },
            "workload": { "rates": [10.0, 20.0] },
            "speed": speed,
            "seed": 7
        })
    }

    #[test]
    fn advances_by_virtual_time_and_reports() {
        let clock = ManualClock::new();
        let mut backend = SimBackend::from_json(config(10.0), Box::new(clock.clone())).unwrap();
        let first = Backend::observe(&mut backend).unwrap();
        assert!(first.arrivals_per_second.is_empty());
        clock.advance(1.0);
        let second = Backend::observe(&mut backend).unwrap();
        assert_eq!(second.arrivals_per_second.len(), 10);
        assert_eq!(backend.virtual_time_s(), 10);
        assert!(second.completed > 0);
        assert_eq!(second.deployed.stages[0].assignments[0].replicas, 2);
        assert_eq!(second.stages[0].ready_replicas, 2);
    }

    #[test]
    fn apply_is_idempotent_and_takes_effect_after_cold_start() {
        let clock = ManualClock::new();
        let mut backend = SimBackend::from_json(config(1.0), Box::new(clock.clone())).unwrap();
        let plan: PlanMessage = serde_json::from_value(serde_json::json!({ "stages": [{
            "stage": "only", "assignments": [
                { "variant": "big", "batch": 1, "cores": 1, "replicas": 3 }] }] }))
        .unwrap();
        let report = Backend::apply(&mut backend, &plan).unwrap();
        assert!(report.changed, "{report:?}");
        assert!(!report.actions.is_empty());
        let again = Backend::apply(&mut backend, &plan).unwrap();
        assert!(!again.changed, "{again:?}");
        clock.advance(10.0);
        let observed = Backend::observe(&mut backend).unwrap();
        assert_eq!(observed.deployed.stages[0].assignments.len(), 1);
        assert_eq!(observed.deployed.stages[0].assignments[0].variant, "big");
        assert_eq!(observed.deployed.stages[0].assignments[0].replicas, 3);
    }

    #[test]
    fn long_gaps_are_skipped_not_simulated() {
        let clock = ManualClock::new();
        let mut value = config(1.0);
        value["max_catch_up_s"] = serde_json::json!(5);
        let mut backend = SimBackend::from_json(value, Box::new(clock.clone())).unwrap();
        clock.advance(12.0);
        let observed = Backend::observe(&mut backend).unwrap();
        assert_eq!(observed.arrivals_per_second.len(), 5);
        assert_eq!(backend.skipped_s(), 7);
    }

    #[test]
    fn rejects_unknown_variant_and_bad_speed() {
        let mut value = config(1.0);
        value["catalog"] = serde_json::Value::Null;
        let err = SimBackend::from_json(value, Box::new(ManualClock::new())).unwrap_err();
        assert!(err.message.contains("`small`"), "{err}");
        let err = SimBackend::from_json(config(0.0), Box::new(ManualClock::new())).unwrap_err();
        assert!(err.message.contains("speed"), "{err}");
    }

    #[test]
    fn default_workload_is_a_diurnal_day() {
        let mut value = config(1.0);
        value["workload"] = serde_json::json!({ "diurnal": { "seconds": 120, "peak_rps": 50.0 } });
        let backend = SimBackend::from_json(value, Box::new(ManualClock::new())).unwrap();
        assert_eq!(backend.rates.len(), 120);
        let linked = create_linked(config(1.0)).unwrap();
        assert_eq!(linked.describe().name, BACKEND_NAME);
    }
}
