//! The plugin's own Serve applications, one per variant of a stage (or, when the plan
//! places a variant, one per node it is placed on, pinned there), and the
//! make-before-break rule that moves between them, with no IO and the time handed in:
//! a planned application is `starting` until its deployment runs its replica target and
//! the proxy routes it, then `ready`; one that left the plan keeps serving until the
//! planned applications of its variant (of its stage, for a variant that left the plan)
//! are ready, is then `draining`, and leaves the Serve config only after `drain_s` since
//! an observation first reported it draining.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use infadapt_plugin_abi::PlanMessage;

use crate::config::{PlacementMode, node_suffix};
use crate::serve::Spec;

/// Where an application is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Deployed, not serving yet: the router sends it nothing.
    Starting,
    /// Serving.
    Ready,
    /// Left the plan and replaced: no new requests; removed after the drain time.
    Draining,
}

/// What the latest `GET` said about an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seen {
    /// Serve reports the application `RUNNING`.
    pub app_running: bool,
    /// Replicas of its deployment in state `RUNNING`.
    pub running: u32,
    /// Replicas a restarted controller is taking over again (`RECOVERING`): they ran, and
    /// keep serving through the proxy meanwhile.
    pub recovering: u32,
    /// Replicas starting (any state but `RUNNING`, `RECOVERING` and `STOPPING`).
    pub starting: u32,
    /// The proxy's route table has the application's route.
    pub routed: bool,
}

/// Which application: a variant of a stage, on one node (pinned there) or, with `None`,
/// wherever Serve places it.
pub type AppKey = (String, String, Option<String>);

/// One application the plugin owns.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedApp {
    pub stage: String,
    pub variant: String,
    /// The node it is pinned to; `None`: Serve places its replicas.
    pub node: Option<String>,
    /// What the plan asks of it (the last plan that had it, for one that left the plan).
    pub spec: Spec,
    /// Its variant's load share in the last plan that had it.
    pub share: f64,
    /// Reported `ready` at least once (traffic may have been sent to it).
    pub advertised: bool,
    /// `Some` once it drains: when an observation first reported it draining.
    pub draining: Option<Option<Instant>>,
    /// What the latest `GET` said; `None` before it appeared.
    pub seen: Option<Seen>,
}

impl OwnedApp {
    /// The application's phase now.
    pub fn phase(&self) -> Phase {
        if self.draining.is_some() {
            return Phase::Draining;
        }
        let Some(seen) = self.seen else {
            return Phase::Starting;
        };
        let serving_all = seen.app_running && seen.running >= self.spec.replicas && seen.routed;
        let still_serving = self.advertised && seen.running + seen.recovering >= 1 && seen.routed;
        if serving_all || still_serving {
            Phase::Ready
        } else {
            Phase::Starting
        }
    }

    /// Ready and running every replica the plan asks of it.
    pub fn at_target(&self) -> bool {
        self.phase() == Phase::Ready
            && self
                .seen
                .is_some_and(|s| s.running + s.recovering >= self.spec.replicas)
    }

    /// The variant, and the node it is pinned to, for messages.
    pub fn label(&self) -> String {
        match &self.node {
            Some(node) => format!("{} on node {}", self.variant, node_suffix(node)),
            None => self.variant.clone(),
        }
    }
}

/// The applications a plan asks for, with their specs and their variants' shares: per
/// planned variant, one per node the plan's placement puts replicas of it on (`mode` =
/// planned), else one placed by Serve.
pub fn wanted(plan: &PlanMessage, mode: PlacementMode) -> BTreeMap<AppKey, (Spec, f64)> {
    let mut wanted = BTreeMap::new();
    for stage in &plan.stages {
        for a in stage.assignments.iter().filter(|a| a.replicas > 0) {
            let spec = Spec {
                replicas: a.replicas,
                cores: a.cores,
                batch: a.batch,
            };
            let placed: Vec<_> = match mode {
                PlacementMode::Planned => plan
                    .placement
                    .iter()
                    .filter(|p| p.stage == stage.stage && p.variant == a.variant && p.replicas > 0)
                    .collect(),
                PlacementMode::Scheduler => Vec::new(),
            };
            if placed.is_empty() {
                wanted.insert(
                    (stage.stage.clone(), a.variant.clone(), None),
                    (spec, a.share),
                );
            }
            for p in placed {
                let key = (stage.stage.clone(), a.variant.clone(), Some(p.node.clone()));
                let entry = wanted.entry(key).or_insert((
                    Spec {
                        replicas: 0,
                        ..spec
                    },
                    a.share,
                ));
                entry.0.replicas += p.replicas;
            }
        }
    }
    wanted
}

/// The plugin's applications by (stage, variant, node).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Apps {
    pub apps: BTreeMap<AppKey, OwnedApp>,
}

