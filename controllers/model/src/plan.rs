//! Plans: the configuration chosen for each stage of a pipeline.

use serde::{Deserialize, Serialize};

/// One variant deployed in a stage with its batch size, cores and replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub variant: String,
    pub batch: u32,
    pub cores: u32,
    pub replicas: u32,
    /// Share of the stage's load routed to this variant, in [0, 1].
    pub share: f64,
}

/// What runs in one stage: one assignment, or several sharing the load (a variant mix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePlan {
    pub stage: String,
    pub assignments: Vec<Assignment>,
}

/// A configuration for every stage of a pipeline, in stage order.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    pub stages: Vec<StagePlan>,
}

impl StagePlan {
    /// The assignment for `variant`, if it is deployed.
    pub fn assignment(&self, variant: &str) -> Option<&Assignment> {
        self.assignments.iter().find(|a| a.variant == variant)
    }

    /// Cores held by the stage (cores per replica × replicas, over all assignments).
    pub fn cores(&self) -> u64 {
        self.assignments
            .iter()
            .map(|a| u64::from(a.cores) * u64::from(a.replicas))
            .sum()
    }
}

impl Plan {
    /// The plan for the stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&StagePlan> {
        self.stages.iter().find(|s| s.stage == name)
    }

    /// Cores held by the whole plan.
    pub fn cores(&self) -> u64 {
        self.stages.iter().map(StagePlan::cores).sum()
    }
}
