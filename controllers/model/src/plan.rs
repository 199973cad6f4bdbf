//! Plans: the configuration chosen for each stage of a pipeline.

use std::fmt;

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

/// `resnet50 b4 2c×3`: variant, batch size, cores per replica × replicas (no share).
impl fmt::Display for Assignment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} b{} {}c×{}",
            self.variant, self.batch, self.cores, self.replicas
        )
    }
}

/// `classify: resnet50 b4 2c×3`, or for a mix each assignment with its share,
/// `classify: resnet18 b1 1c×2 30% + resnet50 b1 2c×4 70%`.
impl fmt::Display for StagePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.stage)?;
        let mix = self.assignments.len() > 1;
        for (i, a) in self.assignments.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            write!(f, "{a}")?;
            if mix {
                write!(f, " {:.0}%", a.share * 100.0)?;
            }
        }
        Ok(())
    }
}

/// The stages in order, joined by ` | ` (the form of the daemon's decision lines); an empty
/// plan renders as nothing.
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, stage) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str(" | ")?;
            }
            write!(f, "{stage}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(variant: &str, replicas: u32, share: f64) -> Assignment {
        Assignment {
            variant: variant.to_owned(),
            batch: 4,
            cores: 2,
            replicas,
            share,
        }
    }

    #[test]
    fn plans_render_as_the_decision_lines_show_them() {
        let plan = Plan {
            stages: vec![
                StagePlan {
                    stage: "detect".to_owned(),
                    assignments: vec![assignment("det-s", 3, 1.0)],
                },
                StagePlan {
                    stage: "classify".to_owned(),
                    assignments: vec![assignment("cls-18", 1, 0.25), assignment("cls-50", 2, 0.75)],
                },
            ],
        };
        assert_eq!(
            plan.to_string(),
            "detect: det-s b4 2c×3 | classify: cls-18 b4 2c×1 25% + cls-50 b4 2c×2 75%"
        );
        assert_eq!(Plan::default().to_string(), "");
    }
}