impl Apps {
    /// Takes a plan as the target: planned applications are added or updated (a draining
    /// one serves again); ones that left it are left to [`Apps::step`]. Returns what changed.
    pub fn set_target(&mut self, plan: &PlanMessage, mode: PlacementMode) -> Vec<String> {
        let mut actions = Vec::new();
        for (key, (spec, share)) in wanted(plan, mode) {
            match self.apps.get_mut(&key) {
                Some(app) => {
                    if app.spec != spec {
                        actions.push(format!(
                            "{}: {} {}×{} cores, batch {} (was {}×{}, batch {})",
                            app.stage,
                            app.label(),
                            spec.replicas,
                            spec.cores,
                            spec.batch,
                            app.spec.replicas,
                            app.spec.cores,
                            app.spec.batch
                        ));
                        app.spec = spec;
                    }
                    if app.draining.take().is_some() {
                        actions.push(format!("{}: {} serves again", app.stage, app.label()));
                    }
                    app.share = share;
                }
                None => {
                    let (stage, variant, node) = key.clone();
                    let app = OwnedApp {
                        stage,
                        variant,
                        node,
                        spec,
                        share,
                        advertised: false,
                        draining: None,
                        seen: None,
                    };
                    actions.push(format!(
                        "{}: added {} ({}×{} cores, batch {})",
                        app.stage,
                        app.label(),
                        spec.replicas,
                        spec.cores,
                        spec.batch
                    ));
                    self.apps.insert(key, app);
                }
            }
        }
        actions
    }

    /// Moves towards `target` at `now`: an application not in the plan starts draining once
    /// every planned application of its variant is ready, or, for a variant that left the
    /// plan, every planned application of its stage (one never advertised goes at once);
    /// a draining one is removed when `drain` has passed since it was reported draining.
    /// Stages the plan does not name are left alone. Returns what changed.
    pub fn step(
        &mut self,
        target: &PlanMessage,
        mode: PlacementMode,
        drain: Duration,
        now: Instant,
    ) -> Vec<String> {
        let mut actions = Vec::new();
        let wanted = wanted(target, mode);
        let planned: Vec<&OwnedApp> = self
            .apps
            .iter()
            .filter(|(key, _)| wanted.contains_key(*key))
            .map(|(_, app)| app)
            .collect();
        let all_ready = |of: &dyn Fn(&OwnedApp) -> bool| {
            planned
                .iter()
                .filter(|a| of(a))
                .all(|a| a.phase() == Phase::Ready)
        };
        let mut replaced_by_ready = BTreeMap::new();
        for app in self.apps.values() {
            if !target.stages.iter().any(|s| s.stage == app.stage)
                || wanted.contains_key(&(app.stage.clone(), app.variant.clone(), app.node.clone()))
            {
                continue;
            }
            let variant_planned = planned
                .iter()
                .any(|a| a.stage == app.stage && a.variant == app.variant);
            // A node application that left a variant still planned waits until the
            // variant's planned applications run all their replicas (the capacity moves
            // before it is taken away); a variant that left the plan waits until the stage's
            // planned applications are ready.
            let ready = if variant_planned {
                planned
                    .iter()
                    .filter(|a| a.stage == app.stage && a.variant == app.variant)
                    .all(|a| a.at_target())
            } else {
                all_ready(&|a| a.stage == app.stage)
            };
            replaced_by_ready.insert(
                (app.stage.clone(), app.variant.clone(), app.node.clone()),
                ready,
            );
        }
        let mut removed = Vec::new();
        for (key, ready) in replaced_by_ready {
            let app = self.apps.get_mut(&key).expect("listed above");
            match app.draining {
                None if !app.advertised => {
                    removed.push(key.clone());
                    actions.push(format!(
                        "{}: removed {} (never served)",
                        app.stage,
                        app.label()
                    ));
                }
                None if ready => {
                    app.draining = Some(None);
                    actions.push(format!("{}: draining {}", app.stage, app.label()));
                }
                Some(Some(since)) if now.saturating_duration_since(since) >= drain => {
                    removed.push(key.clone());
                    actions.push(format!("{}: removed {} (drained)", app.stage, app.label()));
                }
                _ => {}
            }
        }
        for key in removed {
            self.apps.remove(&key);
        }
        actions
    }

    /// What an observation reports at `now`: ready applications count as advertised from
    /// now on, and draining ones start their drain time.
    pub fn announce(&mut self, now: Instant) {
        for app in self.apps.values_mut() {
            match app.phase() {
                Phase::Ready => app.advertised = true,
                Phase::Draining => {
                    if let Some(announced) = &mut app.draining {
                        announced.get_or_insert(now);
                    }
                }
                Phase::Starting => {}
            }
        }
    }

