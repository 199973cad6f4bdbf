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

/// Replicas of one variant of a stage on one node of a cluster: where a plan puts them, for
/// a backend that spans several nodes. A plan's placement is a list of these, the counts of
/// a variant adding up to its replicas (see `infadapt_planner::placement`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub stage: String,
    pub variant: String,
    /// The node's identifier, as the backend reported it.
    pub node: String,
    pub replicas: u32,
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

/// `node-a: classify/resnet50×2, detect/yolo×1; node-b: classify/resnet50×1`: per node, in
/// the order the nodes first appear, the replicas each variant has there (the one rendering
/// of a placement in user text). An empty placement renders as nothing.
pub fn describe_placement(placement: &[Placement]) -> String {
    let mut nodes: Vec<(&str, Vec<String>)> = Vec::new();
    for p in placement.iter().filter(|p| p.replicas > 0) {
        let entry = format!("{}/{}×{}", p.stage, p.variant, p.replicas);
        match nodes.iter_mut().find(|(n, _)| *n == p.node) {
            Some((_, entries)) => entries.push(entry),
            None => nodes.push((&p.node, vec![entry])),
        }
    }
    nodes
        .iter()
        .map(|(node, entries)| format!("{node}: {}", entries.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
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

    #[test]
    fn a_placement_renders_per_node_in_the_order_nodes_appear() {
        let at = |stage: &str, variant: &str, node: &str, replicas: u32| Placement {
            stage: stage.to_owned(),
            variant: variant.to_owned(),
            node: node.to_owned(),
            replicas,
        };
        let placement = vec![
            at("classify", "resnet50", "b", 1),
            at("classify", "resnet50", "a", 2),
            at("detect", "yolo", "b", 1),
            at("detect", "yolo", "c", 0),
        ];
        assert_eq!(
            describe_placement(&placement),
            "b: classify/resnet50×1, detect/yolo×1; a: classify/resnet50×2"
        );
        assert_eq!(describe_placement(&[]), "");
    }
}
