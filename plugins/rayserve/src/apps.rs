//! The plugin's own Serve applications, one per variant of a stage, and the
//! make-before-break rule that moves between them, with no IO and the time handed in:
//! a planned variant is `starting` until its deployment runs its replica target and the
//! proxy routes it, then `ready`; a variant that left the plan keeps serving until every
//! planned variant of its stage is ready, is then `draining`, and leaves the Serve config
//! only after `drain_s` since an observation first reported it draining.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use infadapt_plugin_abi::PlanMessage;

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

/// One application the plugin owns.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedApp {
    pub stage: String,
    pub variant: String,
    /// What the plan asks of it (the last plan that had it, for one that left the plan).
    pub spec: Spec,
    /// Its load share in the last plan that had it.
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
}

/// The plugin's applications by (stage, variant).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Apps {
    pub apps: BTreeMap<(String, String), OwnedApp>,
}

impl Apps {
    /// Takes a plan as the target: planned variants are added or updated (a draining one
    /// serves again); variants that left it are left to [`Apps::step`]. Returns what changed.
    pub fn set_target(&mut self, plan: &PlanMessage) -> Vec<String> {
        let mut actions = Vec::new();
        for stage in &plan.stages {
            for a in stage.assignments.iter().filter(|a| a.replicas > 0) {
                let spec = Spec {
                    replicas: a.replicas,
                    cores: a.cores,
                    batch: a.batch,
                };
                let key = (stage.stage.clone(), a.variant.clone());
                match self.apps.get_mut(&key) {
                    Some(app) => {
                        if app.spec != spec {
                            actions.push(format!(
                                "{}: {} {}×{} cores, batch {} (was {}×{}, batch {})",
                                stage.stage,
                                a.variant,
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
                            actions.push(format!("{}: {} serves again", stage.stage, a.variant));
                        }
                        app.share = a.share;
                    }
                    None => {
                        actions.push(format!(
                            "{}: added {} ({}×{} cores, batch {})",
                            stage.stage, a.variant, spec.replicas, spec.cores, spec.batch
                        ));
                        self.apps.insert(
                            key,
                            OwnedApp {
                                stage: stage.stage.clone(),
                                variant: a.variant.clone(),
                                spec,
                                share: a.share,
                                advertised: false,
                                draining: None,
                                seen: None,
                            },
                        );
                    }
                }
            }
        }
        actions
    }

    /// Moves towards `target` at `now`: a variant not in the plan starts draining once every
    /// planned variant of its stage is ready (one never advertised goes at once), and a
    /// draining one is removed when `drain` has passed since it was reported draining.
    /// Stages the plan does not name are left alone. Returns what changed.
    pub fn step(&mut self, target: &PlanMessage, drain: Duration, now: Instant) -> Vec<String> {
        let mut actions = Vec::new();
        let planned = |stage: &str, variant: &str| {
            target.stages.iter().any(|s| {
                s.stage == stage
                    && s.assignments
                        .iter()
                        .any(|a| a.variant == variant && a.replicas > 0)
            })
        };
        let stage_ready: BTreeMap<String, bool> = target
            .stages
            .iter()
            .map(|s| {
                let ready = self
                    .apps
                    .values()
                    .filter(|a| a.stage == s.stage && planned(&a.stage, &a.variant))
                    .all(|a| a.phase() == Phase::Ready);
                (s.stage.clone(), ready)
            })
            .collect();
        let mut removed = Vec::new();
        for (key, app) in &mut self.apps {
            let Some(ready) = stage_ready.get(&app.stage) else {
                continue;
            };
            if planned(&app.stage, &app.variant) {
                continue;
            }
            match app.draining {
                None if !app.advertised => {
                    removed.push(key.clone());
                    actions.push(format!(
                        "{}: removed {} (never served)",
                        app.stage, app.variant
                    ));
                }
                None if *ready => {
                    app.draining = Some(None);
                    actions.push(format!("{}: draining {}", app.stage, app.variant));
                }
                Some(Some(since)) if now.saturating_duration_since(since) >= drain => {
                    removed.push(key.clone());
                    actions.push(format!("{}: removed {} (drained)", app.stage, app.variant));
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
    use infadapt_plugin_abi::{AssignmentMessage, StagePlanMessage};

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
        let app = apps.apps.get_mut(&("s".into(), variant.into())).unwrap();
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
            .get(&("s".into(), variant.into()))
            .map(OwnedApp::phase)
    }

    #[test]
    fn a_switch_makes_before_it_breaks_and_drains_for_the_drain_time() {
        let drain = Duration::from_secs(5);
        let t0 = Instant::now();
        let mut apps = Apps::default();
        let small = plan(&[("small", 2)]);
        assert_eq!(apps.set_target(&small).len(), 1);
        assert!(apps.set_target(&small).is_empty(), "idempotent");
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
        apps.set_target(&large);
        assert!(apps.step(&large, drain, t0).is_empty());
        apps.announce(t0);
        assert_eq!(phase(&apps, "small"), Some(Phase::Ready));
        assert_eq!(phase(&apps, "large"), Some(Phase::Starting));
        // Round 2: the new one is ready; the old one drains from this observation on.
        see(&mut apps, "large", 1);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(apps.step(&large, drain, t1), ["s: draining small"]);
        apps.announce(t1);
        assert_eq!(phase(&apps, "small"), Some(Phase::Draining));
        assert_eq!(phase(&apps, "large"), Some(Phase::Ready));
        // Round 3: not yet drained.
        assert!(
            apps.step(&large, drain, t1 + Duration::from_secs(4))
                .is_empty()
        );
        assert!(phase(&apps, "small").is_some());
        // Round 4: drained, removed.
        assert_eq!(
            apps.step(&large, drain, t1 + Duration::from_secs(5)),
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
        apps.set_target(&plan(&[("small", 1)]));
        see(&mut apps, "small", 1);
        apps.announce(t0);
        let three = plan(&[("small", 3)]);
        assert_eq!(apps.set_target(&three).len(), 1);
        assert_eq!(
            phase(&apps, "small"),
            Some(Phase::Ready),
            "1 of 3, advertised"
        );

        let large = plan(&[("large", 1)]);
        apps.set_target(&large);
        see(&mut apps, "large", 1);
        apps.step(&large, drain, t0);
        apps.announce(t0);
        assert_eq!(phase(&apps, "small"), Some(Phase::Draining));
        // Back before it was removed: it serves again at once.
        let back = plan(&[("small", 3)]);
        assert!(
            apps.set_target(&back)
                .contains(&"s: small serves again".to_owned())
        );
        assert_eq!(phase(&apps, "small"), Some(Phase::Ready));
        // `large` was advertised: it drains rather than vanishing.
        see(&mut apps, "large", 1);
        apps.announce(t0);
        assert_eq!(apps.step(&back, drain, t0), ["s: draining large"]);
    }

    #[test]
    fn a_variant_never_served_is_removed_at_once_and_other_stages_are_left_alone() {
        let t0 = Instant::now();
        let mut apps = Apps::default();
        apps.set_target(&plan(&[("small", 1)]));
        let large = plan(&[("large", 1)]);
        apps.set_target(&large);
        assert_eq!(
            apps.step(&large, Duration::from_secs(5), t0),
            ["s: removed small (never served)"]
        );
        let other_stage = PlanMessage {
            stages: vec![StagePlanMessage {
                stage: "t".into(),
                assignments: vec![],
            }],
            ..PlanMessage::default()
        };
        assert!(apps.step(&other_stage, Duration::ZERO, t0).is_empty());
        assert_eq!(apps.apps.len(), 1);
    }
}
