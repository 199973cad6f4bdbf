//! The simulated backend linked into the daemon: drives [`HostSim`] through the plugin
//! interface ([`BackendInstance`]), one control period of synthetic load per `observe`.
//!
//! It starts running the plan the daemon starts from (as a real backend keeps running
//! across a daemon restart), so a restarted daemon finds it already matching.

use infadapt_model::{Pipeline, Plan};
use infadapt_plugin_abi::{
    ApplyReport, BackendError, BackendInstance, Capabilities, Description, HealthReport,
    ObservedStage, PlanMessage, PluginObservation, SCHEMA_VERSION,
};
use infadapt_sim::{DiurnalParams, HostSim, SimConfig, synthetic_diurnal};
use serde::Deserialize;

use super::convert::{message_to_plan, plan_to_message};

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
    pub fn from_json(value: &serde_json::Value) -> Result<SimSettings, String> {
        let settings: SimSettings =
            serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        settings.workload(1).map(|_| settings)
    }

    fn workload(&self, seconds: usize) -> Result<Vec<f64>, String> {
        if let Some(rps) = self.rps {
            if !(rps.is_finite() && rps >= 0.0) {
                return Err(format!("rps must be >= 0, got {rps}"));
            }
            return Ok(vec![rps; seconds.max(1)]);
        }
        if self.day_s == 0 {
            return Err("day_s must be at least 1".to_owned());
        }
        let params = DiurnalParams {
            trough_rps: self.trough_rps,
            peak_rps: self.peak_rps,
            day_s: Some(f64::from(self.day_s)),
            bursts_per_hour: self.bursts_per_hour,
            noise: self.noise,
            ..DiurnalParams::default()
        };
        synthetic_diurnal(seconds.max(1), self.seed, &params).map_err(|e| e.to_string())
    }
}

/// A simulated host serving one pipeline.
#[derive(Debug)]
pub struct SimBackend {
    host: HostSim,
    rates: Vec<f64>,
    step_s: u32,
    second: usize,
}

impl SimBackend {
    /// A host serving `pipeline` with `start` deployed; every `observe` simulates `step_s`
    /// seconds.
    pub fn new(
        pipeline: &Pipeline,
        start: &Plan,
        settings: &serde_json::Value,
        step_s: u32,
    ) -> Result<SimBackend, BackendError> {
        let settings = SimSettings::from_json(settings).map_err(BackendError::invalid)?;
        let rates = settings
            .workload(settings.day_s.max(1) as usize)
            .map_err(BackendError::invalid)?;
        let host = HostSim::new(pipeline, start, SimConfig::with_seed(settings.seed))
            .map_err(|e| BackendError::invalid(e.to_string()))?;
        Ok(SimBackend {
            host,
            rates,
            step_s: step_s.max(1),
            second: 0,
        })
    }
}

impl BackendInstance for SimBackend {
    fn describe(&self) -> Description {
        Description {
            schema: SCHEMA_VERSION,
            name: "sim".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: Capabilities {
                variant_mix: true,
                batching: true,
                cores: true,
                gpu: true,
            },
        }
    }

    fn observe(&mut self) -> Result<PluginObservation, BackendError> {
        for _ in 0..self.step_s {
            let rate = self.rates[self.second % self.rates.len()];
            self.host.step_second(rate);
            self.second += 1;
        }
        let o = self.host.observe();
        Ok(PluginObservation {
            schema: SCHEMA_VERSION,
            arrivals_per_second: o
                .arrivals_per_second
                .iter()
                .map(|&a| f64::from(a))
                .collect(),
            completed: o.completed,
            dropped: o.dropped,
            slo_misses: o.slo_misses,
            latency_p99_ms: o.latency_p99_ms,
            stages: o
                .stages
                .iter()
                .map(|s| ObservedStage {
                    stage: s.stage.clone(),
                    queue_len: s.queue_len as f64,
                    busy_fraction: s.busy_fraction,
                    ready_replicas: s.ready_replicas,
                    starting_replicas: s.starting_replicas,
                })
                .collect(),
            deployed: plan_to_message(&o.target),
        })
    }

    fn apply(&mut self, plan: &PlanMessage) -> Result<ApplyReport, BackendError> {
        let report = self
            .host
            .apply(&message_to_plan(plan))
            .map_err(|e| BackendError::invalid(e.to_string()))?;
        let actions = report
            .stages
            .iter()
            .filter(|s| s.changed())
            .map(|s| {
                format!(
                    "{}: +{} -{} replicas",
                    s.stage, s.replicas_started, s.replicas_stopped
                )
            })
            .collect();
        Ok(ApplyReport {
            schema: SCHEMA_VERSION,
            changed: report.changed(),
            actions,
        })
    }

    fn health(&mut self) -> Result<HealthReport, BackendError> {
        Ok(HealthReport {
            schema: SCHEMA_VERSION,
            healthy: true,
            detail: format!("simulated, t = {:.0} s", self.host.now_s()),
        })
    }
}