    /// Applications of `stage` in `phase`.
    pub fn count(&self, stage: &str, phase: Phase) -> usize {
        self.apps
            .values()
            .filter(|a| a.stage == stage && a.phase() == phase)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use infadapt_plugin_abi::{AssignmentMessage, PlacementMessage, StagePlanMessage};

    use super::*;

    fn plan(assignments: &[(&str, u32)]) -> PlanMessage {
        PlanMessage {
            stages: vec![StagePlanMessage {
                stage: "s".into(),
                assignments: assignments
                    .iter()
                    .map(|(variant, replicas)| AssignmentMessage {
                        variant: (*variant).into(),
                        batch: 2,
                        cores: 1,
                        replicas: *replicas,
                        share: 1.0,
                    })
                    .collect(),
            }],
            ..PlanMessage::default()
        }
    }

    fn see(apps: &mut Apps, variant: &str, running: u32) {
        let app = apps
            .apps
            .get_mut(&("s".into(), variant.into(), None))
            .unwrap();
        app.seen = Some(Seen {
            app_running: true,
            running,
            recovering: 0,
            starting: app.spec.replicas.saturating_sub(running),
            routed: true,
        });
    }

    fn phase(apps: &Apps, variant: &str) -> Option<Phase> {
        apps.apps
            .get(&("s".into(), variant.into(), None))
            .map(OwnedApp::phase)
    }

    #[test]
    fn a_switch_makes_before_it_breaks_and_drains_for_the_drain_time() {
        let drain = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut apps = Apps::default();
        let small = plan(&[("small", 2)]);
        assert_eq!(apps.set_target(&small, PlacementMode::Planned).len(), 1);
        assert!(
            apps.set_target(&small, PlacementMode::Planned).is_empty(),
            "idempotent"
        );
        assert_eq!(phase(&apps, "small"), Some(Phase::Starting));
        see(&mut apps, "small", 1);
        assert_eq!(
            phase(&apps, "small"),
            Some(Phase::Starting),
            "1 of 2 running"
        );
        see(&mut apps, "small", 2);
        apps.announce(t0);
        assert_eq!(phase(&apps, "small"), Some(Phase::Ready));

        // Round 1: the switch starts the new variant; the old one keeps serving.
        let large = plan(&[("large", 1)]);
        apps.set_target(&large, PlacementMode::Planned);
        assert!(
            apps.step(&large, PlacementMode::Planned, drain, t0)
                .is_empty()
        );
        apps.announce(t0);
        assert_eq!(phase(&apps, "small"), Some(Phase::Ready));
        assert_eq!(phase(&apps, "large"), Some(Phase::Starting));
        // Round 2: the new one is ready; the old one drains from this observation on.
        see(&mut apps, "large", 1);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            apps.step(&large, PlacementMode::Planned, drain, t1),
            ["s: draining small"]
        );
        apps.announce(t1);
        assert_eq!(phase(&apps, "small"), Some(Phase::Draining));
        assert_eq!(phase(&apps, "large"), Some(Phase::Ready));
        // Round 3: not yet drained.
        assert!(
            apps.step(
                &large,
                PlacementMode::Planned,
                drain,
                t1 + Duration::from_secs(4)
            )
            .is_empty()
        );
        assert!(phase(&apps, "small").is_some());
        // Round 4: drained, removed.
        assert_eq!(
            apps.step(
                &large,
                PlacementMode::Planned,
                drain,
                t1 + Duration::from_secs(5)
            ),
            ["s: removed small (drained)"]
        );
        assert_eq!(phase(&apps, "small"), None);
        assert_eq!(apps.apps.len(), 1);
    }

    #[test]
    fn a_ready_variant_stays_ready_while_it_scales_and_a_draining_one_can_come_back() {
        let drain = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut apps = Apps::default();
        apps.set_target(&plan(&[("small", 1)]), PlacementMode::Planned);
        see(&mut apps, "small", 1);
        apps.announce(t0);
        let three = plan(&[("small", 3)]);
        assert_eq!(apps.set_target(&three, PlacementMode::Planned).len(), 1);
        assert_eq!(
            phase(&apps, "small"),
            Some(Phase::Ready),
            "1 of 3, advertised"
        );

        let large = plan(&[("large", 1)]);
        apps.set_target(&large, PlacementMode::Planned);
        see(&mut apps, "large", 1);
        apps.step(&large, PlacementMode::Planned, drain, t0);
        apps.announce(t0);
        assert_eq!(phase(&apps, "small"), Some(Phase::Draining));
        // Back before it was removed: it serves again at once.
        let back = plan(&[("small", 3)]);
        assert!(
            apps.set_target(&back, PlacementMode::Planned)
                .contains(&"s: small serves again".to_owned())
        );
        assert_eq!(phase(&apps, "small"), Some(Phase::Ready));
        // `large` was advertised: it drains rather than vanishing.
        see(&mut apps, "large", 1);
        apps.announce(t0);
        assert_eq!(
            apps.step(&back, PlacementMode::Planned, drain, t0),
            ["s: draining large"]
        );
    }

