//! The switch-gain rule's pieces: whether two plans run the same configurations, and the
//! pipeline restricted to what a plan runs, so the planner can re-size it for a new load.

use infadapt_model::{Pipeline, Plan, StagePlan};

/// Whether `a` and `b` run the same (variant, cores per replica, batch) configurations in
/// every stage; only replica counts and shares may differ. Any other change restarts
/// replicas.
pub fn same_configurations(a: &Plan, b: &Plan) -> bool {
    fn configurations(plan: &StagePlan) -> Vec<(&str, u32, u32)> {
        let mut c: Vec<_> = plan
            .assignments
            .iter()
            .filter(|a| a.replicas > 0)
            .map(|a| (a.variant.as_str(), a.cores, a.batch))
            .collect();
        c.sort_unstable();
        c
    }
    a.stages.len() == b.stages.len()
        && a.stages.iter().all(|sa| {
            b.stage(&sa.stage)
                .is_some_and(|sb| configurations(sa) == configurations(sb))
        })
}

/// `pipeline` with each stage limited to the variants, cores per replica and batch sizes
/// that `deployed` runs there (replica limits unchanged), or `None` when a stage has
/// nothing deployed. Planning on it re-sizes the deployed configurations for a load.
pub fn keep_shape_pipeline(pipeline: &Pipeline, deployed: &Plan) -> Option<Pipeline> {
    let mut kept = pipeline.clone();
    for stage in &mut kept.stages {
        let plan = deployed.stage(&stage.name)?;
        let running: Vec<_> = plan.assignments.iter().filter(|a| a.replicas > 0).collect();
        if running.is_empty() {
            return None;
        }
        stage
            .variants
            .retain(|v| running.iter().any(|a| a.variant == v.name));
        stage
            .core_options
            .retain(|c| running.iter().any(|a| a.cores == *c));
        stage
            .batch_sizes
            .retain(|b| running.iter().any(|a| a.batch == *b));
        if stage.variants.is_empty()
            || stage.core_options.is_empty()
            || stage.batch_sizes.is_empty()
        {
            return None;
        }
    }
    Some(kept)
}

#[cfg(test)]
mod tests {
    use infadapt_model::Variant;
    use infadapt_testkit::{assignment, fixed_rate_variant, pipeline as pipeline_of, stage};

    use super::*;

    fn variant(name: &str) -> Variant {
        fixed_rate_variant(name, 0.5, 1.0, 10.0, 10.0)
    }

    fn pipeline() -> Pipeline {
        pipeline_of(
            "p",
            100.0,
            vec![stage(
                "s",
                vec![variant("a"), variant("b"), variant("c")],
                &[1, 2],
                &[1, 2, 4],
                8,
            )],
        )
    }

    fn plan(assignments: &[(&str, u32, u32)]) -> Plan {
        let share = 1.0 / assignments.len() as f64;
        infadapt_testkit::plan(&[(
            "s",
            assignments
                .iter()
                .map(|&(variant, cores, replicas)| assignment(variant, 1, cores, replicas, share))
                .collect(),
        )])
    }

    #[test]
    fn configurations_ignore_replicas_but_not_variants_or_cores() {
        assert!(same_configurations(
            &plan(&[("a", 2, 1)]),
            &plan(&[("a", 2, 5)])
        ));
        assert!(!same_configurations(
            &plan(&[("a", 2, 1)]),
            &plan(&[("b", 2, 1)])
        ));
        assert!(!same_configurations(
            &plan(&[("a", 2, 1)]),
            &plan(&[("a", 4, 1)])
        ));
        assert!(!same_configurations(
            &plan(&[("a", 2, 1)]),
            &plan(&[("a", 2, 1), ("b", 2, 1)])
        ));
    }

    #[test]
    fn configurations_include_the_batch() {
        let a = plan(&[("a", 2, 1)]);
        let mut b = plan(&[("a", 2, 4)]);
        assert!(same_configurations(&a, &b));
        b.stages[0].assignments[0].batch = 2;
        assert!(!same_configurations(&a, &b));
    }

    #[test]
    fn keeps_only_what_runs() {
        let kept =
            keep_shape_pipeline(&pipeline(), &plan(&[("a", 2, 3), ("c", 4, 1)])).expect("deployed");
        let names: Vec<&str> = kept.stages[0]
            .variants
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(kept.stages[0].core_options, [2, 4]);
        assert_eq!(kept.stages[0].batch_sizes, [1]);
        assert!(keep_shape_pipeline(&pipeline(), &Plan { stages: vec![] }).is_none());
        assert!(keep_shape_pipeline(&pipeline(), &plan(&[("a", 2, 0)])).is_none());
    }
}
