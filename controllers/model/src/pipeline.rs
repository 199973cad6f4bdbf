//! Pipelines, stages and variants: what the planner chooses among.

use serde::Serialize;

use crate::{ModelError, Profile};

/// One model variant a stage can run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Variant {
    pub name: String,
    pub accuracy: f64,
    /// Cold-start time of one replica, in seconds.
    pub load_time_s: f64,
    /// GPU memory one replica holds, in MiB (0: CPU-only); `None` when it was not
    /// measured, which the planner never reads as 0 where GPU memory counts.
    pub gpu_mem_mb: Option<f64>,
    pub profile: Profile,
}

/// One step of a pipeline: a model with interchangeable variants.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub name: String,
    pub variants: Vec<Variant>,
    /// Batch sizes the planner may choose.
    pub batch_sizes: Vec<u32>,
    /// Cores per replica the planner may choose.
    pub core_options: Vec<u32>,
    /// Upper bound on replicas of one variant.
    pub max_replicas: u32,
    /// Lower bound on the replicas of the whole stage (every assignment of a variant mix
    /// counted, like the horizontal autoscaler's `minReplicas` for a workload): every plan
    /// keeps at least this many. At least 1 and at most `max_replicas`.
    pub min_replicas: u32,
}

/// A chain of stages with an end-to-end latency objective.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pipeline {
    pub name: String,
    /// End-to-end latency SLO (p99), in milliseconds.
    pub slo_ms: f64,
    pub stages: Vec<Stage>,
}

impl Stage {
    /// Checks the stage is usable by the planner.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |problem: &str| ModelError::BadStage {
            stage: self.name.clone(),
            problem: problem.to_owned(),
        };
        if self.variants.is_empty() {
            return Err(bad("has no variants"));
        }
        if self.batch_sizes.is_empty() || self.batch_sizes.contains(&0) {
            return Err(bad("batch_sizes must be non-empty and at least 1"));
        }
        if self.core_options.is_empty() || self.core_options.contains(&0) {
            return Err(bad("core_options must be non-empty and at least 1"));
        }
        if self.max_replicas == 0 {
            return Err(bad("max_replicas must be at least 1"));
        }
        if self.min_replicas == 0 || self.min_replicas > self.max_replicas {
            return Err(bad(&format!(
                "min_replicas must be in [1, max_replicas = {}], got {}",
                self.max_replicas, self.min_replicas
            )));
        }
        for (i, v) in self.variants.iter().enumerate() {
            if self.variants[..i].iter().any(|w| w.name == v.name) {
                return Err(bad(&format!("variant `{}` listed twice", v.name)));
            }
        }
        Ok(())
    }

    /// Finds a variant by name.
    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }
}

impl Pipeline {
    /// Checks the pipeline and all its stages.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |problem: &str| ModelError::BadPipeline {
            pipeline: self.name.clone(),
            problem: problem.to_owned(),
        };
        if self.stages.is_empty() {
            return Err(bad("has no stages"));
        }
        if !(self.slo_ms.is_finite() && self.slo_ms > 0.0) {
            return Err(bad(&format!(
                "slo_ms must be positive, got {}",
                self.slo_ms
            )));
        }
        for stage in &self.stages {
            stage.validate()?;
        }
        Ok(())
    }
}
