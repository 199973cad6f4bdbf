//! Replicas and the reconcile step: each replica of a variant is its own TorchServe model
//! registration named `{variant}--r{index}` with one worker. This module decides, without
//! IO, which registrations to add, which to drain and which to remove so that the server
//! moves towards a plan make-before-break and without dropping routed requests.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use infadapt_plugin_abi::PlanMessage;

use crate::config::REPLICA_SEPARATOR;

/// One registration on the server, as the plugin knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// Model name on the server: `{variant}--r{index}`.
    pub name: String,
    pub stage: String,
    pub variant: String,
    pub index: u32,
    pub batch: u32,
    pub max_batch_delay_ms: u64,
    /// The server reports a READY worker.
    pub worker_ready: bool,
    /// Requests waiting in the model's queue at the last refresh.
    pub pending: u64,
    /// An observation has reported it `ready` (a router may be sending to it).
    pub advertised: bool,
    /// Being removed: no new requests.
    pub draining: Option<Drain>,
}

/// Progress of a draining replica.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drain {
    /// When an observation first reported it `draining` (from then on the router sends
    /// nothing new); `None` until then.
    pub announced_at: Option<Instant>,
}

/// What the router may do with a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    Ready,
    Draining,
}

impl Replica {
    pub fn phase(&self) -> Phase {
        if self.draining.is_some() {
            Phase::Draining
        } else if self.worker_ready {
            Phase::Ready
        } else {
            Phase::Starting
        }
    }

    /// Serving and not draining.
    pub fn serving(&self) -> bool {
        self.phase() == Phase::Ready
    }

    fn matches(&self, variant: &str, batch: u32, delay_ms: u64) -> bool {
        self.variant == variant && self.batch == batch && self.max_batch_delay_ms == delay_ms
    }
}

/// The model name of replica `index` of `variant`.
pub fn replica_name(variant: &str, index: u32) -> String {
    format!("{variant}{REPLICA_SEPARATOR}{index}")
}

/// Splits a model name into variant and replica index, if it is a replica's name.
pub fn parse_replica_name(name: &str) -> Option<(&str, u32)> {
    let (variant, index) = name.rsplit_once(REPLICA_SEPARATOR)?;
    if variant.is_empty() || index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if index.len() > 1 && index.starts_with('0') {
        return None;
    }
    Some((variant, index.parse().ok()?))
}

/// One step towards the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Register a new replica.
    Register {
        stage: String,
        variant: String,
        index: u32,
        batch: u32,
    },
    /// Stop routing to a replica; it is removed once drained.
    Drain { name: String },
    /// Take a draining replica back into service (the plan wants it again).
    Reinstate { name: String },
    /// Unregister a replica that carries no traffic (never advertised, or drained).
    Unregister { name: String },
}