    #[test]
    fn a_variant_never_served_is_removed_at_once_and_other_stages_are_left_alone() {
        let t0 = Instant::now();
        let mut apps = Apps::default();
        apps.set_target(&plan(&[("small", 1)]), PlacementMode::Planned);
        let large = plan(&[("large", 1)]);
        apps.set_target(&large, PlacementMode::Planned);
        assert_eq!(
            apps.step(&large, PlacementMode::Planned, Duration::from_secs(5), t0),
            ["s: removed small (never served)"]
        );
        let other_stage = PlanMessage {
            stages: vec![StagePlanMessage {
                stage: "t".into(),
                assignments: vec![],
            }],
            ..PlanMessage::default()
        };
        assert!(
            apps.step(&other_stage, PlacementMode::Planned, Duration::ZERO, t0)
                .is_empty()
        );
        assert_eq!(apps.apps.len(), 1);
    }

    fn placed(replicas: u32, nodes: &[(&str, u32)]) -> PlanMessage {
        let mut plan = plan(&[("small", replicas)]);
        plan.placement = nodes
            .iter()
            .map(|(node, replicas)| PlacementMessage {
                stage: "s".into(),
                variant: "small".into(),
                node: (*node).into(),
                replicas: *replicas,
            })
            .collect();
        plan
    }

    fn on<'a>(apps: &'a mut Apps, node: &str) -> &'a mut OwnedApp {
        apps.apps
            .get_mut(&("s".into(), "small".into(), Some(node.into())))
            .expect("node application")
    }

    fn run_all(app: &mut OwnedApp) {
        app.seen = Some(Seen {
            app_running: true,
            running: app.spec.replicas,
            recovering: 0,
            starting: 0,
            routed: true,
        });
    }

    #[test]
    fn a_placed_variant_is_one_application_per_node_and_moves_node_by_node() {
        let mode = PlacementMode::Planned;
        let drain = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut apps = Apps::default();
        let first = placed(3, &[("n1", 2), ("n2", 1)]);
        assert_eq!(
            apps.set_target(&first, mode),
            [
                "s: added small on node n1 (2×1 cores, batch 2)",
                "s: added small on node n2 (1×1 cores, batch 2)"
            ]
        );
        run_all(on(&mut apps, "n1"));
        run_all(on(&mut apps, "n2"));
        apps.announce(t0);

        // One replica moves from n1 to a new node n3: n1 shrinks in place, n3 starts.
        let moved = placed(3, &[("n1", 1), ("n2", 1), ("n3", 1)]);
        let actions = apps.set_target(&moved, mode);
        assert_eq!(
            actions,
            [
                "s: small on node n1 1×1 cores, batch 2 (was 2×1, batch 2)",
                "s: added small on node n3 (1×1 cores, batch 2)"
            ]
        );
        assert!(apps.step(&moved, mode, drain, t0).is_empty());
        assert_eq!(on(&mut apps, "n1").phase(), Phase::Ready, "advertised");
        assert_eq!(on(&mut apps, "n3").phase(), Phase::Starting);

        // n1 leaves the plan: it serves until n3 (now 2) is ready, then drains.
        let off_n1 = placed(3, &[("n2", 1), ("n3", 2)]);
        apps.set_target(&off_n1, mode);
        assert!(apps.step(&off_n1, mode, drain, t0).is_empty());
        assert_eq!(on(&mut apps, "n1").phase(), Phase::Ready);
        run_all(on(&mut apps, "n3"));
        assert_eq!(
            apps.step(&off_n1, mode, drain, t0),
            ["s: draining small on node n1"]
        );
        apps.announce(t0);
        assert!(
            apps.step(&off_n1, mode, drain, t0 + Duration::from_secs(4))
                .is_empty()
        );
        assert_eq!(
            apps.step(&off_n1, mode, drain, t0 + Duration::from_secs(5)),
            ["s: removed small on node n1 (drained)"]
        );
        assert_eq!(apps.apps.len(), 2);

        // Let Serve place it: one application for the variant, the node ones drain once it
        // is ready.
        let scheduler = PlacementMode::Scheduler;
        assert_eq!(
            apps.set_target(&off_n1, scheduler),
            ["s: added small (3×1 cores, batch 2)"]
        );
        let whole = ("s".to_owned(), "small".to_owned(), None);
        run_all(apps.apps.get_mut(&whole).unwrap());
        assert_eq!(
            apps.step(&off_n1, scheduler, drain, t0),
            [
                "s: draining small on node n2",
                "s: draining small on node n3"
            ]
        );
    }
}