/// The steps that move `replicas` towards `target`:
///
/// - per planned (variant, batch): draining replicas with those settings are reinstated,
///   then new ones registered until the count is met; surplus ones are drained (those
///   never advertised are unregistered at once);
/// - replicas whose variant or settings the plan no longer wants stay until every
///   planned replica of their stage is ready (make-before-break), then drain;
/// - a draining replica is unregistered once it was announced at least `drain` ago and
///   its queue is empty.
pub fn reconcile(
    replicas: &[Replica],
    target: &PlanMessage,
    max_batch_delay_ms: u64,
    drain: Duration,
    now: Instant,
) -> Vec<Action> {
    let mut actions = Vec::new();
    // Replicas the plan keeps or that were already retired as surplus.
    let mut decided: BTreeSet<&str> = BTreeSet::new();
    let mut stages_complete: BTreeSet<&str> = BTreeSet::new();
    let mut planned_stages: BTreeSet<&str> = BTreeSet::new();

    for stage in &target.stages {
        planned_stages.insert(stage.stage.as_str());
        let mut complete = true;
        for assignment in &stage.assignments {
            if assignment.replicas == 0 {
                continue;
            }
            let wanted = assignment.replicas as usize;
            let (variant, batch) = (assignment.variant.as_str(), assignment.batch);
            let mut live: Vec<&Replica> = replicas
                .iter()
                .filter(|r| r.draining.is_none() && r.matches(variant, batch, max_batch_delay_ms))
                .collect();
            // Keep ready ones first, then the oldest.
            live.sort_by_key(|r| (!r.worker_ready, r.index));
            let mut reinstated = Vec::new();
            if live.len() < wanted {
                let mut drained: Vec<&Replica> = replicas
                    .iter()
                    .filter(|r| {
                        r.draining.is_some()
                            && r.worker_ready
                            && r.matches(variant, batch, max_batch_delay_ms)
                    })
                    .collect();
                drained.sort_by_key(|r| r.index);
                for r in drained.into_iter().take(wanted - live.len()) {
                    actions.push(Action::Reinstate {
                        name: r.name.clone(),
                    });
                    reinstated.push(r);
                }
            }
            let mut used: BTreeSet<u32> = replicas
                .iter()
                .filter(|r| r.variant == variant)
                .map(|r| r.index)
                .collect();
            let missing = wanted.saturating_sub(live.len() + reinstated.len());
            for _ in 0..missing {
                let index = (0..).find(|i| !used.contains(i)).unwrap_or(0);
                used.insert(index);
                actions.push(Action::Register {
                    stage: stage.stage.clone(),
                    variant: variant.to_owned(),
                    index,
                    batch,
                });
            }
            for surplus in live.iter().skip(wanted) {
                actions.push(retire(surplus));
                decided.insert(surplus.name.as_str());
            }
            let ready = live
                .iter()
                .take(wanted)
                .chain(reinstated.iter())
                .filter(|r| r.worker_ready)
                .count();
            if ready < wanted {
                complete = false;
            }
            decided.extend(live.iter().take(wanted).map(|r| r.name.as_str()));
            decided.extend(reinstated.iter().map(|r| r.name.as_str()));
        }
        if complete {
            stages_complete.insert(stage.stage.as_str());
        }
    }

    for replica in replicas {
        if replica.draining.is_some() || decided.contains(replica.name.as_str()) {
            continue;
        }
        // Not wanted: a replica that was never routed to goes at once; one that may carry
        // traffic waits until its stage's new capacity is ready (a stage left out of the
        // plan has nothing to wait for).
        let stage = replica.stage.as_str();
        if !replica.advertised || stages_complete.contains(stage) || !planned_stages.contains(stage)
        {
            actions.push(retire(replica));
        }
    }

    for replica in replicas {
        if let Some(Drain {
            announced_at: Some(at),
        }) = replica.draining
        {
            let reinstating = actions
                .iter()
                .any(|a| matches!(a, Action::Reinstate { name } if *name == replica.name));
            if !reinstating && now.saturating_duration_since(at) >= drain && replica.pending == 0 {
                actions.push(Action::Unregister {
                    name: replica.name.clone(),
                });
            }
        }
    }
    actions
}

fn retire(replica: &Replica) -> Action {
    if replica.advertised {
        Action::Drain {
            name: replica.name.clone(),
        }
    } else {
        Action::Unregister {
            name: replica.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use infadapt_plugin_abi::{AssignmentMessage, StagePlanMessage};

    use super::*;

    const DELAY: u64 = 20;
    const DRAIN: Duration = Duration::from_secs(5);

    fn replica(variant: &str, index: u32, batch: u32, ready: bool, advertised: bool) -> Replica {
        Replica {
            name: replica_name(variant, index),
            stage: "s".into(),
            variant: variant.into(),
            index,
            batch,
            max_batch_delay_ms: DELAY,
            worker_ready: ready,
            pending: 0,
            advertised,
            draining: None,
        }
    }

    fn plan(assignments: &[(&str, u32, u32)]) -> PlanMessage {
        PlanMessage {
            stages: vec![StagePlanMessage {
                stage: "s".into(),
                assignments: assignments
                    .iter()
                    .map(|&(variant, batch, replicas)| AssignmentMessage {
                        variant: variant.into(),
                        batch,
                        cores: 1,
                        replicas,
                        share: 1.0,
                    })
                    .collect(),
            }],
            ..PlanMessage::default()
        }
    }

    fn register(variant: &str, index: u32, batch: u32) -> Action {
        Action::Register {
            stage: "s".into(),
            variant: variant.into(),
            index,
            batch,
        }
    }

    fn drain(name: &str) -> Action {
        Action::Drain { name: name.into() }
    }

    fn unregister(name: &str) -> Action {
        Action::Unregister { name: name.into() }
    }

    #[test]
    fn names_round_trip_and_others_are_not_replicas() {
        assert_eq!(replica_name("det-s", 3), "det-s--r3");
        assert_eq!(parse_replica_name("det-s--r3"), Some(("det-s", 3)));
        assert_eq!(parse_replica_name("det-s--r10"), Some(("det-s", 10)));
        for name in [
            "det-s",
            "det-s--r",
            "--r1",
            "det-s--rx",
            "det-s--r01",
            "a--r-1",
        ] {
            assert_eq!(parse_replica_name(name), None, "{name}");
        }
    }

    #[test]
    fn scale_up_registers_fresh_indexes_and_a_met_plan_does_nothing() {
        let now = Instant::now();
        let live = vec![
            replica("a", 0, 1, true, true),
            replica("a", 2, 1, true, true),
        ];
        assert_eq!(
            reconcile(&live, &plan(&[("a", 1, 4)]), DELAY, DRAIN, now),
            vec![register("a", 1, 1), register("a", 3, 1)]
        );
        assert!(reconcile(&live, &plan(&[("a", 1, 2)]), DELAY, DRAIN, now).is_empty());
    }

    #[test]
    fn scale_down_drains_advertised_replicas_and_drops_unrouted_ones() {
        let now = Instant::now();
        let live = vec![
            replica("a", 0, 1, true, true),
            replica("a", 1, 1, true, true),
            replica("a", 2, 1, true, false),
            replica("a", 3, 1, false, false),
        ];
        assert_eq!(
            reconcile(&live, &plan(&[("a", 1, 1)]), DELAY, DRAIN, now),
            vec![drain("a--r1"), unregister("a--r2"), unregister("a--r3")]
        );
    }

    #[test]
    fn drained_replicas_go_after_the_drain_time_with_an_empty_queue() {
        let start = Instant::now();
        let mut live = vec![
            replica("a", 0, 1, true, true),
            replica("a", 1, 1, true, true),
        ];
        let wanted = plan(&[("a", 1, 1)]);
        live[1].draining = Some(Drain { announced_at: None });
        // Not yet announced: the router may still send to it.
        assert!(reconcile(&live, &wanted, DELAY, DRAIN, start + DRAIN * 3).is_empty());
        live[1].draining = Some(Drain {
            announced_at: Some(start),
        });
        assert!(reconcile(&live, &wanted, DELAY, DRAIN, start + DRAIN / 2).is_empty());
        live[1].pending = 2;
        assert!(reconcile(&live, &wanted, DELAY, DRAIN, start + DRAIN).is_empty());
        live[1].pending = 0;
        assert_eq!(
            reconcile(&live, &wanted, DELAY, DRAIN, start + DRAIN),
            vec![unregister("a--r1")]
        );
    }

    #[test]
    fn a_draining_replica_is_taken_back_before_registering_a_new_one() {
        let start = Instant::now();
        let mut live = vec![
            replica("a", 0, 1, true, true),
            replica("a", 1, 1, true, true),
        ];
        live[1].draining = Some(Drain {
            announced_at: Some(start),
        });
        assert_eq!(
            reconcile(&live, &plan(&[("a", 1, 3)]), DELAY, DRAIN, start + DRAIN),
            vec![
                Action::Reinstate {
                    name: "a--r1".into()
                },
                register("a", 2, 1)
            ]
        );
    }

    #[test]
    fn batch_and_variant_changes_are_make_before_break() {
        let now = Instant::now();
        let mut live = vec![
            replica("a", 0, 1, true, true),
            replica("a", 1, 1, true, true),
        ];
        // New settings: register two batch-4 replicas, keep the old ones serving.
        let batch4 = plan(&[("a", 4, 2)]);
        assert_eq!(
            reconcile(&live, &batch4, DELAY, DRAIN, now),
            vec![register("a", 2, 4), register("a", 3, 4)]
        );
        live.push(replica("a", 2, 4, true, false));
        live.push(replica("a", 3, 4, false, false));
        assert!(reconcile(&live, &batch4, DELAY, DRAIN, now).is_empty());
        // All new ones ready: the old ones drain.
        live[3].worker_ready = true;
        assert_eq!(
            reconcile(&live, &batch4, DELAY, DRAIN, now),
            vec![drain("a--r0"), drain("a--r1")]
        );
        // A variant switch waits the same way; an unrouted old replica goes at once.
        let live = vec![
            replica("a", 0, 1, true, true),
            replica("a", 1, 1, false, false),
        ];
        assert_eq!(
            reconcile(&live, &plan(&[("b", 1, 1)]), DELAY, DRAIN, now),
            vec![register("b", 0, 1), unregister("a--r1")]
        );
        let mut live = live;
        live.truncate(1);
        live.push(replica("b", 0, 1, true, false));
        assert_eq!(
            reconcile(&live, &plan(&[("b", 1, 1)]), DELAY, DRAIN, now),
            vec![drain("a--r0")]
        );
        // Another batch delay is another setting too.
        let mut other_delay = replica("b", 1, 1, true, true);
        other_delay.max_batch_delay_ms = DELAY + 1;
        let live = vec![replica("b", 0, 1, true, true), other_delay];
        assert_eq!(
            reconcile(&live, &plan(&[("b", 1, 1)]), DELAY, DRAIN, now),
            vec![drain("b--r1")]
        );
    }

    #[test]
    fn stages_left_out_of_the_plan_are_drained() {
        let now = Instant::now();
        let mut other = replica("x", 0, 1, true, true);
        other.stage = "t".into();
        let live = vec![replica("a", 0, 1, false, false), other];
        assert_eq!(
            reconcile(&live, &plan(&[("a", 1, 1)]), DELAY, DRAIN, now),
            vec![drain("x--r0")]
        );
    }
}
